"""Programs that vandalise the engine: each case the hostile fuzz found or issue 11 names, on
both loops. Before the fix the compiled loop crashed (SIGSEGV, SIGFPE), hung, raised
AttributeError or ignored terminate() on these; the Python loop is the reference."""

from __future__ import annotations

import collections
import subprocess
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from conftest import collect_garbage
from ember.engine import Engine, Events, State


def _iterations(engine: Engine) -> list[int]:
    seen: list[int] = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.iteration))
    return seen


def test_a_foreign_state_with_a_filtered_handler(make_engine: Callable[..., Engine]) -> None:
    # The case: the count filter read iteration at the slot offset of a SimpleNamespace.
    engine = make_engine()

    @engine.on(Events.ITERATION_COMPLETED)
    def swap(engine: Engine) -> None:
        if engine.state.iteration == 2:
            engine.state = types.SimpleNamespace(iteration=2, epoch=1)  # type: ignore[assignment]

    engine.add_event_handler(Events.ITERATION_COMPLETED(every=2), lambda engine: None)
    # The compiled loop reads its fields at slot offsets: only a State (docs/design.md).
    with pytest.raises((TypeError, AttributeError), match=r"State|attribute"):
        engine.run(range(5))


@pytest.mark.parametrize(
    "foreign",
    [None, 5, object(), types.SimpleNamespace(iteration=1, epoch=1), [1, 2]],
    ids=["None", "int", "object", "namespace", "list"],
)
def test_any_object_in_engine_state(make_engine: Callable[..., Engine], foreign: Any) -> None:
    engine = make_engine()
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=3), lambda engine: None)
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=2), lambda e: setattr(e, "state", foreign)
    )
    with pytest.raises((TypeError, AttributeError)):
        engine.run(range(5), max_epochs=2)


def test_a_step_defined_in_the_subclass_body(backend: str) -> None:
    class Trainer(Engine):
        def __init__(self) -> None:
            super().__init__(self._process_function, backend=backend)

        def _process_function(self, engine: Engine, batch: Any) -> Any:  # type: ignore[override]
            return batch * 10

    trainer = Trainer()
    outputs: list[int] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output))
    trainer.run([1, 2, 3])
    assert outputs == [10, 20, 30]


@pytest.mark.parametrize(
    "name", ["should_terminate", "should_terminate_single_epoch", "should_interrupt"]
)
def test_flags_with_class_defaults(backend: str, name: str) -> None:
    class Trainer(Engine):
        pass

    setattr(Trainer, name, False)  # a class attribute shadows the slot: flags live in __dict__
    trainer = Trainer(lambda e, b: b, backend=backend)
    seen = _iterations(trainer)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate())
    trainer.run(range(6), max_epochs=2)
    assert seen == [1, 2]


def test_a_state_subclass_with_a_class_default(make_engine: Callable[..., Engine]) -> None:
    class MyState(State):
        iteration = 0  # shadows the slot: the instance value lives in __dict__

    engine = make_engine()
    engine.state = MyState()
    seen = _iterations(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=2), lambda e: seen.append(-1))
    engine.run(range(4))
    assert seen == [1, 2, -1, 3, 4, -1]


def test_the_engine_class_changed_during_a_run(backend: str) -> None:
    class Shadowing(Engine):
        should_terminate = False

    engine = Engine(lambda e, b: b, backend=backend)
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=1), lambda e: setattr(e, "__class__", Shadowing)
    )
    if backend == "cpp":
        with pytest.raises(RuntimeError, match="class of the engine changed"):
            engine.run(range(3))
    else:
        assert engine.run(range(3)).iteration == 3


@pytest.mark.parametrize("registry", [{}, [], None, {Events.STARTED: 5}])
def test_a_registry_that_is_not_a_handler_registry(
    make_engine: Callable[..., Engine], registry: Any
) -> None:
    engine = make_engine()
    engine._event_handlers_registry = registry
    with pytest.raises(TypeError, match="should be a HandlerRegistry"):
        engine.run([1])


