"""Handler registration, removal, argument passing and live edits of ``_event_handlers``."""

from __future__ import annotations

import weakref
from typing import Any

import pytest

from ember.engine import Engine, EventEnum, Events, RemovableEventHandle
from recording import event_names, recording


class Custom(EventEnum):
    PING = "ping"
    PONG = "pong"


def test_handlers_get_engine_args_and_kwargs(make_engine: Any) -> None:
    calls: list[Any] = []
    engine = make_engine()
    engine.add_event_handler(Events.STARTED, lambda e, a, b=0: calls.append((e, a, b)), 1, b=2)
    engine.add_event_handler(Events.STARTED, calls.append, "no engine")
    engine.run([0])
    assert calls == [(engine, 1, 2), "no engine"]


def test_on_decorator_returns_the_function(make_engine: Any) -> None:
    engine = make_engine()

    @engine.on(Events.COMPLETED | Events.STARTED)
    def handler(e: Engine) -> None:
        e.state.calls = getattr(e.state, "calls", 0) + 1

    assert callable(handler)
    assert handler.__name__ == "handler"
    engine.run([0])
    assert engine.state.calls == 2


def test_signature_is_checked_at_registration(make_engine: Any) -> None:
    engine = make_engine()
    with pytest.raises(ValueError, match=r"Error adding .* takes parameters .* but will be called"):
        engine.add_event_handler(Events.STARTED, lambda a, b, c: None)
    with pytest.raises(ValueError, match="Error adding"):
        engine.add_event_handler(Events.STARTED, lambda e: None, 1, 2)


def test_unregistered_event_is_refused(make_engine: Any) -> None:
    engine = make_engine()
    with pytest.raises(ValueError, match="is not a valid event for this Engine"):
        engine.add_event_handler(Custom.PING, lambda: None)
    with pytest.raises(ValueError, match="is not a valid event for this Engine"):
        engine.fire_event("nope")


def test_process_function_is_checked(backend: str) -> None:
    with pytest.raises(ValueError, match="Engine must be given a processing function"):
        Engine(None, backend=backend)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Error adding"):
        Engine(lambda batch: batch, backend=backend)
    with pytest.raises(TypeError, match="process_function should be callable"):
        Engine(3, backend=backend)  # type: ignore[arg-type]


def test_has_and_remove_event_handler(make_engine: Any) -> None:
    engine = make_engine()

    def handler(e: Engine) -> None:
        pass

    engine.add_event_handler(Events.EPOCH_COMPLETED(every=2), handler)
    assert engine.has_event_handler(handler)
    assert engine.has_event_handler(handler, Events.EPOCH_COMPLETED)
    assert not engine.has_event_handler(handler, Events.STARTED)
    engine.remove_event_handler(handler, Events.EPOCH_COMPLETED)
    assert not engine.has_event_handler(handler)
    with pytest.raises(ValueError, match="is not found among registered event handlers"):
        engine.remove_event_handler(handler, Events.EPOCH_COMPLETED)
    with pytest.raises(ValueError, match="does not exist"):
        engine.remove_event_handler(handler, Events.INTERRUPT)


def test_removable_handle_and_context_manager(make_engine: Any) -> None:
    calls: list[str] = []
    engine = make_engine()
    handle = engine.add_event_handler(Events.STARTED | Events.COMPLETED, lambda: calls.append("x"))
    assert isinstance(handle, RemovableEventHandle)
    handle.remove()
    with engine.add_event_handler(Events.STARTED, lambda: calls.append("in")):
        engine.run([0])
    engine.run([0])
    assert calls == ["in"]


def test_terminate_single_epoch_handlers_get_iter_counter(make_engine: Any) -> None:
    seen: list[int] = []
    engine = make_engine()
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate_epoch())
    engine.add_event_handler(
        Events.TERMINATE_SINGLE_EPOCH, lambda e, iter_counter: seen.append(iter_counter)
    )
    engine.run([0, 1, 2])
    assert seen == [2]
    stored_kwargs = engine._event_handlers[Events.TERMINATE_SINGLE_EPOCH][0][2]
    assert stored_kwargs == {}  # ignite merges event kwargs into it for good (B6)


def test_custom_events_with_filters_on_their_own_counter(make_engine: Any) -> None:
    fired: list[int] = []

    def process(engine: Engine, batch: int) -> None:
        engine.state.ping_count += 1
        engine.fire_event(Custom.PING)

    engine = make_engine(process)
    engine.register_events(*Custom, event_to_attr={Custom.PING: "ping_count"})
    assert engine.state.ping_count == 0
    engine.add_event_handler(Custom.PING(every=2), lambda e: fired.append(e.state.ping_count))
    engine.run(range(5))
    assert fired == [2, 4]
    assert engine.last_event_name == Events.COMPLETED


def test_string_events(make_engine: Any) -> None:
    seen: list[str] = []
    engine = make_engine(lambda e, b: e.fire_event("backward"))
    engine.register_events("backward")
    engine.add_event_handler("backward", lambda e: seen.append(e.last_event_name))
    engine.run([0, 1])
    assert seen == ["backward", "backward"]


