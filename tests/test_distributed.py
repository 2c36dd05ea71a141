"""ember.distributed with real processes: 2 spawned by ``Parallel``, 2 "nodes" under torchrun.

``tests/isolated/dist_scenario.py`` runs once per launch (module-scoped): every rank evaluates
two data sets sharded by ``auto_dataloader`` (12 and 13 samples: 13 does not divide by 2),
trains a small model with DDP for 3 epochs, and writes a checkpoint with ``one_rank_only``, on
each engine backend. The single-process reference comes from the same functions, run here.
Every collective runs under a 20 s group timeout and every child under the subprocess timeout
below, so a hang fails the test instead of blocking it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from launch import engine_backends, launch_env

ISOLATED = Path(__file__).resolve().parent / "isolated"
SCENARIO = ISOLATED / "dist_scenario.py"
INIT = ISOLATED / "dist_init.py"
TIMEOUT = 90  # seconds, for any launch: far above a run (~10 s), far below "hangs forever"
WORLD_SIZE = 2


def _load_scenario() -> Any:
    spec = importlib.util.spec_from_file_location("dist_scenario", SCENARIO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


scenario = _load_scenario()
# The groups' timeout, far above TIMEOUT: a launch that ends did not wait for a collective or
# the rendezvous to time out.
GROUP_TIMEOUT = scenario.TIMEOUT.total_seconds()
assert GROUP_TIMEOUT > 3 * TIMEOUT


ENGINE_BACKENDS = engine_backends()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _torchrun() -> list[str]:
    found = shutil.which("torchrun")
    # torchrun is the console script of torch.distributed.run: same program either way.
    return [found] if found else [sys.executable, "-m", "torch.distributed.run"]


def _start(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command,
        env=env or launch_env(EMBER_BACKEND=ENGINE_BACKENDS[0]),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(processes: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    deadline = time.monotonic() + TIMEOUT
    results = []
    for process in processes:
        try:
            output, _ = process.communicate(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            pytest.fail(f"a launch did not end within {TIMEOUT} s: {process.args}")
        results.append((process.returncode, output))
    return results


def launch(kind: str, out_dir: Path, mode: str, backends: list[str]) -> list[tuple[int, str]]:
    """Run the scenario as ``kind`` ("spawn" or "torchrun", 2 nodes of 1 process)."""
    arguments = [str(out_dir), kind, mode, ",".join(backends)]
    if kind == "spawn":
        return _finish([_start([sys.executable, str(SCENARIO), *arguments])])
    port = _free_port()
    nodes = [
        _start(
            [
                *_torchrun(),
                "--nnodes", "2",
                "--nproc-per-node", "1",
                "--node-rank", str(node),
                "--master-addr", "127.0.0.1",
                "--master-port", str(port),
                "--monitor-interval", "0.1",
                str(SCENARIO),
                *arguments,
            ]
        )
        for node in range(2)
    ]  # fmt: skip
    return _finish(nodes)


_RUNS: dict[str, tuple[Path, list[dict[str, Any]]]] = {}


@pytest.fixture(scope="module", params=["spawn", "torchrun"])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``(out_dir, [rank 0's result, rank 1's result])`` of a successful launch."""
    kind = str(request.param)
    if kind not in _RUNS:
        out_dir = tmp_path_factory.mktemp(kind)
        for code, output in launch(kind, out_dir, "ok", ENGINE_BACKENDS):
            assert code == 0, output
        results = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2)]
        _RUNS[kind] = (out_dir, results)
    return kind, *_RUNS[kind]


_REFERENCE: dict[str, Any] = {}


def reference(backend: str) -> dict[str, Any]:
    """The single-process run over the whole data: the same functions, no group."""
    if backend not in _REFERENCE:
        evaluations = {
            str(size): scenario.evaluate(
                DataLoader(scenario.classification_data(size), batch_size=4), backend
            )
            for size in scenario.EVAL_SIZES
        }
        data = scenario.regression_data()
        # The global order of the sharded run: one DistributedSampler over all of the data.
        sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True)
        loader = DataLoader(data, batch_size=scenario.GLOBAL_BATCH, sampler=sampler)
        _REFERENCE[backend] = {"evaluations": evaluations, "train": scenario.train(loader, backend)}
    return _REFERENCE[backend]


