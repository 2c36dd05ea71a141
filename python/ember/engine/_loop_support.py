"""What both loops share besides the plan: resume points, messages, logging and warnings."""

from __future__ import annotations

import numbers
import warnings
from typing import TYPE_CHECKING, Any, cast

from ember.engine._plan import ResumePoint
from ember.engine.events import Events
from ember.engine.profile import handler_name
from ember.engine.sink import OutputSink

# For the compiled loop: the profiler's names, the class of the handlers it runs itself.
__all__ = ["OutputSink", "handler_name"]

if TYPE_CHECKING:
    from ember.engine.engine import Engine

# Resume points: where a run continues after an interrupt. csrc/loop.hpp uses the same numbers.
START = 0
AFTER_STARTED = 1
AFTER_EPOCH_STARTED = 2
AFTER_GET_BATCH_STARTED = 3
AFTER_DATALOADER_STOP_ITERATION = 4
AFTER_GET_BATCH_COMPLETED = 5
AFTER_ITERATION_STARTED = 6
AFTER_ITERATION_COMPLETED = 7
EPOCH_END = 8  # not a resume point: the iterations of the epoch are over
AFTER_EPOCH_COMPLETED = 9

RESUME_PHASES = frozenset(
    (
        AFTER_STARTED,
        AFTER_EPOCH_STARTED,
        AFTER_GET_BATCH_STARTED,
        AFTER_DATALOADER_STOP_ITERATION,
        AFTER_GET_BATCH_COMPLETED,
        AFTER_ITERATION_STARTED,
        AFTER_ITERATION_COMPLETED,
        AFTER_EPOCH_COMPLETED,
    )
)

# Consecutive epochs without an iteration that end a max_iters run (see _pyloop._finish_epoch).
STALLED_EPOCHS_LIMIT = 2
# Consecutive epochs without an iteration that fail any other run: the loop would otherwise go
# on for max_epochs epochs (forever, for a bound a program made huge) doing nothing.
NO_PROGRESS_EPOCHS_LIMIT = 1000

TERMINATE_EPOCH_TOO_EARLY = (
    "The method terminate_epoch() should not be called on Event.STARTED or "
    "Event.EPOCH_STARTED. If this is a desired behaviour, please open a feature request."
)
ZERO_SIZE_DATA = "Input data has zero size. Please provide non-empty data"
ITERATOR_REMOVED = "The data iterator was removed while the engine was running"
NO_PROGRESS = (
    f"The run made no progress: {NO_PROGRESS_EPOCHS_LIMIT} epochs in a row ended without an "
    "iteration, as the data gives no batch. Give data that yields, or end such a run with "
    "terminate()."
)

# Counts in a resume point stay below this, so that the compiled loop counts on from them in
# 64 bits.
_COUNT_LIMIT = 2**62


def _is_count(value: Any) -> bool:
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and -_COUNT_LIMIT <= int(value) < _COUNT_LIMIT
    )


def resume_point(point: Any) -> ResumePoint | None:
    """``engine._resume_point`` checked: None, or the 9 fields an interrupt saved."""
    if point is None:
        return None
    fields = point if isinstance(point, tuple) and len(point) == 9 else None
    if fields is None or not (
        # An exact int: a subclass's __eq__ could answer "in" for a phase it is not.
        type(fields[0]) is int
        and fields[0] in RESUME_PHASES
        and all(_is_count(fields[i]) for i in (1, 6, 8))
        and isinstance(fields[2], bool)
        and all(isinstance(fields[i], float) for i in (3, 4))
    ):
        raise ValueError(f"engine._resume_point is malformed: {point!r}")
    return cast(ResumePoint, tuple(fields))


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{round(hours):02d}:{round(minutes):02d}:{secs:06.3f}"


def warn_data_exhausted(engine: Engine) -> None:
    state = engine.state
    total: int | None = state.max_iters
    if state.max_epochs is not None:
        # None while the length of the data is still unknown
        total = None if state.epoch_length is None else state.epoch_length * state.max_epochs
    warnings.warn(
        "Data iterator can not provide data anymore but required total number of iterations to "
        f"run is not reached. Current iteration: {state.iteration} vs Total iterations to run : "
        f"{total}",
        UserWarning,
        stacklevel=3,
    )


def set_sampler_epoch(engine: Engine) -> None:
    """Tell the data's sampler the epoch (0-based), so that a ``DistributedSampler`` shuffles
    differently each epoch on every rank; ``engine.set_sampler_epoch = False`` turns it off."""
    data = engine.state.dataloader
    for sampler in (getattr(data, "sampler", None), getattr(data, "batch_sampler", None)):
        set_epoch = getattr(sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(engine.state.epoch - 1)
            return


def sampler_has_set_epoch(data: object) -> bool:
    # A loop rather than any() of a generator: called at every run(), an evaluator's included.
    for name in ("sampler", "batch_sampler"):
        if callable(getattr(getattr(data, name, None), "set_epoch", None)):
            return True
    return False


def log_epoch_completed(engine: Engine) -> None:
    seconds = cast(float, engine.state.times[Events.EPOCH_COMPLETED.name])
    engine.logger.info(
        "Epoch[%s] Complete. Time taken: %s", engine.state.epoch, format_duration(seconds)
    )


def log_run_finished(engine: Engine) -> None:
    seconds = cast(float, engine.state.times[Events.COMPLETED.name])
    engine.logger.info("Engine run finished. Time taken: %s", format_duration(seconds))


def handle_exception(engine: Engine, exc: BaseException) -> None:
    """Route ``exc`` to the EXCEPTION_RAISED handlers (``engine._handle_exception``).

    A StopIteration that leaves a level of the loop becomes ``RuntimeError("generator raised
    StopIteration")``, as PEP 479 turns it at the boundaries of ignite's generator loop:
    handlers still see the StopIteration itself, but a bare one never escapes ``run()``, where
    an enclosing ``map()`` or ``for`` would take it for the end of its own iteration.
    """
    try:
        engine._handle_exception(exc)
    except StopIteration as stop:
        raise RuntimeError("generator raised StopIteration") from stop


def log_iteration_error(engine: Engine, exc: BaseException) -> None:
    if _ends_run_cleanly(exc):
        engine.logger.info("Current run stopped: %s", exc)
    else:
        engine.logger.error("Current run is terminating due to exception: %s", exc)


def log_run_error(engine: Engine, exc: BaseException) -> None:
    if _ends_run_cleanly(exc):
        engine.logger.info("Engine run stopped: %s", exc)
    else:
        engine.logger.error("Engine run is terminating due to exception: %s", exc)


def _ends_run_cleanly(exc: BaseException) -> bool:
    """An exception raised to end the run as planned (``ember.handlers.Preempted``, once its
    checkpoint is written) is no error: said at INFO, where ignite's ERROR line would alert
    whoever watches the logs."""
    return getattr(type(exc), "_ends_run_cleanly", False) is True
