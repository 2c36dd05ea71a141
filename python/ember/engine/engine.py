"""The Engine: handler registry, validation, state_dict, and ``run()`` handing the loop to a backend."""

from __future__ import annotations

import itertools
import logging
import numbers
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeGuard, TypeVar

from ember.engine._backend import select_loop
from ember.engine._loop_support import resume_point
from ember.engine._plan import RunPlan
from ember.engine._registry import FilteredHandler, HandlerRegistry, call_handlers
from ember.engine._run_scope import RunScope
from ember.engine._signature import check_signature
from ember.engine._state_dict import check_state_dict
from ember.engine.events import (
    EventEnum,
    Events,
    RemovableEventHandle,
    is_event,
    is_events_list,
)
from ember.engine.state import State

__all__ = ["Engine"]

_Handler = TypeVar("_Handler", bound=Callable[..., Any])
# The engines inside run(), by id: a run() from one of their handlers or steps is refused. Not an
# attribute, which copy.copy of an engine during its run would carry over to the copy.
_RUNNING: set[int] = set()


# Engines name their logger "<module>.<class>"; ember.patch_ignite() sets ignite's module name, so
# `logging.getLogger("ignite.engine.engine.Engine")` configures the engines under the switch.
_logger_module = __name__


def _set_logger_module(name: str) -> None:
    global _logger_module  # noqa: PLW0603 - one process-wide setting, made by the switch
    _logger_module = name