# ---------------------------------------------------------------------------------- tests
def test_every_rank_knows_its_place(run: Any) -> None:
    kind, _, results = run
    for rank, result in enumerate(results):
        assert result["rank"] == rank
        assert result["world_size"] == WORLD_SIZE
        assert result["backend"] == "gloo"
        assert result["device"] == "cpu"
        assert result["local_rank"] == (rank if kind == "spawn" else 0)
        if kind == "spawn":
            assert (result["nnodes"], result["nproc_per_node"], result["node_rank"]) == (1, 2, 0)
        else:
            assert (result["nnodes"], result["nproc_per_node"], result["node_rank"]) == (2, 1, rank)


def test_collectives(run: Any) -> None:
    _, _, results = run
    for result in results:
        assert result["collectives"] == {
            "sum": 3,
            "max": [1.5, 1.0],
            "and": False,
            "numbers": [0, 10],
            "strings": ["r", "rr"],
            "tensors": [0, 0, 1],
            "broadcast": "from rank 0",
            "broadcast_tensor": [7.0, 7.0],
            "broadcast_transposed": [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]],
            "sum_of_layouts": [[0.0, 6.0], [2.0, 8.0], [4.0, 10.0]],
        }


def test_arguments_that_fit_no_rank_are_refused_on_every_rank(run: Any) -> None:
    """Each rank raises alike (none waits for another in a collective): a batch size below 1
    (it was rounded up to 1), fewer samples than ranks for unpadded shards (a rank without data
    failed its evaluation while the others waited in the metrics' collectives), and a
    save_on_rank that is no rank (no process wrote, while last_checkpoint named the file)."""
    _, _, results = run
    for result in results:
        refused = result["refused"]
        assert set(refused) == {"batch_size", "too_few_samples", "save_on_rank"}
        assert "batch_size should be a positive integer, got 0" in refused["batch_size"]
        assert "1 sample(s), fewer than the 2 ranks" in refused["too_few_samples"]
        assert "save_on_rank=2 is no rank of this group of 2" in refused["save_on_rank"]


