"""``ember.data.prefetch``: the engine sees exactly the batches of the plain data, already moved.

On CPU the batches are moved with ``.to(device)`` when read ahead; the CUDA path (side stream,
event, ``record_stream``) runs only where a GPU is present. The read-ahead itself is the same
code on both, and a recording transfer checks its order here.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict, defaultdict, namedtuple
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from ember.data import Prefetcher, prefetch
from ember.engine import Engine, Events
from ember.engine.deterministic import DeterministicEngine
from ember.engine.supervised import create_supervised_evaluator, create_supervised_trainer
from ember.metrics import Accuracy

CUDA = torch.cuda.is_available()


def batches(count: int = 5) -> list[torch.Tensor]:
    return [torch.tensor([index]) for index in range(count)]


def seen_by_the_step(make_engine: Callable[..., Engine], data: Any, scenario: Any) -> list[int]:
    seen: list[int] = []

    def step(engine: Engine, batch: torch.Tensor) -> None:
        seen.append(int(batch.tolist()[0]))

    scenario(make_engine(step), data)
    return seen


def run_plain(engine: Engine, data: Any) -> None:
    engine.run(data, max_epochs=3)


def run_shorter_epochs(engine: Engine, data: Any) -> None:
    engine.run(data, max_epochs=4, epoch_length=3)  # the iterator goes on across epochs


def run_max_iters(engine: Engine, data: Any) -> None:
    engine.run(data, max_iters=12)


def run_terminate_epoch(engine: Engine, data: Any) -> None:
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate_epoch())
    engine.run(data, max_epochs=3)


def run_interrupted(engine: Engine, data: Any) -> None:
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=7), lambda e: e.interrupt())
    engine.run(data, max_epochs=3)
    assert engine.state.iteration == 7
    engine.run(data)


def run_resumed_from_state_dict(engine: Engine, data: Any) -> None:
    engine.load_state_dict({"iteration": 7, "epoch_length": 5, "max_epochs": 3})
    engine.run(data)


SCENARIOS = [
    run_plain,
    run_shorter_epochs,
    run_max_iters,
    run_terminate_epoch,
    run_interrupted,
    run_resumed_from_state_dict,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.__name__)
@pytest.mark.parametrize("depth", [1, 2, 7])
def test_the_engine_sees_the_batches_of_the_plain_data(
    make_engine: Callable[..., Engine], scenario: Any, depth: int
) -> None:
    plain = seen_by_the_step(make_engine, batches(), scenario)
    prefetched = seen_by_the_step(make_engine, prefetch(batches(), "cpu", depth=depth), scenario)
    assert prefetched == plain and plain


def test_an_iterator_is_one_pass_also_across_iter_calls(make_engine: Callable[..., Engine]) -> None:
    def scenario(engine: Engine, data: Any) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate_epoch())
        engine.run(data, max_epochs=3, epoch_length=3)

    # terminate_epoch() calls iter(data) again; batches read ahead are not lost
    plain = seen_by_the_step(make_engine, iter(batches(12)), scenario)
    prefetched = seen_by_the_step(make_engine, prefetch(iter(batches(12)), "cpu", 3), scenario)
    assert prefetched == plain == [0, 1, 2, 3, 4, 5, 6, 7]


def test_a_generator_of_unknown_length(make_engine: Callable[..., Engine]) -> None:
    def generator() -> Iterator[torch.Tensor]:
        yield from batches(4)

    def scenario(engine: Engine, data: Any) -> None:
        engine.run(data, max_epochs=1)
        assert engine.state.epoch_length == 4

    assert seen_by_the_step(make_engine, prefetch(generator(), "cpu"), scenario) == [0, 1, 2, 3]


def test_an_exception_of_the_source_is_raised_at_its_batch(
    make_engine: Callable[..., Engine],
) -> None:
    pulled: list[int] = []

    class Failing:
        def __iter__(self) -> Iterator[torch.Tensor]:
            for index in range(6):
                pulled.append(index)
                if index == 3:
                    raise ValueError("batch 3 is broken")
                yield torch.tensor([index])

    iterator = iter(prefetch(Failing(), "cpu", depth=4))
    assert [int(next(iterator)) for _ in range(3)] == [0, 1, 2]
    assert pulled == [0, 1, 2, 3]  # not read past the failure before it was raised
    with pytest.raises(ValueError, match="batch 3 is broken"):
        next(iterator)
    with pytest.raises(StopIteration):  # the generator ended with its exception
        next(iterator)

    seen: list[int] = []
    engine = make_engine(lambda e, batch: seen.append(int(batch)))
    with pytest.raises(ValueError, match="batch 3 is broken"):
        engine.run(prefetch(Failing(), "cpu", depth=4), max_epochs=1)
    assert seen == [0, 1, 2] and engine.state.iteration == 3


def test_depth_bounds_how_far_the_source_is_read_ahead() -> None:
    pulled: list[int] = []

    class Counted:
        def __iter__(self) -> Iterator[int]:
            for index in range(10):
                pulled.append(index)
                yield index

        def __len__(self) -> int:
            return 10

    data = prefetch(Counted(), "cpu", depth=3)
    assert len(data) == 10 and pulled == []  # building reads nothing
    iterator = iter(data)
    assert len(pulled) == 3  # iter() starts the first copies
    for taken in range(1, 11):
        assert next(iterator) == taken - 1
        assert len(pulled) == min(taken + 3, 10)
    with pytest.raises(StopIteration):
        next(iterator)
    assert list(data) == list(range(10))  # each iter() is a new pass


def test_copies_start_ahead_and_are_handed_over_in_order() -> None:
    log: list[tuple[str, int]] = []

    class RecordingTransfer:
        def start(self, batch: int) -> int:
            log.append(("start", batch))
            return batch

        def finish(self, started: int) -> int:
            log.append(("finish", started))
            return started

    data = prefetch(range(4), "cpu", depth=2)
    data._transfer = RecordingTransfer()  # type: ignore[assignment]
    assert list(data) == [0, 1, 2, 3]
    assert log == [
        ("start", 0),
        ("start", 1),
        ("start", 2),  # batch 2 is on its way before batch 0 is handed over
        ("finish", 0),
        ("start", 3),
        ("finish", 1),
        ("finish", 2),
        ("finish", 3),
    ]


Pair = namedtuple("Pair", ["x", "y"])


def test_nested_batches_keep_their_layout_and_non_tensors() -> None:
    counts: defaultdict[str, Any] = defaultdict(int)
    counts["a"] = torch.ones(2)
    batch = {
        "pair": Pair(torch.zeros(2), torch.ones(2, dtype=torch.long)),
        "list": [torch.arange(3), "name", 7, None],
        "ordered": OrderedDict(z=torch.ones(1)),
        "counts": counts,
        "tuple": (torch.zeros(1), 1.5),
    }
    (moved,) = list(prefetch([batch], "meta"))  # a device other than the data's
    assert isinstance(moved["pair"], Pair) and moved["pair"].x.device.type == "meta"
    assert moved["pair"].y.dtype == torch.long
    assert moved["list"][0].device.type == "meta" and moved["list"][1:] == ["name", 7, None]
    assert type(moved["ordered"]) is OrderedDict and moved["ordered"]["z"].is_meta
    assert type(moved["counts"]) is defaultdict and moved["counts"]["a"].is_meta
    assert moved["counts"]["missing"] == 0  # the factory is kept
    assert isinstance(moved["tuple"], tuple) and moved["tuple"][1] == 1.5
    assert batch["pair"].x.device.type == "cpu"  # the source batch is left alone
    (same,) = list(prefetch([batch], "cpu"))
    assert torch.equal(same["list"][0], torch.arange(3))


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ((batches(), "cpu", 0), ValueError, "depth"),
        ((batches(), "cpu", -1), ValueError, "depth"),
        ((batches(), "cpu", 1.5), ValueError, "depth"),
        ((batches(), "cpu", True), ValueError, "depth"),
        ((5, "cpu", 2), TypeError, "data"),
        (("abc", "cpu", 2), TypeError, "data"),
        ((None, "cpu", 2), TypeError, "data"),
        ((batches(), "no such device", 2), ValueError, "device"),
        ((batches(), 3.5, 2), ValueError, "device"),
    ],
)
def test_bad_arguments(arguments: tuple[Any, ...], error: type, message: str) -> None:
    with pytest.raises(error, match=f"Argument {message}"):
        prefetch(*arguments)


def test_len_and_samplers_come_from_the_data() -> None:
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(10)), 4)
    data = prefetch(loader, "cpu")
    assert len(data) == 3
    assert data.sampler is loader.sampler and data.batch_sampler is loader.batch_sampler
    without_len = prefetch(iter(batches()), "cpu")
    with pytest.raises(TypeError, match="has no len"):
        len(without_len)
    assert Engine._get_data_length(without_len) is None  # as the engine asks
    assert "depth=2" in repr(data)


def test_a_distributed_sampler_still_gets_its_epoch(make_engine: Callable[..., Engine]) -> None:
    dataset = torch.utils.data.TensorDataset(torch.arange(8))
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=2, rank=0, seed=1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, sampler=sampler)
    epochs: list[int] = []
    engine = make_engine(lambda e, b: epochs.append(sampler.epoch))
    engine.run(prefetch(loader, "cpu"), max_epochs=2)
    assert epochs == [0, 0, 1, 1]


def test_nothing_is_left_running_after_a_break() -> None:
    closed: list[bool] = []

    def generator() -> Iterator[torch.Tensor]:
        try:
            yield from batches(100)
        finally:
            closed.append(True)

    threads = threading.active_count()
    for batch in prefetch(generator(), "cpu", depth=4):
        if int(batch) == 2:
            break
    gc.collect()
    assert closed == [True]  # the source was released with the iterator
    assert threading.active_count() == threads


def test_deterministic_resume_with_a_shuffling_loader(make_engine: Callable[..., Engine]) -> None:
    dataset = torch.utils.data.TensorDataset(torch.arange(20))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True)

    def trainer(seen: list[list[int]]) -> DeterministicEngine:
        engine: DeterministicEngine = make_engine(
            lambda e, batch: seen.append(batch[0].tolist()), cls=DeterministicEngine
        )
        return engine

    torch.manual_seed(0)
    reference: list[list[int]] = []
    trainer(reference).run(prefetch(loader, "cpu"), max_epochs=3)

    torch.manual_seed(0)
    first: list[list[int]] = []
    stopped = trainer(first)
    stopped.add_event_handler(Events.ITERATION_COMPLETED(once=7), lambda e: e.terminate())
    stopped.run(prefetch(loader, "cpu"), max_epochs=3)
    resumed: list[list[int]] = []
    again = trainer(resumed)
    again.load_state_dict(stopped.state_dict())
    again.run(prefetch(loader, "cpu"))
    assert first + resumed == reference


def test_with_create_supervised_trainer(backend: str) -> None:
    def train(wrap: Callable[[Any], Any]) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = create_supervised_trainer(
            model, optimizer, torch.nn.functional.mse_loss, device="cpu", backend=backend
        )
        x = torch.randn(32, 3)
        data = [(x[i : i + 8], x[i : i + 8].sum(1, keepdim=True)) for i in range(0, 32, 8)]
        trainer.run(wrap(data), max_epochs=3)
        return model.weight.detach().clone()

    assert torch.equal(train(lambda data: prefetch(data, "cpu")), train(lambda data: data))


def test_the_prefetcher_is_an_iterable_not_an_iterator() -> None:
    data = prefetch(batches(3), "cpu")
    assert isinstance(data, Prefetcher)
    assert iter(data) is not iter(data)
    assert [int(b) for b in data] == [int(b) for b in data] == [0, 1, 2]


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_batches_are_complete_when_the_step_sees_them() -> None:
    # Large batches and a busy step stream: a missing wait or record_stream shows as garbage.
    source = [torch.full((1 << 20,), float(index)) for index in range(16)]
    for index, batch in enumerate(prefetch(source, "cuda", depth=3)):
        assert batch.is_cuda
        torch.cuda._sleep(1_000_000)  # the step's stream stays busy while copies go on
        doubled = batch * 2
        assert bool((doubled == 2 * index).all())


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_with_create_supervised_trainer() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_supervised_trainer(model, optimizer, torch.nn.functional.mse_loss, "cuda")
    x = torch.randn(32, 3)
    data = [(x[i : i + 8], x[i : i + 8].sum(1, keepdim=True)) for i in range(0, 32, 8)]
    trainer.run(prefetch(data, "cuda"), max_epochs=2)
    assert trainer.state.iteration == 8


def test_a_terminated_run_releases_the_pass(make_engine: Callable[..., Engine]) -> None:
    closed: list[bool] = []

    class Data:
        def __iter__(self) -> Iterator[torch.Tensor]:
            try:
                yield from batches(10)
            finally:
                closed.append(True)

    engine = make_engine(lambda e, batch: None)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate())
    engine.run(prefetch(Data(), "cpu", depth=4), max_epochs=2)
    gc.collect()
    assert engine.state.iteration == 3 and closed == [True]


def test_with_create_supervised_evaluator(backend: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x = torch.randn(40, 3)
    data = [(x[i : i + 8], (x[i : i + 8].sum(1) > 0).long()) for i in range(0, 40, 8)]

    def accuracy(wrap: Callable[[Any], Any]) -> Any:
        evaluator = create_supervised_evaluator(
            model, metrics={"accuracy": Accuracy()}, device="cpu", backend=backend
        )
        return evaluator.run(wrap(data)).metrics["accuracy"]

    assert accuracy(lambda data: prefetch(data, "cpu", depth=3)) == accuracy(lambda data: data)


class Rewinding:
    """A hand-written loader that is its own iterator and rewinds when iter() is called."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.position = 0

    def __iter__(self) -> Rewinding:
        self.position = 0
        return self

    def __next__(self) -> torch.Tensor:
        if self.position >= self.count:
            raise StopIteration
        self.position += 1
        return torch.tensor([self.position - 1])


