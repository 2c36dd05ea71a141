"""The run loop in pure Python: the specification that the compiled loop follows event for event.

The order of events, for a run that is neither terminated nor interrupted::

    STARTED
    while not done:
        epoch += 1; EPOCH_STARTED
        if there is no live iterator: iter(data)
        loop:
            batch = None
            GET_BATCH_STARTED                  (skipped right after DATALOADER_STOP_ITERATION)
            batch = next(iterator), on StopIteration:
                length unknown:   epoch_length = batches this iterator gave; end the
                                  epoch, unless it began part way through the pass
                already restarted: warn unless done, end the epoch
                else:             DATALOADER_STOP_ITERATION; iter(state.dataloader); retry
            output = None; GET_BATCH_COMPLETED
            iteration += 1; ITERATION_STARTED
            output = process_function(engine, batch); ITERATION_COMPLETED
            end the epoch after epoch_length iterations; terminate at max_iters
        EPOCH_COMPLETED
    COMPLETED

After STARTED, EPOCH_STARTED, the GET_BATCH events, DATALOADER_STOP_ITERATION, the ITERATION
events and EPOCH_COMPLETED the loop checks, in this order, ``should_terminate``,
``should_terminate_single_epoch`` and ``should_interrupt``. An interrupt saves a resume point
(one of the phases below plus the loop's counters) on the engine, and the next ``run()``
continues from it. Exceptions inside the iteration loop are routed first at the iteration level
(handled ones end the epoch, and the run goes on), then at the run level.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ember.engine._loop_support import (
    AFTER_DATALOADER_STOP_ITERATION,
    AFTER_EPOCH_COMPLETED,
    AFTER_EPOCH_STARTED,
    AFTER_GET_BATCH_COMPLETED,
    AFTER_GET_BATCH_STARTED,
    AFTER_ITERATION_COMPLETED,
    AFTER_ITERATION_STARTED,
    AFTER_STARTED,
    EPOCH_END,
    ITERATOR_REMOVED,
    NO_PROGRESS,
    NO_PROGRESS_EPOCHS_LIMIT,
    STALLED_EPOCHS_LIMIT,
    START,
    TERMINATE_EPOCH_TOO_EARLY,
    ZERO_SIZE_DATA,
    handle_exception,
    log_epoch_completed,
    log_iteration_error,
    log_run_error,
    log_run_finished,
    set_sampler_epoch,
    warn_data_exhausted,
)
from ember.engine._plan import ResumePoint, RunPlan
from ember.engine._registry import HandlerRegistry, call_handlers
from ember.engine.events import Events
from ember.engine.profile import handler_name

if TYPE_CHECKING:
    from ember.engine.engine import Engine

# Enum attribute access costs ~0.1 µs in CPython 3.11; the loop reads these every iteration.
_COMPLETED = Events.COMPLETED
_DATALOADER_STOP_ITERATION = Events.DATALOADER_STOP_ITERATION
_EPOCH_COMPLETED = Events.EPOCH_COMPLETED
_EPOCH_STARTED = Events.EPOCH_STARTED
_GET_BATCH_COMPLETED = Events.GET_BATCH_COMPLETED
_GET_BATCH_STARTED = Events.GET_BATCH_STARTED
_INTERRUPT = Events.INTERRUPT
_ITERATION_COMPLETED = Events.ITERATION_COMPLETED
_ITERATION_STARTED = Events.ITERATION_STARTED
_STARTED = Events.STARTED
_TERMINATE = Events.TERMINATE
_TERMINATE_SINGLE_EPOCH = Events.TERMINATE_SINGLE_EPOCH


class _Terminate(BaseException):
    """``should_terminate`` was seen at a check."""


class _TerminateEpoch(BaseException):
    """``should_terminate_single_epoch`` was seen at a check."""


class _Interrupted(BaseException):
    """``should_interrupt`` was seen at a check; the resume point is saved on the engine."""


def _is_stop_iteration(event: Any) -> bool:
    # Built-in events are singletons: identity decides for them, and spares an __eq__ call.
    if type(event) is Events:
        return event is _DATALOADER_STOP_ITERATION
    return bool(event == _DATALOADER_STOP_ITERATION)


class _Timings:
    """The loop's clock readings for an attached Profiler, added to it when run() returns."""

    __slots__ = ("totals",)

    def __init__(self) -> None:
        self.totals: dict[tuple[str, Any], list[float]] = {}

    def add(self, kind: str, key: Any, seconds: float) -> None:
        total = self.totals.setdefault((kind, key), [0.0, 0])
        total[0] += seconds
        total[1] += 1

    def flush(self, profiler: Any) -> None:
        for (kind, key), (seconds, calls) in self.totals.items():
            name = key
            if kind == "handler":
                event, handler = key
                name = f"{event}:{handler_name(handler)}"
            profiler.add(kind, name, seconds, int(calls))


