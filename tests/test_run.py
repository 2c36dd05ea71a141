"""run(): epochs, lengths, data restarts, new runs versus resumes."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from ember.engine import Engine, Events, State
from recording import event_names, recording


def test_output_batch_and_counters(make_engine: Any) -> None:
    engine = make_engine(lambda e, batch: batch * 10)
    state = engine.run([1, 2, 3], max_epochs=2)
    assert state is engine.state
    assert (state.iteration, state.epoch, state.output, state.batch) == (6, 2, 30, 3)
    assert state.epoch_length == 3
    assert state.max_epochs == 2


def test_event_order_of_a_two_epoch_run(make_engine: Any) -> None:
    engine = make_engine(cls=recording(Engine))
    engine.run([0, 1], max_epochs=2)
    assert engine.trace[:6] == [
        ("STARTED", 0, 0),
        ("EPOCH_STARTED", 1, 0),
        ("GET_BATCH_STARTED", 1, 0),
        ("GET_BATCH_COMPLETED", 1, 0),
        ("ITERATION_STARTED", 1, 1),
        ("ITERATION_COMPLETED", 1, 1),
    ]
    assert engine.trace[10:15] == [
        ("EPOCH_COMPLETED", 1, 2),
        ("EPOCH_STARTED", 2, 2),
        ("GET_BATCH_STARTED", 2, 2),
        ("DATALOADER_STOP_ITERATION", 2, 2),
        ("GET_BATCH_COMPLETED", 2, 2),
    ]
    assert engine.trace[-1] == ("COMPLETED", 2, 4)


def test_unknown_length_is_found_at_the_first_stop(make_engine: Any) -> None:
    engine = make_engine()
    engine.add_event_handler(
        Events.DATALOADER_STOP_ITERATION,
        lambda e: setattr(e.state, "dataloader", (x for x in range(4))),
    )
    state = engine.run((x for x in range(4)), max_epochs=3)
    assert state.epoch_length == 4
    assert state.iteration == 12


def test_an_epoch_lengthened_by_set_data_is_as_long_as_it_ran(make_engine: Any) -> None:
    """The length is learned when the data runs out. An epoch that drew 2 batches from the
    first data and 5 from the data set_data() gave it ran 7 iterations: its length is 7, as in
    ignite (it was 5, the batches of the last iterator, and iteration 7 then read as 2 into an
    epoch)."""

    class Unsized:
        def __init__(self, count: int) -> None:
            self.count = count

        def __iter__(self) -> Iterator[int]:
            return iter(range(self.count))

    engine = make_engine()
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.set_data(Unsized(5)))
    state = engine.run(Unsized(3), max_epochs=3)
    assert (state.epoch_length, state.iteration, state.epoch) == (7, 21, 3)


def test_unknown_length_with_max_iters_sets_max_epochs(make_engine: Any) -> None:
    class Unsized:
        def __iter__(self) -> Iterator[int]:
            return iter(range(4))

    state = make_engine().run(Unsized(), max_iters=10)
    assert state.epoch_length == 4
    assert state.max_epochs == 3
    assert state.iteration == 10


def test_data_none_needs_epoch_length_and_gives_none_batches(make_engine: Any) -> None:
    batches: list[Any] = []
    engine = make_engine(lambda e, b: batches.append(b))
    engine.run(epoch_length=3, max_epochs=2)
    assert batches == [None] * 6
    with pytest.raises(ValueError, match="epoch_length should be provided if data is None"):
        make_engine().run()


def test_one_shot_generator_running_dry_warns(make_engine: Any) -> None:
    engine = make_engine()
    with pytest.warns(UserWarning, match="Data iterator can not provide data anymore"):
        state = engine.run((x for x in range(3)), max_epochs=3, epoch_length=3)
    assert state.iteration == 3
    assert state.epoch == 3


def test_one_shot_generator_with_max_iters_ends_instead_of_looping(make_engine: Any) -> None:
    engine = make_engine()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = engine.run((x for x in range(3)), max_iters=10, epoch_length=2)
    assert state.iteration == 3


def test_max_iters_mid_epoch_terminates_without_epoch_completed(make_engine: Any) -> None:
    engine = make_engine(cls=recording(Engine))
    engine.run(list(range(5)), max_iters=7)
    assert engine.trace[-3:] == [
        ("ITERATION_COMPLETED", 2, 7),
        ("TERMINATE", 2, 7),
        ("COMPLETED", 2, 7),
    ]
    assert event_names(engine).count("EPOCH_COMPLETED") == 1
    assert engine.state.max_epochs is None


def test_second_run_on_a_finished_engine_starts_over(make_engine: Any) -> None:
    engine = make_engine()
    engine.run([1, 2], max_epochs=2)
    with pytest.raises(ValueError, match="should be greater than or equal to the start epoch"):
        engine.run([1, 2, 3], max_epochs=1)
    state = engine.run([1, 2, 3])
    assert (state.iteration, state.epoch, state.epoch_length) == (3, 1, 3)


def test_run_continues_to_a_larger_max_epochs(make_engine: Any) -> None:
    engine = make_engine()
    engine.run([1, 2], max_epochs=2)
    state = engine.run([1, 2], max_epochs=4)
    assert (state.iteration, state.epoch) == (8, 4)


def test_epochs_straddle_passes_over_the_data(make_engine: Any) -> None:
    seen: list[int] = []
    engine = make_engine(lambda e, b: seen.append(b))
    engine.run([0, 1, 2], max_epochs=2, epoch_length=2)
    assert seen == [0, 1, 2, 0]


def test_set_data_switches_at_the_next_batch(make_engine: Any) -> None:
    seen: list[int] = []
    engine = make_engine(lambda e, b: seen.append(b))

    @engine.on(Events.ITERATION_COMPLETED(once=2))
    def switch(e: Engine) -> None:
        e.set_data([10, 11, 12, 13])

    engine.run([0, 1, 2, 3], max_epochs=2)
    assert seen == [0, 1, 10, 11, 12, 13, 10, 11]


def test_dataloader_can_be_replaced_at_stop_iteration(make_engine: Any) -> None:
    seen: list[int] = []
    engine = make_engine(lambda e, b: seen.append(b))
    engine.add_event_handler(
        Events.DATALOADER_STOP_ITERATION, lambda e: setattr(e.state, "dataloader", [7, 8])
    )
    engine.run([0, 1], max_epochs=2)
    assert seen == [0, 1, 7, 8]


def test_state_is_open_and_times_are_recorded(make_engine: Any) -> None:
    engine = make_engine()
    engine.state.alpha = 0.5
    engine.run([1, 2], max_epochs=1)
    assert engine.state.alpha == 0.5
    assert engine.state.times["EPOCH_COMPLETED"] >= 0.0
    assert engine.state.times["COMPLETED"] >= engine.state.times["EPOCH_COMPLETED"]
    assert "iteration: 2" in repr(engine.state)


def test_handler_can_replace_the_batch_at_iteration_started(make_engine: Any) -> None:
    outputs: list[int] = []
    engine = make_engine(lambda e, b: outputs.append(b))
    engine.add_event_handler(Events.ITERATION_STARTED, lambda e: setattr(e.state, "batch", -1))
    engine.run([1, 2], max_epochs=1)
    assert outputs == [-1, -1]


def test_state_attributes_of_custom_events_start_at_zero() -> None:
    state = State(answer=42)
    assert state.answer == 42
    assert state.get_event_attrib_value(Events.EPOCH_STARTED) == 0
    with pytest.raises(RuntimeError, match="Unknown event name"):
        state.get_event_attrib_value(Events.TERMINATE)


def test_logging_messages(make_engine: Any, caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine()
    with caplog.at_level("INFO", logger="ember.engine.engine.Engine"):
        engine.run([1, 2], max_epochs=2)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "Engine run starting with max_epochs=2."
    assert messages[1].startswith("Epoch[1] Complete. Time taken: 00:00:0")
    assert messages[-1].startswith("Engine run finished. Time taken: ")


def test_debug_logging_reports_every_fire(
    make_engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine()
    with caplog.at_level("DEBUG", logger="ember.engine.engine.Engine"):
        engine.run([1], max_epochs=1)
    fires = [r.getMessage() for r in caplog.records if "Firing handlers" in r.getMessage()]
    assert fires[0] == "0 | 0, Firing handlers for event Events.STARTED"
    assert len(fires) == 8
