"""DeterministicEngine: exact mid-epoch resume after SIGKILL, and its building blocks."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import IterableDataset

from ember.engine import DeterministicEngine, Events

SCRIPT = Path(__file__).resolve().parent / "isolated" / "deterministic_train.py"


def train(out_dir: Path, backend: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMBER_BACKEND": backend}
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(out_dir), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


_REFERENCES: dict[str, dict[str, Any]] = {}


def uninterrupted(backend: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if backend not in _REFERENCES:
        out_dir = tmp_path_factory.mktemp(f"full-{backend}")
        full = train(out_dir, backend, "full")
        assert full.returncode == 0, full.stderr
        _REFERENCES[backend] = torch.load(out_dir / "full.pt", weights_only=False)
    return _REFERENCES[backend]


@pytest.mark.parametrize("kill_at", [7, 23])  # mid-epoch: 10 batches an epoch
def test_resume_after_sigkill_matches_an_uninterrupted_run(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, backend: str, kill_at: int
) -> None:
    reference = uninterrupted(backend, tmp_path_factory)
    killed = train(tmp_path, backend, "kill", str(kill_at))
    assert killed.returncode == -9, killed.stderr
    resumed = train(tmp_path, backend, "resume")
    assert resumed.returncode == 0, resumed.stderr

    after = torch.load(tmp_path / "resume.pt", weights_only=False)
    assert sorted(after["seen"]) == list(range(kill_at + 1, 31))
    for iteration, targets in after["seen"].items():
        assert targets == reference["seen"][iteration], iteration
    for name, weight in reference["weights"].items():
        assert torch.equal(after["weights"][name], weight), name


def test_plain_list_resumes_mid_epoch_at_the_right_item(backend: str) -> None:
    seen: list[int] = []
    first = DeterministicEngine(lambda e, b: seen.append(b), backend=backend)
    first.add_event_handler(Events.ITERATION_COMPLETED(once=7), lambda e: e.terminate())
    first.run(list(range(5)), max_epochs=3)
    saved = first.state_dict()

    resumed_seen: list[int] = []
    second = DeterministicEngine(lambda e, b: resumed_seen.append(b), backend=backend)
    second.load_state_dict(saved)
    second.run(list(range(5)))
    assert seen == [0, 1, 2, 3, 4, 0, 1]
    assert saved["data_position"] == (1, 2)
    assert resumed_seen == [2, 3, 4, 0, 1, 2, 3, 4]
    assert second.state.iteration == 15


def test_each_pass_of_a_shuffling_loader_differs_and_repeats_with_the_seed(backend: str) -> None:
    dataset = torch.utils.data.TensorDataset(torch.arange(12))

    def orders(seed: int) -> list[list[int]]:
        torch.manual_seed(seed)
        batches: list[list[int]] = []
        engine = DeterministicEngine(lambda e, b: batches.append(b[0].tolist()), backend=backend)
        loader = torch.utils.data.DataLoader(dataset, batch_size=12, shuffle=True)
        engine.run(loader, max_epochs=3)
        return batches

    first, again = orders(5), orders(5)
    assert first == again
    assert len({tuple(order) for order in first}) == 3
    assert orders(6) != first


def test_state_dict_holds_seed_position_and_random_states(backend: str) -> None:
    engine = DeterministicEngine(lambda e, b: b, backend=backend)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate())
    engine.run(list(range(5)), max_epochs=2)
    state = engine.state_dict()
    assert isinstance(state["seed"], int)
    assert state["data_position"] == (0, 3)
    assert {"random", "torch"} <= set(state["rng_states"])


def test_malformed_data_position_is_refused(backend: str) -> None:
    engine = DeterministicEngine(lambda e, b: b, backend=backend)
    with pytest.raises(ValueError, match="data_position"):
        engine.load_state_dict(
            {"epoch_length": 2, "iteration": 0, "max_epochs": 1, "data_position": (-1, 0)}
        )


def test_a_data_position_past_the_end_of_the_data_is_refused(backend: str) -> None:
    """A checkpoint of longer data (5 batches drawn of a pass) resumed on data of 4 batches:
    the pass was skipped to its end, and the run went on from the next pass as if nothing
    were wrong."""
    saved = DeterministicEngine(lambda e, b: b, backend=backend)
    saved.add_event_handler(Events.ITERATION_COMPLETED(once=5), lambda e: e.terminate())
    saved.run(list(range(6)), max_epochs=2)
    engine = DeterministicEngine(lambda e, b: b, backend=backend)
    engine.load_state_dict(saved.state_dict())
    with pytest.raises(ValueError, match=r"data_position.*\(0, 5\).*4 batches"):
        engine.run(list(range(4)))
    # At the end of a pass is no error: the next pass starts.
    engine = DeterministicEngine(lambda e, b: b, backend=backend)
    engine.load_state_dict(saved.state_dict())
    assert engine.run(list(range(5))).iteration == 12


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("data_position", 5, "data_position'\\] should be \\(data pass, batches drawn\\)"),
        ("data_position", (0, 1, 2), "data_position'\\] should be"),
        ("data_position", (0, 1.5), "data_position'\\] should be"),
        ("seed", "x", "seed'\\] should be an int in \\[-2\\*\\*63, 2\\*\\*63\\) or None, got 'x'"),
        ("seed", 1.5, "seed'\\] should be an int in"),
        ("rng_states", [1, 2], "rng_states'\\] should be a dictionary"),
        ("rng_states", {}, "rng_states'\\] should be a dictionary"),
        ("world_size", "1", "world_size'\\] should be an int, got '1'"),
    ],
)
def test_malformed_deterministic_keys_are_refused_before_anything_loads(
    backend: str, key: str, value: object, message: str
) -> None:
    """Refused when loaded, naming the key, with the state left as it was: not at the next run
    (a bad seed or random state failed inside the loop), nor half loaded."""
    engine = DeterministicEngine(lambda e, b: b, backend=backend)
    with pytest.raises(ValueError, match=message):
        engine.load_state_dict({"epoch_length": 2, "iteration": 4, "max_epochs": 3, key: value})
    assert engine.state.iteration == 0 and engine.state.max_epochs is None


def test_deterministic_engine_needs_data(backend: str) -> None:
    engine = DeterministicEngine(lambda e, b: b, backend=backend)
    with pytest.raises(ValueError, match="needs data"):
        engine.run(epoch_length=3)


def record_batches_and_draws(
    backend: str,
    make_data: Callable[[], Any],
    max_epochs: int,
    *,
    stop_at: int | None = None,
    switch_to: Callable[[], Any] | None = None,
    state: Mapping[str, Any] | None = None,
) -> tuple[list[tuple[int, Any, float]], dict[str, Any]]:
    """The (iteration, batch, torch draw) of a run from ``torch.manual_seed(0)``, stopped after
    iteration ``stop_at`` (with its state_dict then) or resumed from ``state``; ``switch_to``
    gives the data that ``set_data`` switches to after iteration 2."""
    seen: list[tuple[int, Any, float]] = []

    def step(engine: Any, batch: Any) -> None:
        value = batch.tolist() if isinstance(batch, torch.Tensor) else batch
        seen.append((engine.state.iteration, value, torch.rand(1).item()))

    engine = DeterministicEngine(step, backend=backend)
    if switch_to is not None:
        engine.add_event_handler(
            Events.ITERATION_COMPLETED(once=2), lambda e: e.set_data(switch_to())
        )
    saved: dict[str, Any] = {}
    if stop_at is not None:

        @engine.on(Events.ITERATION_COMPLETED(once=stop_at))
        def save_and_stop(e: DeterministicEngine) -> None:
            saved.update(e.state_dict())
            e.terminate()

    torch.manual_seed(0)
    if state is not None:
        engine.load_state_dict(state)
    engine.run(make_data(), max_epochs=max_epochs)
    return seen, saved


class Countdown(IterableDataset[int]):
    """An iterable dataset whose items depend on torch's generator, as a streamed dataset's
    random augmentation would."""

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(7).tolist())


@pytest.mark.parametrize("stop_at", [5, 9])
def test_a_loader_over_an_iterable_dataset_runs_and_resumes_exactly(
    backend: str, stop_at: int
) -> None:
    """Its batch sampler never ends: a loader over it is iterated and skipped, not re-created
    (which drew batch indices until memory ran out)."""

    def loader() -> Any:
        return torch.utils.data.DataLoader(Countdown(), batch_size=2)

    full, _ = record_batches_and_draws(backend, loader, max_epochs=3)
    first, saved = record_batches_and_draws(backend, loader, max_epochs=3, stop_at=stop_at)
    resumed, _ = record_batches_and_draws(backend, loader, max_epochs=3, state=saved)
    assert [iteration for iteration, _, _ in full] == list(range(1, 13))
    assert first + resumed == full


@pytest.mark.parametrize("stop_at", [3, 8])
def test_a_run_resumed_after_set_data_sees_the_batches_of_the_run_never_stopped(
    backend: str, stop_at: int
) -> None:
    """set_data starts a data pass that the data position counts (it counted the old data's,
    and the resumed run skipped a batch)."""

    def shuffled(offset: int) -> Any:
        dataset = torch.utils.data.TensorDataset(torch.arange(offset, offset + 5))
        return torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=True)

    def switched() -> Any:
        return shuffled(100)

    full, _ = record_batches_and_draws(backend, lambda: shuffled(0), 2, switch_to=switched)
    first, saved = record_batches_and_draws(
        backend, lambda: shuffled(0), 2, stop_at=stop_at, switch_to=switched
    )
    resumed, _ = record_batches_and_draws(backend, switched, 2, state=saved)
    assert [batch for _, batch, _ in full[2:7]] != [[100], [101], [102], [103], [104]]
    assert sorted(batch[0] for _, batch, _ in full[2:7]) == [100, 101, 102, 103, 104]
    assert first + resumed == full


def test_set_data_keeps_the_random_draws_of_the_epoch(backend: str) -> None:
    """Only the new pass's order comes from the seed: the draws of the step go on as without
    the switch (as on ignite, whose set_data does not seed)."""
    plain, _ = record_batches_and_draws(backend, lambda: [0, 1, 2, 3], 1)
    switched, _ = record_batches_and_draws(
        backend, lambda: [0, 1, 2, 3], 1, switch_to=lambda: [10, 11, 12, 13]
    )
    assert [batch for _, batch, _ in switched] == [0, 1, 10, 11]
    assert [draw for _, _, draw in switched] == [draw for _, _, draw in plain]


def saved_state(backend: str) -> dict[str, Any]:
    engine = DeterministicEngine(lambda e, b: b, backend=backend)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate())
    engine.run([1, 2, 3], max_epochs=2)
    return copy.deepcopy(engine.state_dict())


def with_rng_state(name: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda state: state["rng_states"].__setitem__(name, value)


def with_key(name: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda state: state.__setitem__(name, value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            with_rng_state("random", 1),
            "\\['rng_states'\\]\\['random'\\] is not a random state",
            id="random-int",
        ),
        pytest.param(
            with_rng_state("torch", "x"),
            "\\['rng_states'\\]\\['torch'\\] is not a random state",
            id="torch-str",
        ),
        pytest.param(
            with_rng_state("torch", torch.zeros(3, dtype=torch.uint8)),
            "\\['rng_states'\\]\\['torch'\\] is not a random state",
            id="torch-3-bytes",
        ),
        pytest.param(
            with_rng_state("numpy", (1, 2)),
            "\\['rng_states'\\]\\['numpy'\\] is not a random state",
            id="numpy-pair",
        ),
        pytest.param(
            with_rng_state("cuda", "x"),
            "\\['rng_states'\\]\\['cuda'\\] is not a random state",
            id="cuda-str",
        ),
        pytest.param(
            with_key("seed", 2**64 - 1),
            "\\['seed'\\] should be an int in \\[-2\\*\\*63, 2\\*\\*63\\)",
            id="seed-2**64-1",
        ),
        pytest.param(with_key("seed", 2**70), "\\['seed'\\] should be an int in", id="seed-2**70"),
        pytest.param(
            with_key("data_position", (10**30, 0)),
            "\\['data_position'\\] should be .* \\[0, 2\\*\\*63\\)",
            id="pass-10**30",
        ),
        pytest.param(
            with_key("data_position", (0, 2**63)),
            "\\['data_position'\\] should be",
            id="drawn-2**63",
        ),
    ],
)
def test_a_saved_state_that_would_fail_in_the_run_is_refused_at_load(
    backend: str, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    """Refused at load, naming the key, with nothing loaded: it failed inside every later run,
    with torch's or NumPy's error."""
    pytest.importorskip("numpy")
    state = saved_state(backend)
    change(state)
    engine = DeterministicEngine(lambda e, b: b, backend=backend)
    with pytest.raises(ValueError, match=message):
        engine.load_state_dict(state)
    assert engine.state.iteration == 0 and engine.state.max_epochs is None
    assert engine.state.seed is None
    engine.run([1, 2, 3], max_epochs=2)
    assert engine.state.iteration == 6


@pytest.mark.ignite
@pytest.mark.parametrize("data", ["shuffling loader", "loader", "list"])
def test_a_seed_gives_the_batches_and_random_draws_of_ignites_deterministic_engine(
    backend: str, data: str
) -> None:
    """From the same torch state, ember's and ignite's DeterministicEngine draw the same seed
    and then the same batches and random draws of random, NumPy and torch, run after run."""
    pytest.importorskip("ignite")
    np = pytest.importorskip("numpy")
    import random

    from ignite.engine import DeterministicEngine as IgniteDeterministicEngine

    def make_data() -> Any:
        if data == "list":
            return [0, 1, 2, 3]
        dataset = torch.utils.data.TensorDataset(torch.arange(10))
        return torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=data != "loader")

    def run(engine_class: Callable[..., Any], **kwargs: Any) -> tuple[list[int], list[Any]]:
        seen: list[Any] = []

        def step(engine: Any, batch: Any) -> None:
            value = batch if isinstance(batch, int) else batch[0].tolist()
            draws = (torch.rand(1).item(), random.random(), np.random.rand())
            seen.append((engine.state.iteration, value, draws))

        engine = engine_class(step, **kwargs)
        torch.manual_seed(12)
        seeds = []
        for _ in range(2):  # each run draws a seed of its own
            engine.run(make_data(), max_epochs=3)
            seeds.append(engine.state.seed)
        return seeds, seen

    # ignite's engine switches torch to deterministic algorithms when CUDA is there.
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    try:
        theirs = run(IgniteDeterministicEngine)
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
    ours = run(DeterministicEngine, backend=backend)
    assert ours == theirs


def test_the_rebuilt_loader_keeps_the_loaders_options() -> None:
    """Each pass rebuilds a map-style DataLoader with its order drawn in advance: the options
    that change how batches come (workers' prefetching, pinning device, order) are kept."""
    dataset = torch.utils.data.TensorDataset(torch.arange(6))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=2, shuffle=True, num_workers=1, prefetch_factor=3, in_order=False
    )
    engine = DeterministicEngine(lambda e, b: None)
    engine.run(loader, max_epochs=1)
    assert engine._pass_iterator is not None
    iterator: Any = engine._pass_iterator.iterator  # the rebuilt loader's, its options inside
    assert (iterator._prefetch_factor, iterator._in_order) == (3, False)


