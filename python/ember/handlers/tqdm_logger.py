"""``ProgressBar``: a tqdm bar for an engine, cheap enough for loops of a microsecond per iteration.

How it stays cheap. A bar that calls tqdm at every iteration costs tens of microseconds per
iteration; even a Python handler that only reads the clock costs about one. This bar's handler
is attached with an ``every=k`` filter, which the compiled loop evaluates without calling
Python, and ``k`` adapts to the loop's speed (a power of two, so that the handler runs about
every ``mininterval / 4`` seconds). The handler reads the clock and redraws the bar, to the
engine's current counter, at most once per ``mininterval``; it changes ``k`` by removing and
re-adding itself with the public ``Engine`` API, which happens a few times per run. A bar that
the user attaches to an already filtered event keeps that filter and is only time-limited.

The counts shown are exact whenever the bar is drawn: it reads ``engine.state`` rather than
counting calls, and it is redrawn with the final count, metrics and output when it closes.

Values are read only when the bar is drawn: at most once per ``mininterval`` and when it closes.
A tensor in the output or the metrics (a loss left on the GPU, a deferred ``RunningAverage``) is
read on the host then, not at every iteration: the bar costs at most one host sync per
``mininterval`` and one per bar closed (per epoch, by default). The bar of the next epoch
appears one ``mininterval`` after the previous one closed.

How it closes. On ``closing_event_name`` (EPOCH_COMPLETED by default), and also on TERMINATE,
COMPLETED and INTERRUPT, so that ``terminate()`` in the middle of an epoch closes it. On an
exception, the bar adds an EXCEPTION_RAISED handler that closes the bar and then does what the
engine would have done without it: if it is the only EXCEPTION_RAISED handler, it raises the same
exception object again (the engine raises when it has no EXCEPTION_RAISED handler); otherwise
it returns and leaves the decision to the user's handlers. So the exception reaches the caller
of ``run()`` as before, and the user's EXCEPTION_RAISED handlers run exactly as often as
without the bar. To tell whether other handlers exist it reads ``engine._event_handlers``
(ignite's registry, also present on ember's Engine); that is its one use of a non-public name.
One trace remains: after a failed run ``engine.last_event_name`` is EXCEPTION_RAISED (the engine
fired it for this handler) where, without any EXCEPTION_RAISED handler, it names the event during
which the exception occurred.
``ProgressBar`` is also a context manager, whose exit closes any open bar.
"""

from __future__ import annotations

import importlib
import math
import numbers
import os
import sys
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import Any, ClassVar, Self

from ember.engine import Events

__all__ = ["ProgressBar"]

_DEFAULT_BAR_FORMAT = (
    "{desc}[{n_fmt}/{total_fmt}] {percentage:3.0f}%|{bar}{postfix} [{elapsed}<{remaining}]"
)
_MAX_EVERY = 1 << 24


