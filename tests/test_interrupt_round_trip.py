"""After interrupt(), ``load_state_dict(state_dict())`` changes nothing; a load that moves the
position starts the rest of the epoch from the beginning of the data."""

from __future__ import annotations

from typing import Any

import pytest

from ember.engine import Events

# The events that fire in run([0, 1], max_epochs=2), and how often each fires there.
FIRINGS = {
    Events.STARTED: 1,
    Events.EPOCH_STARTED: 2,
    Events.GET_BATCH_STARTED: 4,
    Events.GET_BATCH_COMPLETED: 4,
    Events.DATALOADER_STOP_ITERATION: 1,
    Events.ITERATION_STARTED: 4,
    Events.ITERATION_COMPLETED: 4,
    Events.EPOCH_COMPLETED: 2,
}
RECORDED = [event for event in Events if event != Events.EXCEPTION_RAISED]


def interrupted_then_resumed(
    make_engine: Any, event: Events, firing: int, *, round_trip: bool
) -> tuple[list[Any], tuple[Any, ...]]:
    """What the resumed run records (events with counters, process calls), then the batches of
    both runs and the final state, after an interrupt at the ``firing``-th firing of ``event``."""
    record: list[Any] = []
    batches: list[Any] = []

    def process(engine: Any, batch: Any) -> None:
        batches.append(batch)
        record.append(("process", batch, engine.state.iteration))

    engine = make_engine(process)
    fired = {"count": 0}

    def on_event(engine: Any, name: Events) -> None:
        record.append((name.name, engine.state.epoch, engine.state.iteration))
        if name == event:
            fired["count"] += 1
            if fired["count"] == firing:
                engine.interrupt()

    for name in RECORDED:
        engine.add_event_handler(name, on_event, name)
    engine.run([0, 1], max_epochs=2)
    assert record[-1][0] == "INTERRUPT"
    del record[:]
    if round_trip:
        engine.load_state_dict(engine.state_dict())
    engine.run([0, 1], max_epochs=2)
    state = engine.state
    final = (state.epoch, state.iteration, state.epoch_length, state.max_epochs, state.max_iters)
    return record, (batches, final)


@pytest.mark.parametrize(
    ("event", "firing"),
    [(event, firing) for event, count in FIRINGS.items() for firing in range(1, count + 1)],
    ids=lambda value: value.name if isinstance(value, Events) else str(value),
)
def test_an_unchanged_round_trip_changes_nothing(
    make_engine: Any, event: Events, firing: int
) -> None:
    resumed = interrupted_then_resumed(make_engine, event, firing, round_trip=False)
    round_tripped = interrupted_then_resumed(make_engine, event, firing, round_trip=True)
    assert round_tripped == resumed
    record, (batches, final) = resumed
    assert batches == [0, 1, 0, 1]
    assert final == (2, 4, 2, 2, None)
    assert "STARTED" not in [entry[0] for entry in record]  # a resume, not a new run


def test_a_load_that_moves_the_position_starts_from_the_beginning_of_the_data(
    make_engine: Any,
) -> None:
    batches: list[Any] = []
    engine = make_engine(lambda e, batch: batches.append(batch))
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), lambda e: e.interrupt())
    engine.run([0, 1], max_epochs=2)
    state_dict = engine.state_dict()
    state_dict["iteration"] = 3
    engine.load_state_dict(state_dict)
    assert (engine.state.epoch, engine.state.iteration) == (1, 3)
    engine.run([0, 1])
    # The half-used iterator of the interrupted run is dropped: one batch, the data's first.
    assert batches == [0, 0]
    assert (engine.state.epoch, engine.state.iteration) == (2, 4)


def test_a_round_trip_after_an_interrupt_at_the_last_epoch_end_resumes(
    make_engine: Any,
) -> None:
    events: list[str] = []
    engine = make_engine()
    engine.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda e: e.interrupt())
    engine.add_event_handler(Events.STARTED, lambda e: events.append("STARTED"))
    engine.add_event_handler(Events.COMPLETED, lambda e: events.append("COMPLETED"))
    engine.run([0, 1], max_epochs=2)
    engine.load_state_dict(engine.state_dict())
    engine.run([0, 1], max_epochs=2)
    # The pending interrupt is resumed (COMPLETED), not mistaken for a new run (STARTED).
    assert events == ["STARTED", "COMPLETED"]


class Unsized:
    """Restartable data without a length."""

    def __iter__(self) -> Any:
        return iter(range(3))


def test_a_round_trip_in_a_max_iters_run_over_data_of_unknown_length(make_engine: Any) -> None:
    def resume(round_trip: bool) -> tuple[list[Any], tuple[int, int]]:
        batches: list[Any] = []
        engine = make_engine(lambda e, batch: batches.append(batch))
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=4), lambda e: e.interrupt())
        engine.run(Unsized(), max_iters=7)
        # The first pass taught the length; the run derived max_epochs from it.
        assert (engine.state.epoch_length, engine.state.max_epochs) == (3, 3)
        if round_trip:
            engine.load_state_dict(engine.state_dict())
        engine.run(Unsized())
        return batches, (engine.state.epoch, engine.state.iteration)

    assert resume(round_trip=True) == resume(round_trip=False) == ([0, 1, 2] * 2 + [0], (3, 7))