def _stop_requested(engine: Engine) -> bool:
    """Whether the check after an event has anything to do: terminate, terminate the epoch or
    interrupt was asked for. Tested before calling _check() where it runs every iteration."""
    return bool(
        engine.should_terminate or engine.should_terminate_single_epoch or engine.should_interrupt
    )


_NOT_READ = object()  # no registry read yet (None is a value a program may store)


class _Dispatch:
    """Fires built-in events for one run, the way the compiled loop does.

    The registry's lists are looked up again only when its version moves; each list is walked
    live. A subclass that overrides ``_fire_event``, or debug logging, sends every event through
    ``engine._fire_event`` instead.
    """

    __slots__ = ("engine", "lists", "registry", "through_engine", "timings", "version")

    def __init__(self, engine: Engine, timings: _Timings | None, through_engine: bool) -> None:
        self.engine = engine
        self.timings = timings
        self.through_engine = through_engine
        self.registry: object = _NOT_READ
        self.version = -1
        self.lists: dict[int, list[Any]] = {}

    def fire(self, event: Events, **event_kwargs: Any) -> bool:
        """Fire ``event``; false when it had no handler."""
        engine = self.engine
        if self.through_engine:
            engine._fire_event(event, **event_kwargs)
            return True
        engine.last_event_name = event
        registry = engine._event_handlers_registry
        if registry is not self.registry and not isinstance(registry, HandlerRegistry):
            raise TypeError(
                "engine._event_handlers should be a HandlerRegistry, got "
                f"{type(registry).__name__}; assign a mapping to engine._event_handlers to "
                "convert it"
            )
        if registry is not self.registry or registry.version != self.version:
            self.registry, self.version = registry, registry.version
            self.lists = {id(e): registry[e] for e in Events if e in registry}
        handlers = self.lists.get(id(event))
        if not handlers:
            return False
        if self.timings is None:
            call_handlers(handlers, (), event_kwargs)
            return True
        index = 0
        while index < len(handlers):  # the live list, as call_handlers walks it
            entry = handlers[index]
            started = time.perf_counter()
            try:
                call_handlers((entry,), (), event_kwargs)
            finally:  # a call that raised is counted too: often the one being looked into
                self.timings.add("handler", (event.name, entry[0]), time.perf_counter() - started)
            index += 1
        return True


class _TimedDispatch(_Dispatch):
    """A profiled run's dispatch, which also times each firing as a whole. A subclass, so that
    an untimed firing is a single Python call."""

    __slots__ = ()

    def fire(self, event: Events, **event_kwargs: Any) -> bool:
        assert self.timings is not None
        started = time.perf_counter()
        try:
            return super().fire(event, **event_kwargs)
        finally:
            self.timings.add("event", event.name, time.perf_counter() - started)


def run_loop(engine: Engine, plan: RunPlan) -> None:
    """Run (or resume) ``engine``'s loop as ``plan`` says, until it completes, terminates, fails
    or is interrupted."""
    _Run(engine, plan).run()


