"""An exception raised at every place user code runs during a run.

For each place: the exception reaches the user with its type and a traceback that contains the
raising function's frame; the same engine is then run again, and everything both runs did
(events, counters, outputs, what was raised, when batches were released) is the same on the
compiled loop as on the Python loop, the specification.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ember.engine import Engine, Events

ALL_EVENTS = list(Events)


class HandlerError(Exception):
    pass


class StepError(Exception):
    pass


class FilterError(Exception):
    pass


class DataError(Exception):
    pass


class DelError(Exception):
    pass


class StepAbort(BaseException):
    """Not an Exception: it skips the iteration level and goes to the run level."""


@dataclass
class Scenario:
    where: str
    armed: bool = True
    log: list[Any] = field(default_factory=list)


# What each place raises and the name of the function whose frame must be in the traceback.
PLACES: dict[str, tuple[type[BaseException], str]] = {
    **{f"handler:{event.name}": (HandlerError, "raising_handler") for event in ALL_EVENTS},
    "process_function": (StepError, "raising_step"),
    "process_function:BaseException": (StepAbort, "raising_step"),
    "event_filter:ITERATION_COMPLETED": (FilterError, "raising_filter"),
    "event_filter:EPOCH_STARTED": (FilterError, "raising_filter"),
    "data:__iter__": (DataError, "__iter__"),
    "data:__iter__ at restart": (DataError, "__iter__"),
    "data:__next__": (DataError, "__next__"),
    "data:__len__": (DataError, "__len__"),
}


class Batch:
    """A batch whose __del__ raises while the scenario is armed (place ``batch:__del__``)."""

    def __init__(self, scenario: Scenario, value: int) -> None:
        self.scenario = scenario
        self.value = value

    def __repr__(self) -> str:
        return f"Batch({self.value})"

    def __del__(self) -> None:
        scenario = self.scenario
        scenario.log.append(("released", self.value))
        if scenario.where == "batch:__del__" and scenario.armed:
            raise DelError(f"cannot release batch {self.value}")


class Data:
    """Three batches per pass; __iter__, __next__ and __len__ can be made to raise."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.passes = 0

    def __len__(self) -> int:
        if self.scenario.where == "data:__len__" and self.scenario.armed:
            raise DataError("no length today")
        return 3

    def __iter__(self) -> Iterator[Batch]:
        self.passes += 1
        scenario = self.scenario
        if scenario.armed and (
            (scenario.where == "data:__iter__")
            or (scenario.where == "data:__iter__ at restart" and self.passes == 2)
        ):
            raise DataError(f"cannot open pass {self.passes}")
        return DataIterator(scenario)


class DataIterator:
    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.position = 0

    def __iter__(self) -> DataIterator:
        return self

    def __next__(self) -> Batch:
        scenario = self.scenario
        if self.position == 3:
            raise StopIteration
        if scenario.where == "data:__next__" and scenario.armed and self.position == 1:
            raise DataError("cannot read batch 1")
        self.position += 1
        return Batch(scenario, self.position)


def build(backend: str, scenario: Scenario) -> tuple[Engine, Data]:
    where = scenario.where
    log = scenario.log

    def raising_step(engine: Engine, batch: Batch) -> int:
        if scenario.armed and where.startswith("process_function") and engine.state.iteration == 2:
            raise (StepAbort if where.endswith("BaseException") else StepError)("step failed")
        if scenario.armed and where == "handler:EXCEPTION_RAISED" and engine.state.iteration == 2:
            raise StepError("the failure EXCEPTION_RAISED sees")
        return batch.value * 10

    engine = Engine(raising_step, backend=backend)

    def record(engine: Engine, *args: Any, **kwargs: Any) -> None:
        extra = [type(a).__name__ for a in args] + sorted(kwargs.items())
        state = engine.state
        log.append((engine.last_event_name.name, state.epoch, state.iteration, state.output, extra))

    for event in ALL_EVENTS:
        if event is Events.EXCEPTION_RAISED and where != "handler:EXCEPTION_RAISED":
            continue  # a recorder there would swallow every exception
        engine.add_event_handler(event, record)

    # Triggers for the events that only fire on request, armed in the first run only.
    def trigger(engine: Engine) -> None:
        if not scenario.armed:
            return
        if where == "handler:TERMINATE":
            engine.terminate()
        elif where == "handler:TERMINATE_SINGLE_EPOCH":
            engine.terminate_epoch()
        elif where == "handler:INTERRUPT":
            engine.interrupt()

    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), trigger)

    if where.startswith("handler:"):
        event = getattr(Events, where.split(":")[1])

        def raising_handler(engine: Engine, *args: Any, **kwargs: Any) -> None:
            if scenario.armed:
                cause = args[0] if args and isinstance(args[0], BaseException) else None
                raise HandlerError(f"handler of {event.name} failed") from cause

        engine.add_event_handler(event, raising_handler)

    if where.startswith("event_filter:"):
        event = getattr(Events, where.split(":")[1])

        def raising_filter(engine: Engine, counter: int) -> bool:
            if scenario.armed and counter == 2:
                raise FilterError(f"filter of {event.name} failed at {counter}")
            return counter % 2 == 0

        engine.add_event_handler(
            event(event_filter=raising_filter),
            lambda e: log.append(("filtered", e.state.epoch, e.state.iteration)),
        )
    return engine, Data(scenario)


