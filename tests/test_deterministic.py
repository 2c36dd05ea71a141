"""DeterministicEngine: exact mid-epoch resume after SIGKILL, and its building blocks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

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


_REFERENCES: dict[str, dict] = {}


def uninterrupted(backend: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
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


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("data_position", 5, "data_position'\\] should be \\(data pass, batches drawn\\)"),
        ("data_position", (0, 1, 2), "data_position'\\] should be"),
        ("data_position", (0, 1.5), "data_position'\\] should be"),
        ("seed", "x", "seed'\\] should be an int or None, got 'x'"),
        ("seed", 1.5, "seed'\\] should be an int or None"),
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