@pytest.mark.parametrize("size", scenario.EVAL_SIZES)
def test_metrics_over_shards_equal_the_single_process_values(run: Any, size: int) -> None:
    _, _, results = run
    for backend in ENGINE_BACKENDS:
        expected = reference(backend)["evaluations"][str(size)]["metrics"]
        shards = [r["engines"][backend]["evaluations"][str(size)] for r in results]
        # Sharded without padding: every sample once, rank 0 takes the odd one out.
        seen = [shard["seen"] for shard in shards]
        assert sorted(seen[0] + seen[1]) == list(range(size))
        assert [len(s) for s in seen] == [(size + 1) // 2, size // 2]
        for shard in shards:
            assert shard["metrics"].keys() == expected.keys()
            for name, value in expected.items():
                torch.testing.assert_close(
                    torch.tensor(shard["metrics"][name], dtype=torch.float64),
                    torch.tensor(value, dtype=torch.float64),
                    rtol=1e-12,
                    atol=1e-12,
                    msg=lambda text, name=name, backend=backend: f"{backend} {name}: {text}",
                )
    # And not only equal to our own single-process run: accuracy from its definition.
    data = scenario.classification_data(size)
    accuracy = (data.tensors[1].argmax(dim=1) == data.tensors[2]).double().mean().item()
    assert results[0]["engines"][ENGINE_BACKENDS[0]]["evaluations"][str(size)]["metrics"][
        "accuracy"
    ] == pytest.approx(accuracy)


def test_a_rank_that_saw_nothing_adds_nothing(run: Any) -> None:
    _, _, results = run
    assert [r["nothing_seen"] for r in results] == [[1.0, 1.0, 0.5]] * 2
    # of the values' dtype on every rank (the rank that saw nothing answered float64)
    assert [r["nothing_seen_dtype"] for r in results] == ["torch.float32"] * 2


def test_ddp_training_matches_a_single_process_with_the_same_global_batch(run: Any) -> None:
    _, out_dir, results = run
    for backend in ENGINE_BACKENDS:
        weights = [
            torch.load(out_dir / f"weights_{backend}_rank{r}.pt", weights_only=True)
            for r in range(2)
        ]
        expected = reference(backend)["train"]
        for key, value in weights[0].items():
            assert torch.equal(value, weights[1][key]), f"{backend}: ranks differ on {key}"
            torch.testing.assert_close(value, expected["weights"][key], rtol=0, atol=1e-5)
        assert results[0]["engines"][backend]["batch_size"] == scenario.GLOBAL_BATCH // 2
        assert results[0]["engines"][backend]["sampler"] == "DistributedSampler"
        # RunningAverage of the loss: the mean over ranks of each rank's running average.
        losses = [r["engines"][backend]["running_loss"] for r in results]
        assert losses[0] == losses[1]


def test_each_sampler_epoch_differs(run: Any) -> None:
    _, _, results = run
    for backend in ENGINE_BACKENDS:
        epochs = [r["engines"][backend]["per_epoch"] for r in results]
        orders = []
        for epoch in range(1, scenario.EPOCHS + 1):
            shards = [e[str(epoch)] for e in epochs]
            assert sorted(shards[0] + shards[1]) == list(range(scenario.TRAIN_SIZE))
            # The engine called set_epoch(epoch - 1): DistributedSampler's order of that epoch.
            generator = torch.Generator().manual_seed(epoch - 1)
            order = torch.randperm(scenario.TRAIN_SIZE, generator=generator).tolist()
            assert shards == [order[0::2], order[1::2]]
            orders.append(order)
        assert len({tuple(order) for order in orders}) == scenario.EPOCHS
        for result in results:
            assert result["engines"][backend]["sampler_epochs"] == list(range(scenario.EPOCHS))


def test_the_checkpoint_is_written_once(run: Any) -> None:
    _, out_dir, _ = run
    for backend in ENGINE_BACKENDS:
        assert (out_dir / f"writers_{backend}.txt").read_text() == "0\n"
        checkpoint = torch.load(out_dir / f"checkpoint_{backend}.pt", weights_only=True)
        weights = torch.load(out_dir / f"weights_{backend}_rank0.pt", weights_only=True)
        assert checkpoint["epoch"] == scenario.EPOCHS
        for key, value in weights.items():
            assert torch.equal(checkpoint["model"][key], value)


def test_a_failing_spawned_rank_ends_the_run_with_its_error(tmp_path: Path) -> None:
    # Ending within launch's TIMEOUT, below the group's timeout, is the proof that the other
    # rank was stopped rather than left waiting for its collective to time out.
    [(code, output)] = launch("spawn", tmp_path, "fail", ENGINE_BACKENDS[:1])
    assert code != 0
    assert "ValueError: rank 1 fails on purpose at iteration 3" in output
    assert "raised on rank 1 of 2" in output


def test_a_spawned_rank_that_dies_without_an_exception_is_named(tmp_path: Path) -> None:
    [(code, output)] = launch("spawn", tmp_path, "exit", ENGINE_BACKENDS[:1])
    assert code != 0
    assert "WorkerError" in output
    assert "rank 1 of 2 (local rank 1) exited with code 3" in output


def test_a_failing_torchrun_node_ends_both_nodes(tmp_path: Path) -> None:
    (code0, output0), (code1, output1) = launch("torchrun", tmp_path, "fail", ENGINE_BACKENDS[:1])
    assert code1 != 0 and "ValueError: rank 1 fails on purpose at iteration 3" in output1
    assert "raised on rank 1 of 2" in output1
    # Rank 0 was waiting in DDP's gradient all-reduce: it fails too, within launch's TIMEOUT,
    # below the group's timeout: it did not wait for the all-reduce to time out.
    assert code0 != 0, output0


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_finalize_stops_the_group_workers_after_ddp() -> None:
    [(code, output)] = _finish([_start([sys.executable, str(ISOLATED / "dist_teardown.py")])])
    assert code == 0, output
    found = re.search(r"gloo workers during (\d+) after (\d+)", output)
    assert found is not None, output
    assert int(found[1]) > 0 and int(found[2]) == 0, output


def test_mismatched_world_sizes_and_a_missing_rank_fail_fast() -> None:
    def start(rank: int, world_size: int, port: int, timeout: float) -> subprocess.Popen[str]:
        env = {
            **launch_env(EMBER_BACKEND=ENGINE_BACKENDS[0]),
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        return _start([sys.executable, str(INIT), str(timeout)], env)

    mismatch_port, missing_port = _free_port(), _free_port()
    # The mismatched pair would wait GROUP_TIMEOUT for each other, far longer than _finish lets
    # them run: ending at all shows that the mismatch was seen at once.
    processes = [
        start(0, 2, mismatch_port, GROUP_TIMEOUT),
        start(1, 3, mismatch_port, GROUP_TIMEOUT),
        start(0, 2, missing_port, 3),  # rank 1 never comes
    ]
    (code0, out0), (code1, out1), (code2, out2) = _finish(processes)
    for code, output in ((code0, out0), (code1, out1)):
        assert code != 0, output
        assert "do not form one group" in output, output
        assert "world size 2" in output and "world size 3" in output, output
    assert code2 != 0 and "rank 1 did not join within 0:00:03" in out2, out2
