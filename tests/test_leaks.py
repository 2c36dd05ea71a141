"""No references or memory are kept by a run: refcounts after completed, terminated,
interrupted-then-resumed and failed runs; peak memory that does not grow with the number of
iterations; the previous output released before the next step.

tests/test_memory.py covers collection of engines (weakrefs, cycles) and the __del__ count of
batches and outputs on a completed run; this file adds exact refcounts of everything a run
touches, per way of ending, and memory measurements.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import collect_garbage
from ember.engine import Engine, Events


class Token:
    """Something whose refcount is measured."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Token({self.name})"


class StepError(Exception):
    pass


# A logger that records nothing: pytest's log capture keeps every LogRecord, and the one of a
# failed run holds the exception, its traceback and so the engine and the batch until the test
# ends, which would read as a leak.
SILENT = logging.getLogger("ember.tests.leaks.silent")
SILENT.disabled = True

OUTCOMES = (
    "completed",
    "terminated",
    "terminated_skip_completed",
    "terminated_epoch",
    "interrupted_then_resumed",
    "failed",
    "failed_then_resumed",
    "failed_and_swallowed",
    "failed_base_exception",
    "failed_in_filter",
    "failed_in_data",
    "python_fire_event",
)


class Abort(BaseException):
    pass


class Data:
    """Yields the given batches; ``fail_at`` makes __next__ raise at that position."""

    def __init__(self, batches: list[Token], fail_at: int | None) -> None:
        self.batches = batches
        self.fail_at = fail_at

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Token]:
        for position, batch in enumerate(self.batches):
            if position == self.fail_at:
                self.fail_at = None
                raise StepError("data failed")
            yield batch


def scenario(backend: str, outcome: str) -> tuple[Engine, list[Any], Callable[[], None]]:
    """The engine, the objects to watch and a function that runs the scenario to its end."""
    batches = [Token(f"batch{i}") for i in range(4)]
    outputs = [Token(f"output{i}") for i in range(4)]
    handler_arg, handler_kwarg = Token("arg"), Token("kwarg")
    data = Data(batches, 2 if outcome == "failed_in_data" else None)
    failures = {
        "failed": StepError,
        "failed_then_resumed": StepError,
        "failed_and_swallowed": StepError,
        "failed_base_exception": Abort,
    }
    armed = [True]

    def step(engine: Engine, batch: Token) -> Token:
        if outcome in failures and armed[0] and engine.state.iteration == 3:
            armed[0] = False
            raise failures[outcome]("step failed")
        return outputs[batches.index(batch)]

    def plain(engine: Engine, arg: Token, kwarg: Token | None = None) -> None:
        if outcome == "terminated" and engine.state.iteration == 5:
            engine.terminate()
        if outcome == "terminated_skip_completed" and engine.state.iteration == 5:
            engine.terminate(skip_completed=True)
        if outcome == "terminated_epoch" and engine.state.iteration == 2:
            engine.terminate_epoch()
        if outcome == "interrupted_then_resumed" and engine.state.iteration in (2, 6):
            engine.interrupt()

    def every_other(engine: Engine) -> None:
        pass

    def custom_filter(engine: Engine, counter: int) -> bool:
        if outcome == "failed_in_filter" and counter == 3:
            raise StepError("filter failed")
        return counter % 3 == 0

    def filtered(engine: Engine) -> None:
        pass

    def on_exception(engine: Engine, exc: BaseException) -> None:
        pass

    def on_terminate_epoch(engine: Engine, iter_counter: int) -> None:
        pass

    if outcome == "python_fire_event":

        class Subclass(Engine):
            def _fire_event(self, event_name: Any, *args: Any, **kwargs: Any) -> None:
                super()._fire_event(event_name, *args, **kwargs)

        engine: Engine = Subclass(step, backend=backend)
    else:
        engine = Engine(step, backend=backend)
    engine.logger = SILENT
    engine.add_event_handler(Events.ITERATION_COMPLETED, plain, handler_arg, kwarg=handler_kwarg)
    engine.add_event_handler(Events.EPOCH_COMPLETED(every=2), every_other)
    engine.add_event_handler(Events.ITERATION_STARTED(event_filter=custom_filter), filtered)
    engine.add_event_handler(Events.TERMINATE_SINGLE_EPOCH, on_terminate_epoch)
    if outcome == "failed_and_swallowed":
        engine.add_event_handler(Events.EXCEPTION_RAISED, on_exception)

    def run() -> None:
        if outcome in ("failed", "failed_base_exception", "failed_in_filter", "failed_in_data"):
            with pytest.raises((StepError, Abort)):
                engine.run(data, max_epochs=2)
        elif outcome == "failed_then_resumed":
            with pytest.raises(StepError):
                engine.run(data, max_epochs=3)
            engine.run(data, max_epochs=3)
        elif outcome == "interrupted_then_resumed":
            engine.run(data, max_epochs=2)
            assert engine._resume_point is not None
            engine.run(data, max_epochs=2)
            assert engine._resume_point is not None
            engine.run(data, max_epochs=2)
            assert engine.state.iteration == 8
        else:
            engine.run(data, max_epochs=2)

    watched = [
        *batches,
        *outputs,
        handler_arg,
        handler_kwarg,
        data,
        step,
        plain,
        every_other,
        custom_filter,
        filtered,
        on_exception,
        on_terminate_epoch,
    ]
    return engine, watched, run