def test_register_events_validates(make_engine: Any) -> None:
    engine = make_engine()
    with pytest.raises(TypeError, match="Value at 0 of event_names should be a str or EventEnum"):
        engine.register_events(1)
    with pytest.raises(ValueError, match="Expected event_to_attr to be dictionary"):
        engine.register_events("a", event_to_attr=[1])


def test_handler_added_during_a_firing_runs_in_the_same_pass(make_engine: Any) -> None:
    calls: list[str] = []
    engine = make_engine()

    def first(e: Engine) -> None:
        calls.append("first")
        if len(calls) == 1:
            e.add_event_handler(Events.STARTED, lambda: calls.append("added"))

    engine.add_event_handler(Events.STARTED, first)
    engine.run([0])
    assert calls == ["first", "added"]


def test_removal_during_a_firing_does_not_affect_the_pass(make_engine: Any) -> None:
    calls: list[str] = []
    engine = make_engine()

    def second() -> None:
        calls.append("second")

    def first(e: Engine) -> None:
        calls.append("first")
        if e.has_event_handler(second, Events.STARTED):
            e.remove_event_handler(second, Events.STARTED)

    engine.add_event_handler(Events.STARTED, first)
    engine.add_event_handler(Events.STARTED, second)
    engine.run([0])
    engine.run([0])
    assert calls == ["first", "second", "first"]


def test_direct_edits_of_the_registry_are_seen_mid_run(make_engine: Any) -> None:
    calls: list[Any] = []
    engine = make_engine()

    def profiler_like(e: Engine) -> None:
        # what ignite's time profilers do from inside STARTED
        e._event_handlers[Events.ITERATION_COMPLETED].insert(0, (calls.append, ("first",), {}))
        e._event_handlers[Events.ITERATION_COMPLETED].append((calls.append, ("last",), {}))
        e._event_handlers[Events.EPOCH_COMPLETED] = [(calls.append, ("epoch",), {})]

    engine._event_handlers[Events.STARTED].insert(0, (profiler_like, (engine,), {}))
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda: calls.append("user"))
    engine.run([0])
    assert calls == ["first", "user", "last", "epoch"]


def test_entry_replaced_in_place_is_used(make_engine: Any) -> None:
    calls: list[str] = []
    engine = make_engine()
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda: calls.append("old"))

    @engine.on(Events.ITERATION_COMPLETED(once=1))
    def swap(e: Engine) -> None:
        e._event_handlers[Events.ITERATION_COMPLETED][0] = (calls.append, ("new",), {})

    engine.run([0, 1, 2])
    assert calls == ["old", "new", "new"]


def test_filtered_entry_replaced_in_place_between_its_hits_is_used(make_engine: Any) -> None:
    # The compiled loop skips an event whose count filters all say no until their next hit;
    # a same-size edit of the list must end that skip.
    calls: list[Any] = []
    engine = make_engine()
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(every=5), lambda e: calls.append(("every5", e.state.iteration))
    )

    @engine.on(Events.ITERATION_STARTED(once=7))
    def swap(e: Engine) -> None:
        e._event_handlers[Events.ITERATION_COMPLETED][0] = (calls.append, ("new",), {})

    engine.run(range(9))
    assert calls == [("every5", 5), "new", "new", "new"]


def test_entry_appended_in_place_between_hits_fires_at_once(make_engine: Any) -> None:
    calls: list[Any] = []
    engine = make_engine()
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=100), lambda: calls.append("never"))

    @engine.on(Events.ITERATION_STARTED(once=4))
    def append(e: Engine) -> None:
        e._event_handlers[Events.ITERATION_COMPLETED].append((calls.append, ("added",), {}))

    engine.run(range(6))
    assert calls == ["added", "added", "added"]


def test_counter_moved_back_by_a_handler_meets_the_filters_again(make_engine: Any) -> None:
    fired: list[int] = []
    engine = make_engine()
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(every=3), lambda e: fired.append(e.state.iteration)
    )
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=[4, 8]), lambda e: fired.append(-e.state.iteration)
    )

    @engine.on(Events.ITERATION_STARTED(once=8))
    def rewind(e: Engine) -> None:
        e.state.iteration = 2

    engine.run(range(12))
    # iterations 1..7, then 2 (rewound from 8), 3, 4, 5, 6
    assert fired == [3, -4, 6, 3, -4, 6]


def test_counter_made_a_float_by_a_handler_still_meets_the_filters(make_engine: Any) -> None:
    fired: list[float] = []
    engine = make_engine()
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(every=3), lambda e: fired.append(e.state.iteration)
    )

    @engine.on(Events.ITERATION_STARTED(once=4))
    def to_float(e: Engine) -> None:
        e.state.iteration = float(e.state.iteration)

    engine.run(range(10))
    assert fired == [3, 6, 9]


def test_filtered_handlers_in_an_assigned_tuple_fire_on_their_counter(make_engine: Any) -> None:
    fired: list[int] = []
    engine = make_engine()
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(every=4), lambda e: fired.append(e.state.iteration)
    )
    handlers = engine._event_handlers
    handlers[Events.ITERATION_COMPLETED] = tuple(handlers[Events.ITERATION_COMPLETED])
    engine.run(range(10))
    assert fired == [4, 8]


