"""The loop's own profiler: data wait, step, each event and each handler."""

from __future__ import annotations

import functools
import re
import sys
import threading
import time
import warnings
from typing import Any

import pytest
import torch

from ember.engine import Engine, Events, _syncs
from ember.engine.profile import Profiler


def slow_step(engine: Engine, batch: int) -> int:
    time.sleep(0.002)
    return batch


def test_profile_counts_and_times(backend: str) -> None:
    engine = Engine(slow_step, backend=backend)

    def checkpoint_like(e: Engine) -> None:
        time.sleep(0.003)

    engine.add_event_handler(Events.EPOCH_COMPLETED, checkpoint_like)
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=2), lambda e: None)
    profiler = Profiler().attach(engine)
    engine.run(range(4), max_epochs=2)

    results = profiler.results()
    assert results["data"].calls == 8
    assert results["step"].calls == 8 and results["step"].seconds >= 8 * 0.002
    assert results["events"]["ITERATION_COMPLETED"].calls == 8
    assert results["events"]["STARTED"].calls == 1
    assert results["events"]["EPOCH_COMPLETED"].seconds >= 2 * 0.003
    handlers = results["handlers"]
    epoch_handler = handlers[
        "EPOCH_COMPLETED:test_profile_counts_and_times.<locals>.checkpoint_like"
    ]
    assert epoch_handler.calls == 2 and epoch_handler.seconds >= 0.006
    filtered = [name for name in handlers if name.startswith("ITERATION_COMPLETED:")]
    # a filtered handler is counted (and timed) with its filter, at every firing
    assert len(filtered) == 1 and handlers[filtered[0]].calls == 8
    table = profiler.table()
    assert table.splitlines()[1].startswith("data (next)")
    assert "handler EPOCH_COMPLETED:" in table


def test_profile_is_kept_after_an_exception_and_across_runs(backend: str) -> None:
    def failing(engine: Engine, batch: int) -> int:
        if engine.state.iteration == 3:
            raise ValueError("boom")
        return batch

    engine = Engine(failing, backend=backend)
    profiler = Profiler().attach(engine)
    with pytest.raises(ValueError, match="boom"):
        engine.run(range(5))
    assert profiler.step.calls == 3  # the step that raised included
    engine._process_function = lambda e, b: b
    engine.run(range(5), max_epochs=2)
    assert profiler.step.calls > 2
    Profiler.detach(engine)
    calls = profiler.step.calls
    engine.run(range(5), max_epochs=3)
    assert profiler.step.calls == calls


def test_a_handler_that_raised_is_counted(backend: str) -> None:
    """The failing call is often the one being looked into: it is counted and timed like the
    calls before it, and so is the firing of its event."""

    def handler(engine: Engine) -> None:
        if engine.state.iteration == 2:
            raise ValueError("handler")

    engine = Engine(lambda e, b: b, backend=backend)
    engine.add_event_handler(Events.ITERATION_COMPLETED, handler)
    profiler = Profiler(count_syncs=False).attach(engine)
    with pytest.raises(ValueError, match="handler"):
        engine.run(range(5))
    name = "ITERATION_COMPLETED:test_a_handler_that_raised_is_counted.<locals>.handler"
    assert profiler.handlers[name].calls == 2
    assert profiler.events["ITERATION_COMPLETED"].calls == 2


def test_an_engine_of_another_library_is_refused() -> None:
    with pytest.raises(TypeError, match=r"engine should be an ember\.engine\.Engine, got object"):
        Profiler().attach(object())  # type: ignore[arg-type]


def test_no_profiler_means_no_timing(make_engine: Any) -> None:
    profiled = make_engine()
    profiler = Profiler().attach(profiled)
    profiled.run(range(3))
    engine = make_engine()
    engine.run(range(3))
    assert engine._profiler is None
    # the unprofiled engine's run is counted nowhere, not in another engine's profiler either
    assert (profiler.data.calls, profiler.step.calls) == (3, 3)


# ---------------------------------------------------------------- host syncs
# A host sync is a read of a tensor's value on the host (aten::_local_scalar_dense). Counts are
# deterministic: each test knows how many each part of the run makes.


def sync(times: int = 1) -> None:
    for _ in range(times):
        torch.ones(1).item()


class SyncingData:
    """Four batches; one sync in iter() (outside any timed part) and one per batch."""

    def __iter__(self) -> Any:
        sync()
        return self._batches()

    @staticmethod
    def _batches() -> Any:
        for index in range(4):
            sync()
            yield index

    def __len__(self) -> int:
        return 4


class CallableHandler:
    def __call__(self, engine: Engine) -> None:
        sync(3)


class Owner:
    def __init__(self, syncs: int) -> None:
        self.syncs = syncs

    def method(self, engine: Engine) -> None:
        sync(self.syncs)


def syncing_step(engine: Engine, batch: int) -> int:
    sync(2)
    return batch