def test_a_registry_without_version(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    del engine._event_handlers_registry.version
    with pytest.raises(AttributeError, match="version"):
        engine.run([1])


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ((), None),
        ("abc", ValueError),
        ([5], TypeError),
        ([(print,)], ValueError),
        ([(lambda *a, **k: None, 5, {})], TypeError),
        ([(lambda *a, **k: None, (), [("a", 1)])], TypeError),
        (None, None),
    ],
    ids=["empty-tuple", "str", "int-entry", "short-entry", "int-args", "list-kwargs", "None"],
)
def test_malformed_handler_lists(
    make_engine: Callable[..., Engine], value: Any, error: type[Exception] | None
) -> None:
    engine = make_engine()
    dict.__setitem__(engine._event_handlers_registry, Events.ITERATION_COMPLETED, value)
    if error is None:
        assert engine.run([1, 2]).iteration == 2
    else:
        with pytest.raises(error):
            engine.run([1, 2])


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("every", 0, ZeroDivisionError),  # a modulo by zero was SIGFPE in C++
        ("every", -1, None),
        ("every", 10**30, None),
        ("grid_origin", -(2**63), None),
        ("after", 2**63 - 1, None),
        ("every", "x", TypeError),
        ("once", (), None),
    ],
)
def test_count_filter_fields_set_by_a_program(
    make_engine: Callable[..., Engine], field: str, value: Any, error: type[Exception] | None
) -> None:
    engine = make_engine()
    calls: list[int] = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(every=2), lambda e: calls.append(e.state.iteration)
    )
    (entry,) = engine._event_handlers[Events.ITERATION_COMPLETED]
    setattr(entry[0].event_filter, field, value)
    if error is not None:
        with pytest.raises(error):
            engine.run(range(4))
        return
    engine.run(range(4))
    expected = [i for i in range(1, 5) if entry[0].event_filter(engine, i)]
    assert calls == expected


def test_filtered_handler_fields_replaced(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=2), lambda e: None)
    (entry,) = engine._event_handlers[Events.ITERATION_COMPLETED]
    entry[0].engine_ref = 5
    with pytest.raises(TypeError, match="not callable"):
        engine.run(range(4))


def test_a_bound_of_minus_one_is_not_none(make_engine: Callable[..., Engine]) -> None:
    # -1 was the compiled loop's "None": the run never ended on exhausted one-shot data.
    engine = make_engine()
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=4), lambda e: setattr(e.state, "max_epochs", -1)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = engine.run(iter(range(4)), max_epochs=3, epoch_length=4)
    assert (state.epoch, state.iteration) == (1, 4)


@pytest.mark.parametrize("max_epochs", [10**30, 2**63 - 1, 5000])
def test_endless_epochs_without_progress_fail(
    make_engine: Callable[..., Engine], max_epochs: int
) -> None:
    engine = make_engine()
    engine.add_event_handler(
        Events.EPOCH_COMPLETED(once=1), lambda e: setattr(e.state, "max_epochs", max_epochs)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="no progress: 1000 epochs in a row"):
            engine.run(iter(range(3)), max_epochs=2, epoch_length=3)
    assert engine.state.epoch == 1001


@pytest.mark.parametrize("value", [2.0, 2.5, float("nan"), 10**30, 2**63 - 1, True], ids=repr)
def test_counters_of_other_types_follow_python(backend: str, value: Any) -> None:
    runs = {}
    for loop in ("python", backend):
        engine = Engine(lambda e, b: b, backend=loop)
        seen = _iterations(engine)
        engine.add_event_handler(
            Events.ITERATION_COMPLETED(once=1), lambda e: setattr(e.state, "iteration", value)
        )
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=1), seen.append, -1)
        state = engine.run(range(3), max_epochs=2)
        runs[loop] = (repr(seen), repr(state.iteration), state.epoch)
    assert runs[backend] == runs["python"]


