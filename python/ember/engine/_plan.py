"""The plan of one ``run()``: what Python decided before either loop starts.

``Engine.run()`` builds a ``RunPlan`` after validating its arguments and hands it, with the
engine, to the loop it runs on: the Python loop (``_pyloop.run_loop``) or the compiled one
(``ember._core.run_loop``, which reads these slots directly). Neither loop asks the engine
these questions again during the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ResumePoint", "RunPlan"]

# (phase, iter_counter, restarted, run_started, epoch_started, epoch_first_iteration,
#  stalled_epochs, counted_iterator, batches_drawn): where an interrupted run goes on; see
# _loop_support.resume_point().
ResumePoint = tuple[int, int, bool, float, float, Any, int, Any, int]


@dataclass(frozen=True, slots=True)
class RunPlan:
    """How one ``run()`` goes.

    Attributes:
        fire_through_engine: built-in events are fired as ``engine._fire_event(event)``: a
            subclass or the instance overrides it, or the logger wants its DEBUG lines.
        is_done_overridden: ``engine._is_done`` is not ``Engine._is_done`` (subclass or
            instance), so the compiled loop calls it instead of reading the counters.
        setup_dataloader_iter_overridden: likewise for ``engine._setup_dataloader_iter``.
        logs_info: the engine's logger is enabled for INFO (epoch and run summaries).
        set_sampler_epoch: call the data sampler's ``set_epoch`` at each epoch start.
        profiler: the attached ``Profiler``, or None (no clock is read).
        resume: the interrupted run's position, or None for a run from the start.
    """

    fire_through_engine: bool
    is_done_overridden: bool
    setup_dataloader_iter_overridden: bool
    logs_info: bool
    set_sampler_epoch: bool
    profiler: Any
    resume: ResumePoint | None
