"""Exception routing: EXCEPTION_RAISED, the two levels, ignite's silent bugs fixed, Ctrl-C."""

from __future__ import annotations

import operator
import signal
import traceback
from typing import Any

import pytest

from ember.engine import Engine, Events
from recording import event_names, recording


class StepError(Exception):
    pass


def failing_step(at: int) -> Any:
    def process(engine: Engine, batch: int) -> int:
        if engine.state.iteration == at:
            raise StepError(f"failed at {at}")
        return batch

    return process


def test_exception_keeps_type_message_and_traceback(make_engine: Any) -> None:
    engine = make_engine(failing_step(2))
    with pytest.raises(StepError, match="failed at 2") as info:
        engine.run([0, 1, 2])
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "process" in frames


def test_handler_exception_propagates(make_engine: Any) -> None:
    engine = make_engine()

    def broken(engine: Engine) -> None:
        raise KeyError("broken handler")

    engine.add_event_handler(Events.EPOCH_COMPLETED, broken)
    with pytest.raises(KeyError, match="broken handler") as info:
        engine.run([0, 1])
    assert "broken" in [f.name for f in traceback.extract_tb(info.value.__traceback__)]


def test_iteration_level_exception_is_swallowed_and_the_run_goes_on(make_engine: Any) -> None:
    seen: list[BaseException] = []
    engine = make_engine(failing_step(2), cls=recording(Engine))
    engine.add_event_handler(Events.EXCEPTION_RAISED, lambda e, exc: seen.append(exc))
    state = engine.run([0, 1, 2], max_epochs=2)
    assert len(seen) == 1 and isinstance(seen[0], StepError)
    trace = event_names(engine)
    failure = trace.index("EXCEPTION_RAISED")
    assert trace[failure - 1] == "ITERATION_STARTED"
    assert trace[failure + 1] == "EPOCH_COMPLETED"
    assert trace[-1] == "COMPLETED"
    assert state.epoch == 2


def test_run_level_exception_is_swallowed_without_completed(make_engine: Any) -> None:
    engine = make_engine(cls=recording(Engine))
    engine.add_event_handler(Events.EXCEPTION_RAISED, lambda e, exc: None)

    def broken(engine: Engine) -> None:
        raise StepError("epoch handler")

    engine.add_event_handler(Events.EPOCH_COMPLETED, broken)
    engine.run([0, 1], max_epochs=2)
    trace = event_names(engine)
    assert trace[-2:] == ["EPOCH_COMPLETED", "EXCEPTION_RAISED"]
    assert "COMPLETED" not in trace


def test_reraising_handler_runs_at_both_levels(make_engine: Any) -> None:
    calls: list[str] = []
    engine = make_engine(failing_step(1))

    def reraise(engine: Engine, exc: BaseException) -> None:
        calls.append(type(exc).__name__)
        raise exc

    engine.add_event_handler(Events.EXCEPTION_RAISED, reraise)
    with pytest.raises(StepError):
        engine.run([0, 1])
    assert calls == ["StepError", "StepError"]


def test_next_run_after_an_uncaught_exception_works(make_engine: Any) -> None:
    # ignite 0.5.5 returns None from this second run() and does nothing (bug B1).
    engine = make_engine(failing_step(2))
    with pytest.raises(StepError):
        engine.run([0, 1, 2], max_epochs=1)
    engine._process_function = lambda e, b: b
    state = engine.run([0, 1, 2], max_epochs=2)
    assert state is engine.state
    # resumed from epoch 1, iteration 2: epoch 2 runs the rest of an epoch, as ignite resumes
    assert (state.epoch, state.iteration) == (2, 3)


def test_removed_exception_handler_does_not_swallow_later_errors(make_engine: Any) -> None:
    # ignite 0.5.5 routes on the key, so an empty list swallows every later exception (bug B2).
    engine = make_engine(failing_step(1))
    with engine.add_event_handler(Events.EXCEPTION_RAISED, lambda e, exc: None):
        pass
    assert Events.EXCEPTION_RAISED in engine._event_handlers
    with pytest.raises(StepError):
        engine.run([0, 1])


def test_exception_from_the_data_reaches_the_user(make_engine: Any) -> None:
    def batches() -> Any:
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        make_engine().run(batches(), max_epochs=1, epoch_length=3)


def test_keyboard_interrupt_takes_the_run_level_route(make_engine: Any) -> None:
    seen: list[str] = []
    engine = make_engine()

    def stop(engine: Engine) -> None:
        raise KeyboardInterrupt

    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), stop)
    engine.add_event_handler(
        Events.EXCEPTION_RAISED, lambda e, exc: seen.append(type(exc).__name__)
    )
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append("epoch"))
    engine.run([0, 1, 2], max_epochs=2)
    assert seen == ["KeyboardInterrupt"]


def test_sigint_stops_a_run_whose_step_is_a_c_function(make_engine: Any) -> None:
    engine = make_engine(operator.is_)  # a builtin: no Python bytecode runs inside the step
    engine.add_event_handler(
        Events.ITERATION_STARTED(once=50), lambda: signal.raise_signal(signal.SIGINT)
    )
    with pytest.raises(KeyboardInterrupt):
        engine.run(range(10**9), max_epochs=1)
    assert engine.state.iteration == 50


def test_one_swallowed_failure_before_a_batch_does_not_end_a_max_iters_run(
    make_engine: Any,
) -> None:
    failed: list[int] = []
    engine = make_engine()

    def flaky(e: Engine) -> None:
        if e.state.epoch == 2 and not failed:
            failed.append(e.state.iteration)
            raise OSError("transient")

    engine.add_event_handler(Events.GET_BATCH_STARTED, flaky)
    engine.add_event_handler(Events.EXCEPTION_RAISED, lambda e, exc: None)
    state = engine.run([0, 1, 2], max_iters=6)
    assert failed == [3]
    assert state.iteration == 6


def test_a_restart_that_keeps_failing_ends_a_max_iters_run(make_engine: Any) -> None:
    # ignite 0.5.5 loops forever here (H3)
    engine = make_engine()

    def broken_restart(e: Engine) -> None:
        raise OSError("cannot reopen the data")

    engine.add_event_handler(Events.DATALOADER_STOP_ITERATION, broken_restart)
    engine.add_event_handler(Events.EXCEPTION_RAISED, lambda e, exc: None)
    state = engine.run([0, 1], max_iters=10)
    assert state.iteration == 2
    assert state.epoch == 3
