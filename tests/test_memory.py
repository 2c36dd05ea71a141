"""Engines are freed by reference counting, or by the cycle collector; no references leak."""

from __future__ import annotations

import gc
import sys
import weakref
from typing import Any

from conftest import collect_garbage
from ember.engine import Engine, Events


class Batch:
    pass


def build_engine(backend: str) -> Engine:
    engine = Engine(lambda e, b: b, backend=backend)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: None)
    engine.add_event_handler(Events.EPOCH_COMPLETED(every=2), lambda e: None)
    engine.add_event_handler(Events.STARTED(event_filter=lambda e, n: True), lambda e: None)
    return engine


def test_engine_is_freed_by_reference_counting(backend: str) -> None:
    engine = build_engine(backend)
    engine.run([1, 2, 3], max_epochs=2)
    ref = weakref.ref(engine)
    gc.disable()
    try:
        del engine
        assert ref() is None
    finally:
        gc.enable()


def test_interrupted_engine_is_freed_and_fires_nothing(backend: str) -> None:
    fired: list[str] = []
    engine = build_engine(backend)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.interrupt())
    engine.add_event_handler(Events.EXCEPTION_RAISED, lambda e, exc: fired.append("exception"))
    engine.run([1, 2, 3], max_epochs=2)
    assert engine._resume_point is not None
    ref = weakref.ref(engine)
    del engine
    collect_garbage()
    assert ref() is None
    assert fired == []


def test_engine_in_a_cycle_is_collected(backend: str) -> None:
    engine = build_engine(backend)
    engine.state.myself = engine
    engine.add_event_handler(Events.COMPLETED, lambda: engine.state)  # noqa: F821 - the cycle
    engine.run([1, 2])
    ref = weakref.ref(engine)
    del engine
    collect_garbage()
    assert ref() is None


def test_no_references_leak_to_handlers_batches_outputs_and_data(backend: str) -> None:
    batches = [Batch() for _ in range(3)]
    output = Batch()

    def handler(engine: Engine) -> None:
        pass

    engine = Engine(lambda e, b: output, backend=backend)
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=2), handler)
    before = [sys.getrefcount(obj) for obj in (*batches, output, handler, batches)]
    engine.run(batches, max_epochs=3)
    engine.state.batch = engine.state.output = engine.state.dataloader = None
    after = [sys.getrefcount(obj) for obj in (*batches, output, handler, batches)]
    assert after == before


def test_previous_batch_and_output_are_released_before_the_next_step(backend: str) -> None:
    alive: list[Any] = []

    class Tracked:
        count = 0

        def __init__(self) -> None:
            Tracked.count += 1

        def __del__(self) -> None:
            Tracked.count -= 1

    def batches() -> Any:
        for _ in range(5):
            yield Tracked()

    def step(engine: Engine, batch: Any) -> Any:
        # the previous batch and output are gone: only this batch is alive, plus no output
        alive.append(Tracked.count)
        return Tracked()

    engine = Engine(step, backend=backend)
    engine.run(batches(), max_epochs=1)
    assert alive == [1, 1, 1, 1, 1]
