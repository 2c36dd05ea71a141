"""ember.distributed in this process: no group, a group of one, launcher variables without a
group, bad input, samplers. (Several processes: tests/test_distributed.py.)"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from torch.multiprocessing.spawn import ProcessExitedException, ProcessRaisedException
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

import ember.distributed as edist
from ember.distributed._launcher import _failure, _record_failure, _Spawn
from ember.metrics import Accuracy, Average, Loss, Precision

LAUNCH_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_USE_AGENT_STORE",
)


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No launcher variables, and no group left behind."""
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not edist.is_initialized()
    yield
    edist.finalize()


@pytest.fixture
def launched_as_rank_1_of_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")


@pytest.fixture
def group_of_one() -> Iterator[None]:
    edist.initialize("gloo", timeout=timedelta(seconds=20))
    yield
    edist.finalize()


# ------------------------------------------------------------------------------- no group
def test_without_a_group_this_process_is_rank_0_of_1() -> None:
    assert (edist.get_rank(), edist.get_world_size(), edist.get_local_rank()) == (0, 1, 0)
    assert (edist.get_node_rank(), edist.get_nnodes(), edist.get_nproc_per_node()) == (0, 1, 1)
    assert edist.backend() is None
    assert edist.device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_without_a_group_collectives_return_their_input() -> None:
    tensor = torch.tensor([1.0, 2.0])
    assert edist.all_reduce(tensor) is tensor
    assert edist.all_reduce(3) == 3
    assert edist.all_reduce(2.5, op="max") == 2.5
    assert edist.all_gather(tensor) is tensor
    assert edist.all_gather(torch.tensor(4)).tolist() == [4]
    assert edist.all_gather(7) == [7]
    assert edist.all_gather("text") == ["text"]
    assert edist.broadcast("value") == "value"
    assert edist.broadcast(tensor) is tensor
    assert edist.barrier() is None


def test_one_rank_only_runs_in_a_single_process() -> None:
    calls = []

    @edist.one_rank_only(with_barrier=True)
    def save(value: int) -> int:
        calls.append(value)
        return value * 2

    assert save(21) == 42
    assert calls == [21]
    with pytest.raises(ValueError, match="rank 1 does not exist in a group of 1"):
        edist.one_rank_only(rank=1)(lambda: None)()
    with pytest.raises(ValueError, match="non-negative int"):
        edist.one_rank_only(rank=-1)
    with edist.one_rank_first():
        calls.append("first")
    assert calls[-1] == "first"


def test_bad_collective_arguments() -> None:
    with pytest.raises(ValueError, match="op should be one of"):
        edist.all_reduce(1, op="MEAN")
    with pytest.raises(TypeError, match=r"all_reduce expects a torch\.Tensor or a number"):
        edist.all_reduce("1")
    with pytest.raises(TypeError, match="all_gather expects"):
        edist.all_gather([1, 2])
    with pytest.raises(ValueError, match=r"src should be a rank in \[0, 1\)"):
        edist.broadcast(1, src=1)


def test_auto_helpers_in_a_single_process() -> None:
    dataset = TensorDataset(torch.arange(10))
    loader = edist.auto_dataloader(dataset, batch_size=4, shuffle=True)
    assert isinstance(loader.sampler, RandomSampler)
    assert loader.batch_size == 4
    model = torch.nn.Linear(2, 1)
    assert edist.auto_model(model) is model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert edist.auto_optim(optimizer) is optimizer
    with pytest.raises(TypeError, match=r"auto_model: expected a torch\.nn\.Module"):
        edist.auto_model("model")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"auto_optim: expected a torch\.optim\.Optimizer"):
        edist.auto_optim(model)  # type: ignore[arg-type]


