"""terminate(), terminate_epoch() and interrupt() with resume, on both loops."""

from __future__ import annotations

from typing import Any

import pytest

from ember.engine import Engine, Events
from recording import event_names, recording

# The events of a run that fire before its first EPOCH_COMPLETED.
BEFORE_EPOCH_COMPLETED = [
    Events.STARTED,
    Events.EPOCH_STARTED,
    Events.GET_BATCH_STARTED,
    Events.GET_BATCH_COMPLETED,
    Events.ITERATION_STARTED,
    Events.ITERATION_COMPLETED,
]


def recorded(backend: str, process: Any = lambda e, b: b) -> Any:
    return recording(Engine)(process, backend=backend)


@pytest.mark.parametrize("event", BEFORE_EPOCH_COMPLETED)
def test_terminate_inside_the_run_ends_with_terminate_then_completed(
    backend: str, event: Any
) -> None:
    engine = recorded(backend)
    engine.add_event_handler(event, lambda e: e.terminate())
    engine.run([0, 1, 2], max_epochs=2)
    assert event_names(engine)[-3:] == [event.name, "TERMINATE", "COMPLETED"]
    assert "EPOCH_COMPLETED" not in event_names(engine)
    assert engine._dataloader_iter is None
    assert engine.should_terminate is True


def test_terminate_from_the_process_function(backend: str) -> None:
    def process(engine: Engine, batch: int) -> int:
        if engine.state.iteration == 2:
            engine.terminate()
        return batch

    engine = recorded(backend, process)
    engine.run([0, 1, 2], max_epochs=2)
    assert event_names(engine)[-3:] == ["ITERATION_COMPLETED", "TERMINATE", "COMPLETED"]
    assert engine.state.iteration == 2


def test_terminate_at_epoch_completed_keeps_that_epoch(backend: str) -> None:
    engine = recorded(backend)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.terminate())
    engine.run([0, 1], max_epochs=3)
    assert event_names(engine)[-3:] == ["EPOCH_COMPLETED", "TERMINATE", "COMPLETED"]
    assert engine.state.epoch == 1


def test_terminate_skip_completed(backend: str) -> None:
    engine = recorded(backend)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: e.terminate(skip_completed=True))
    engine.run([0, 1], max_epochs=3)
    assert event_names(engine)[-2:] == ["ITERATION_COMPLETED", "TERMINATE"]
    assert engine.should_terminate == "skip_completed"


@pytest.mark.parametrize("skip", [False, True])
def test_terminate_epoch_moves_to_the_next_epoch(backend: str, skip: bool) -> None:
    counters: list[int] = []
    engine = recorded(backend)
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate_epoch(skip_epoch_completed=skip)
    )
    engine.add_event_handler(
        Events.TERMINATE_SINGLE_EPOCH, lambda e, iter_counter: counters.append(iter_counter)
    )
    engine.run([0, 1, 2, 3], max_epochs=2)
    trace = event_names(engine)
    stop = trace.index("TERMINATE_SINGLE_EPOCH")
    assert trace[stop - 1] == "ITERATION_COMPLETED"
    assert trace[stop + 1] == ("EPOCH_STARTED" if skip else "EPOCH_COMPLETED")
    assert counters == [2]
    assert trace.count("EPOCH_COMPLETED") == (1 if skip else 2)
    assert engine.state.iteration == 6
    assert trace[-1] == "COMPLETED"


@pytest.mark.parametrize("event", [Events.STARTED, Events.EPOCH_STARTED])
def test_terminate_epoch_too_early_is_an_error(backend: str, event: Any) -> None:
    engine = recorded(backend)
    engine.add_event_handler(event, lambda e: e.terminate_epoch())
    with pytest.raises(RuntimeError, match="terminate_epoch\\(\\) should not be called"):
        engine.run([0, 1], max_epochs=2)


