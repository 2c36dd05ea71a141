"""A StopIteration raised by the process function or a handler becomes RuntimeError when it
leaves run(), as PEP 479 turns it in ignite's generator loop; EXCEPTION_RAISED handlers still
see the StopIteration itself."""

from __future__ import annotations

from typing import Any

import pytest

from ember.engine import Events

PEP_479 = "generator raised StopIteration"


def engine_raising_stop_iteration(make_engine: Any, where: str) -> Any:
    def step(engine: Any, batch: Any) -> Any:
        if where == "process function" and engine.state.iteration == 2:
            raise StopIteration("from the step")
        return batch

    engine = make_engine(step)

    def raise_stop(engine: Any) -> None:
        raise StopIteration(f"from {where}")

    if where == "STARTED handler":
        engine.add_event_handler(Events.STARTED, raise_stop)
    elif where == "ITERATION_COMPLETED handler":
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), raise_stop)
    return engine


WHERE = ["process function", "STARTED handler", "ITERATION_COMPLETED handler"]


@pytest.mark.parametrize("where", WHERE)
def test_an_unhandled_stop_iteration_leaves_run_as_runtime_error(
    make_engine: Any, where: str
) -> None:
    engine = engine_raising_stop_iteration(make_engine, where)
    with pytest.raises(RuntimeError, match=PEP_479) as raised:
        engine.run([0, 1, 2], max_epochs=2)
    assert isinstance(raised.value.__cause__, StopIteration)


def test_an_enclosing_map_is_not_cut_short(make_engine: Any) -> None:
    def train(config: int) -> int:
        engine = engine_raising_stop_iteration(make_engine, "process function")
        return engine.run([config] * 3).iteration

    with pytest.raises(RuntimeError, match=PEP_479):
        list(map(train, [1, 2]))


@pytest.mark.parametrize("where", WHERE)
def test_handlers_see_the_stop_iteration_and_may_swallow_it(make_engine: Any, where: str) -> None:
    engine = engine_raising_stop_iteration(make_engine, where)
    seen: list[type] = []
    engine.add_event_handler(Events.EXCEPTION_RAISED, lambda e, exc: seen.append(type(exc)))
    state = engine.run([0, 1, 2], max_epochs=2)
    assert seen == [StopIteration]
    # At the iteration level the epoch ends and the run goes on; at the run level it ends.
    assert state.iteration == (0 if where == "STARTED handler" else 5)


@pytest.mark.parametrize(
    ("where", "seen_by_handler"),
    [
        ("process function", [StopIteration, RuntimeError]),
        ("STARTED handler", [StopIteration]),
        ("ITERATION_COMPLETED handler", [StopIteration, RuntimeError]),
    ],
)
def test_a_handler_that_reraises_sends_runtime_error_to_the_run_level(
    make_engine: Any, where: str, seen_by_handler: list[type]
) -> None:
    engine = engine_raising_stop_iteration(make_engine, where)
    seen: list[type] = []

    def reraise(engine: Any, exc: BaseException) -> None:
        seen.append(type(exc))
        raise exc

    engine.add_event_handler(Events.EXCEPTION_RAISED, reraise)
    with pytest.raises(RuntimeError, match=PEP_479):
        engine.run([0, 1, 2], max_epochs=2)
    assert seen == seen_by_handler
