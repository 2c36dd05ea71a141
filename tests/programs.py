"""Random engine programs and their event traces, for differential tests between loops.

A program is plain data (a ``Program``); ``trace(program, engine_cls, **engine_kwargs)`` runs it
on an engine class and returns what happened, recorded by handlers (not by overriding
``_fire_event``, which would send the compiled loop down its Python path).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

BUILT_IN = (
    "STARTED",
    "EPOCH_STARTED",
    "GET_BATCH_STARTED",
    "GET_BATCH_COMPLETED",
    "DATALOADER_STOP_ITERATION",
    "ITERATION_STARTED",
    "ITERATION_COMPLETED",
    "EPOCH_COMPLETED",
    "COMPLETED",
    "TERMINATE",
    "TERMINATE_SINGLE_EPOCH",
    "INTERRUPT",
)
COUNTED = (
    "STARTED",
    "EPOCH_STARTED",
    "GET_BATCH_STARTED",
    "GET_BATCH_COMPLETED",
    "ITERATION_STARTED",
    "ITERATION_COMPLETED",
    "EPOCH_COMPLETED",
    "COMPLETED",
)
ACTIONS = (
    "record",
    "terminate",
    "terminate_skip_completed",
    "terminate_epoch",
    "terminate_epoch_skip",
    "interrupt",
    "raise",
    "fire_custom",
    "add_handler",
    "remove_self",
    "replace_dataloader",
)
MAX_EVENTS = 1500
MAX_RUNS = 12


class TraceTooLong(BaseException):
    """Stops a program that would run (nearly) forever."""


@dataclass(frozen=True)
class Handler:
    event: str
    filter_kind: str  # none, every, once, before_after, every_before_after, custom
    filter_args: tuple[int, ...]
    action: str
    times: int  # how many times the action happens before the handler only records


@dataclass(frozen=True)
class Program:
    data_kind: str  # list, generator, unsized, none
    data_size: int
    epoch_length: int | None
    max_epochs: int | None
    max_iters: int | None
    handlers: tuple[Handler, ...]
    exception_handler: str  # absent, swallow, terminate, reraise
    step_raises_at: int | None
    step_terminates_at: int | None
    state_dict_round_trip: bool = False
    notes: list[str] = field(default_factory=list, compare=False)


def _filters() -> st.SearchStrategy[tuple[str, tuple[int, ...]]]:
    small = st.integers(1, 6)
    return st.one_of(
        st.just(("none", ())),
        st.tuples(st.just("every"), st.tuples(small)),
        st.tuples(st.just("once"), st.tuples(small)),
        st.tuples(st.just("before_after"), st.tuples(st.integers(0, 8), st.integers(0, 4))),
        st.tuples(
            st.just("every_before_after"),
            st.tuples(st.integers(1, 3), st.integers(0, 10), st.integers(0, 4)),
        ),
        st.tuples(st.just("custom"), st.tuples(st.integers(2, 3))),
    )


@st.composite
def handlers(draw: Any) -> Handler:
    filter_kind, filter_args = draw(_filters())
    event = draw(st.sampled_from(COUNTED if filter_kind != "none" else BUILT_IN))
    return Handler(
        event=event,
        filter_kind=filter_kind,
        filter_args=filter_args,
        action=draw(st.sampled_from(ACTIONS)),
        times=draw(st.integers(1, 2)),
    )


@st.composite
def programs(draw: Any) -> Program:
    data_kind = draw(st.sampled_from(("list", "generator", "unsized", "none")))
    data_size = draw(st.integers(1, 5))
    epoch_length = draw(st.none() | st.integers(1, 6))
    if data_kind == "none" and epoch_length is None:
        epoch_length = data_size
    if draw(st.booleans()):
        max_epochs, max_iters = draw(st.integers(1, 3)), None
    else:
        max_epochs, max_iters = None, draw(st.integers(1, 12))
    return Program(
        data_kind=data_kind,
        data_size=data_size,
        epoch_length=epoch_length,
        max_epochs=max_epochs,
        max_iters=max_iters,
        handlers=tuple(draw(st.lists(handlers(), max_size=4))),
        exception_handler=draw(st.sampled_from(("absent", "swallow", "terminate", "reraise"))),
        step_raises_at=draw(st.none() | st.integers(1, 8)),
        step_terminates_at=draw(st.none() | st.integers(1, 8)),
        state_dict_round_trip=draw(st.booleans()),
    )


class _Unsized:
    def __init__(self, size: int) -> None:
        self.size = size

    def __iter__(self) -> Any:
        return iter(range(100, 100 + self.size))


def _make_data(program: Program) -> Any:
    if program.data_kind == "list":
        return list(range(100, 100 + program.data_size))
    if program.data_kind == "generator":
        return (100 + i for i in range(program.data_size))
    if program.data_kind == "unsized":
        return _Unsized(program.data_size)
    return None


def _event_filter(handler: Handler) -> dict[str, Any]:
    kind, args = handler.filter_kind, handler.filter_args
    if kind == "every":
        return {"every": args[0]}
    if kind == "once":
        return {"once": args[0]}
    if kind == "before_after":
        return {"before": args[0] + args[1] + 1, "after": args[1]}
    if kind == "every_before_after":
        return {"every": args[0], "before": args[1] + args[2] + 1, "after": args[2]}
    if kind == "custom":
        modulus = args[0]
        return {"event_filter": lambda engine, event: event % modulus == 1}
    return {}


def trace(program: Program, engine_cls: type, **engine_kwargs: Any) -> list[Any]:
    """Run ``program`` and return its trace: events, actions, outputs, errors, warnings."""
    module = __import__(engine_cls.__module__.rsplit(".", 1)[0], fromlist=["Events"])
    events = module.Events
    event_enum = module.EventEnum

    class Custom(event_enum):  # type: ignore[misc, valid-type]
        PING = "ping"

    log: list[Any] = []

    def record(entry: Any) -> None:
        log.append(entry)
        if len(log) > MAX_EVENTS:
            raise TraceTooLong

    def step(engine: Any, batch: Any) -> Any:
        iteration = engine.state.iteration
        record(("step", iteration, batch))
        if program.step_terminates_at == iteration:
            engine.terminate()
        if program.step_raises_at == iteration:
            raise ValueError(f"step failed at {iteration}")
        return (iteration, batch)

    engine = engine_cls(step, **engine_kwargs)
    engine.register_events(*Custom)

    def recorder(name: str) -> Any:
        def on_event(engine: Any, *args: Any, **kwargs: Any) -> None:
            state = engine.state
            extra = sorted(kwargs.items())
            record((name, state.epoch, state.iteration, repr(state.output), extra))

        return on_event

    for name in BUILT_IN:
        engine.add_event_handler(getattr(events, name), recorder(name))
    engine.add_event_handler(Custom.PING, recorder("PING"))

    for index, spec in enumerate(program.handlers):
        _attach(engine, events, Custom, spec, index, record)

    if program.exception_handler != "absent":

        def on_exception(engine: Any, exc: BaseException) -> None:
            if isinstance(exc, TraceTooLong):
                raise exc
            summary = (type(exc).__name__, str(exc).split(".")[0])
            record(("EXCEPTION_RAISED", engine.state.epoch, engine.state.iteration, summary))
            if program.exception_handler == "terminate":
                engine.terminate()
            if program.exception_handler == "reraise":
                raise exc

        engine.add_event_handler(events.EXCEPTION_RAISED, on_exception)

    data = _make_data(program)
    kwargs = {"max_epochs": program.max_epochs, "max_iters": program.max_iters}
    if program.epoch_length is not None:
        kwargs["epoch_length"] = program.epoch_length
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for run_index in range(MAX_RUNS):
            try:
                engine.run(data, **kwargs)
            except TraceTooLong:
                log.append("trace too long")
                break
            except Exception as exc:  # noqa: BLE001 - the trace records every failure
                log.append(("run raised", type(exc).__name__, str(exc).split(".")[0]))
                break
            log.append(("run returned", engine.state.epoch, engine.state.iteration))
            if not _interrupted(engine):
                break
            if program.state_dict_round_trip and run_index == 0:
                log.append(("state_dict", dict(engine.state_dict())))
            kwargs = {}
        log.extend(("warning", str(w.message)) for w in caught)
    return log


def _interrupted(engine: Any) -> bool:
    pending = getattr(engine, "_resume_point", None)
    if pending is None:
        pending = getattr(engine, "_internal_run_generator", None)
    return pending is not None


def _attach(engine: Any, events: Any, custom: Any, spec: Handler, index: int, record: Any) -> None:
    event = getattr(events, spec.event)
    filter_kwargs = _event_filter(spec)
    if filter_kwargs:
        event = event(**filter_kwargs)
    remaining = [spec.times]

    def handler(engine: Any, *args: Any, **kwargs: Any) -> None:
        state = engine.state
        record((f"h{index}", spec.event, state.epoch, state.iteration))
        if remaining[0] <= 0:
            return
        remaining[0] -= 1
        action = spec.action
        if action == "terminate":
            engine.terminate()
        elif action == "terminate_skip_completed":
            engine.terminate(skip_completed=True)
        elif action == "terminate_epoch":
            engine.terminate_epoch()
        elif action == "terminate_epoch_skip":
            engine.terminate_epoch(skip_epoch_completed=True)
        elif action == "interrupt":
            engine.interrupt()
        elif action == "raise":
            raise RuntimeError(f"h{index} failed")
        elif action == "fire_custom":
            engine.fire_event(custom.PING)
        elif action == "add_handler":
            engine.add_event_handler(
                getattr(events, spec.event),
                lambda e: record((f"h{index}-added", e.state.epoch, e.state.iteration)),
            )
        elif action == "remove_self":
            engine.remove_event_handler(handler, getattr(events, spec.event))
        elif action == "replace_dataloader":
            engine.state.dataloader = [7, 8, 9]

    engine.add_event_handler(event, handler)