def test_filters_on_epochs_skip_and_fire_on_their_counter(make_engine: Any) -> None:
    fired: list[tuple[str, int]] = []
    engine = make_engine()
    engine.add_event_handler(
        Events.EPOCH_COMPLETED(every=3), lambda e: fired.append(("every3", e.state.epoch))
    )
    engine.add_event_handler(
        Events.EPOCH_COMPLETED(after=4, before=9),
        lambda e: fired.append(("between", e.state.epoch)),
    )
    engine.run(range(2), max_epochs=10)
    assert fired == [
        ("every3", 3),
        ("between", 5),
        ("every3", 6),
        ("between", 6),
        ("between", 7),
        ("between", 8),
        ("every3", 9),
    ]


def test_assigning_a_plain_dict_to_the_registry_converts_it(make_engine: Any) -> None:
    calls: list[str] = []
    engine = make_engine()
    engine._event_handlers = {Events.COMPLETED: [(calls.append, ("done",), {})]}
    engine.run([0])
    assert calls == ["done"]


def test_dead_engine_reference_is_reported(make_engine: Any) -> None:
    engine = make_engine()
    other = make_engine()
    engine._event_handlers[Events.STARTED].append((lambda e: None, (weakref.ref(other),), {}))
    del other
    with pytest.raises(RuntimeError, match="Engine reference not resolved"):
        engine.run([0])


def test_malformed_registry_entry_is_a_clear_error(make_engine: Any) -> None:
    engine = make_engine()
    engine._event_handlers[Events.STARTED].append("not a tuple")
    with pytest.raises((TypeError, ValueError)):
        engine.run([0])


def test_fire_event_override_sees_every_event(make_engine: Any) -> None:
    engine = make_engine(cls=recording(Engine))
    engine.run([0, 1], max_epochs=1)
    seen = event_names(engine)
    assert seen[0] == "STARTED"
    assert seen[-1] == "COMPLETED"
    assert len(seen) == 12


def test_many_filtered_and_plain_handlers_fire_on_their_counters(make_engine: Any) -> None:
    fired: dict[str, list[int]] = {}
    engine = make_engine()
    specs = {
        "every3": Events.ITERATION_COMPLETED(every=3),
        "once": Events.ITERATION_STARTED(once=[2, 5]),
        "before": Events.GET_BATCH_COMPLETED(before=3),
        "after": Events.GET_BATCH_STARTED(after=6),
        "epochs": Events.EPOCH_COMPLETED(every=2),
        "custom": Events.ITERATION_COMPLETED(event_filter=lambda e, n: n in (1, 7)),
    }
    for name, event in specs.items():
        counter = "epoch" if name == "epochs" else "iteration"
        engine.add_event_handler(
            event,
            lambda e, name=name, counter=counter: fired.setdefault(name, []).append(
                getattr(e.state, counter)
            ),
        )
    engine.run(range(4), max_epochs=2)
    assert fired == {
        "every3": [3, 6],
        "once": [2, 5],
        "before": [1, 2],  # after defaults to 0, exclusive, as in ignite
        "after": [7],
        "epochs": [2],
        "custom": [1, 7],
    }


def test_stored_kwargs_edited_in_place_are_seen(make_engine: Any) -> None:
    seen: list[int] = []
    engine = make_engine()
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e, k: seen.append(k), k=1)

    @engine.on(Events.ITERATION_STARTED)
    def edit(e: Engine) -> None:
        e._event_handlers[Events.ITERATION_COMPLETED][0][2]["k"] = e.state.iteration * 10

    engine.run([0, 1, 2])
    assert seen == [10, 20, 30]


def test_instance_fire_event_is_honoured(make_engine: Any) -> None:
    seen: list[str] = []
    engine = make_engine()
    base = engine._fire_event

    def record(event: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(event.name)
        base(event, *args, **kwargs)

    engine._fire_event = record
    engine.run([0])
    assert seen[0] == "STARTED"
    assert seen[-1] == "COMPLETED"


def test_is_done_override_is_honoured(backend: str) -> None:
    class StopsAtThree(Engine):
        @staticmethod
        def _is_done(state: Any) -> bool:
            return bool(state.iteration >= 3)

    state = StopsAtThree(lambda e, b: b, backend=backend).run([0, 1], max_epochs=5)
    assert state.iteration == 4


def test_instance_overrides_of_is_done_and_setup_are_honoured(make_engine: Any) -> None:
    engine = make_engine()
    engine._is_done = lambda state: state.iteration >= 6
    restarts: list[int] = []
    base_setup = engine._setup_dataloader_iter

    def setup() -> None:
        restarts.append(engine.state.iteration)
        base_setup()

    engine._setup_dataloader_iter = setup
    state = engine.run([0, 1, 2], max_epochs=5)
    assert (state.epoch, state.iteration) == (2, 6)
    assert restarts == [0, 3]