class _EqualToEveryPhase(int):
    """An int that says it equals anything: ``in RESUME_PHASES`` holds for it."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash(1)


@pytest.mark.parametrize(
    "point",
    [
        (99, 0, False, 0.0, 0.0, 0, 0),
        (1,),
        "abc",
        (1, 10**30, False, 0.0, 0.0, 0, 0),
        "equal to every phase",
    ],
    ids=["phase", "short", "str", "huge", "int-subclass-phase"],
)
def test_a_forged_resume_point(make_engine: Callable[..., Engine], point: Any) -> None:
    engine = make_engine()
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), lambda e: e.interrupt())
    engine.run([1, 2])
    if point == "equal to every phase":  # the epoch-end phase (8), which no resume starts from
        point = (_EqualToEveryPhase(8), *engine._resume_point[1:])
    engine._resume_point = point
    with pytest.raises(ValueError, match="_resume_point is malformed"):
        engine.run([1, 2])


@pytest.mark.parametrize("flag", ["should_terminate", "should_interrupt"])
def test_a_flag_without_truth_value(make_engine: Callable[..., Engine], flag: str) -> None:
    class NoTruth:
        def __bool__(self) -> bool:
            raise ValueError("no truth value")

    engine = make_engine()
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=1), lambda e: setattr(e, flag, NoTruth())
    )
    with pytest.raises(ValueError, match="no truth value"):
        engine.run([1, 2])


@pytest.mark.parametrize("name", ["should_terminate", "_process_function", "state"])
def test_a_deleted_engine_field(make_engine: Callable[..., Engine], name: str) -> None:
    engine = make_engine()
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), lambda e: delattr(e, name))
    with pytest.raises(AttributeError, match=name):
        engine.run([1, 2])


def test_a_renamed_helper_fails_when_configured() -> None:
    pytest.importorskip("ember._core")
    code = (
        "import types\n"
        "from ember.engine import _compiled, _loop_support\n"
        "support = types.ModuleType('support')\n"
        "vars(support).update(vars(_loop_support))\n"
        "del support.warn_data_exhausted\n"
        "_compiled._loop_support = support\n"
        "_compiled._configured_for.clear()\n"
        "from ember.engine import Engine\n"
        "try:\n"
        "    _compiled.configured_loop(Engine)\n"
        "except AttributeError as exc:\n"
        "    print('warn_data_exhausted' in str(exc))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "True"


def test_a_counter_deleted_before_the_first_iteration(make_engine: Callable[..., Engine]) -> None:
    # The compiled filter took the deleted slot for the iteration it had not written yet.
    engine = make_engine()
    calls: list[int] = []
    engine.add_event_handler(Events.GET_BATCH_STARTED, lambda e: delattr(e.state, "iteration"))
    engine.add_event_handler(Events.GET_BATCH_COMPLETED(every=2), lambda e: calls.append(1))
    with pytest.raises(AttributeError, match="iteration"):
        engine.run([1, 2])
    assert calls == []


# ----------------------------------------------------------------------------------------------
# Python code the compiled loop's own lookups could run (found by an audit of csrc/).


class _CollidingKey:
    """A class-namespace or registry key whose hash is ``like``'s: a lookup of ``like`` in a
    dict holding it calls ``__eq__``, which runs ``action`` once armed."""

    def __init__(self, like: Any) -> None:
        self.like_hash = hash(like)
        self.action: Callable[[], None] | None = None

    def __hash__(self) -> int:
        return self.like_hash

    def __eq__(self, other: object) -> bool:
        action, self.action = self.action, None
        if action is not None:
            action()
        return False


def _state_of_class(old: State, cls: type) -> State:
    """A copy of ``old`` of class ``cls``, made without a lookup on ``cls``."""
    from ember.engine.state import _MEMBERS, _SLOT_FIELDS

    new = object.__new__(cls)
    for name in _SLOT_FIELDS:
        _MEMBERS[name].__set__(new, _MEMBERS[name].__get__(old))
    return new


def _registry_of_class(old: Any, cls: type) -> Any:
    """A copy of the handler registry ``old`` of class ``cls``, made without a lookup on it."""
    from ember.engine._registry import HandlerRegistry

    new = collections.defaultdict.__new__(cls)
    collections.defaultdict.__init__(new, list)
    for event, handlers in old.items():
        dict.__setitem__(new, event, list(handlers))
    HandlerRegistry.__dict__["version"].__set__(new, 10**7)
    return new


@pytest.mark.parametrize(
    ("attribute", "field", "copy"),
    [
        ("state", "iteration", _state_of_class),
        ("_event_handlers_registry", "version", _registry_of_class),
    ],
    ids=["state", "registry"],
)
def test_a_class_whose_namespace_runs_code_on_lookup(
    backend: str, attribute: str, field: str, copy: Callable[[Any, type], Any]
) -> None:
    """Admitting the class of the state or of the handler registry looks its fields up along
    its MRO; a key of another type in its namespace, colliding with a field's name, would run
    code that frees the object being admitted. The compiled loop does not admit such a class:
    assigned during a run, it raises as any class it cannot read at its slots; the Python loop
    reads it as Python does."""
    engine = Engine(lambda e, b: b, backend=backend)
    old = getattr(engine, attribute)
    key = _CollidingKey(field)
    cls = type("ClassWithAKey", (type(old),), {"__slots__": (), key: None})
    kept: list[Any] = []

    def swap(e: Engine) -> None:
        kept.append(getattr(e, attribute))
        key.action = lambda: setattr(engine, attribute, kept[0])  # frees the copy
        setattr(e, attribute, copy(kept[0], cls))

    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), swap)
    if backend == "cpp":
        with pytest.raises(TypeError, match="got ClassWithAKey"):
            engine.run(range(5), max_epochs=2)
    else:  # the swap back happens at some lookup of the Python loop: the run goes on
        assert engine.run(range(5), max_epochs=2).epoch == 2


@pytest.mark.parametrize("replaced", ["registry", "version"])
def test_registry_lookups_that_replace_the_registry_or_its_version(
    make_engine: Callable[..., Engine], replaced: str
) -> None:
    """The compiled loop looks every event up in a registry whose version changed; a key
    colliding with an event runs code there, which may replace the registry or its version
    (freeing them, when nothing else holds them). Both loops go on with what Python sees."""
    key = _CollidingKey(Events.INTERRUPT)
    engine = make_engine()
    calls: list[int] = []

    def replace() -> None:
        if replaced == "registry":
            fresh = type(engine._event_handlers_registry)()
            fresh[Events.ITERATION_COMPLETED] = [(record, (engine,), {})]
            fresh.version = 10**9
            engine._event_handlers_registry = fresh
        else:
            engine._event_handlers_registry.version = int("987654321")

    def record(e: Engine) -> None:
        calls.append(e.state.iteration)
        if e.state.iteration == 2:
            registry = type(e._event_handlers_registry)()
            registry[Events.ITERATION_COMPLETED] = [(record, (engine,), {})]
            registry[key] = []  # type: ignore[index]
            registry.version = int("123456789")  # held by the registry only
            e._event_handlers_registry = registry
            key.action = replace

    engine._event_handlers_registry[Events.ITERATION_COMPLETED] = [(record, (engine,), {})]
    engine.run(range(5), max_epochs=2)
    collect_garbage()
    assert calls == list(range(1, 11))
    assert key.action is None  # the colliding key's code ran


def test_configure_is_refused_during_a_run() -> None:
    """configure() replaces the layouts and slot offsets that a running loop's guards admitted
    classes by: during a run it raises, and the run goes on as before."""
    core = pytest.importorskip("ember._core")
    from ember.engine import _compiled

    engine = Engine(lambda e, b: b, backend="cpp")
    errors: list[str] = []

    def reconfigure(e: Engine) -> None:
        try:
            _compiled._configure(Engine)
        except RuntimeError as error:
            errors.append(str(error))

    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), reconfigure)
    assert engine.run(range(5), max_epochs=2).iteration == 10
    assert errors == ["ember._core.configure() cannot be called during a run"]
    assert callable(core.run_loop)
