"""Data of unknown length: "Input data has zero size" only for data that is empty. The epoch
length is one pass of an iterator, counted per iterator, so epochs cut short (a swallowed
exception, terminate_epoch()) do not make later epochs look empty."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from ember.engine import Events

EXHAUSTED = "Data iterator can not provide data anymore"
ZERO_SIZE = "Input data has zero size"


class Unsized:
    """Restartable data without a length."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.size))


class ServedOnce:
    """Data without a length whose every iterator after the first is empty."""

    def __init__(self, size: int) -> None:
        self.passes = 0
        self.size = size

    def __iter__(self) -> Iterator[int]:
        self.passes += 1
        return iter(range(self.size if self.passes == 1 else 0))


def run_recording(
    make_engine: Any, data: Any, *, raise_at: int = 0, terminate_epoch_at: int = 0
) -> tuple[Any, list[Any], list[str]]:
    batches: list[Any] = []

    def step(engine: Any, batch: Any) -> None:
        batches.append(batch)
        if engine.state.iteration == raise_at:
            raise OSError("a failed step")

    engine = make_engine(step)
    engine.add_event_handler(Events.EXCEPTION_RAISED, lambda e, exc: None)
    if terminate_epoch_at:
        engine.add_event_handler(
            Events.ITERATION_COMPLETED(once=terminate_epoch_at), lambda e: e.terminate_epoch()
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine.run(data, max_epochs=3)
    return engine.state, batches, [str(warning.message) for warning in caught]


@pytest.mark.parametrize(
    ("raise_at", "batches"),
    [(3, [0, 1, 2] * 3), (1, [0, 1, 2, 0, 1, 2, 0])],
    ids=["at the last batch", "at the first batch"],
)
def test_a_swallowed_exception_in_the_first_epoch_is_not_empty_data(
    make_engine: Any, raise_at: int, batches: list[int]
) -> None:
    state, seen, caught = run_recording(make_engine, Unsized(3), raise_at=raise_at)
    # The next epochs continue the part-used iterator, then restart the data and go on.
    assert state.epoch_length == 3 and seen == batches and caught == []
    assert (state.epoch, state.iteration) == (3, len(batches))


@pytest.mark.parametrize("terminate_epoch_at", [1, 3])
def test_terminate_epoch_on_a_one_shot_iterator_ends_with_the_exhausted_warning(
    make_engine: Any, terminate_epoch_at: int
) -> None:
    state, seen, caught = run_recording(
        make_engine, iter(range(3)), terminate_epoch_at=terminate_epoch_at
    )
    assert seen == [0, 1, 2] and state.epoch_length == 3
    assert len(caught) == 1 and caught[0].startswith(EXHAUSTED)


def test_terminate_epoch_on_restartable_data_goes_on(make_engine: Any) -> None:
    state, seen, caught = run_recording(make_engine, Unsized(3), terminate_epoch_at=1)
    assert seen == [0, 0, 1, 2, 0, 1, 2] and state.epoch_length == 3 and caught == []


def test_data_whose_later_iterators_are_empty_warns_instead_of_zero_size(
    make_engine: Any,
) -> None:
    state, seen, caught = run_recording(make_engine, ServedOnce(3), terminate_epoch_at=3)
    # terminate_epoch() takes a fresh iterator, empty: data that gave batches before is used
    # up, not empty. No pass ran to its end, so the length stays unknown.
    assert seen == [0, 1, 2] and (state.epoch, state.epoch_length) == (3, None)
    assert len(caught) == 1 and caught[0].startswith(EXHAUSTED)


def test_empty_data_of_unknown_length_is_still_zero_size(make_engine: Any) -> None:
    engine = make_engine()
    with pytest.raises(ValueError, match=ZERO_SIZE):
        engine.run(Unsized(0), max_epochs=3)


def test_run_without_data_resumes_an_interrupt_of_unknown_length(make_engine: Any) -> None:
    """ignite raises "epoch_length should be provided if data is None" here; ember resumes
    (docs/migration.md)."""
    batches: list[Any] = []
    engine = make_engine(lambda e, batch: batches.append(batch))
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.interrupt())
    engine.run(Unsized(4), max_epochs=2)
    assert engine.state.epoch_length is None
    engine.run()
    # The live iterator goes on, then state.dataloader restarts for the second epoch.
    assert batches == [0, 1, 2, 3, 0, 1, 2, 3]
    assert (engine.state.epoch, engine.state.iteration, engine.state.epoch_length) == (2, 8, 4)


def test_run_without_data_and_without_a_pending_interrupt_needs_a_length(
    make_engine: Any,
) -> None:
    engine = make_engine()
    with pytest.raises(ValueError, match="epoch_length should be provided if data is None"):
        engine.run()
