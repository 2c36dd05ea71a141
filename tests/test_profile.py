"""The loop's own profiler: data wait, step, each event and each handler."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ember.engine import Engine, Events
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
    assert profiler.step.calls == 2
    engine._process_function = lambda e, b: b
    engine.run(range(5), max_epochs=2)
    assert profiler.step.calls > 2
    Profiler.detach(engine)
    calls = profiler.step.calls
    engine.run(range(5), max_epochs=3)
    assert profiler.step.calls == calls


def test_no_profiler_means_no_timing(make_engine: Any) -> None:
    profiled = make_engine()
    profiler = Profiler().attach(profiled)
    profiled.run(range(3))
    engine = make_engine()
    engine.run(range(3))
    assert engine._profiler is None
    # the unprofiled engine's run is counted nowhere, not in another engine's profiler either
    assert (profiler.data.calls, profiler.step.calls) == (3, 3)