class Continuing(Rewinding):
    """The same iterator whose iter() only returns itself: iter() continues its pass."""

    def __iter__(self) -> Continuing:
        return self


@pytest.mark.parametrize("source", [Rewinding, Continuing])
def test_an_iterator_that_rewinds_on_iter_starts_a_new_pass(
    make_engine: Callable[..., Engine], source: type[Rewinding]
) -> None:
    """Each run() calls iter() on the data: a loader that rewinds then starts again from its
    first batch, also when batches of the previous pass were read ahead."""

    def scenario(engine: Engine, data: Any) -> None:
        for _ in range(3):
            engine.run(data, max_epochs=1, epoch_length=2)

    plain = seen_by_the_step(make_engine, source(6), scenario)
    prefetched = seen_by_the_step(make_engine, prefetch(source(6), "cpu", 2), scenario)
    assert prefetched == plain
    assert plain == ([0, 1, 0, 1, 0, 1] if source is Rewinding else [0, 1, 2, 3, 4, 5])


class CtrlCAtTwo(Continuing):
    """An iterator interrupted once, by a Ctrl-C while it reads its batch 2 (which is lost)."""

    def __next__(self) -> torch.Tensor:
        if self.position == 2:
            self.position += 1
            raise KeyboardInterrupt
        return super().__next__()