def test_a_run_that_goes_on_keeps_its_seed_as_a_resumed_one(backend: str) -> None:
    """run(max_epochs=4) after run(max_epochs=2) goes on with the same seed, so its epochs 3
    and 4 are those of a run resumed from a checkpoint taken after epoch 2 (ignite draws a new
    seed there); a new run after the end draws a new seed, as ignite's does."""

    def batches_of(engine: DeterministicEngine, seen: list[int]) -> DeterministicEngine:
        engine.add_event_handler(
            Events.ITERATION_COMPLETED, lambda e: seen.extend(e.state.batch[0].tolist())
        )
        return engine

    def loader() -> torch.utils.data.DataLoader[Any]:
        dataset = torch.utils.data.TensorDataset(torch.arange(8))
        return torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True)

    torch.manual_seed(5)
    going_on: list[int] = []
    engine = batches_of(DeterministicEngine(lambda e, b: None, backend=backend), going_on)
    engine.run(loader(), max_epochs=2)
    checkpoint = engine.state_dict()
    seed = engine.state.seed
    engine.run(loader(), max_epochs=4)
    assert engine.state.seed == seed

    resumed: list[int] = []
    again = batches_of(DeterministicEngine(lambda e, b: None, backend=backend), resumed)
    again.load_state_dict(checkpoint)
    again.run(loader(), max_epochs=4)
    assert resumed == going_on[16:]

    engine.run(loader(), max_epochs=4)  # a new run: the state starts anew
    assert engine.state.seed != seed