def test_syncs_are_charged_to_the_part_that_made_them(backend: str) -> None:
    engine = Engine(syncing_step, backend=backend)

    def every_other(engine: Engine) -> None:
        sync()

    def twice_an_epoch(engine: Engine) -> None:
        sync(5)

    engine.add_event_handler(Events.ITERATION_COMPLETED, CallableHandler())
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=2), every_other)
    engine.add_event_handler(Events.ITERATION_STARTED, functools.partial(Owner.method, Owner(1)))
    engine.add_event_handler(Events.EPOCH_COMPLETED, Owner(4).method)
    engine.add_event_handler(Events.EPOCH_COMPLETED | Events.COMPLETED, twice_an_epoch)
    profiler = Profiler().attach(engine)
    engine.run(SyncingData(), max_epochs=2)

    assert profiler.iterations == 8
    assert profiler.data.syncs == 8
    assert profiler.step.syncs == 16
    assert profiler.outside_syncs == 2  # iter(data) once an epoch
    handlers = {name: timing.syncs for name, timing in profiler.handlers.items()}
    local = "test_syncs_are_charged_to_the_part_that_made_them.<locals>"
    assert handlers == {
        "ITERATION_COMPLETED:CallableHandler": 24,
        f"ITERATION_COMPLETED:{local}.every_other": 4,
        "ITERATION_STARTED:Owner.method": 8,
        "EPOCH_COMPLETED:Owner.method": 8,
        f"EPOCH_COMPLETED:{local}.twice_an_epoch": 10,
        f"COMPLETED:{local}.twice_an_epoch": 5,
    }
    events = {name: timing.syncs for name, timing in profiler.events.items() if timing.syncs}
    assert events == {
        "ITERATION_COMPLETED": 28,
        "ITERATION_STARTED": 8,
        "EPOCH_COMPLETED": 18,
        "COMPLETED": 5,
    }
    table = profiler.table()
    assert table.splitlines()[0].split()[-2:] == ["syncs", "syncs/iter"]
    handler_line = next(line for line in table.splitlines() if "CallableHandler" in line)
    assert handler_line.split()[-2:] == ["24", "3.000"]
    assert table.splitlines()[-1].split()[-2:] == ["2", "0.250"]  # the outside row


def test_instances_of_one_class_are_told_apart(backend: str) -> None:
    engine = Engine(lambda e, b: b, backend=backend)
    cheap, costly = Owner(1), Owner(3)
    engine.add_event_handler(Events.ITERATION_COMPLETED, cheap.method)
    engine.add_event_handler(Events.EPOCH_COMPLETED, costly.method)
    profiler = Profiler().attach(engine)
    engine.run(range(5))
    assert profiler.handlers["ITERATION_COMPLETED:Owner.method"].syncs == 5
    assert profiler.handlers["EPOCH_COMPLETED:Owner.method"].syncs == 3


def test_an_evaluator_run_is_its_handlers_cost(make_engine: Any) -> None:
    evaluator = make_engine(syncing_step)
    evaluator.add_event_handler(Events.COMPLETED, CallableHandler())
    trainer = make_engine(lambda e, b: b)

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate(engine: Engine) -> None:
        evaluator.run(range(3))

    trainer_profile = Profiler().attach(trainer)
    evaluator_profile = Profiler().attach(evaluator)
    trainer.run(range(4), max_epochs=2)
    assert trainer_profile.handlers[f"EPOCH_COMPLETED:{validate.__qualname__}"].syncs == 2 * 9
    assert trainer_profile.step.syncs == 0
    assert evaluator_profile.step.syncs == 2 * 6
    assert evaluator_profile.handlers["COMPLETED:CallableHandler"].syncs == 2 * 3


def test_the_steps_of_the_supervised_trainer_and_deterministic_engine(backend: str) -> None:
    from ember.engine import DeterministicEngine, create_supervised_trainer
    from ember.engine.supervised import loss_as_float

    model = torch.nn.Linear(3, 1)
    trainer = create_supervised_trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.mse_loss,
        backend=backend,
    )
    profiler = Profiler().attach(trainer)
    trainer.run([(torch.randn(4, 3), torch.randn(4, 1))] * 5, max_epochs=2)
    assert profiler.step.syncs == 0  # the default output is the detached loss: no read
    with_floats = create_supervised_trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.mse_loss,
        output_transform=loss_as_float,
        backend=backend,
    )
    float_profiler = Profiler().attach(with_floats)
    with_floats.run([(torch.randn(4, 3), torch.randn(4, 1))] * 5, max_epochs=2)
    assert float_profiler.step.syncs == 10  # loss_as_float's loss.item()
    engine = DeterministicEngine(lambda e, b: b, backend=backend)
    seeded = Profiler().attach(engine)
    engine.run(range(3))
    assert seeded.handlers["STARTED:DeterministicEngine._seed_the_run"].syncs == 1


def test_counting_stops_with_the_run(make_engine: Any) -> None:
    engine = make_engine(syncing_step)
    profiler = Profiler().attach(engine)
    engine.run(range(3))
    sync(4)
    assert profiler.step.syncs == 6 and profiler.outside_syncs == 0
    assert _syncs._hooks.library is None and not _syncs._watches

    def failing(engine: Engine, batch: int) -> None:
        sync()
        raise ValueError("boom")

    engine = make_engine(failing)
    profiler = Profiler().attach(engine)
    with pytest.raises(ValueError, match="boom"):
        engine.run(range(3))
    assert profiler.step.syncs == 1
    assert _syncs._hooks.library is None and not _syncs._watches
    assert torch.tensor(2.5).item() == 2.5  # torch's own kernel is back