def consumed(iterator: Iterator[Any]) -> list[Any]:
    seen: list[Any] = []
    while True:
        try:
            seen.append(int(next(iterator)))
        except KeyboardInterrupt:
            seen.append("Ctrl-C")
        except StopIteration:
            return seen


def test_a_ctrl_c_while_reading_ahead_loses_no_batch() -> None:
    """The Ctrl-C is raised when it happens, before the batches read ahead of it (it does not
    wait for its position), and those batches are still handed out afterwards, in order."""
    assert consumed(CtrlCAtTwo(6)) == [0, 1, "Ctrl-C", 3, 4, 5]
    assert consumed(iter(prefetch(CtrlCAtTwo(6), "cpu", depth=2))) == ["Ctrl-C", 0, 1, 3, 4, 5]


def test_a_ctrl_c_during_a_copy_loses_no_batch() -> None:
    """The source gave the batch, then a Ctrl-C came while it was being moved: the batch is
    kept and moved when its turn comes."""
    prefetcher = prefetch(Continuing(5), "cpu", depth=2)
    transfer = prefetcher._get_transfer()
    start = transfer.start
    interrupted = [False]

    def start_interrupted_once(batch: Any) -> Any:
        if int(batch) == 2 and not interrupted[0]:
            interrupted[0] = True
            raise KeyboardInterrupt
        return start(batch)

    transfer.start = start_interrupted_once  # type: ignore[method-assign]
    assert consumed(iter(prefetcher)) == ["Ctrl-C", 0, 1, 2, 3, 4]