def test_terminate_epoch_at_epoch_completed_has_no_effect(backend: str) -> None:
    engine = recorded(backend)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.terminate_epoch())
    engine.run([0, 1], max_epochs=2)
    assert "TERMINATE_SINGLE_EPOCH" not in event_names(engine)
    assert engine.state.iteration == 4
    assert engine.should_terminate_single_epoch is False


@pytest.mark.parametrize("event", [*BEFORE_EPOCH_COMPLETED, Events.EPOCH_COMPLETED])
def test_interrupt_then_resume_equals_an_uninterrupted_run(backend: str, event: Any) -> None:
    reference = recorded(backend)
    reference.run([0, 1, 2], max_epochs=3)

    engine = recorded(backend)
    engine.add_event_handler(event, lambda e: e.interrupt())
    runs = 0
    while True:
        runs += 1
        engine.run([0, 1, 2], max_epochs=3)
        if engine._resume_point is None:
            break
        assert engine.trace[-1][0] == "INTERRUPT"
    interrupts = [i for i, name in enumerate(event_names(engine)) if name == "INTERRUPT"]
    assert len(interrupts) == runs - 1 > 0
    without = [entry for entry in engine.trace if entry[0] != "INTERRUPT"]
    assert without == reference.trace


def test_resume_after_an_interrupt_at_stop_iteration_fires_get_batch_started_again(
    backend: str,
) -> None:
    # As in ignite: the batch fetch skips GET_BATCH_STARTED only right after
    # DATALOADER_STOP_ITERATION, and after a resume the last event is INTERRUPT.
    engine = recorded(backend)
    engine.add_event_handler(Events.DATALOADER_STOP_ITERATION, lambda e: e.interrupt())
    engine.run([0, 1], max_epochs=2)
    assert event_names(engine)[-3:] == [
        "GET_BATCH_STARTED",
        "DATALOADER_STOP_ITERATION",
        "INTERRUPT",
    ]
    engine.run([0, 1], max_epochs=2)
    interrupt = event_names(engine).index("INTERRUPT")
    assert event_names(engine)[interrupt - 1 : interrupt + 3] == [
        "DATALOADER_STOP_ITERATION",
        "INTERRUPT",
        "GET_BATCH_STARTED",
        "GET_BATCH_COMPLETED",
    ]
    assert engine.state.iteration == 4


def test_interrupt_from_the_process_function(backend: str) -> None:
    outputs: list[int] = []

    def process(engine: Engine, batch: int) -> int:
        outputs.append(batch)
        if batch == 1:
            engine.interrupt()
        return batch

    engine = recorded(backend, process)
    state = engine.run([0, 1, 2], max_epochs=1)
    assert state.iteration == 2
    assert event_names(engine)[-2:] == ["ITERATION_COMPLETED", "INTERRUPT"]
    engine.run([0, 1, 2], max_epochs=1)
    assert outputs == [0, 1, 2]
    assert event_names(engine).count("STARTED") == 1


def test_resetting_max_epochs_while_interrupted_restarts(backend: str) -> None:
    engine = recorded(backend)
    once = engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.interrupt())
    engine.run([0, 1, 2], max_epochs=2)
    once.remove()
    engine.state.max_epochs = None
    engine.run([0, 1, 2], max_epochs=1)
    assert engine.state.iteration == 3
    assert event_names(engine).count("STARTED") == 2


def test_interrupt_is_refused_when_disabled(backend: str) -> None:
    class NoResume(Engine):
        interrupt_resume_enabled = False

    engine = NoResume(lambda e, b: b, backend=backend)
    with pytest.raises(RuntimeError, match="Engine 'interrupt/resume' feature is disabled"):
        engine.interrupt()


def test_resume_after_terminate_starts_the_next_epoch(backend: str) -> None:
    engine = recorded(backend)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate())
    engine.run(list(range(5)), max_epochs=2)
    assert engine.state.iteration == 3
    engine.run(list(range(5)), max_epochs=2)
    assert (engine.state.epoch, engine.state.iteration) == (2, 8)
