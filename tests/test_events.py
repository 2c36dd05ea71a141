"""Events, filters and event lists."""

from __future__ import annotations

import pytest

from ember.engine import CallableEventWithFilter, Events, EventsList
from ember.engine.events import CountFilter


def fired(event: CallableEventWithFilter, counters: range) -> list[int]:
    return [n for n in counters if event.filter(None, n)]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"every": 3}, [0, 3, 6, 9]),
        ({"once": 4}, [4]),
        ({"once": [2, 5]}, [2, 5]),
        ({"before": 4}, [1, 2, 3]),
        ({"after": 7}, [8, 9, 10]),
        ({"before": 6, "after": 2}, [3, 4, 5]),
        ({"every": 5, "after": 8, "before": 25}, [9, 14, 19, 24]),
        ({"every": 2, "before": 6}, [1, 3, 5]),
    ],
)
def test_count_filters_fire_where_ignite_fires(kwargs: dict, expected: list[int]) -> None:
    counters = range(30) if "before" in kwargs else range(11)
    assert fired(Events.ITERATION_COMPLETED(**kwargs), counters) == expected


def test_every_one_means_no_filter() -> None:
    assert Events.ITERATION_COMPLETED(every=1).filter is None


def test_custom_filter_is_kept() -> None:
    def odd(engine: object, event: int) -> bool:
        return event % 2 == 1

    assert Events.EPOCH_STARTED(event_filter=odd).filter is odd


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ValueError, "Only one of the input arguments"),
        ({"every": 2, "once": 3}, ValueError, "Only one of the input arguments"),
        ({"event_filter": 3}, TypeError, "Argument event_filter should be a callable"),
        ({"every": 0}, ValueError, "Argument every should be integer and greater than zero"),
        ({"every": 1.5}, ValueError, "Argument every should be integer"),
        ({"once": 0}, ValueError, "Argument once should either be a positive integer"),
        ({"once": []}, ValueError, "Argument once should either be a positive integer"),
        ({"once": [1, -2]}, ValueError, "Argument once should either be a positive integer"),
        ({"before": -1}, ValueError, "Argument before should be integer and greater or equal"),
        ({"after": -1}, ValueError, "Argument after should be integer and greater or equal"),
        ({"event_filter": lambda: True}, ValueError, "Error adding"),
    ],
)
def test_filter_arguments_are_validated(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        Events.ITERATION_COMPLETED(**kwargs)


def test_events_compare_and_hash_by_name() -> None:
    filtered = Events.ITERATION_COMPLETED(every=3)
    assert filtered == Events.ITERATION_COMPLETED
    assert Events.ITERATION_COMPLETED == "ITERATION_COMPLETED"
    assert hash(filtered) == hash(Events.ITERATION_COMPLETED)
    assert Events.ITERATION_COMPLETED != Events.ITERATION_STARTED
    assert {filtered: 1}[Events.ITERATION_COMPLETED] == 1


def test_events_list_is_built_with_or() -> None:
    events = Events.STARTED | Events.COMPLETED | Events.EPOCH_COMPLETED(every=2)
    assert isinstance(events, EventsList)
    assert len(events) == 3
    assert [e.name for e in events] == ["STARTED", "COMPLETED", "EPOCH_COMPLETED"]
    assert events[2].filter is not None


def test_events_list_rejects_non_events() -> None:
    with pytest.raises(TypeError, match="Argument event should be Events or"):
        Events.STARTED | "COMPLETED"


def test_declaration_order_and_values() -> None:
    assert [e.name for e in Events][:4] == [
        "EPOCH_STARTED",
        "EPOCH_COMPLETED",
        "STARTED",
        "COMPLETED",
    ]
    assert len(list(Events)) == 13
    assert Events.GET_BATCH_STARTED.value == "get_batch_started"


def test_count_filter_repr_names_its_fields() -> None:
    assert "once=[3]" in repr(CountFilter(once=[3]))
    assert "every=4" in repr(CountFilter(every=4))
