"""Errors that a loop raises itself carry a traceback entry that points into the loop: a frame of
the Python loop, or the compiled loop's source file, csrc/loop.cpp."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from typing import Any

import pytest

from ember.engine import Events

LOOP_FILE = {"python": "_pyloop.py", "cpp": "loop.cpp"}


class Empty:
    def __iter__(self) -> Iterator[Any]:
        return iter([])


def innermost_file(error: BaseException) -> str:
    return traceback.extract_tb(error.__traceback__)[-1].filename


def remove_iterator(engine: Any) -> None:
    engine._dataloader_iter = None


def test_zero_size_points_into_the_loop(make_engine: Any, backend: str) -> None:
    engine = make_engine()
    with pytest.raises(ValueError, match="zero size") as raised:
        engine.run(Empty())
    assert innermost_file(raised.value).endswith(LOOP_FILE[backend])


def test_a_removed_iterator_points_into_the_loop(make_engine: Any, backend: str) -> None:
    engine = make_engine()
    engine.add_event_handler(Events.GET_BATCH_STARTED, remove_iterator)
    with pytest.raises(RuntimeError, match="iterator was removed") as raised:
        engine.run([1, 2])
    assert innermost_file(raised.value).endswith(LOOP_FILE[backend])


def test_a_malformed_resume_point_points_into_the_engine(make_engine: Any) -> None:
    # Checked when run() builds its plan, before either loop starts: the same code and frame.
    engine = make_engine()
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), lambda e: e.interrupt())
    engine.run([1, 2, 3])
    engine._resume_point = (1, 2)
    with pytest.raises(ValueError, match="_resume_point is malformed") as raised:
        engine.run([1, 2, 3])
    assert innermost_file(raised.value).endswith("_loop_support.py")


def test_exception_raised_handlers_see_the_loop_frame(make_engine: Any, backend: str) -> None:
    engine = make_engine()
    seen: list[str] = []
    engine.add_event_handler(
        Events.EXCEPTION_RAISED, lambda e, exc: seen.append(innermost_file(exc))
    )
    engine.run(Empty(), max_epochs=1)
    assert len(seen) == 1 and seen[0].endswith(LOOP_FILE[backend])


def test_a_handler_error_keeps_its_own_innermost_frame(make_engine: Any) -> None:
    engine = make_engine()

    def failing_handler(engine: Any) -> None:
        raise OSError("from the handler")

    engine.add_event_handler(Events.ITERATION_COMPLETED, failing_handler)
    with pytest.raises(OSError, match="from the handler") as raised:
        engine.run([1, 2])
    assert traceback.extract_tb(raised.value.__traceback__)[-1].name == "failing_handler"