def refcounts(objects: list[Any]) -> list[int]:
    return [sys.getrefcount(obj) for obj in objects]


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_a_run_keeps_no_reference(backend: str, outcome: str) -> None:
    engine, watched, run = scenario(backend, outcome)
    watched.append(engine)
    collect_garbage()
    before = refcounts(watched)
    run()
    # what the engine legitimately keeps after a run: the last batch and output, the data
    state = engine.state
    state.batch = state.output = state.dataloader = None
    collect_garbage()
    after = refcounts(watched)
    leaked = {repr(obj): a - b for obj, a, b in zip(watched, after, before, strict=True) if a != b}
    assert not leaked, leaked


@pytest.mark.parametrize("outcome", ["completed", "interrupted_then_resumed", "failed"])
def test_the_engine_and_everything_it_ran_are_freed(backend: str, outcome: str) -> None:
    engine, watched, run = scenario(backend, outcome)
    run()
    refs = [weakref.ref(obj) for obj in [engine, *watched] if type(obj).__weakrefoffset__]
    del engine, watched, run
    collect_garbage()
    assert [ref() for ref in refs if ref() is not None] == []


# ---------------------------------------------------------------------------------- memory


def peak_traced_bytes(backend: str, iterations: int) -> int:
    engine = Engine(lambda e, b: b, backend=backend)
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=1000), lambda e: None)
    engine.run(range(100))  # first-run caches (imports, registry decode) are not measured
    collect_garbage()
    tracemalloc.start()
    try:
        engine.run(range(iterations))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


# Bytes a long run may take beyond a short one: a few ints and floats of slack, not per
# iteration (0.1 byte per iteration of the long run would already be 100 KB).
PEAK_SLACK = 16 * 1024


def test_peak_memory_does_not_grow_with_iterations(backend: str) -> None:
    short, long = (10_000, 1_000_000) if backend == "cpp" else (10_000, 100_000)
    small = peak_traced_bytes(backend, short)
    large = peak_traced_bytes(backend, long)
    assert large <= small + PEAK_SLACK, (small, large)


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def malloc_in_use() -> int | None:
    """Bytes in use in the C heap (glibc's mallinfo2), which tracemalloc does not see: the
    compiled loop's own allocations (std::vector, pybind11) go there."""
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = MallInfo2
    return int(libc.mallinfo2().uordblks)


def test_c_heap_does_not_grow_over_many_runs(backend: str) -> None:
    if malloc_in_use() is None:
        pytest.skip("needs glibc's mallinfo2")
    engine = Engine(lambda e, b: b, backend=backend)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: None)
    engine.add_event_handler(Events.EPOCH_COMPLETED(every=2), lambda e: None)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), lambda e: e.interrupt())

    def runs(count: int) -> None:
        for _ in range(count):
            engine.run(range(20), max_epochs=2)  # interrupted at iteration 1
            engine.run(range(20), max_epochs=2)  # resumed to the end

    runs(50)
    collect_garbage()
    before = malloc_in_use()
    runs(2000)
    collect_garbage()
    after = malloc_in_use()
    assert before is not None
    assert after is not None
    # 4000 runs: a leak of even 16 bytes a run would show as 64 KB
    assert after - before < 32 * 1024, (before, after)


# ---------------------------------------------------------------------------------- outputs


class Big:
    """A large output: ``alive`` counts the instances not yet freed."""

    alive = 0

    def __init__(self) -> None:
        Big.alive += 1
        self.payload = bytearray(4 * 1024 * 1024)

    def __del__(self) -> None:
        Big.alive -= 1


@pytest.mark.parametrize("with_handlers", [False, True])
def test_previous_output_is_released_before_the_next_step(
    backend: str, with_handlers: bool
) -> None:
    previous: list[weakref.ref[Big]] = []
    alive_at_step: list[int] = []
    previous_dead: list[bool] = []

    def step(engine: Engine, batch: int) -> Big:
        alive_at_step.append(Big.alive)
        previous_dead.append(not previous or previous[-1]() is None)
        output = Big()
        previous.append(weakref.ref(output))
        return output

    engine = Engine(step, backend=backend)
    if with_handlers:
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: None)
        engine.add_event_handler(Events.GET_BATCH_STARTED, lambda e: None)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, lambda e: None)
    Big.alive = 0
    engine.run(range(6), max_epochs=2)
    assert alive_at_step == [0] * 12
    assert all(previous_dead)
    assert Big.alive == 1  # the last output stays in state.output
    engine.state.output = None
    assert Big.alive == 0


def test_a_large_output_is_never_held_twice(backend: str) -> None:
    """Measured with tracemalloc: over 20 steps that each return 4 MiB, the peak stays near one
    output (plus the one being built), never two outputs kept by the loop plus a new one."""
    size = 4 * 1024 * 1024
    engine = Engine(lambda e, b: bytearray(size), backend=backend)
    engine.run(range(2))
    engine.state.output = None
    tracemalloc.start()
    try:
        engine.run(range(20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * size, peak


def test_previous_batch_is_released_before_the_next_one_is_fetched(backend: str) -> None:
    made: list[weakref.ref[Big]] = []
    previous_dead: list[bool] = []

    class Batches:
        def __iter__(self) -> Batches:
            return self

        def __next__(self) -> Big:
            if len(made) == 8:
                raise StopIteration
            previous_dead.append(not made or made[-1]() is None)
            batch = Big()
            made.append(weakref.ref(batch))
            return batch

    engine = Engine(lambda e, b: None, backend=backend)
    engine.run(Batches(), max_epochs=1)
    assert previous_dead == [True] * 8