def _is_rank_zero() -> bool:
    """Rank 0 of torch.distributed's group, or of the launch (RANK) before the group exists.
    Read without importing torch: only a process that imported torch.distributed has a group."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        return int(distributed.get_rank()) == 0
    return os.environ.get("RANK", "0") == "0"


class ProgressBar:
    """A tqdm progress bar of an engine's iterations (or epochs), with metrics and output.

    Args:
        persist: keep the bar on screen after it closes.
        bar_format: tqdm's ``bar_format``; ``None`` for tqdm's default. The default shows
            ``Epoch [2/5]: [64/128]  50%|█████     , loss=0.123 [00:01<00:01]``.
        file: where to draw (default: tqdm's, stderr).
        mininterval: the least time in seconds between two redraws.
        tqdm_kwargs: more arguments of ``tqdm``; ``desc`` replaces "Epoch"/"Iteration".

    Example::

        pbar = ProgressBar(persist=True)
        pbar.attach(trainer, metric_names=["accuracy"], output_transform=lambda x: {"loss": x})
    """

    _events_order: ClassVar[list[Any]] = [
        Events.STARTED,
        Events.EPOCH_STARTED,
        Events.ITERATION_STARTED,
        Events.ITERATION_COMPLETED,
        Events.EPOCH_COMPLETED,
        Events.COMPLETED,
    ]

    def __init__(
        self,
        persist: bool = False,
        bar_format: str | None = _DEFAULT_BAR_FORMAT,
        file: Any = None,
        mininterval: float = 0.1,
        **tqdm_kwargs: Any,
    ) -> None:
        try:
            # tqdm ships no type information; a dynamic import keeps mypy from needing stubs.
            tqdm = importlib.import_module("tqdm.autonotebook").tqdm
        except ImportError as exc:
            raise ModuleNotFoundError(
                "ProgressBar requires tqdm to be installed: pip install tqdm"
            ) from exc
        if not isinstance(mininterval, numbers.Real) or not mininterval >= 0:
            raise ValueError(f"mininterval should be a number >= 0, got {mininterval!r}")
        self.pbar_cls: Any = tqdm
        self.persist: bool = persist
        self.bar_format: str | None = bar_format
        self.file: Any = file
        self.mininterval: float = float(mininterval)
        self.tqdm_kwargs: dict[str, Any] = tqdm_kwargs
        self._trackers: list[_Tracker] = []

    @property
    def pbar(self) -> Any:
        """The open tqdm bar (of the latest attachment that has one), or ``None``."""
        for tracker in reversed(self._trackers):
            if tracker.bar is not None:
                return tracker.bar
        return None

    def log_message(self, message: str) -> None:
        """Print ``message`` above the bar without breaking it (use instead of ``print``); on
        rank 0 only in a distributed run."""
        if _is_rank_zero():
            importlib.import_module("tqdm").tqdm.write(message, file=self.file)

    def attach(
        self,
        engine: Any,
        metric_names: str | list[str] | None = None,
        output_transform: Callable[[Any], Any] | None = None,
        event_name: Any = Events.ITERATION_COMPLETED,
        closing_event_name: Any = Events.EPOCH_COMPLETED,
        state_attributes: list[str] | None = None,
    ) -> None:
        """Draw the bar for ``engine``.

        Args:
            engine: the engine.
            metric_names: names in ``engine.state.metrics`` to show, or ``"all"``.
            output_transform: ``output -> dict or value`` to show from ``engine.state.output``
                (a value is shown as ``output``).
            event_name: the event the bar counts (ITERATION_* for iterations of the epoch,
                EPOCH_* for epochs of the run); it may carry a filter.
            closing_event_name: the event that closes the bar (not filtered, and after
                ``event_name`` in STARTED < EPOCH_STARTED < ITERATION_STARTED <
                ITERATION_COMPLETED < EPOCH_COMPLETED < COMPLETED).
            state_attributes: attributes of ``engine.state`` to show.
        """
        if metric_names is not None and not (
            isinstance(metric_names, list) or metric_names == "all"
        ):
            raise TypeError(
                "metric_names should be either a list or equal 'all', "
                f"got {type(metric_names)} instead."
            )
        if output_transform is not None and not callable(output_transform):
            raise TypeError(
                f"output_transform should be a function, got {type(output_transform)} instead."
            )
        if state_attributes is not None and not (
            isinstance(state_attributes, (list, tuple))
            and all(isinstance(name, str) for name in state_attributes)
        ):
            raise TypeError(
                f"state_attributes should be a list of str, got {state_attributes!r} instead."
            )
        if not engine.has_registered_events(event_name):
            raise ValueError(f"Logging event {event_name} is not in allowed events for this engine")
        if getattr(closing_event_name, "filter", None) is not None:
            raise ValueError("Closing Event should not be a filtered event")
        order = self._events_order
        if event_name not in order or closing_event_name not in order:
            raise ValueError(
                f"ProgressBar counts one of {order} and closes on a later one, "
                f"got {event_name} and {closing_event_name}"
            )
        if not order.index(event_name) < order.index(closing_event_name):
            raise ValueError(
                f"Logging event {event_name} should be called before closing event "
                f"{closing_event_name}"
            )
        if not _is_rank_zero():
            return  # one bar per run: rank 0 draws it, the other ranks stay quiet
        tracker = _Tracker(
            self, event_name, closing_event_name, metric_names, output_transform, state_attributes
        )
        tracker.attach(engine)
        self._trackers.append(tracker)

    def close(self) -> None:
        """Close every open bar of this ProgressBar."""
        for tracker in self._trackers:
            tracker.close_bar(None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_PROBE, _TRIAL, _ADAPTIVE, _GATED = "probe", "trial", "adaptive", "gated"


def _filters_are_free(engine: Any) -> bool:
    """Whether ``engine`` runs the compiled loop, which skips an ``every=k`` handler without
    calling Python (ember's Python loop and ignite's call a wrapper at every event). Read without
    importing ``ember._core``: an engine can only run the compiled loop once it is imported."""
    core = sys.modules.get("ember._core")
    return core is not None and getattr(engine, "_run_loop", None) is core.run_loop


class _Tracker:
    """One attachment: the bar of one engine, its handlers, and the choice of ``every``.

    Modes: ``probe`` (unfiltered, measuring the event rate), ``trial`` (filtered with the
    ``every`` the rate asks for, measuring whether the loop got faster: on ember's Python loop a
    filtered handler costs more than a cheap unfiltered one), ``adaptive`` (filtered, ``every``
    follows the rate), ``gated`` (unfiltered, only the clock limits the work). A bar on a filtered
    event the user chose is ``gated`` from the start. On the compiled loop, where a filtered
    handler costs nothing at the events it skips, the bar is ``adaptive`` from the start,
    whatever the loop's speed: its first ``every`` follows the time of the first event after the
    first draw, the next ones windows of ``target`` seconds.
    """

    def __init__(
        self,
        owner: ProgressBar,
        event_name: Any,
        closing_event_name: Any,
        metric_names: str | list[str] | None,
        output_transform: Callable[[Any], Any] | None,
        state_attributes: list[str] | None,
    ) -> None:
        self.owner: ProgressBar = owner
        self.mode: str = _PROBE if getattr(event_name, "filter", None) is None else _GATED
        # The unfiltered event, for counters and for re-attaching with another filter.
        self.base_event: Any = next(e for e in ProgressBar._events_order if e == event_name)
        self.registered_event: Any = event_name
        self.closing_event_name: Any = closing_event_name
        self.metric_names: str | list[str] | None = metric_names
        self.output_transform: Callable[[Any], Any] | None = output_transform
        self.state_attributes: list[str] | None = state_attributes
        self.bar: Any = None
        self.engine_ref: Callable[[], Any] = lambda: None
        self.every: int = 1
        self.next_redraw: float = 0.0
        self.next_work: float = 0.0
        self.window_start: float | None = None
        self.window_counter: int = 0
        self.probe_rate: float = 0.0
        # The mode when ``every`` falls back to 1: probe, or adaptive where filters are free.
        self.free_mode: str = _PROBE
        self.warned: set[str] = set()  # metric names found missing
        self.warned_values: set[str] = set()  # keys whose values could not be shown
        # The counter when the last bar closed (or the run started): a bar not drawn yet has
        # something to show only once the counter moved past it.
        self.closed_at: int | None = None

    @property
    def target(self) -> float:
        """Seconds between two calls of the handler that ``every`` aims at."""
        return max(self.owner.mininterval / 4.0, 0.005)

    @property
    def window(self) -> float:
        """Seconds over which the event rate is measured: longer while calibrating; none while
        unfiltered where filters are free (every event measures, until one asks for a filter)."""
        if self.every == 1 and self.mode == _ADAPTIVE:
            return 0.0
        return self.target * (2.0 if self.mode in (_PROBE, _TRIAL) else 1.0)

    def attach(self, engine: Any) -> None:
        # ``tick`` takes no engine (it holds it weakly): on the Python loop a handler called
        # without the engine is the cheapest kind.
        self.engine_ref = weakref.ref(engine)
        if self.mode == _PROBE and _filters_are_free(engine):
            self.mode = self.free_mode = _ADAPTIVE
        engine.add_event_handler(self.registered_event, self.tick)
        engine.add_event_handler(self.closing_event_name, self.close_bar)
        for event in (Events.TERMINATE, Events.COMPLETED, Events.INTERRUPT):
            if event != self.closing_event_name:
                engine.add_event_handler(event, self.finish_bar)
        engine.add_event_handler(Events.STARTED, self.on_started)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.on_exception)

    # ------------------------------------------------------------------ handlers
    def tick(self) -> None:
        now = perf_counter()
        if now < self.next_work:
            return
        engine = self.engine_ref()
        if engine is None:
            return
        if now >= self.next_redraw:
            self.draw(engine)
            self.next_redraw = now + self.owner.mininterval
        next_work = self.next_redraw
        if self.mode != _GATED:
            self.adapt(engine, now)
            if self.window_start is not None and self.mode != _GATED:
                next_work = min(next_work, self.window_start + self.window)
        self.next_work = next_work

    def on_started(self, engine: Any) -> None:
        if self.bar is not None:  # left open by an earlier run that did not close it
            self.bar.close()
            self.bar = None
        self.window_start = None
        self.next_redraw = self.next_work = 0.0
        self.closed_at = self._counter(engine)

    def finish_bar(self, engine: Any) -> None:
        """The run ends (or is interrupted) within a bar, drawn yet or not: show the final
        count, close."""
        if self.bar is not None or self._counter(engine) != self.closed_at:
            self.close_bar(engine)

    def close_bar(self, engine: Any) -> None:
        if self.bar is None and (
            engine is None or not self.owner.persist or self._counter(engine) == 0
        ):
            return
        if engine is not None:
            self.draw(engine, refresh=False)
        self.bar.close()  # draws the final state (or clears the line unless persist)
        self.bar = None
        self.closed_at = None if engine is None else self._counter(engine)
        # The next bar (next epoch) appears one mininterval after this draw, not at once: an
        # epoch shorter than mininterval reads the engine's values once, when its bar closes.
        self.next_redraw = self.next_work = perf_counter() + self.owner.mininterval

    def on_exception(self, engine: Any, exception: BaseException) -> None:
        """Close the bars of this engine; re-raise if no other EXCEPTION_RAISED handler exists.

        The engine raises the exception itself when it has no EXCEPTION_RAISED handler; this
        handler must not change that, nor run other handlers twice. With other handlers it
        returns and lets them decide (swallow or re-raise); when the bars are the only handlers,
        the first re-raises the exception object (and the others never run, so it closes their
        bars too).
        """
        trackers, others = self._exception_handlers(engine)
        for tracker in trackers:
            tracker.abandon_bar()
        self.abandon_bar()
        if not others:
            raise exception

    def abandon_bar(self) -> None:
        bar, self.bar = self.bar, None
        if bar is not None:
            bar.close()
        self.next_redraw = self.next_work = 0.0

    @staticmethod
    def _exception_handlers(engine: Any) -> tuple[list[_Tracker], bool]:
        """The progress-bar trackers among the EXCEPTION_RAISED handlers, and whether others
        exist (read from ``engine._event_handlers``, ignite's registry, which ember keeps)."""
        registry = getattr(engine, "_event_handlers", None)
        trackers: list[_Tracker] = []
        others = False
        for entry in registry.get(Events.EXCEPTION_RAISED, ()) if registry is not None else ():
            handler = entry[0]
            parent = getattr(handler, "_parent", None)
            if parent is not None:
                handler = parent()
            owner = getattr(handler, "__self__", None)
            if isinstance(owner, _Tracker) and getattr(handler, "__func__", None) is (
                _Tracker.on_exception
            ):
                trackers.append(owner)
            else:
                others = True
        return trackers, others

    # ------------------------------------------------------------------ drawing
    def _counter(self, engine: Any) -> int:
        return int(engine.state.get_event_attrib_value(self.base_event))

    @staticmethod
    def _total_of(event: Any, engine: Any) -> int | None:
        total: int | None = 1
        if event in (Events.ITERATION_STARTED, Events.ITERATION_COMPLETED):
            total = engine.state.epoch_length
        elif event in (Events.EPOCH_STARTED, Events.EPOCH_COMPLETED):
            total = engine.state.max_epochs
        return total

    def draw(self, engine: Any, refresh: bool = True) -> None:
        """Show the engine's current counter, description and metrics (redraw if ``refresh``)."""
        owner = self.owner
        total = self._total_of(self.base_event, engine)
        description = owner.tqdm_kwargs.get("desc") or (
            "Iteration" if engine.state.max_epochs == 1 else "Epoch"
        )
        closing_total = self._total_of(self.closing_event_name, engine)
        if closing_total and closing_total > 1:
            closing_counter = engine.state.get_event_attrib_value(self.closing_event_name)
            description += f" [{closing_counter}/{closing_total}]"
        postfix = self._postfix(engine)
        position = self._counter(engine)
        if total:
            position = (position - 1) % total + 1
        if self.bar is None:
            kwargs = dict(owner.tqdm_kwargs)
            kwargs.setdefault("mininterval", 0.0)  # this class limits the redraws itself
            kwargs.setdefault("miniters", 1)
            kwargs["desc"] = description + ": "
            self.bar = owner.pbar_cls(
                total=total,
                initial=position,
                leave=owner.persist,
                bar_format=owner.bar_format,
                file=owner.file,
                postfix=postfix or None,
                **kwargs,
            )
            return
        bar = self.bar
        bar.set_description(description, refresh=False)
        if postfix:
            bar.set_postfix(postfix, refresh=False)
        if refresh and position > bar.n:
            bar.update(position - bar.n)
        else:
            bar.n = position
            if refresh:
                bar.refresh()

    def _postfix(self, engine: Any) -> OrderedDict[str, Any]:
        values: OrderedDict[str, Any] = OrderedDict()
        metrics = engine.state.metrics
        if self.metric_names == "all":
            values.update(metrics)
        elif self.metric_names:
            for name in self.metric_names:
                if name in metrics:
                    values[name] = metrics[name]
                elif name not in self.warned:
                    self.warned.add(name)
                    warnings.warn(
                        f"Provided metric name '{name}' is missing in engine's state metrics: "
                        f"{list(metrics)}",
                        stacklevel=2,
                    )
        if self.output_transform is not None:
            output = self.output_transform(engine.state.output)
            if isinstance(output, Mapping):
                values.update(output)
            else:
                values["output"] = output
        if self.state_attributes is not None:
            for name in self.state_attributes:
                values[name] = getattr(engine.state, name, None)
        flat: OrderedDict[str, Any] = OrderedDict()
        skipped: list[tuple[str, type]] = []
        for key, value in values.items():
            _flatten(str(key), value, flat, skipped)
        for key, kind in skipped:
            if key not in self.warned_values:  # once per key, not at every redraw
                self.warned_values.add(key)
                warnings.warn(
                    f"ProgressBar can not show '{key}': a value of type {kind.__name__} (it shows "
                    "numbers, strings, and tensors of at most one dimension)",
                    stacklevel=2,
                )
        return flat

    # ------------------------------------------------------------------ adaptation
    def adapt(self, engine: Any, now: float) -> None:
        """Measure the event rate over windows of ``target`` seconds and choose ``every``."""
        counter = self._counter(engine)
        if self.window_start is None or counter < self.window_counter:
            self.window_start, self.window_counter = now, counter
            return
        elapsed = now - self.window_start
        if elapsed < self.window:
            return
        done = counter - self.window_counter
        self.window_start, self.window_counter = now, counter
        if done <= 0:
            return
        rate = done / elapsed
        if self.mode == _TRIAL:
            # Keep the filter only if it clearly pays: where it does (the compiled loop on a
            # fast process function) the loop runs about twice as fast; where the loop is slow
            # either way costs nothing worth measuring.
            if rate < 1.1 * self.probe_rate:
                self.reattach(engine, 1)
                self.mode = _GATED
                return
            self.mode = _ADAPTIVE
        ideal = rate * self.target  # events per target interval
        if self.mode == _PROBE:
            if ideal >= 2:
                self.probe_rate = rate
                if self.reattach(engine, _power_of_two(ideal)):
                    self.mode = _TRIAL
            return
        if ideal >= 2 * self.every or ideal < self.every / 2:
            every = _power_of_two(ideal)
            if every != self.every and self.reattach(engine, every) and every == 1:
                self.mode = self.free_mode

    def reattach(self, engine: Any, every: int) -> bool:
        """Re-add ``tick`` with ``every=every``; false if the user removed it."""
        if every == self.every:
            return True
        event = self.base_event if every == 1 else self.base_event(every=every)
        try:
            engine.remove_event_handler(self.tick, self.registered_event)
        except ValueError:  # removed by the user: leave it so
            self.mode = _GATED
            return False
        engine.add_event_handler(event, self.tick)
        self.registered_event = event
        self.every = every
        self.window_start = None
        return True


def _power_of_two(value: float) -> int:
    """The largest power of two <= ``value`` (at least 1, at most ``_MAX_EVERY``)."""
    if value < 2:
        return 1
    return min(1 << int(math.log2(value)), _MAX_EVERY)


def _flatten(
    key: str, value: Any, out: OrderedDict[str, Any], skipped: list[tuple[str, type]]
) -> None:
    """ignite's display rules: numbers, 0-d tensors and strings; dicts, sequences and 1-d
    tensors are expanded as ``key_subkey``; anything else is skipped, named in ``skipped``."""
    if isinstance(value, Mapping):
        for sub_key, sub_value in value.items():
            _flatten(f"{key}_{sub_key}", sub_value, out, skipped)
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _flatten(f"{key}_{index}", item, out, skipped)
        return
    if isinstance(value, (numbers.Number, str)):
        out[key] = value
        return
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor) and value.ndim < 2:
        if value.ndim == 0:
            out[key] = value.item()
        else:
            for index, item in enumerate(value.tolist()):
                out[f"{key}_{index}"] = item
        return
    skipped.append((key, type(value)))
