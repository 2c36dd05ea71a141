"""Random hostile programs: handlers and subclasses that vandalise the engine and its state.

Run in a subprocess by ``tests/test_hostile_fuzz.py`` (a crash must fail a test, not kill
pytest), and by hand for the long run::

    python tests/isolated/hostile_fuzz.py BACKEND FIRST COUNT

runs the programs of seeds FIRST .. FIRST+COUNT-1 on BACKEND (``cpp`` or ``python``) and prints,
for each, a line ``begin SEED`` before it runs and a JSON line with its outcome after, so that the
seed that killed or hung the process is the last one begun. A program is drawn from its seed
alone: the same seed gives the same program on both loops.

Each program builds an engine (``Engine`` or a fresh subclass whose class body shadows fields the
loop keeps in slots, overrides loop methods or ``__setattr__``), attaches recording handlers to
random events, with random filters, and lets some of them vandalise the engine at a given call:
foreign or deleted state, retyped counters and flags, replaced registries and handler lists,
broken filters, a forged resume point, a nested run. A budget of Python calls (the step, the
handlers, the data) ends every program that keeps calling Python, so only a loop that spins
without calling Python can hang.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from ember.engine import Engine, Events, State
from ember.engine._compiled import _EVENT_ORDER

BUDGET = 400
# Every event, in the compiled loop's EventId order (the order seeds were drawn in).
EVENTS = list(_EVENT_ORDER)
COUNTED = [e for e in EVENTS if e in State.event_to_attr]
ODD_VALUES: list[Callable[[], Any]] = [
    lambda: None,
    lambda: "3",
    lambda: 2.5,
    lambda: 2.0,
    lambda: float("nan"),
    lambda: -1,
    lambda: 0,
    lambda: 10**30,
    lambda: 2**63 - 1,
    lambda: True,
    list,
    object,
    types.SimpleNamespace,
]


class OutOfBudget(BaseException):
    """The program called Python too often: it ends here, on both loops alike."""


class BadBool:
    def __bool__(self) -> bool:
        raise ValueError("no truth value")

    def __eq__(self, other: object) -> bool:
        raise ValueError("no equality")

    __hash__ = object.__hash__


class Program:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.calls = 0
        self.log: list[Any] = []

    def spend(self) -> None:
        self.calls += 1
        if self.calls > BUDGET:
            raise OutOfBudget

    def record(self, *entry: Any) -> None:
        self.log.append(tuple(_plain(x) for x in entry))


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value if not isinstance(value, int) or abs(value) < 2**53 else "big"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else value
    return type(value).__name__


def _counters(engine: Any) -> tuple[Any, Any]:
    state = getattr(engine, "state", None)
    return getattr(state, "epoch", "-"), getattr(state, "iteration", "-")


# ---------------------------------------------------------------- vandalism
def _registry_list(engine: Any, rng: random.Random) -> Any:
    registry = getattr(engine, "_event_handlers_registry", None)
    try:
        return registry[rng.choice(EVENTS)]
    except Exception:  # noqa: BLE001 (a vandalised registry may raise anything)
        return None


def _filtered_handlers(engine: Any) -> list[Any]:
    try:
        return [
            entry[0]
            for entries in list(engine._event_handlers_registry.values())
            for entry in list(entries)
            if type(entry[0]).__name__ == "FilteredHandler"
        ]
    except Exception:  # noqa: BLE001 (a vandalised registry may raise anything)
        return []


def _vandal_actions(p: Program) -> list[Callable[[Any], None]]:
    rng = p.rng
    odd = rng.choice(ODD_VALUES)
    counter = rng.choice(["iteration", "epoch", "epoch_length", "max_epochs", "max_iters"])
    field = rng.choice(["output", "batch", "dataloader", "times", "metrics"])
    flag = rng.choice(["should_terminate", "should_terminate_single_epoch", "should_interrupt"])
    flag_value = rng.choice(
        [True, 1, "skip_completed", "skip_epoch_completed", "", 0, [], [1], BadBool(), None]
    )
    engine_slot = rng.choice(
        [
            "state",
            "_event_handlers_registry",
            "_dataloader_iter",
            "_init_iter",
            "_process_function",
            "_resume_point",
            "last_event_name",
            "should_terminate",
            "should_terminate_single_epoch",
            "should_interrupt",
        ]
    )
    phase = rng.choice([-3, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 99])
    foreign_state = rng.choice(
        [
            lambda e: types.SimpleNamespace(iteration=2, epoch=1),
            lambda e: types.SimpleNamespace(**vars_of(e.state)),
            lambda e: None,
            lambda e: object(),
            lambda e: State(),
            lambda e: _shadowing_state()(),
            lambda e: 5,
        ]
    )

    def vars_of(state: Any) -> dict[str, Any]:
        try:
            return dict(state.__getstate__())
        except Exception:  # noqa: BLE001 (the state may be anything by now)
            return {}

    def replace_state(e: Any) -> None:
        e.state = foreign_state(e)

    def odd_counter(e: Any) -> None:
        setattr(e.state, counter, odd())

    def delete_counter(e: Any) -> None:
        delattr(e.state, counter)

    def odd_field(e: Any) -> None:
        setattr(e.state, field, odd())

    def odd_flag(e: Any) -> None:
        setattr(e, flag, flag_value)

    def delete_engine_slot(e: Any) -> None:
        delattr(e, engine_slot)

    def odd_engine_slot(e: Any) -> None:
        setattr(e, engine_slot, odd())

    def replace_registry(e: Any) -> None:
        e._event_handlers_registry = rng.choice([{}, [], None, {Events.STARTED: 5}, odd()])

    def convert_registry(e: Any) -> None:
        e._event_handlers = {k: list(v) for k, v in e._event_handlers.items()}

    def odd_registry_value(e: Any) -> None:
        event = rng.choice(EVENTS)
        value = rng.choice(
            [
                lambda: (),
                lambda: "abc",
                lambda: [5],
                lambda: [(print,)],
                lambda: [(lambda *a, **k: None, 5, {})],
                lambda: [(lambda *a, **k: None, (), 5)],
                lambda: [(lambda *a, **k: None, (), [("a", 1)])],
                lambda: tuple(e._event_handlers_registry.get(event, ())),
                lambda: None,
                odd,
            ]
        )()
        dict.__setitem__(e._event_handlers_registry, event, value)

    def odd_registry_version(e: Any) -> None:
        if rng.random() < 0.5:
            del e._event_handlers_registry.version
        else:
            e._event_handlers_registry.version = odd()

    def edit_list_in_place(e: Any) -> None:
        handlers = _registry_list(e, rng)
        if not isinstance(handlers, list):
            return
        choice = rng.randrange(4)
        if choice == 0:
            handlers.clear()
        elif choice == 1 and handlers:
            handlers.insert(0, handlers[-1])
        elif choice == 2 and handlers:
            handlers.pop(rng.randrange(len(handlers)))
        else:
            handlers.append((lambda *a, **k: p.spend(), (), {}))

    def break_filter(e: Any) -> None:
        found = _filtered_handlers(e)
        if not found:
            return
        wrapper = rng.choice(found)
        what = rng.randrange(6)
        if what == 0:
            wrapper.event_filter = rng.choice([5, None, lambda *a: BadBool()])
        elif what == 1:
            wrapper.engine_ref = rng.choice([5, None, lambda: None])
        elif what == 2:
            wrapper.handler = rng.choice([None, 5])
        elif what == 3:
            wrapper.event = rng.choice(["nope", Events.TERMINATE, 5])
        else:
            count = getattr(wrapper.event_filter, "every", None)
            if count is not None:
                name = rng.choice(["every", "after", "before", "grid_origin", "once"])
                setattr(wrapper.event_filter, name, rng.choice([0, -1, 10**30, "x", None, (5,)]))

    def forge_resume_point(e: Any) -> None:
        e._resume_point = rng.choice(
            [
                (phase, 0, False, 0.0, 0.0, 0, 0, None, 0),
                (phase, -5, 1, "x", 0.0, 0, 0, None, 0),
                (phase,),
                "abc",
                (phase, 10**30, False, 0.0, 0.0, 0, 0, None, 1),
            ]
        )
        e.should_interrupt = rng.random() < 0.5

    def nested_run(e: Any) -> None:
        e.run(rng.choice([[1, 2], None, range(3)]), epoch_length=rng.choice([None, 2]))

    def control(e: Any) -> None:
        rng.choice([e.terminate, e.terminate_epoch, e.interrupt, lambda: e.terminate(True)])()

    def raise_something(e: Any) -> None:
        raise rng.choice([ValueError("boom"), StopIteration(), KeyError("k"), OutOfBudget()])

    def swap_iterator(e: Any) -> None:
        e._dataloader_iter = rng.choice([None, iter([]), iter([7, 8]), 5, "abc"])

    def swap_class(e: Any) -> None:
        e.__class__ = _shadowing_engine(rng)

    def mutate_class(e: Any) -> None:
        if type(e) is not Engine:  # never the shared Engine class
            setattr(type(e), rng.choice(["should_terminate", "state", "_process_function"]), False)

    def odd_logger(e: Any) -> None:
        e.logger = odd()

    def odd_attribute_state(e: Any) -> None:
        e.state.__class__ = _shadowing_state()

    def poison_values(e: Any) -> None:
        # Values whose __del__ or __bool__ rebinds what the loop is reading: the loop drops
        # them in the middle of its own bookkeeping.
        class Rebinding:
            def __del__(self) -> None:
                e.state = State(iteration=1, epoch=1, max_epochs=2, epoch_length=2)
                e.should_terminate_single_epoch = False

            def __bool__(self) -> bool:
                e.should_interrupt = Rebinding()
                e.should_terminate_single_epoch = False
                e.state.times = {}
                return False

        for name in ("batch", "output", "times"):
            setattr(e.state, name, Rebinding())
        e.last_event_name = Rebinding()
        e.should_terminate = Rebinding()

    # Where the compiled loop differs from the Python loop on purpose (docs/design.md, "Where
    # the compiled loop differs"): engine.state that is not a State with its fields in slots
    # (TypeError), the engine's class changed during a run (RuntimeError), a filtered handler's
    # fields read when first fired, an _init_iter that is not an int.
    for action in (replace_state, odd_attribute_state, swap_class, mutate_class, break_filter):
        action.differs = True  # type: ignore[attr-defined]
    if engine_slot in ("state", "_init_iter"):  # the compiled loop counts from an int
        odd_engine_slot.differs = True  # type: ignore[attr-defined]
    # _setup_engine derives _init_iter from these: a float there
    if counter in ("iteration", "epoch_length") and odd in [ODD_VALUES[i] for i in (2, 3, 4)]:
        odd_counter.differs = True  # type: ignore[attr-defined]
    return [
        replace_state,
        odd_counter,
        delete_counter,
        odd_field,
        odd_flag,
        delete_engine_slot,
        odd_engine_slot,
        replace_registry,
        convert_registry,
        odd_registry_value,
        odd_registry_version,
        edit_list_in_place,
        break_filter,
        forge_resume_point,
        nested_run,
        control,
        control,
        raise_something,
        swap_iterator,
        swap_class,
        mutate_class,
        odd_logger,
        odd_attribute_state,
        poison_values,
        poison_values,
    ]


def _shadowing_state() -> type:
    class ShadowState(State):
        iteration = 0  # a class attribute: the instance value lives in __dict__

    return ShadowState


def _shadowing_engine(rng: random.Random) -> type:
    namespace: dict[str, Any] = {
        name: value
        for name, value in (
            ("should_terminate", False),
            ("should_terminate_single_epoch", False),
            ("should_interrupt", False),
            ("last_event_name", None),
            ("state", None),
            ("_dataloader_iter", None),
        )
        if rng.random() < 0.2
    }
    if rng.random() < 0.2:

        def _process_function(self: Any, engine: Any, batch: Any) -> Any:
            return batch

        namespace["_process_function"] = _process_function
    if rng.random() < 0.1:

        def __setattr__(self: Any, name: str, value: Any) -> None:  # noqa: N807
            object.__setattr__(self, name, value)

        namespace["__setattr__"] = __setattr__
    if rng.random() < 0.1:
        namespace["_is_done"] = lambda self, state: Engine._is_done(state)
    if rng.random() < 0.1:

        def _fire_event(self: Any, event: Any, *args: Any, **kwargs: Any) -> None:
            Engine._fire_event(self, event, *args, **kwargs)

        namespace["_fire_event"] = _fire_event
    if rng.random() < 0.1:

        def _setup_dataloader_iter(self: Any) -> None:
            Engine._setup_dataloader_iter(self)

        namespace["_setup_dataloader_iter"] = _setup_dataloader_iter
    return type("HostileEngine", (Engine,), namespace)


# ---------------------------------------------------------------- programs
def _data(p: Program) -> tuple[Any, dict[str, Any]]:
    rng = p.rng
    n = rng.randint(1, 4)
    kind = rng.randrange(5)
    kwargs: dict[str, Any] = {}
    if rng.random() < 0.5:
        kwargs["max_epochs"] = rng.randint(1, 3)
    else:
        kwargs["max_iters"] = rng.randint(1, 9)
    if kind == 0:
        data: Any = list(range(n))
    elif kind == 1:

        def generate() -> Iterator[int]:
            for i in range(n):
                p.spend()
                yield i

        data = generate()  # one-shot, unknown length
    elif kind == 2:
        data = None
        kwargs["epoch_length"] = n
    elif kind == 3:
        data = range(n)
        kwargs["epoch_length"] = rng.randint(1, n + 2)
    else:
        data = iter(range(n))
    return data, kwargs


def _make_filter(rng: random.Random) -> Callable[[Any], Any]:
    choice = rng.randrange(6)
    if choice == 0:
        return lambda event: event
    if choice == 1:
        return lambda event: event(every=rng.randint(1, 3))
    if choice == 2:
        return lambda event: event(once=rng.randint(1, 4))
    if choice == 3:
        return lambda event: event(before=rng.randint(1, 5), after=rng.randint(0, 2))
    if choice == 4:
        return lambda event: event(event_filter=lambda engine, counter: counter % 2 == 1)
    return lambda event: event(every=rng.randint(1, 2)) | Events.COMPLETED


def build(seed: int) -> tuple[Program, Callable[[], Any]]:
    p = Program(seed)
    rng = p.rng
    cls = Engine if rng.random() < 0.6 else _shadowing_engine(rng)

    def step(engine: Any, batch: Any) -> Any:
        p.spend()
        p.record("step", batch, *_counters(engine))
        return batch

    engine = cls(step)
    engine.logger.disabled = True
    actions = _vandal_actions(p)
    for _ in range(rng.randint(1, 4)):
        event = rng.choice(EVENTS)
        with_filter = event in COUNTED and rng.random() < 0.6
        target = _make_filter(rng)(event) if with_filter else event
        vandalise = rng.choice(actions) if rng.random() < 0.7 else None
        at_call = rng.randint(1, 4)
        swallow = event is Events.EXCEPTION_RAISED and rng.random() < 0.5
        name = event.name
        calls = [0]

        def handler(
            engine: Any,
            *args: Any,
            _name: str = name,
            _calls: list[int] = calls,
            _vandalise: Any = vandalise,
            _at: int = at_call,
            _swallow: bool = swallow,
            **kwargs: Any,
        ) -> None:
            p.spend()
            _calls[0] += 1
            p.record(_name, *_counters(engine), *[type(a).__name__ for a in args])
            if _vandalise is not None and _calls[0] == _at:
                p.record("vandal", _vandalise.__name__, getattr(_vandalise, "differs", False))
                _vandalise(engine)
            if _name == "EXCEPTION_RAISED" and not _swallow and args:
                raise args[0]

        try:
            engine.add_event_handler(target, handler)
        except Exception as exc:  # noqa: BLE001 (an odd filter, say: an outcome to record)
            p.record("add", type(exc).__name__)
    data, kwargs = _data(p)
    runs = rng.randint(1, 3)

    def drive() -> Any:
        for _ in range(runs):
            engine.run(data, **kwargs)
            if getattr(engine, "_resume_point", None) is None:
                break
        return engine

    return p, drive


def run_program(seed: int) -> dict[str, Any]:
    p, drive = build(seed)
    outcome = "ok"
    try:
        engine = drive()
        p.record("end", *_counters(engine))
    except OutOfBudget:
        outcome = "budget"
    except BaseException as exc:  # noqa: BLE001 (the program's failure is its outcome)
        outcome = type(exc).__name__
    return {"seed": seed, "outcome": outcome, "log": p.log}


def main() -> None:
    backend, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    import os

    os.environ["EMBER_BACKEND"] = backend
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    sys.setrecursionlimit(400)
    out = sys.stdout
    for seed in range(first, first + count):
        out.write(f"begin {seed}\n")
        out.flush()
        result = run_program(seed)
        out.write(json.dumps(result, default=str) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