def outcome_of(call: Callable[[], Any], log: list[Any]) -> BaseException | None:
    try:
        call()
    except (Exception, StepAbort) as exc:  # noqa: BLE001 - the outcome is compared
        log.append(("raised", type(exc).__name__, str(exc)))
        return exc
    log.append(("returned",))
    return None


def play(backend: str, where: str) -> tuple[list[Any], BaseException | None, Engine]:
    """Run once armed, then again on the same engine disarmed; the log of both runs."""
    scenario = Scenario(where)
    engine, data = build(backend, scenario)
    log = scenario.log
    first = outcome_of(lambda: engine.run(data, max_epochs=2), log)
    log.append(
        ("state", engine.state.epoch, engine.state.iteration, engine._resume_point is not None)
    )
    scenario.armed = False
    outcome_of(lambda: engine.run(data, max_epochs=2), log)
    state = engine.state
    log.append(
        ("state", state.epoch, state.iteration, state.output, state.epoch_length, data.passes)
    )
    return list(log), first, engine  # a copy: releasing the engine later adds to the log


def frames(exc: BaseException) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(exc.__traceback__)]


@pytest.mark.parametrize("where", list(PLACES))
def test_exception_reaches_the_user_and_the_engine_stays_usable(backend: str, where: str) -> None:
    error, function = PLACES[where]
    log, first, engine = play(backend, where)
    assert type(first) is error, log
    assert function in frames(first), frames(first)
    # the second run ends normally, with the counters the Python loop reaches
    assert log[-2] == ("returned",), log
    assert engine.state.epoch == 2
    assert engine._resume_point is None
    if backend != "python":
        expected, _, _ = play("python", where)
        assert log == expected


def test_a_handler_error_keeps_its_cause(backend: str) -> None:
    _, first, _ = play(backend, "handler:EXCEPTION_RAISED")
    # the run level sees the handler's own error and the handler raises again from it
    assert isinstance(first, HandlerError)
    assert isinstance(first.__cause__, HandlerError)
    assert isinstance(first.__cause__.__cause__, StepError)


def test_exception_in_a_batch_destructor_goes_to_the_unraisable_hook(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """__del__ of a released batch raises: the run goes on, the error reaches
    sys.unraisablehook (captured here, so pytest's own hook does not turn it into a warning)."""
    caught: list[tuple[type[BaseException], list[str], str]] = []

    def hook(unraisable: Any) -> None:
        exc = unraisable.exc_value
        caught.append((type(exc), frames(exc), str(exc)))

    monkeypatch.setattr(sys, "unraisablehook", hook)
    log, first, engine = play(backend, "batch:__del__")
    # restore before the python-loop replay of the same program below would call it again
    monkeypatch.undo()
    assert first is None
    assert log[-2] == ("returned",)
    assert caught, "no unraisable exception was reported"
    assert all(kind is DelError and "__del__" in where for kind, where, _ in caught)
    assert engine.state.iteration == 6
    if backend != "python":
        monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: None)
        expected, _, _ = play("python", "batch:__del__")
        assert log == expected
    # released when the next batch is fetched; the last batch of the first run stays in
    # state.batch until the second (disarmed) run fetches its first batch
    assert [message for _, _, message in caught] == [
        "cannot release batch 1",
        "cannot release batch 2",
        "cannot release batch 3",
        "cannot release batch 1",
        "cannot release batch 2",
    ]
