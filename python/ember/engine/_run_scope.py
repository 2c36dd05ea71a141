"""Work to finish when the outermost ``Engine.run`` of a thread ends, however it ends.

A handler that leaves work running in the background (an asynchronous checkpoint write) asks
:func:`at_run_end` to be called back when the run that called it is over. "The run" is the
outermost ``run()`` of the thread: an evaluator run inside a trainer's epoch does not end the
trainer's run, so a checkpoint written on the evaluator's COMPLETED goes on in the background
while the trainer trains.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType

__all__ = ["RunScope", "at_run_end", "waits_stopped"]

RunEndCallback = Callable[[BaseException | None], None]


class _ThreadRuns(threading.local):
    def __init__(self) -> None:
        self.depth = 0
        self.callbacks: dict[int, RunEndCallback] = {}
        # A Ctrl-C stopped the end-of-run waits: the callbacks after it do not wait.
        self.waits_stopped = False
        self.waits_skipped = 0


_runs = _ThreadRuns()


def at_run_end(key: int, callback: RunEndCallback) -> bool:
    """Call ``callback(exception)`` when the outermost run of this thread ends (``exception`` is
    what the run raises, else ``None``); one callback per ``key``. Returns ``False`` and
    registers nothing when no run is in progress in this thread.

    A callback may raise when the run ended without an exception: the run then raises it. With
    an exception in flight, callbacks must not raise (they log instead).
    """
    if _runs.depth == 0:
        return False
    _runs.callbacks[key] = callback
    return True


class RunScope:
    """``with RunScope(): loop()`` in ``Engine.run``: counts nested runs, calls the callbacks
    when the outermost one ends."""

    def __enter__(self) -> None:
        _runs.depth += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _runs.depth -= 1
        if _runs.depth:
            return
        callbacks = list(_runs.callbacks.values())
        _runs.callbacks.clear()
        first_error: BaseException | None = None
        interrupt: KeyboardInterrupt | None = None
        _runs.waits_stopped, _runs.waits_skipped = False, 0
        try:
            for callback in callbacks:
                try:
                    callback(exc)
                except KeyboardInterrupt as error:
                    # Ctrl-C during a wait means "stop waiting": the callbacks after it still
                    # run (one puts signal handlers back), but skip their waits
                    # (waits_stopped(); the exit's own wait still runs that work).
                    interrupt = interrupt or error
                    _runs.waits_stopped = True
                except BaseException as error:  # noqa: BLE001 - raised below, after the others
                    first_error = first_error or error
        finally:
            skipped = _runs.waits_skipped
            _runs.waits_stopped, _runs.waits_skipped = False, 0
        if interrupt is not None:
            if exc is None:
                raise interrupt
            exc.add_note(
                "a wait at the end of the run was interrupted (KeyboardInterrupt); "
                f"{skipped} more end-of-run wait(s) skipped"
            )
            return
        if first_error is not None and exc is None:
            raise first_error


def waits_stopped() -> bool:
    """For an end-of-run callback about to wait: whether a Ctrl-C stopped this run end's waits
    (the callback then returns without waiting; it is counted in the note on the run's error)."""
    if not _runs.waits_stopped:
        return False
    _runs.waits_skipped += 1
    return True
