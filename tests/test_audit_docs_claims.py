"""Claims of docs/handlers.md, docs/metrics.md and docs/training.md corrected by the docs audit:
each test pins the behaviour the corrected text describes, on both loops where a loop runs."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ember.engine import Engine, Events
from syncs import HostSyncCounter

PYTHON_DIR = str(Path(__file__).resolve().parent.parent / "python")


@pytest.mark.parametrize(
    ("name", "imports_torch"),
    [
        ("EarlyStopping", False),
        ("Timer", False),
        ("TerminateOnNan", False),
        ("ProgressBar", False),
        ("Profiler", False),
        ("Checkpoint", True),
        ("LRScheduler", True),
        ("resume_from", True),
        ("Preemption", True),
    ],
)
def test_which_handlers_import_torch(name: str, imports_torch: bool) -> None:
    """handlers.md: only the checkpoint, resume (resume_from, Preemption) and schedule handlers
    import torch."""
    code = f"import sys\nfrom ember.handlers import {name}\nprint('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": PYTHON_DIR}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(imports_torch)


def test_handlers_table_names_resolve() -> None:
    """handlers.md's table lists resume_from, Preemption, Preempted and Profiler."""
    import ember.handlers
    from ember.engine.profile import Profiler

    for name in ("resume_from", "Preemption", "Preempted"):
        assert getattr(ember.handlers, name) is not None
    assert ember.handlers.Profiler is Profiler


def test_load_objects_single_object_without_its_key_loads_the_whole_file() -> None:
    """handlers.md: with a single object, a file without its key is that object's own state."""
    from ember.handlers import Checkpoint

    source, target = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "state.pt"
        torch.save(source.state_dict(), path)
        Checkpoint.load_objects({"model": target}, path)
        assert torch.equal(source.weight, target.weight)
        torch.save({"other": 1}, path)
        with pytest.raises(RuntimeError, match="state_dict"):  # the module's own error
            Checkpoint.load_objects({"model": target}, path)
        torch.save({"model": source.state_dict()}, path)
        with pytest.raises(ValueError, match="'second' is not found in checkpoint file"):
            Checkpoint.load_objects({"model": target, "second": torch.nn.Linear(2, 2)}, path)


@pytest.mark.parametrize(("persist", "reads"), [(False, 2), (True, 5)])
def test_progress_bar_reads_of_short_epochs(backend: str, persist: bool, reads: int) -> None:
    """handlers.md: epochs shorter than mininterval are read once at their end with persist=True;
    with persist=False their bar never appears and nothing is read for them."""
    pytest.importorskip("tqdm")
    from ember.handlers import ProgressBar
    from ember.metrics import RunningAverage

    engine = Engine(lambda e, b: torch.tensor(float(e.state.iteration)), backend=backend)
    RunningAverage(output_transform=lambda loss: loss).attach(engine, "running")
    ProgressBar(file=io.StringIO(), persist=persist, mininterval=60.0).attach(
        engine, metric_names="all"
    )
    with HostSyncCounter() as counter:
        engine.run(range(20), max_epochs=4)
    # the first draw (iteration 1) and the first epoch's close, then one read per later close
    # only with persist=True
    assert counter.count == reads


def test_progress_bar_state_attributes(backend: str) -> None:
    pytest.importorskip("tqdm")
    from ember.handlers import ProgressBar

    output = io.StringIO()
    engine = Engine(lambda e, b: None, backend=backend)
    engine.state.alpha = 3
    ProgressBar(file=output, persist=True).attach(engine, state_attributes=["alpha"])
    engine.run(range(3))
    assert "alpha=3" in output.getvalue()


def test_dict_result_stored_unconverted_and_spread(backend: str) -> None:
    """metrics.md: a dict result is stored as it is and spread key by key, values unconverted;
    a key equal to the metric's name raises ValueError."""
    from ember.metrics import Metric

    class Pair(Metric):
        _state_attrs = ("_count",)

        def __init__(self, key: str = "a") -> None:
            self._key = key
            super().__init__()

        def reset(self) -> None:
            self._count = 0

        def update(self, output: object) -> None:
            self._count += 1

        def compute(self) -> dict[str, object]:
            return {self._key: torch.tensor(float(self._count)), "b": torch.ones(2)}

    engine = Engine(lambda e, b: b, backend=backend)
    Pair().attach(engine, "pair")
    metrics = engine.run([0, 1, 2]).metrics
    assert isinstance(metrics["a"], torch.Tensor) and metrics["a"].ndim == 0
    assert set(metrics["pair"]) == {"a", "b"}
    assert float(metrics["a"]) == 3.0

    engine = Engine(lambda e, b: b, backend=backend)
    Pair(key="pair").attach(engine, "pair")
    with pytest.raises(ValueError, match="conflicting with mapping keys"):
        engine.run([0])


def test_confusion_matrix_skips_out_of_range_targets() -> None:
    """metrics.md: ConfusionMatrix skips targets outside [0, C) instead of refusing them."""
    from ember.metrics import ConfusionMatrix

    matrix = ConfusionMatrix(num_classes=3)
    matrix.update((torch.randn(4, 3), torch.tensor([0, 1, 255, 2])))
    assert int(matrix.compute().sum()) == 3


def test_out_of_range_messages() -> None:
    """metrics.md: the error names the smallest and largest class index, or only the valid range
    when Precision/Recall found the target in an update whose values were not checked."""
    from ember.metrics import Accuracy, Precision

    good = (torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    bad = (torch.randn(4, 3), torch.tensor([0, 1, 5, 0]))
    accuracy = Accuracy()
    accuracy.update(bad)
    with pytest.raises(ValueError, match=r"Accuracy: .*outside \[0, 3\): min 0, max 5"):
        accuracy.compute()
    with pytest.raises(ValueError, match="outside"):  # until reset()
        accuracy.compute()
    precision = Precision()
    precision.update(good)
    precision.update(bad)
    with pytest.raises(ValueError, match=r"Precision: y holds class indices outside \[0, 3\)$"):
        precision.compute()


def test_profiler_results(backend: str) -> None:
    """training.md: results() is a dict of Timing objects and the count of outside syncs."""
    from ember.engine.profile import Profiler, Timing

    engine = Engine(lambda e, b: None, backend=backend)

    def handler(engine: Engine) -> None:
        pass

    engine.add_event_handler(Events.ITERATION_COMPLETED, handler)
    profiler = Profiler().attach(engine)
    engine.run(range(3))
    results = profiler.results()
    assert set(results) == {"data", "step", "events", "handlers", "outside_syncs"}
    assert isinstance(results["data"], Timing) and isinstance(results["step"], Timing)
    assert results["step"].calls == 3
    assert all(isinstance(t, Timing) for t in results["events"].values())
    (name,) = results["handlers"]
    assert name.startswith("ITERATION_COMPLETED:") and name.endswith("handler")
    assert results["handlers"][name].calls == 3
    assert isinstance(results["outside_syncs"], int)
