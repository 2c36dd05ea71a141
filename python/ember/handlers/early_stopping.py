"""``EarlyStopping``: terminate the trainer when a score stops improving."""

from __future__ import annotations

import logging
import math
import numbers
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from ember.engine import Events
from ember.engine._state_dict import check_state_dict
from ember.engine.engine import _is_integer

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """Calls ``trainer.terminate()`` after ``patience`` calls without improvement of the score.

    Attach it where the score is computed, usually the evaluator's COMPLETED::

        handler = EarlyStopping(patience=3, score_function=lambda e: -e.state.metrics["loss"],
                                trainer=trainer)
        evaluator.add_event_handler(Events.COMPLETED, handler)

    Args:
        patience: calls without improvement before stopping (>= 1).
        score_function: ``engine -> float``; higher is better (``mode="min"``: lower is better).
        trainer: the engine to stop: anything with a ``terminate()`` method (an ember or ignite
            ``Engine``); ``TypeError`` otherwise.
        min_delta: the smallest change counted as an improvement (>= 0).
        cumulative_delta: if true, compare with the best score since the last improvement, so
            several small gains do not add up to an improvement; otherwise with the best score.
        mode: ``"max"`` (default) or ``"min"``.
        min_delta_mode: ``"abs"`` (default) or ``"rel"`` (``min_delta`` is a fraction of the best
            score).

    ignite 0.5.5's new names ``threshold``, ``cumulative`` and ``threshold_mode`` are accepted as
    aliases of ``min_delta``, ``cumulative_delta`` and ``min_delta_mode``. A NaN score counts as no
    improvement (ignite would take it as the new best, after which nothing compares and
    training never stops).
    """

    _state_dict_all_req_keys = ("counter", "best_score")

    def __init__(
        self,
        patience: int,
        score_function: Callable[[Any], float],
        trainer: Any,
        min_delta: float = 0.0,
        cumulative_delta: bool = False,
        mode: str = "max",
        min_delta_mode: str = "abs",
        *,
        threshold: float | None = None,
        cumulative: bool | None = None,
        threshold_mode: str | None = None,
    ) -> None:
        if not callable(score_function):
            raise TypeError("Argument score_function should be a function.")
        if not isinstance(patience, numbers.Integral) or isinstance(patience, bool) or patience < 1:
            raise ValueError("Argument patience should be positive integer.")
        if not callable(getattr(trainer, "terminate", None)):
            raise TypeError(
                "Argument trainer should be an Engine (an object with a terminate() method), "
                f"got {type(trainer).__name__}"
            )
        if threshold is not None:
            min_delta = threshold
        if cumulative is not None:
            cumulative_delta = cumulative
        if threshold_mode is not None:
            min_delta_mode = threshold_mode
        if not isinstance(min_delta, numbers.Real) or min_delta < 0.0:
            raise ValueError("Argument min_delta should not be a negative number.")
        if min_delta_mode not in ("abs", "rel"):
            raise ValueError("Argument min_delta_mode should be either 'abs' or 'rel'.")
        if mode not in ("min", "max"):
            raise ValueError("Argument mode should be either 'min' or 'max'.")
        self.score_function: Callable[[Any], float] = score_function
        self.patience: int = int(patience)
        self.min_delta: float = float(min_delta)
        self.cumulative_delta: bool = bool(cumulative_delta)
        self.min_delta_mode: str = min_delta_mode
        self.mode: str = mode
        self.trainer: Any = trainer
        self.counter: int = 0
        self.best_score: float | None = None
        self.logger: logging.Logger = logging.getLogger(f"{__name__}.{type(self).__name__}")

    # ignite 0.5.5 names
    @property
    def threshold(self) -> float:
        return self.min_delta

    @property
    def cumulative(self) -> bool:
        return self.cumulative_delta

    @property
    def threshold_mode(self) -> str:
        return self.min_delta_mode

    def _improves(self, score: float, best: float) -> bool:
        delta = self.min_delta
        if self.min_delta_mode == "rel":
            delta = abs(best) * delta
        if self.mode == "max":
            return score > best + delta
        return score < best - delta

    def __call__(self, engine: Any) -> None:
        score = self.score_function(engine)
        if not _is_nan(score):  # a NaN is never an improvement, nor a best score
            if self.best_score is None:
                self.best_score = score
                return
            if self._improves(score, self.best_score):
                self.best_score = score
                self.counter = 0
                return
            if not self.cumulative_delta:
                better = max if self.mode == "max" else min
                self.best_score = better(score, self.best_score)
        self.counter += 1
        self.logger.debug("EarlyStopping: %i / %i", self.counter, self.patience)
        if self.counter >= self.patience:
            self.logger.info("EarlyStopping: Stop training")
            self.trainer.terminate()

    def reset(self) -> None:
        """Forget the best score and the counter."""
        self.counter = 0
        self.best_score = None

    def attach(
        self,
        engine: Any,
        event: Any = Events.COMPLETED,
        reset_engine: Any = None,
        reset_event: Any = Events.STARTED,
    ) -> None:
        """Check on ``engine``'s ``event``; reset on ``reset_engine``'s (default ``engine``)
        ``reset_event``."""
        engine.add_event_handler(event, self)
        (reset_engine or engine).add_event_handler(reset_event, self.reset)

    def state_dict(self) -> OrderedDict[str, Any]:
        """``counter``, ``best_score`` and ``threshold_mode`` (ignite 0.5.5's keys)."""
        return OrderedDict(
            [
                ("counter", self.counter),
                ("best_score", self.best_score),
                ("threshold_mode", self.min_delta_mode),
            ]
        )

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore ``counter``, ``best_score`` and, when present, ``threshold_mode`` (a state
        saved by an older ember has none). Everything is checked first: a bad value raises
        ``TypeError`` or ``ValueError`` naming the key, and changes nothing."""
        check_state_dict(state_dict, self._state_dict_all_req_keys)
        counter = state_dict["counter"]
        if not _is_integer(counter):
            raise TypeError(f"state_dict['counter'] should be an integer, but given {counter!r}")
        if counter < 0:
            raise ValueError(f"state_dict['counter'] should be >= 0, but given {counter}")
        best_score = state_dict["best_score"]
        # a float, or whatever score_function returned that converts to one (a 0-d tensor)
        if best_score is not None and (
            isinstance(best_score, bool) or not hasattr(type(best_score), "__float__")
        ):
            raise TypeError(
                f"state_dict['best_score'] should be None or a number, but given {best_score!r}"
            )
        threshold_mode = state_dict.get("threshold_mode", self.min_delta_mode)
        if threshold_mode not in ("abs", "rel"):
            raise ValueError(
                f"state_dict['threshold_mode'] should be either 'abs' or 'rel', "
                f"but given {threshold_mode!r}"
            )
        self.counter = int(counter)
        self.best_score = best_score
        self.min_delta_mode = threshold_mode


def _is_nan(value: Any) -> bool:
    try:
        return math.isnan(value)
    except TypeError:
        return False