# ------------------------------------------------------------- launched, but no group: errors
@pytest.mark.usefixtures("launched_as_rank_1_of_2")
@pytest.mark.parametrize(
    "call",
    [
        lambda: edist.all_reduce(1),
        lambda: edist.all_gather(torch.ones(1)),
        lambda: edist.broadcast("x"),
        edist.barrier,
        edist.one_rank_only()(lambda: None),
        lambda: edist.auto_dataloader(TensorDataset(torch.arange(4)), batch_size=2),
        lambda: edist.auto_model(torch.nn.Linear(1, 1)),
        lambda: edist.UnpaddedDistributedSampler(TensorDataset(torch.arange(4))),
    ],
    ids=[
        "all_reduce",
        "all_gather",
        "broadcast",
        "barrier",
        "one_rank_only",
        "auto_dataloader",
        "auto_model",
        "sampler",
    ],
)
def test_a_launched_process_without_a_group_refuses_collectives(call: object) -> None:
    assert edist.get_world_size() == 1  # the group's size: there is none
    with pytest.raises(edist.GroupNotInitializedError, match="rank 1 of 2") as info:
        call()  # type: ignore[operator]
    assert "ember.distributed.initialize(backend)" in str(info.value)


@pytest.mark.usefixtures("launched_as_rank_1_of_2")
def test_a_launched_process_without_a_group_refuses_to_compute_a_metric() -> None:
    metric = Accuracy()
    metric.update((torch.tensor([1, 0]), torch.tensor([1, 1])))
    with pytest.raises(edist.GroupNotInitializedError, match=r"Accuracy.compute\(\)"):
        metric.compute()


def test_a_launch_of_one_process_is_a_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert edist.all_reduce(5) == 5


# --------------------------------------------------------------------------- a group of one
@pytest.mark.usefixtures("group_of_one")
def test_a_group_of_one() -> None:
    assert edist.is_initialized()
    assert edist.backend() == "gloo"
    assert edist.device() == torch.device("cpu")
    assert (edist.get_rank(), edist.get_world_size(), edist.get_local_rank()) == (0, 1, 0)
    tensor = torch.tensor([1, 2])
    reduced = edist.all_reduce(tensor)
    assert reduced is not tensor and reduced.tolist() == [1, 2]
    assert edist.all_reduce(True, op="AND") is True
    assert edist.all_reduce(2) == 2 and isinstance(edist.all_reduce(2), int)
    assert edist.all_reduce(torch.tensor([True, False]), op="OR").tolist() == [True, False]
    assert edist.all_gather(torch.tensor(3)).tolist() == [3]
    assert edist.all_gather("s") == ["s"]
    assert edist.broadcast({"any": "object"}) == {"any": "object"}
    edist.barrier()
    with pytest.raises(RuntimeError, match="already initialized"):
        edist.initialize("gloo")
    edist.finalize()
    assert not edist.is_initialized() and edist.backend() is None
    edist.finalize()  # twice is fine


@pytest.mark.usefixtures("group_of_one")
def test_metrics_in_a_group_of_one_are_unchanged() -> None:
    accuracy, loss, average = Accuracy(), Loss(torch.nn.functional.mse_loss), Average()
    accuracy.update((torch.tensor([1, 0, 1]), torch.tensor([1, 1, 1])))
    loss.update((torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0])))
    average.update(torch.tensor([[1.0], [3.0]]))
    assert accuracy.compute() == pytest.approx(2 / 3)
    assert loss.compute() == pytest.approx(2.0)
    assert average.compute() == pytest.approx(2.0)
    with pytest.raises(Exception, match="must have at least one example"):
        Precision().compute()


def test_initialize_refuses_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="Unknown or unavailable backend 'bogus'"):
        edist.initialize("bogus")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="nccl needs CUDA GPUs"):
            edist.initialize("nccl")
    with pytest.raises(ValueError, match="timeout should be positive"):
        edist.initialize("gloo", timeout=0)
    with pytest.raises(TypeError, match=r"timeout should be a datetime\.timedelta"):
        edist.initialize("gloo", timeout="10")  # type: ignore[arg-type]
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK missing"):
        edist.initialize("gloo")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="0 <= RANK < WORLD_SIZE"):
        edist.initialize("gloo")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK='x' should be an integer"):
        edist.initialize("gloo")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="needs MASTER_ADDR and MASTER_PORT"):
        edist.initialize("gloo")
    assert not edist.is_initialized()


# ---------------------------------------------------------------------------------- Parallel
def _report(local_rank: int, value: int) -> tuple[int, int, str | None, int]:
    return local_rank, value, edist.backend(), edist.get_world_size()


def test_parallel_without_backend_runs_here_without_a_group() -> None:
    with edist.Parallel() as parallel:
        assert parallel.mode == "single"
        assert parallel.run(_report, 5) == (0, 5, None, 1)
    assert edist.Parallel().run(_report, 6) == (0, 6, None, 1)  # without `with`, too


