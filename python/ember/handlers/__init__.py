"""ember's own handlers, under pytorch-ignite's names: train, checkpoint, resume and watch progress
with ember alone.

=============================  ==========================================================
name                           module
=============================  ==========================================================
``Checkpoint``, ``DiskSaver``,  :mod:`ember.handlers.checkpoint` (needs torch); saves
``ModelCheckpoint``,           atomically and never deletes an old checkpoint before the
``CheckpointEvents``,          new one is on disk
``BaseSaveHandler``,
``global_step_from_engine``
``resume_from``                :mod:`ember.handlers.resume`: load the newest complete
                               checkpoint of a directory, on every rank (needs torch)
``Preemption``, ``Preempted``  :mod:`ember.handlers.preemption`: on SIGTERM, checkpoint and
                               exit at the same iteration on every rank
``EarlyStopping``              :mod:`ember.handlers.early_stopping`
``Timer``                      :mod:`ember.handlers.timing`
``TerminateOnNan``             :mod:`ember.handlers.terminate_on_nan`
``ProgressBar``                :mod:`ember.handlers.tqdm_logger` (needs tqdm)
``LRScheduler``, ...           :mod:`ember.handlers.param_scheduler` (needs torch)
``Profiler``                   :mod:`ember.engine.profile`: timings taken by the loop itself
=============================  ==========================================================

Every name is loaded on first use, so ``import ember.handlers`` imports neither torch nor tqdm.
The handlers use only the public :class:`~ember.engine.Engine` API and run on both loops.
ignite's handlers that ember does not reimplement (``TensorboardLogger``, the time profilers, ...)
raise ``ImportError`` here, naming ignite's and :func:`ember.patch_ignite`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see; at run time each name loads on first use
    from ember.engine.profile import Profiler
    from ember.handlers.checkpoint import (
        BaseSaveHandler,
        Checkpoint,
        CheckpointEvents,
        DiskSaver,
        ModelCheckpoint,
        global_step_from_engine,
    )
    from ember.handlers.early_stopping import EarlyStopping
    from ember.handlers.param_scheduler import (
        BaseParamScheduler,
        ConcatScheduler,
        CosineAnnealingScheduler,
        CyclicalScheduler,
        LinearCyclicalScheduler,
        LRScheduler,
        ParamGroupScheduler,
        ParamScheduler,
        PiecewiseLinear,
        create_lr_scheduler_with_warmup,
    )
    from ember.handlers.terminate_on_nan import TerminateOnNan
    from ember.handlers.timing import Timer
    from ember.handlers.tqdm_logger import ProgressBar

_MODULES = {
    "BaseSaveHandler": "checkpoint",
    "Checkpoint": "checkpoint",
    "CheckpointEvents": "checkpoint",
    "DiskSaver": "checkpoint",
    "ModelCheckpoint": "checkpoint",
    "global_step_from_engine": "checkpoint",
    "resume_from": "resume",
    "Preempted": "preemption",
    "Preemption": "preemption",
    "EarlyStopping": "early_stopping",
    "Timer": "timing",
    "TerminateOnNan": "terminate_on_nan",
    "ProgressBar": "tqdm_logger",
    "BaseParamScheduler": "param_scheduler",
    "ConcatScheduler": "param_scheduler",
    "CosineAnnealingScheduler": "param_scheduler",
    "CyclicalScheduler": "param_scheduler",
    "LinearCyclicalScheduler": "param_scheduler",
    "LRScheduler": "param_scheduler",
    "ParamGroupScheduler": "param_scheduler",
    "ParamScheduler": "param_scheduler",
    "PiecewiseLinear": "param_scheduler",
    "create_lr_scheduler_with_warmup": "param_scheduler",
    "Profiler": "ember.engine.profile",
}

__all__ = [
    "BaseParamScheduler",
    "BaseSaveHandler",
    "Checkpoint",
    "CheckpointEvents",
    "ConcatScheduler",
    "CosineAnnealingScheduler",
    "CyclicalScheduler",
    "DiskSaver",
    "EarlyStopping",
    "LRScheduler",
    "LinearCyclicalScheduler",
    "ModelCheckpoint",
    "ParamGroupScheduler",
    "ParamScheduler",
    "PiecewiseLinear",
    "Preempted",
    "Preemption",
    "Profiler",
    "ProgressBar",
    "TerminateOnNan",
    "Timer",
    "create_lr_scheduler_with_warmup",
    "global_step_from_engine",
    "resume_from",
]


# ignite 0.5.5's handlers that ember does not reimplement (ignite.handlers, and the same names in
# ignite.contrib.handlers): importing one from here says where it is.
IGNITE_ONLY = frozenset(
    {
        "BasicTimeProfiler",
        "BatchSizeScheduler",
        "ClearMLLogger",
        "EMAHandler",
        "EpochOutputStore",
        "ExpStateScheduler",
        "FBResearchLogger",
        "FastaiLRFinder",
        "HandlersTimeProfiler",
        "LambdaStateScheduler",
        "MLflowLogger",
        "MultiStepStateScheduler",
        "NeptuneLogger",
        "PiecewiseLinearStateScheduler",
        "PolyaxonLogger",
        "ReduceLROnPlateauScheduler",
        "StateParamScheduler",
        "StepStateScheduler",
        "TensorboardLogger",
        "TimeLimit",
        "VisdomLogger",
        "WandBLogger",
    }
)


def _ignite_only(name: str) -> ImportError:
    # An ImportError, not an AttributeError: `from ember.handlers import X` would replace an
    # AttributeError's text with Python's generic "cannot import name".
    return ImportError(
        f"{name} is one of ignite's handlers, which ember does not reimplement: import ignite's "
        f"(`from ignite.handlers import {name}`, pytorch-ignite 0.5.5); it attaches to ember's "
        "Engine. ignite's handlers that check `isinstance(engine, ignite.engine.Engine)` or take "
        "`|` event lists (profilers, TensorboardLogger and the other experiment loggers) need "
        "`ember.patch_ignite()` before ignite is imported, or `python -m ember.patch_ignite "
        "script.py` (docs/migration.md, libraries built on ignite)",
        name=name,
    )


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        if name in IGNITE_ONLY:
            raise _ignite_only(name)
        raise AttributeError(f"module 'ember.handlers' has no attribute {name!r}")
    if "." not in module:
        module = f"ember.handlers.{module}"
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
