"""Events, filters and event lists."""

from __future__ import annotations

import copy

import pytest

from ember.engine import CallableEventWithFilter, Engine, Events, EventsList, State
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


# ------------------------------------------------------------------ filters in the loops
def test_numpy_integers_are_filter_counts(backend: str) -> None:
    """once= took a NumPy integer for a list (TypeError: not iterable); every= already took it."""
    np = pytest.importorskip("numpy")
    seen: list[int] = []
    engine = Engine(lambda e, b: None, backend=backend)
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=np.int64(2)), lambda e: seen.append(e.state.iteration)
    )
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(every=np.int64(3)), lambda e: seen.append(-e.state.iteration)
    )
    engine.run(range(6))
    assert seen == [2, -3, -6]


def test_a_counter_at_the_largest_int64_is_filtered_as_in_python(backend: str) -> None:
    """The compiled filters mark "no count from here on" with the largest int64: a counter of
    that very value was read as a hit."""
    seen: list[str] = []
    engine = Engine(lambda e, b: None, backend=backend)
    engine.add_event_handler(
        Events.ITERATION_STARTED(once=1), lambda e: setattr(e.state, "iteration", 2**63 - 1)
    )
    engine.add_event_handler(Events.ITERATION_STARTED(every=3), lambda e: seen.append("every=3"))
    engine.add_event_handler(Events.ITERATION_STARTED(before=5), lambda e: seen.append("before"))
    engine.add_event_handler(Events.ITERATION_STARTED(every=1), lambda e: seen.append("every=1"))
    engine.run([0])
    assert seen == ["every=1"]  # 2**63 - 1 is not before 5, nor a multiple of 3


def test_a_filtered_handler_of_another_engine_reads_that_engines_counter(backend: str) -> None:
    """A filtered handler copied into another engine's registry (copy.copy of an engine) reads
    the counter of the engine it was added to, as its wrapper does (the compiled loop read the
    running engine's)."""
    seen: list[int] = []
    first = Engine(lambda e, b: None, backend=backend)
    first.add_event_handler(
        Events.ITERATION_COMPLETED(every=2), lambda e: seen.append(e.state.iteration)
    )
    first.run([0, 1, 2])
    second = copy.copy(first)
    second.state = State()
    second.run([0, 1, 2, 3])
    assert seen == [2]  # first's iteration stays 3 while second runs


def test_run_from_inside_the_same_engines_run_is_refused(backend: str) -> None:
    """ignite raises "generator already executing"; the nested run would start the state anew
    under the running loop, which then failed on it."""
    engine = Engine(lambda e, b: None, backend=backend)
    nested = [engine.run]
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=2), lambda e: nested and nested.pop()([0, 1])
    )
    with pytest.raises(RuntimeError, match=r"Engine\.run\(\) was called while this engine runs"):
        engine.run(range(4))
    assert engine.state.iteration == 2
    assert engine.run(range(4), max_epochs=2).epoch == 2  # the next run works

    copies: list[Engine] = []
    engine = Engine(lambda e, b: None, backend=backend)
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=1), lambda e: copies.append(copy.copy(e))
    )
    engine.run([0])
    copies[0].state = State()
    assert copies[0].run([0, 1]).iteration == 2  # a copy made during a run is not running