def test_parallel_with_a_backend_alone_is_a_group_of_one() -> None:
    with edist.Parallel(backend="gloo", timeout=20) as parallel:
        assert parallel.mode == "group-of-one"
        assert parallel.run(_report, 1) == (0, 1, "gloo", 1)
    assert not edist.is_initialized()


@pytest.mark.usefixtures("group_of_one")
def test_parallel_in_an_existing_group_attaches() -> None:
    with edist.Parallel(nproc_per_node=1) as parallel:
        assert parallel.mode == "attached"
        assert parallel.run(_report, 2) == (0, 2, "gloo", 1)
    assert edist.is_initialized()  # not its group: left as it was
    with pytest.raises(ValueError, match="nproc_per_node=2"):
        edist.Parallel(nproc_per_node=2).run(_report, 0)


def test_parallel_under_a_launcher_checks_nproc_per_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    parallel = edist.Parallel(backend="gloo", nproc_per_node=2)
    assert parallel.mode == "launched"
    with pytest.raises(ValueError, match="leave nproc_per_node out when a launcher"):
        parallel.run(_report, 0)
    assert not edist.is_initialized()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nproc_per_node": 0}, "nproc_per_node should be a positive int"),
        ({"nproc_per_node": 1, "nnodes": 0}, "nnodes should be a positive int"),
        ({"nproc_per_node": 1, "nnodes": 2, "node_rank": 2}, r"node_rank should be in \[0, 2\)"),
        ({"nproc_per_node": 1, "nnodes": 2}, "nnodes > 1 needs master_port"),
        ({"nnodes": 2, "master_port": 1234}, "nnodes > 1 needs nproc_per_node"),
        ({"master_port": 70000}, "master_port should be a port number"),
        ({"backend": "bogus"}, "Unknown or unavailable backend"),
        ({"start_method": "thread"}, "start_method should be"),
        ({"timeout": -1}, "timeout should be positive"),
    ],
)
def test_parallel_refuses_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        edist.Parallel(**kwargs)  # type: ignore[arg-type]


def test_parallel_run_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="fn should be callable"):
        edist.Parallel().run(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("size", [1, 12, 13, 14])
@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_the_unpadded_sampler_takes_every_sample_once(
    size: int, world_size: int, shuffle: bool
) -> None:
    dataset = TensorDataset(torch.arange(size))
    shards = []
    for rank in range(world_size):
        sampler = edist.UnpaddedDistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle
        )
        sampler.set_epoch(3)
        shards.append(list(sampler))
        assert len(sampler) == len(shards[-1])
    assert sorted(index for shard in shards for index in shard) == list(range(size))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_the_unpadded_sampler_shuffles_per_epoch() -> None:
    sampler = edist.UnpaddedDistributedSampler(
        list(range(50)), num_replicas=2, rank=0, shuffle=True
    )
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert len({tuple(order) for order in orders}) == 3
    assert isinstance(sampler, torch.utils.data.distributed.DistributedSampler)


def test_the_proxy_sampler_shards_a_random_sampler_alike_on_every_rank() -> None:
    data = list(range(11))
    state = torch.random.get_rng_state()
    shards = []
    for rank in range(2):
        torch.manual_seed(rank)  # different global states: the order must not depend on them
        sampler = edist.DistributedProxySampler(RandomSampler(data), num_replicas=2, rank=rank)
        sampler.set_epoch(1)
        shards.append(list(sampler))
    torch.random.set_rng_state(state)
    assert [len(shard) for shard in shards] == [6, 6]  # padded to 12, as DistributedSampler
    assert set(shards[0]) | set(shards[1]) == set(data)
    with pytest.raises(TypeError, match="already distributed"):
        edist.DistributedProxySampler(
            edist.UnpaddedDistributedSampler(data, num_replicas=1, rank=0)
        )


def test_dataloader_of_an_unpadded_sampler_loads_a_shard() -> None:
    dataset = TensorDataset(torch.arange(7))
    sampler = edist.UnpaddedDistributedSampler(dataset, num_replicas=2, rank=1)
    loader = DataLoader(dataset, batch_size=2, sampler=sampler)
    assert [batch[0].tolist() for batch in loader] == [[1, 3], [5]]