class _Run:
    """One call of ``run()``: the loop's position and counters, saved on interrupt."""

    __slots__ = (
        "batches_drawn",
        "counted_iterator",
        "dispatch",
        "engine",
        "epoch_first_iteration",
        "epoch_started",
        "iter_counter",
        "logs_info",
        "phase",
        "profiler",
        "restarted",
        "run_started",
        "set_sampler_epoch",
        "stalled_epochs",
        "timings",
    )

    def __init__(self, engine: Engine, plan: RunPlan) -> None:
        self.engine = engine
        self.profiler = plan.profiler
        self.logs_info = plan.logs_info
        self.set_sampler_epoch = plan.set_sampler_epoch
        self.timings = None if plan.profiler is None else _Timings()
        dispatch = _Dispatch if self.timings is None else _TimedDispatch
        self.dispatch = dispatch(engine, self.timings, plan.fire_through_engine)
        self.epoch_first_iteration: Any  # state.iteration as it was: any object a program set
        self.counted_iterator: Any
        point: ResumePoint | None = plan.resume
        if point is None:
            engine.should_terminate = False
            engine.should_terminate_single_epoch = False
            engine.should_interrupt = False
            engine.state.times[_EPOCH_COMPLETED.name] = 0.0
            engine.state.times[_COMPLETED.name] = 0.0
            point = (START, 0, False, time.perf_counter(), 0.0, 0, 0, None, 0)
        (
            self.phase,
            self.iter_counter,
            self.restarted,
            self.run_started,
            self.epoch_started,
            self.epoch_first_iteration,
            self.stalled_epochs,
            self.counted_iterator,
            self.batches_drawn,
        ) = point

    def run(self) -> None:
        try:
            self._run()
        finally:
            if self.timings is not None:
                self.timings.flush(self.profiler)

    def _run(self) -> None:
        engine = self.engine
        try:
            try:
                self._epochs()
            except _Terminate:
                self.dispatch.fire(_TERMINATE)
            except _TerminateEpoch:
                raise RuntimeError(TERMINATE_EPOCH_TOO_EARLY) from None
            self._complete()
        except _Interrupted:
            return
        except BaseException as exc:
            engine._dataloader_iter = None
            log_run_error(engine, exc)
            handle_exception(engine, exc)
        engine._dataloader_iter = None

    def _complete(self) -> None:
        engine = self.engine
        engine.state.times[_COMPLETED.name] = time.perf_counter() - self.run_started
        if engine.should_terminate != "skip_completed":
            if self.dispatch.fire(_COMPLETED):  # the time then includes the handlers
                # Read again: a handler may have replaced the state or its times.
                engine.state.times[_COMPLETED.name] = time.perf_counter() - self.run_started
        if self.logs_info:
            log_run_finished(engine)

    def _check(self, reached: int) -> None:
        """The check after an event: terminate, then terminate the epoch, then interrupt."""
        engine = self.engine
        self.phase = reached
        if engine.should_terminate:
            raise _Terminate
        if engine.should_terminate_single_epoch:
            raise _TerminateEpoch
        if engine.should_interrupt:
            self.dispatch.fire(_INTERRUPT)
            engine.should_interrupt = False
            engine._resume_point = (
                reached,
                self.iter_counter,
                self.restarted,
                self.run_started,
                self.epoch_started,
                self.epoch_first_iteration,
                self.stalled_epochs,
                self.counted_iterator,
                self.batches_drawn,
            )
            raise _Interrupted

    def _epochs(self) -> None:
        engine = self.engine
        if self.phase == START:
            self.dispatch.fire(_STARTED)
            self._check(AFTER_STARTED)
        if self.phase > AFTER_STARTED and self._finish_epoch():
            return
        while not engine._is_done(engine.state) and not engine.should_terminate:
            engine.state.epoch += 1
            if self.set_sampler_epoch:
                set_sampler_epoch(engine)
            self.epoch_started = time.perf_counter()
            self.epoch_first_iteration = engine.state.iteration
            self.dispatch.fire(_EPOCH_STARTED)
            self._check(AFTER_EPOCH_STARTED)
            if self._finish_epoch():
                break

    def _finish_epoch(self) -> bool:
        """Run the epoch from the current phase to its end; true when the run has stalled."""
        engine = self.engine
        if self.phase < AFTER_EPOCH_COMPLETED:
            if self.phase == AFTER_EPOCH_STARTED:
                if engine._dataloader_iter is None:
                    engine._setup_engine()
                self.iter_counter = engine._init_iter or 0
                engine._init_iter = None
                iteration = engine.state.iteration  # see Engine._iterations_before_epoch
                engine._iterations_before_epoch = (
                    iteration - self.iter_counter if type(iteration) is int else None
                )
                self.restarted = False
            self._iterations()
            self.phase = EPOCH_END
            state = engine.state
            if state.iteration == self.epoch_first_iteration:
                self.stalled_epochs += 1
            else:
                self.stalled_epochs = 0
            state.times[_EPOCH_COMPLETED.name] = time.perf_counter() - self.epoch_started
            if engine.should_terminate_single_epoch != "skip_epoch_completed":
                if self.dispatch.fire(_EPOCH_COMPLETED):  # the time then includes the handlers
                    engine.state.times[_EPOCH_COMPLETED.name] = (
                        time.perf_counter() - self.epoch_started
                    )
            if engine.should_terminate_single_epoch:
                engine.should_terminate_single_epoch = False
            self._check(AFTER_EPOCH_COMPLETED)
        if self.logs_info:
            log_epoch_completed(engine)
        self.phase = AFTER_STARTED
        # ignite loops forever when a max_iters run meets data that gives nothing more, or a
        # restart that keeps failing; two epochs in a row without an iteration end such a run.
        # Any other run fails after NO_PROGRESS_EPOCHS_LIMIT of them: its bound may be huge.
        if self.stalled_epochs < STALLED_EPOCHS_LIMIT:
            return False
        if engine.state.max_epochs is None:
            return True
        if self.stalled_epochs >= NO_PROGRESS_EPOCHS_LIMIT:
            raise RuntimeError(NO_PROGRESS)
        return False

    def _iterations(self) -> None:
        """The iterations of one epoch, from the current phase; exceptions routed at this level."""
        engine = self.engine
        try:
            while True:
                if self.phase == AFTER_ITERATION_COMPLETED:
                    state = engine.state
                    if state.epoch_length is not None and self.iter_counter == state.epoch_length:
                        return
                    if state.max_iters is not None and state.iteration == state.max_iters:
                        engine.should_terminate = True
                        raise _Terminate
                if self.phase == AFTER_DATALOADER_STOP_ITERATION:
                    engine._setup_dataloader_iter()
                    self.restarted = True
                if self.phase <= AFTER_EPOCH_STARTED or self.phase in (
                    AFTER_ITERATION_COMPLETED,
                    AFTER_DATALOADER_STOP_ITERATION,
                ):
                    engine.state.batch = None
                    self.phase = AFTER_GET_BATCH_STARTED
                    if (
                        not _is_stop_iteration(engine.last_event_name)
                        and engine.state.dataloader is not None
                    ):
                        self.dispatch.fire(_GET_BATCH_STARTED)
                        if _stop_requested(engine):
                            self._check(AFTER_GET_BATCH_STARTED)
                if self.phase == AFTER_GET_BATCH_STARTED:
                    if not self._next_batch():
                        return
                    if self.phase != AFTER_GET_BATCH_COMPLETED:
                        continue  # the data restarted: fetch again
                if self.phase == AFTER_GET_BATCH_COMPLETED:
                    self.iter_counter += 1
                    self.restarted = False
                    engine.state.iteration += 1
                    self.dispatch.fire(_ITERATION_STARTED)
                    self.phase = AFTER_ITERATION_STARTED
                    if _stop_requested(engine):
                        self._check(AFTER_ITERATION_STARTED)
                if self.phase == AFTER_ITERATION_STARTED:
                    # No local holds the output: the previous one must be freed before a step.
                    if self.timings is None:
                        engine.state.output = engine._process_function(engine, engine.state.batch)
                    else:
                        started = time.perf_counter()
                        try:
                            output = engine._process_function(engine, engine.state.batch)
                        finally:
                            self.timings.add("step", "step", time.perf_counter() - started)
                        engine.state.output = output
                        del output
                    self.dispatch.fire(_ITERATION_COMPLETED)
                    self.phase = AFTER_ITERATION_COMPLETED
                    if _stop_requested(engine):
                        self._check(AFTER_ITERATION_COMPLETED)
        except _TerminateEpoch:
            self.dispatch.fire(_TERMINATE_SINGLE_EPOCH, iter_counter=self.iter_counter)
            engine._setup_dataloader_iter()
        except Exception as exc:
            log_iteration_error(engine, exc)
            handle_exception(engine, exc)

    def _next_batch(self) -> bool:
        """Fetch the next batch, restarting exhausted data once; false when the epoch ends."""
        engine = self.engine
        state = engine.state
        iterator = engine._dataloader_iter
        if iterator is None:
            raise RuntimeError(ITERATOR_REMOVED)
        if iterator is not self.counted_iterator:
            self.counted_iterator, self.batches_drawn = iterator, 0
        started = time.perf_counter() if self.timings is not None else 0.0
        try:
            state.batch = next(iterator)
        except StopIteration:
            if state.epoch_length is None and not self._learn_epoch_length():
                return False
            if self.restarted:
                if not engine._is_done(state):
                    warn_data_exhausted(engine)
                return False
            if state.dataloader is not None:
                self.dispatch.fire(_DATALOADER_STOP_ITERATION)
                self._check(AFTER_DATALOADER_STOP_ITERATION)
            else:
                self.phase = AFTER_DATALOADER_STOP_ITERATION
            return True
        self.batches_drawn += 1
        if self.timings is not None:
            self.timings.add("data", "data", time.perf_counter() - started)
        state.output = None
        self.phase = AFTER_GET_BATCH_COMPLETED
        if state.dataloader is not None:
            self.dispatch.fire(_GET_BATCH_COMPLETED)
            if _stop_requested(engine):
                self._check(AFTER_GET_BATCH_COMPLETED)
        return True

    def _learn_epoch_length(self) -> bool:
        """Data of unknown length ran out: one pass of the iterator is the epoch length. True
        when the epoch goes on as with a known length (restarting the data), false when it ends.

        Counted per iterator, not per epoch: epochs cut short (a swallowed exception,
        ``terminate_epoch()``) leave the iterator part-used, and the next epoch continues it.
        An epoch lengthened by a second iterator (``set_data()``) is as long as it ran, as in
        ignite.
        """
        state = self.engine.state
        if self.batches_drawn == 0:
            if state.iteration == 0:
                raise ValueError(ZERO_SIZE_DATA) from None
            # The data gave batches before, this iterator none: a one-shot iterator, used up.
            if not self.engine._is_done(state):
                warn_data_exhausted(self.engine)
            return False
        # An epoch that drew from two iterators (set_data() mid-epoch) counts its iterations.
        state.epoch_length = max(self.batches_drawn, self.iter_counter)
        if state.max_iters is not None:
            state.max_epochs = -(-state.max_iters // state.epoch_length)
        # The pass began with this epoch: the epoch is over. It began in an earlier epoch that
        # was cut short: this one has drawn fewer batches than a pass and goes on.
        return bool(self.iter_counter < self.batches_drawn)