def _is_integer(value: Any) -> TypeGuard[int]:
    """An int, or another integral type (NumPy's, torch's), but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class Engine:
    """Runs ``process_function(engine, batch)`` over data for a number of epochs, firing events.

    A drop-in replacement for ``ignite.engine.Engine`` (0.5.5): same methods, events, filters,
    termination rules and ``state_dict``. The loop of :meth:`run` runs in C++ (``ember._core``)
    unless ``backend="python"`` or ``EMBER_BACKEND=python`` selects the pure-Python loop, which
    is the specification both follow.

    Args:
        process_function: called as ``process_function(engine, batch)`` every iteration; its
            result is stored in ``engine.state.output``.
        backend: ``"cpp"`` or ``"python"``; default: ``EMBER_BACKEND``, else ``"cpp"``.
    """

    # The loop reads and writes these every event, so they are slots rather than __dict__ keys.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_dataloader_iter",
        "_event_handlers_registry",
        "_init_iter",
        "_iterations_before_epoch",
        "_process_function",
        "_resume_point",
        "last_event_name",
        "should_interrupt",
        "should_terminate",
        "should_terminate_single_epoch",
        "state",
    )

    interrupt_resume_enabled: ClassVar[bool] = True
    # Call the data sampler's set_epoch(epoch - 1) at every epoch start (DistributedSampler).
    set_sampler_epoch: bool = True
    _state_dict_all_req_keys: ClassVar[tuple[str, ...]] = ("epoch_length", "iteration")
    _state_dict_one_of_opt_keys: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("max_epochs", "max_iters"),
    )

    def __init__(
        self, process_function: Callable[[Engine, Any], Any], *, backend: str | None = None
    ) -> None:
        self._event_handlers_registry = HandlerRegistry()
        self.logger = logging.getLogger(f"{_logger_module}.{type(self).__name__}")
        self._process_function = process_function
        self.last_event_name: Any = None
        self.should_terminate: bool | str = False
        self.should_terminate_single_epoch: bool | str = False
        self.should_interrupt = False
        self.state = State()
        self._state_dict_user_keys: list[str] = []
        self._allowed_events: list[Any] = []
        self._dataloader_iter: Any = None
        self._init_iter: int | None = None
        # state.iteration less the iterations the current epoch counts as done when it started
        # (its last iteration is this plus epoch_length, also after terminate_epoch()), written
        # by both loops at each epoch start; read by OutputSink (sink.ends_epoch).
        self._iterations_before_epoch: int | None = None
        self._resume_point: tuple[Any, ...] | None = None
        self._profiler: Any = None  # an ember.engine.profile.Profiler, read at each run()
        self._run_loop = select_loop(backend, Engine)
        self.register_events(*Events)
        if process_function is None:
            raise ValueError("Engine must be given a processing function in order to run.")
        if not callable(process_function):
            raise TypeError(
                f"Argument process_function should be callable, got {type(process_function)}"
            )
        check_signature(process_function, "process_function", self, None)

    # ------------------------------------------------------------------ registry
    @property
    def _event_handlers(self) -> HandlerRegistry:
        return self._event_handlers_registry

    @_event_handlers.setter
    def _event_handlers(self, handlers: Mapping[Any, list[Any]]) -> None:
        registry = HandlerRegistry(handlers)
        registry.version = self._event_handlers_registry.version + 1
        self._event_handlers_registry = registry

    def register_events(
        self, *event_names: str | EventEnum, event_to_attr: dict[Any, str] | None = None
    ) -> None:
        """Allow custom events (``EventEnum`` members or strings) to be fired and handled."""
        if not (event_to_attr is None or isinstance(event_to_attr, dict)):
            raise ValueError(f"Expected event_to_attr to be dictionary. Got {type(event_to_attr)}.")
        for index, event in enumerate(event_names):
            if not (isinstance(event, str) or is_event(event)):
                raise TypeError(
                    f"Value at {index} of event_names should be a str or EventEnum, "
                    f"but given {event}"
                )
            self._allowed_events.append(event)
            if event_to_attr and event in event_to_attr:
                State.event_to_attr[event] = event_to_attr[event]
        self.state._update_attrs()

    def has_registered_events(self, event: Any) -> bool:
        return event in self._allowed_events

    def _assert_allowed_event(self, event_name: Any) -> None:
        if event_name not in self._allowed_events:
            self.logger.error("attempt to add event handler to an invalid event %s", event_name)
            raise ValueError(
                f"Event {event_name} is not a valid event for this {type(self).__name__}."
            )

    def add_event_handler(
        self, event_name: Any, handler: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> RemovableEventHandle:
        """Call ``handler`` when ``event_name`` fires, with the engine first if it takes it.

        Args:
            event_name: an event (``Events.X``, filtered ``Events.X(every=2)``, a registered
                custom event or string) or an ``EventsList`` (``Events.A | Events.B``): the
                handler is added to each.
            handler: called as ``handler(engine, *args, **kwargs)``, or without the engine when
                its signature does not take it; EXCEPTION_RAISED handlers also receive the
                exception, TERMINATE_SINGLE_EPOCH handlers ``iter_counter=``.
            *args: passed to the handler after the engine.
            **kwargs: passed to the handler as keyword arguments.

        Returns:
            A handle whose ``remove()`` (or ``with`` block) detaches the handler.

        Raises:
            TypeError: ``handler`` is not callable, or its signature cannot take the arguments.
            ValueError: ``event_name`` is not registered on this engine, or a filter was put on
                an event without a counter.

        Example:
            ```python
            def log(engine, every):
                print(engine.state.iteration, every)

            handle = trainer.add_event_handler(Events.ITERATION_COMPLETED(every=100), log, 100)
            handle.remove()  # detached again
            ```
        """
        if is_events_list(event_name):
            for event in event_name:
                self.add_event_handler(event, handler, *args, **kwargs)
            return RemovableEventHandle(event_name, handler, self)
        if not callable(handler):
            raise TypeError(f"Argument handler should be callable, got {type(handler)}")
        filtered = is_event(event_name) and event_name.filter is not None
        # A handler that keeps outputs between calls (TerminateOnNan) is told where it goes: a
        # filter may skip the epoch's last iteration, where it reads what it keeps, and the
        # outputs of a second engine would mix with the first's. Looked up on the class: an
        # instance's __getattr__ runs no code here.
        told = getattr(type(handler), "_attached_to", None)
        if callable(told):
            told(handler, self, filtered)
        if filtered:
            handler = FilteredHandler(handler, event_name, event_name.filter, self)
        self._assert_allowed_event(event_name)
        event_args: tuple[Any, ...] = ()
        if event_name == Events.EXCEPTION_RAISED:
            event_args = (Exception(),)
        elif event_name == Events.TERMINATE_SINGLE_EPOCH:
            event_args = (0,)
        try:
            check_signature(handler, "handler", self, *event_args, *args, **kwargs)
            entry = (handler, (weakref.ref(self), *args), kwargs)
        except ValueError:
            check_signature(handler, "handler", *event_args, *args, **kwargs)
            entry = (handler, args, kwargs)
        self._event_handlers[event_name].append(entry)
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("Added handler for event %s", event_name)
        return RemovableEventHandle(event_name, handler, self)

    @staticmethod
    def _compare_handlers(user_handler: Any, registered_handler: Any) -> bool:
        parent = getattr(registered_handler, "_parent", None)
        if parent is not None:
            registered_handler = parent()
        return bool(registered_handler == user_handler)

    def has_event_handler(self, handler: Callable[..., Any], event_name: Any = None) -> bool:
        if event_name is not None:
            if event_name not in self._event_handlers:
                return False
            events: Iterable[Any] = [event_name]
        else:
            events = list(self._event_handlers)
        return any(
            self._compare_handlers(handler, registered)
            for event in events
            for registered, _, _ in self._event_handlers[event]
        )

    def remove_event_handler(self, handler: Callable[..., Any], event_name: Any) -> None:
        """Detach ``handler`` from ``event_name``; a firing in progress is not affected."""
        if event_name not in self._event_handlers:
            raise ValueError(f"Input event name '{event_name}' does not exist")
        kept = []
        found = False
        for entry in self._event_handlers[event_name]:
            if not self._compare_handlers(handler, entry[0]):
                kept.append(entry)
                continue
            found = True
            # A handler standing for several (a metric's update and store in one call) leaves
            # the others registered. Looked up on the class: a mock handler invents attributes.
            without = getattr(type(entry[0]), "_entry_without", None)
            remainder = None if without is None else without(entry[0], handler, entry)
            if remainder is not None:
                kept.append(remainder)
        if not found:
            raise ValueError(
                f"Input handler '{handler}' is not found among registered event handlers"
            )
        self._event_handlers[event_name] = kept

    def on(self, event_name: Any, *args: Any, **kwargs: Any) -> Callable[[_Handler], _Handler]:
        """Decorator form of :meth:`add_event_handler`; returns the function unchanged (and
        typed as it was).

        Example:
            ```python
            @trainer.on(Events.EPOCH_COMPLETED(every=2))
            def validate(engine: Engine) -> None:
                evaluator.run(val_data)
            ```
        """

        def decorator(handler: _Handler) -> _Handler:
            self.add_event_handler(event_name, handler, *args, **kwargs)
            return handler

        return decorator

    # ------------------------------------------------------------------ firing
    def _fire_event(self, event_name: Any, *event_args: Any, **event_kwargs: Any) -> None:
        """Call every handler of ``event_name``, walking the live list (additions run too)."""
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug(
                "%s | %s, Firing handlers for event %s",
                self.state.epoch,
                self.state.iteration,
                event_name,
            )
        self.last_event_name = event_name
        handlers = self._event_handlers_registry.get(event_name)
        if handlers:
            call_handlers(handlers, event_args, event_kwargs)

    def fire_event(self, event_name: Any) -> None:
        """Fire a registered event (typically a custom one) from a handler or the process function."""
        self._assert_allowed_event(event_name)
        self._fire_event(event_name)

    def _handle_exception(self, exception: BaseException) -> None:
        # ignite tests whether the key exists, so a handler added then removed leaves an empty
        # list that swallows every later exception; we test for an actual handler.
        registry = self._event_handlers_registry
        # A registry a program replaced by another object has no handlers to offer: the loops
        # report that (TypeError) through here.
        if isinstance(registry, dict) and registry.get(Events.EXCEPTION_RAISED):
            self._fire_event(Events.EXCEPTION_RAISED, exception)
        else:
            raise exception

    # ------------------------------------------------------------------ control
    def interrupt(self) -> None:
        """Stop the run at the next event check; a later :meth:`run` continues where it stopped.

        INTERRUPT fires and ``run()`` returns the state; calling ``run()`` again (without
        arguments, or with the same data) resumes at the next iteration, without STARTED.

        Raises:
            RuntimeError: ``interrupt_resume_enabled`` is False on this engine class.

        Example:
            ```python
            trainer.add_event_handler(Events.ITERATION_COMPLETED(once=10), lambda e: e.interrupt())
            trainer.run(data, max_epochs=2)  # returns after iteration 10
            trainer.run(data)                # goes on from iteration 11
            ```
        """
        if not self.interrupt_resume_enabled:
            raise RuntimeError(
                "Engine 'interrupt/resume' feature is disabled. "
                "Please, set Engine.interrupt_resume_enabled=True to enable it"
            )
        self.logger.info(
            "interrupt signaled. Engine will interrupt the run after current iteration is finished."
        )
        self.should_interrupt = True

    def terminate(self, skip_completed: bool = False) -> None:
        """End the run at the next event check: TERMINATE fires, then COMPLETED unless skipped.

        Called from a handler or the process function, it takes effect when the current event's
        handlers (or the current iteration) are done, as in ignite. A later :meth:`run` starts
        the next epoch with a fresh data iterator.

        Args:
            skip_completed: do not fire EPOCH_COMPLETED and COMPLETED after TERMINATE.

        Example:
            ```python
            @trainer.on(Events.ITERATION_COMPLETED)
            def stop_on_nan(engine):
                if engine.state.output != engine.state.output:  # NaN
                    engine.terminate()
            ```
        """
        self.logger.info(
            "Terminate signaled. Engine will stop after current iteration is finished."
        )
        self.should_terminate = "skip_completed" if skip_completed else True

    def terminate_epoch(self, skip_epoch_completed: bool = False) -> None:
        """End the current epoch at the next event check: TERMINATE_SINGLE_EPOCH fires."""
        self.logger.info(
            "Terminate current epoch is signaled. "
            "Current epoch iteration will stop after current iteration is finished."
        )
        self.should_terminate_single_epoch = (
            "skip_epoch_completed" if skip_epoch_completed else True
        )

    # ------------------------------------------------------------------ state_dict
    @property
    def state_dict_user_keys(self) -> list[str]:
        return self._state_dict_user_keys

    def state_dict(self) -> OrderedDict[str, Any]:
        """``epoch_length``, ``iteration``, ``max_iters`` or ``max_epochs``, then the user keys."""
        keys = list(self._state_dict_all_req_keys)
        keys.append("max_iters" if self.state.max_iters is not None else "max_epochs")
        keys.extend(self._state_dict_user_keys)
        return OrderedDict((key, getattr(self.state, key)) for key in keys)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore counters and user keys saved by :meth:`state_dict` (``epoch`` also accepted)."""
        check_state_dict(state_dict)
        state_dict = self._with_iteration_and_epoch(state_dict)
        check_state_dict(state_dict, self._state_dict_all_req_keys)
        for options in self._state_dict_one_of_opt_keys:
            if sum(key in state_dict for key in options) != 1:
                raise ValueError(f"state_dict should contain exactly one of '{options}' keys")
        for key in self._state_dict_user_keys:
            if key not in state_dict:
                raise ValueError(
                    f"Required user state attribute '{key}' is absent in provided state_dict "
                    f"'{state_dict.keys()}'"
                )
        self._check_counter(state_dict, "epoch_length", allow_none=True, minimum=1)
        self._check_counter(state_dict, "iteration", allow_none=False, minimum=0)
        # Everything is checked before the state changes, so that a refused state dict leaves
        # the engine as it was; counters are stored as ints (NumPy integers pass the checks,
        # and the compiled loop counts in ints).
        epoch_length = state_dict["epoch_length"]
        epoch_length = None if epoch_length is None else int(epoch_length)
        iteration, epoch = int(state_dict["iteration"]), int(state_dict["epoch"])
        if "max_epochs" in state_dict:
            limit_name = "max_epochs"
            limit = self._checked_termination(limit_name, state_dict[limit_name], "epoch", epoch)
        else:
            limit_name = "max_iters"
            limit = self._checked_termination(
                limit_name, state_dict[limit_name], "iteration", iteration
            )
        for key in self._state_dict_user_keys:
            setattr(self.state, key, state_dict[key])
        if self._resume_point is not None and self._same_position(state_dict):
            # The interrupted run's own position: its resume point (iterator, epoch, phase)
            # stays, so that a round trip through state_dict() changes nothing.
            return
        state = self.state
        state.epoch_length, state.iteration, state.epoch = epoch_length, iteration, epoch
        state.max_epochs = state.max_iters = None
        if limit is not None:
            setattr(state, limit_name, limit)
        if self._resume_point is not None:
            # Another position: the interrupted run's half-used iterator does not belong to it
            # (docs/event-order.md, "Mid-epoch after load_state_dict").
            self._resume_point = None
            self._dataloader_iter = None
            self._init_iter = None

    def _same_position(self, state_dict: Mapping[str, Any]) -> bool:
        """Whether ``state_dict`` holds the counters and the limit the state has now. (A
        ``max_iters`` run keeps the ``max_epochs`` it derives from a learned length.)"""
        state = self.state
        if "max_iters" in state_dict:
            same_limit = state_dict["max_iters"] == state.max_iters
        else:
            same_limit = state.max_iters is None and state_dict["max_epochs"] == state.max_epochs
        return bool(
            same_limit
            and state_dict["iteration"] == state.iteration
            and state_dict["epoch_length"] == state.epoch_length
        )

    @staticmethod
    def _with_iteration_and_epoch(state_dict: Mapping[str, Any]) -> dict[str, Any]:
        has_iteration, has_epoch = "iteration" in state_dict, "epoch" in state_dict
        if has_iteration and has_epoch:
            raise ValueError(
                "State dictionary should contain only one of 'iteration' or 'epoch' keys. "
                f"Found both: iteration={state_dict['iteration']}, epoch={state_dict['epoch']}."
            )
        completed = dict(state_dict)
        if not (has_iteration or has_epoch):
            return completed
        # The counter given is checked before the other is derived from it, so that the message
        # names the key that is wrong (a str epoch would multiply into a str iteration).
        Engine._check_counter(
            completed, "iteration" if has_iteration else "epoch", allow_none=False, minimum=0
        )
        epoch_length = completed.get("epoch_length")
        if completed.get("epoch") == 0 or completed.get("iteration") == 0:
            completed["epoch"] = completed["iteration"] = 0
            return completed
        if not _is_integer(epoch_length) or epoch_length <= 0:
            raise ValueError(
                "epoch_length must be a positive integer to calculate missing 'iteration' or "
                f"'epoch' key. Input state_dict: {completed}"
            )
        if has_epoch:
            completed["iteration"] = completed["epoch"] * epoch_length
        else:
            completed["epoch"] = completed["iteration"] // epoch_length
        return completed

    @staticmethod
    def _check_counter(
        state_dict: Mapping[str, Any], key: str, *, allow_none: bool, minimum: int
    ) -> None:
        value = state_dict.get(key)
        if value is None and allow_none:
            return
        if not _is_integer(value) or value < minimum:
            raise ValueError(
                f"state_dict['{key}'] should be an integer >= {minimum}, got {value!r}"
            )

    # ------------------------------------------------------------------ run
    @staticmethod
    def _is_done(state: State) -> bool:
        if state.max_iters is not None and state.iteration >= state.max_iters:
            return True
        if state.max_epochs is None:
            return False
        if (
            state.epoch_length is not None
            and state.iteration >= state.epoch_length * state.max_epochs
        ):
            return True
        return bool(state.epoch >= state.max_epochs)

    def _check_and_set_termination(
        self, name: str, value: Any, progress_name: str, progress: int
    ) -> None:
        value = self._checked_termination(name, value, progress_name, progress)
        if value is not None:
            setattr(self.state, name, value)

    @staticmethod
    def _checked_termination(
        name: str, value: Any, progress_name: str, progress: int
    ) -> int | None:
        """``value`` as the int to store as ``state.<name>`` (None: nothing to store); raises
        if it is not a limit a run at ``progress`` can have."""
        if value is None:
            return None
        if not _is_integer(value):
            raise TypeError(f"Argument {name} should be an integer, got {type(value).__name__}")
        limit = int(value)
        if limit < 1:
            raise ValueError(
                f"Argument {name} is invalid. Please, set a correct {name} positive value"
            )
        if limit < progress:
            raise ValueError(
                f"Argument {name} should be greater than or equal to the start {progress_name} "
                f"defined in the state: {limit} vs {progress}. Please, set "
                f"engine.state.{name} = None before calling engine.run() in order to restart "
                "the training from the beginning."
            )
        return limit

    def set_data(self, data: Iterable[Any]) -> None:
        """Switch data now: the next batch comes from ``data``; ``epoch_length`` is unchanged."""
        if not isinstance(data, Iterable):
            raise TypeError("Argument data should be iterable")
        self.state.dataloader = data
        self._dataloader_iter = iter(data)

    @staticmethod
    def _get_data_length(data: Iterable[Any]) -> int | None:
        try:
            if hasattr(data, "__len__"):
                return len(data)  # type: ignore[arg-type]
        except TypeError:
            pass
        return None

    def _setup_dataloader_iter(self) -> None:
        if self.state.dataloader is None:
            self._dataloader_iter = itertools.repeat(None, self.state.epoch_length)  # type: ignore[arg-type]
        else:
            self._dataloader_iter = iter(self.state.dataloader)

    def _setup_engine(self) -> None:
        self._setup_dataloader_iter()
        if self._init_iter is None:
            iteration = self.state.iteration
            if self.state.epoch_length is not None:
                iteration %= self.state.epoch_length
            self._init_iter = iteration

    def run(
        self,
        data: Iterable[Any] | None = None,
        max_epochs: int | None = None,
        max_iters: int | None = None,
        epoch_length: int | None = None,
    ) -> State:
        """Run over ``data``: a new run when the state is fresh or finished, else a resume.

        Exactly one of ``max_epochs`` (default 1) and ``max_iters`` bounds the run.
        ``epoch_length`` defaults to ``len(data)``; for data without a length it is found when
        the iterator first runs out. ``data=None`` needs ``epoch_length`` and passes ``None``
        batches. Returns ``engine.state``, also after :meth:`interrupt`.

        Args:
            data: any iterable (a list, a ``DataLoader``, a generator); restarted with
                ``iter()`` when it runs out before the epoch ends.
            max_epochs: epochs to run; on a resume, a larger value extends the run.
            max_iters: iterations to run, instead of ``max_epochs``.
            epoch_length: iterations per epoch (``len(data)`` by default).

        Returns:
            ``engine.state``.

        Raises:
            TypeError: ``data`` is not iterable, or a count is not an integer.
            ValueError: a count is not positive (``max_epochs=0`` included, where ignite
                returns), both ``max_epochs`` and ``max_iters`` are given, the data is empty,
                or ``data=None`` without ``epoch_length``.
            Exception: whatever the process function or a handler raised, after the
                EXCEPTION_RAISED handlers (if none swallowed it).

        Example:
            ```python
            engine = Engine(lambda engine, batch: batch * 2)
            state = engine.run([1, 2, 3], max_epochs=2)
            assert (state.epoch, state.iteration, state.output) == (2, 6, 6)
            ```
        """
        if id(self) in _RUNNING:
            # It would start the state anew under the running loop, which then fails on it.
            raise RuntimeError(
                "Engine.run() was called while this engine runs (from one of its handlers or "
                "its process function); run another engine there, or call interrupt() and "
                "run() again after this run returns"
            )
        self._validate_run_arguments(data, max_epochs, max_iters, epoch_length)
        # Spelled out, not a generator: each run() of an evaluator pays for every Python frame.
        max_epochs = None if max_epochs is None else int(max_epochs)
        max_iters = None if max_iters is None else int(max_iters)
        epoch_length = None if epoch_length is None else int(epoch_length)
        self._validate_mode_switch(max_epochs, max_iters)
        if self.state.max_epochs is not None and max_epochs is not None:
            self._check_and_set_termination("max_epochs", max_epochs, "epoch", self.state.epoch)
        if self.state.max_iters is not None and max_iters is not None:
            self._check_and_set_termination(
                "max_iters", max_iters, "iteration", self.state.iteration
            )
        fresh = self.state.max_epochs is None and self.state.max_iters is None
        if fresh or (self._is_done(self.state) and self._resume_point is None):
            self._start_new_state(data, max_epochs, max_iters, epoch_length)
        else:
            self._resume_state(data, epoch_length)
        if self._dataloader_iter is None:
            self.state.dataloader = data
        plan = self._plan()
        _RUNNING.add(id(self))
        try:
            with RunScope():  # finishes what handlers left in the background (checkpoint writes)
                if self._profiler is None:
                    self._run_loop(self, plan)
                else:
                    self._profiler._profiled_run(self, plan)  # the loop, with host syncs counted
        finally:
            _RUNNING.discard(id(self))
        return self.state

    def _methods_overridden(self) -> tuple[bool, bool, bool]:
        """Whether ``_fire_event``, ``_is_done`` and ``_setup_dataloader_iter`` of this engine
        are not Engine's own: a subclass override or an instance attribute (a staticmethod
        like ``_is_done`` has no ``__func__``: compared as it is)."""
        fire_event, is_done, setup_iter = (
            self._fire_event,
            self._is_done,
            self._setup_dataloader_iter,
        )
        return (
            getattr(fire_event, "__func__", fire_event) is not Engine._fire_event,
            getattr(is_done, "__func__", is_done) is not Engine._is_done,
            getattr(setup_iter, "__func__", setup_iter) is not Engine._setup_dataloader_iter,
        )

    def _plan(self) -> RunPlan:
        """Decide how this run() goes (see ``RunPlan``); takes the pending resume point."""
        point = None if self._resume_point is None else resume_point(self._resume_point)
        self._resume_point = None
        fire_event, is_done, setup_dataloader_iter = self._methods_overridden()
        return RunPlan(
            fire_through_engine=fire_event or self.logger.isEnabledFor(logging.DEBUG),
            is_done_overridden=is_done,
            setup_dataloader_iter_overridden=setup_dataloader_iter,
            logs_info=self.logger.isEnabledFor(logging.INFO),
            set_sampler_epoch=bool(self.set_sampler_epoch),
            profiler=self._profiler,
            resume=point,
        )

    @staticmethod
    def _validate_run_arguments(
        data: Any, max_epochs: Any, max_iters: Any, epoch_length: Any
    ) -> None:
        if data is not None and not isinstance(data, Iterable):
            raise TypeError("Argument data should be iterable")
        for name, value in (
            ("max_epochs", max_epochs),
            ("max_iters", max_iters),
            ("epoch_length", epoch_length),
        ):
            if value is not None and not _is_integer(value):
                raise TypeError(f"Argument {name} should be an integer, got {type(value).__name__}")
            if value is not None and value < 1:
                if name == "epoch_length":
                    raise ValueError("Input data has zero size. Please provide non-empty data")
                raise ValueError(
                    f"Argument {name} is invalid. Please, set a correct {name} positive value"
                )
        if max_epochs is not None and max_iters is not None:
            raise ValueError(
                "Arguments max_iters and max_epochs are mutually exclusive. "
                "Please provide only max_epochs or max_iters."
            )

    def _validate_mode_switch(self, max_epochs: Any, max_iters: Any) -> None:
        if max_iters is not None and self.state.max_epochs is not None:
            raise ValueError(
                "To switch from max_epochs to max_iters mode during resume, you must first reset "
                "by setting 'engine.state.max_epochs = None' before calling run()."
            )
        if max_epochs is not None and self.state.max_iters is not None:
            raise ValueError(
                "To switch from max_iters to max_epochs mode during resume, you must first reset "
                "by setting 'engine.state.max_iters = None' before calling run()."
            )

    def _start_new_state(
        self, data: Any, max_epochs: int | None, max_iters: int | None, epoch_length: int | None
    ) -> None:
        if data is None and epoch_length is None and self.state.epoch_length is None:
            raise ValueError("epoch_length should be provided if data is None")
        if epoch_length is None:
            if data is not None:
                epoch_length = self._get_data_length(data)
            if epoch_length is None:
                epoch_length = self.state.epoch_length
        if (epoch_length is not None and epoch_length < 1) or (
            data is not None and self._get_data_length(data) == 0
        ):
            raise ValueError("Input data has zero size. Please provide non-empty data")
        if max_iters is None and max_epochs is None:
            max_epochs = 1
        self.state.iteration = 0
        self.state.epoch = 0
        self.state.max_epochs = max_epochs
        self.state.max_iters = max_iters
        self.state.epoch_length = epoch_length
        self._resume_point = None
        self._dataloader_iter = None
        self._init_iter = None
        if max_iters is not None:
            self.logger.info("Engine run starting with max_iters=%s.", max_iters)
        else:
            self.logger.info("Engine run starting with max_epochs=%s.", max_epochs)

    def _resume_state(self, data: Any, epoch_length: int | None) -> None:
        if self.state.epoch_length is not None:
            if epoch_length is not None and epoch_length != self.state.epoch_length:
                raise ValueError(
                    "Argument epoch_length should be same as in the state, "
                    f"but given {epoch_length} vs {self.state.epoch_length}"
                )
        else:
            if epoch_length is None and data is not None:
                epoch_length = self._get_data_length(data)
            if epoch_length is not None:
                if epoch_length < 1:
                    raise ValueError("Input data has zero size. Please provide non-empty data")
                self.state.epoch_length = epoch_length
        if self.state.max_iters is not None:
            until = f"{self.state.max_iters} iterations"
        else:
            until = f"{self.state.max_epochs} epochs"
        self.logger.info(
            "Engine run resuming from iteration %s, epoch %s until %s",
            self.state.iteration,
            self.state.epoch,
            until,
        )
        if self.state.epoch_length is None and data is None and self._dataloader_iter is None:
            raise ValueError("epoch_length should be provided if data is None")
        if self.should_terminate and self._resume_point is None:
            self._init_iter = 0