def test_the_module_lists_what_it_exports() -> None:
    for name in edist.__all__:
        assert hasattr(edist, name), name
    assert os.environ.get("WORLD_SIZE") is None


def test_spawning_refuses_a_function_it_cannot_send() -> None:
    with pytest.raises(TypeError, match="cannot be sent to spawned processes"):
        edist.Parallel(backend="gloo", nproc_per_node=2).run(lambda local_rank: None)


@pytest.mark.usefixtures("launched_as_rank_1_of_2")
def test_handlers_can_refuse_to_run_without_the_group() -> None:
    with pytest.raises(edist.GroupNotInitializedError, match="Checkpoint was called"):
        edist.refuse_without_group("Checkpoint")


def test_ranks_above_zero_keep_ember_info_logging_quiet() -> None:
    import logging

    from ember.distributed import _context

    logger = logging.getLogger("ember")
    level = logger.level
    try:
        _context._quiet_other_ranks(0)
        assert logger.level == level
        _context._quiet_other_ranks(1)
        assert (
            logging.getLogger("ember.engine.engine.Engine").getEffectiveLevel() == logging.WARNING
        )
    finally:
        logger.setLevel(level)


# ------------------------------------------------------------- which rank a spawned failure names
def _spawn_spec(error_dir: Path) -> _Spawn:
    return _Spawn("gloo", timedelta(seconds=5), 2, 1, 0, "127.0.0.1", 29500, str(error_dir))


def test_ranks_stopped_by_join_do_not_hide_the_rank_that_raised(tmp_path: Path) -> None:
    spec = _spawn_spec(tmp_path)
    _record_failure(spec, 1, 1, ValueError("rank 1 fails"))
    # torch's join found rank 1 failing and sent SIGTERM to rank 0 before it recorded anything
    error = _failure(ProcessRaisedException("trace", 1, 0), spec, [-signal.SIGTERM, 1])
    assert isinstance(error, ValueError)
    assert "raised on rank 1 of 2" in "".join(error.__notes__)


def test_a_rank_that_died_silently_is_the_cause_even_when_a_peer_recorded_first(
    tmp_path: Path,
) -> None:
    spec = _spawn_spec(tmp_path)
    _record_failure(spec, 1, 1, RuntimeError("connection closed by peer"))
    error = _failure(ProcessRaisedException("trace", 1, 0), spec, [3, 1])
    assert isinstance(error, edist.WorkerError)
    assert "rank 0 of 2 (local rank 0) exited with code 3" in str(error)


def test_the_rank_join_found_killed_by_sigterm_is_the_cause(tmp_path: Path) -> None:
    spec = _spawn_spec(tmp_path)
    _record_failure(spec, 1, 1, RuntimeError("connection closed by peer"))
    exited = ProcessExitedException(
        "process 0 terminated with signal SIGTERM",
        error_index=0,
        error_pid=0,
        exit_code=-signal.SIGTERM,
        signal_name="SIGTERM",
    )
    error = _failure(exited, spec, [-signal.SIGTERM, 1])
    assert isinstance(error, edist.WorkerError)
    assert "rank 0 of 2 (local rank 0) was killed by signal SIGTERM" in str(error)


@pytest.mark.usefixtures("group_of_one")
def test_a_zero_redundancy_optimizer_is_gathered_before_it_is_saved(tmp_path: Path) -> None:
    """Each rank holds a shard of its state: the checkpointer gathers it to the writing rank
    (torch's state_dict() refuses an optimizer not consolidated), as ignite does."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    from ember.engine import Engine, Events
    from ember.handlers import Checkpoint, DiskSaver

    model = torch.nn.Linear(2, 1)
    optimizer = ZeroRedundancyOptimizer(
        model.parameters(), optimizer_class=torch.optim.SGD, lr=0.1, momentum=0.9
    )

    def step(engine: Engine, batch: int) -> None:
        optimizer.zero_grad()
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()

    trainer = Engine(step)
    checkpoint = Checkpoint({"model": model, "optimizer": optimizer}, DiskSaver(tmp_path))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    trainer.run([0], max_epochs=2)
    saved = torch.load(checkpoint.last_checkpoint, weights_only=True)
    assert set(saved["optimizer"]) == {"state", "param_groups"}
    assert saved["optimizer"]["param_groups"][0]["momentum"] == 0.9