def test_syncs_of_other_threads_are_not_counted(make_engine: Any) -> None:
    def step(engine: Engine, batch: int) -> None:
        worker = threading.Thread(target=sync, args=(5,))
        worker.start()
        worker.join()
        sync()

    engine = make_engine(step)
    profiler = Profiler().attach(engine)
    engine.run(range(3))
    assert profiler.step.syncs == 3


def test_count_syncs_false(make_engine: Any) -> None:
    engine = make_engine(syncing_step)
    profiler = Profiler(count_syncs=False).attach(engine)
    engine.run(range(3))
    assert profiler.step.calls == 3 and profiler.step.syncs == 0
    profiler.reset()
    assert profiler.count_syncs is False and profiler.step.calls == 0


def test_the_values_read_are_unchanged(make_engine: Any) -> None:
    values: list[Any] = []

    def step(engine: Engine, batch: int) -> None:
        values.extend(
            [
                torch.tensor(1.5).item(),
                bool(torch.tensor(True)),
                int(torch.tensor([[7]])),
                torch.tensor(3, dtype=torch.uint8).item(),
                torch.tensor(1 + 2j).item(),
                float(torch.tensor(0.5, dtype=torch.bfloat16)),
            ]
        )
        with pytest.raises(RuntimeError, match="cannot be converted to Scalar"):
            torch.ops.aten._local_scalar_dense(torch.ones(2))

    engine = make_engine(step)
    Profiler().attach(engine)
    engine.run(range(1))
    assert values == [1.5, True, 7, 3, 1 + 2j, 0.5]
    assert [type(value) for value in values] == [float, bool, int, int, complex, float]


def test_cuda_sync_warnings_are_counted_not_shown(
    make_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No GPU here: torch.cuda's switches are faked, and a handler warns as the CUDA debug mode
    # would at a synchronizing operation.
    modes: list[Any] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def synchronizing(engine: Engine) -> None:
        warnings.warn(_syncs.CUDA_SYNC_WARNING, UserWarning, stacklevel=1)

    engine = make_engine(lambda e, b: b)
    engine.add_event_handler(Events.ITERATION_COMPLETED, synchronizing)
    profiler = Profiler().attach(engine)
    engine.run(range(3))
    assert profiler.handlers[f"ITERATION_COMPLETED:{synchronizing.__qualname__}"].syncs == 3
    assert modes == ["warn", 0]  # switched on for the run, then back
    with pytest.warns(UserWarning, match="synchronizing"):  # shown again outside runs
        synchronizing(engine)


def test_warning_filters_set_during_a_run_outlive_it(
    make_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CUDA path put back all of warnings.filters (and showwarning) as they were when the
    run started: a filter that a handler set during the run was gone once it ended. Only the
    Profiler's own entry is taken out now; an equal entry the program had stays."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda mode: None)
    warnings.filterwarnings("always", message=_syncs.CUDA_SYNC_WARNING)  # the program's own
    before = list(warnings.filters)
    show_before = warnings.showwarning

    def configure(engine: Engine) -> None:
        warnings.filterwarnings("ignore", message="noise from a library")
        warnings.simplefilter("error", ResourceWarning)

    def synchronizing(engine: Engine) -> None:
        warnings.warn(_syncs.CUDA_SYNC_WARNING, UserWarning, stacklevel=1)

    engine = make_engine(lambda e, b: b)
    engine.add_event_handler(Events.STARTED, configure)
    engine.add_event_handler(Events.ITERATION_COMPLETED, synchronizing)
    profiler = Profiler().attach(engine)
    engine.run(range(3))
    assert profiler.handlers[f"ITERATION_COMPLETED:{synchronizing.__qualname__}"].syncs == 3
    assert warnings.filters[:2] == [
        ("error", None, ResourceWarning, None, 0),
        ("ignore", re.compile("noise from a library", re.IGNORECASE), Warning, None, 0),
    ]
    assert warnings.filters[2:] == before
    assert warnings.showwarning is show_before
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn("noise from a library", UserWarning, stacklevel=1)
    assert caught == []
    with pytest.warns(UserWarning, match="synchronizing"):  # shown again outside runs
        synchronizing(engine)


def test_the_chart(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    engine = Engine(syncing_step)
    engine.add_event_handler(Events.ITERATION_COMPLETED, CallableHandler())
    profiler = Profiler().attach(engine)
    engine.run(range(4))
    path = tmp_path / "profile.png"
    figure = profiler.chart(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert labels[-2:] == ["step (process_function)", "data (next)"]  # at the top
    assert not any(label.startswith("event") for label in labels)  # no time counted twice
    texts = [text.get_text() for text in figure.axes[0].texts]
    assert any("3.00 syncs/iter" in text for text in texts)  # the handler's syncs per iteration
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="needs matplotlib"):
        profiler.chart()
