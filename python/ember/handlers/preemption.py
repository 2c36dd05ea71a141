"""Stop cleanly when the process is asked to: :class:`Preemption`.

Schedulers (Slurm, Kubernetes) and torch elastic's agent send SIGTERM first, and SIGKILL a
grace period later. ``Preemption`` turns the SIGTERM into: finish the current iteration, write a
checkpoint, log one line, exit; on every rank of a distributed run at the same iteration.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any

from ember import distributed
from ember.engine import Engine, Events
from ember.engine._run_scope import at_run_end
from ember.engine.sink import ends_epoch

__all__ = ["Preempted", "Preemption"]

logger = logging.getLogger("ember.handlers.preemption")

_Handler = Callable[[int, FrameType | None], Any] | int | None


class Preempted(SystemExit):
    """Raised by :class:`Preemption` once the checkpoint is written: a ``SystemExit``, so an
    uncaught one ends the process with :attr:`code` (143 by default, what a process ended by
    SIGTERM reports) and without a traceback; its text says where the run stopped."""

    # The engine logs it at INFO as a stop, not at ERROR as a failure (_loop_support).
    _ends_run_cleanly = True

    def __init__(self, message: str, code: int) -> None:
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Unpickled as Preempted(message, code), not Preempted(code): a worker spawned by
        # Parallel sends it to the parent, which raises it again (its code, not a WorkerError).
        return type(self), (self.message, self.code), self.__dict__


class Preemption:
    """On SIGTERM (or ``signals``), stop the run after the current iteration, on every rank at
    the same iteration, write a checkpoint and exit.

    The signal handler only sets a flag; the engine reads it after an iteration:

    * in a single process, after every iteration (a Python attribute read, no host sync);
    * in a distributed run, every ``check_every`` iterations: the ranks agree with one
      ``all_reduce`` (MAX) of one integer, so that a signal that reached one rank stops all of
      them at the same iteration. That is the only collective (and host sync) added, once per
      ``check_every`` iterations; a rank stops at most ``check_every - 1`` iterations after its
      signal. Choose ``check_every`` so that as many iterations take well under the grace
      period before SIGKILL (torchrun's ``--shutdown-timeout``, 30 s by default; Slurm's
      ``KillWait``...). Every rank must run the same iterations (as DDP training does).

    A stop asked at an epoch's last iteration waits for that epoch's EPOCH_COMPLETED handlers
    (the checkpoint then holds what an uninterrupted run has there: a scheduler stepped, an
    evaluation run); one asked at the run's last iteration lets the run complete (a checkpoint
    of a finished run would make the next launch start a new run). So does one that comes after
    the run's last check: during the last epoch's EPOCH_COMPLETED handlers (a final
    evaluation), the COMPLETED handlers, or after another handler's ``terminate()``. The
    signal is then not dropped: a WARNING line says that it came and that the run completes,
    and :attr:`received` holds it after ``run()`` returns (:attr:`preempted` stays false: no
    checkpoint was written for it), for the script to end rather than start more work.

    Then every rank calls ``checkpoint(engine)`` (a :class:`~ember.handlers.Checkpoint`, which
    writes on one rank; one that writes asynchronously is waited for, through its ``wait()``), logs a WARNING line ("preempted by SIGTERM at iteration ...") and
    raises :class:`Preempted` (a ``SystemExit`` with ``exit_code``), which ends the script with
    that code unless caught; with ``exit_code=None`` it calls ``engine.terminate()`` instead and
    ``run()`` returns (look at :attr:`preempted`).

    The signal handler is installed when the run starts (in the main thread: Python delivers
    signals there only) and the previous one is put back when the run ends (after all its
    COMPLETED handlers, those registered after :meth:`attach` included). A second signal
    while the first is pending is handed to the previous handler (by default, the process ends
    at once), so a process whose engine is no longer looking can still be stopped.

    Args:
        checkpoint: called as ``checkpoint(engine)`` on every rank before stopping.
        check_every: in a distributed run, how many iterations between two agreements (>= 1).
        signals: the signal, or the signals, that ask for a stop (not SIGKILL or SIGSTOP, which
            no process can catch).
        exit_code: the exit code of :class:`Preempted`, or ``None`` to end ``run()`` normally.
    """

    def __init__(
        self,
        checkpoint: Callable[[Engine], Any],
        check_every: int = 10,
        signals: signal.Signals | Iterable[signal.Signals] = (signal.SIGTERM,),
        exit_code: int | None = 143,
    ) -> None:
        if not callable(checkpoint):
            raise TypeError(f"Preemption: checkpoint should be callable, got {checkpoint!r}")
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"Preemption: check_every should be an int >= 1, got {check_every!r}")
        chosen = (signals,) if isinstance(signals, signal.Signals) else tuple(signals)
        if not chosen or not all(isinstance(s, signal.Signals) for s in chosen):
            raise TypeError(f"Preemption: signals should be signal.Signals values, got {signals!r}")
        never_delivered = {getattr(signal, n) for n in ("SIGKILL", "SIGSTOP") if hasattr(signal, n)}
        uncatchable = [s.name for s in chosen if s in never_delivered]
        if uncatchable:
            raise ValueError(
                f"Preemption: signals {uncatchable} cannot be caught by a process, got {signals!r}"
            )
        if exit_code is not None and (
            isinstance(exit_code, bool) or not isinstance(exit_code, int)
        ):
            raise TypeError(f"Preemption: exit_code should be an int or None, got {exit_code!r}")
        self.checkpoint = checkpoint
        self.check_every = check_every
        self.signals = chosen
        self.exit_code = exit_code
        self.received: signal.Signals | None = None
        self.preempted = False
        # The WARNING line for a signal the run did not stop for is written (once per run).
        self._reported = False
        self._previous: dict[signal.Signals, _Handler] = {}

    def attach(self, engine: Engine) -> Preemption:
        """Install on ``engine`` (after the process group is initialized, if any)."""
        distributed.refuse_without_group("Preemption")
        if distributed.get_world_size() > 1:
            check = Events.ITERATION_COMPLETED(every=self.check_every)
        else:
            check = Events.ITERATION_COMPLETED
        engine.add_event_handler(Events.STARTED, self._install)
        engine.add_event_handler(check, self._check)
        engine.add_event_handler(Events.COMPLETED, self._end_after_handlers, Events.COMPLETED)
        engine.add_event_handler(Events.TERMINATE, self._end_after_handlers, Events.TERMINATE)
        return self

    # ------------------------------------------------------------------------------ signals
    def _install(self, engine: Engine) -> None:
        if engine.has_event_handler(self._stop, Events.EPOCH_COMPLETED):
            # A stop deferred to an epoch end that a previous run never reached: not this run's.
            engine.remove_event_handler(self._stop, Events.EPOCH_COMPLETED)
        for event in (Events.COMPLETED, Events.TERMINATE):
            if engine.has_event_handler(self._end, event):  # a previous run raised before it
                engine.remove_event_handler(self._end, event)
        self.received = None
        self.preempted = False
        self._reported = False
        self._take_signals()

    def _take_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "Preemption: the engine runs outside the main thread, where Python cannot "
                "receive signals; run it in the main thread or stop it another way"
            )
        for signum in self.signals:
            if signum not in self._previous:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        # Put back when the run ends however it ends (an exception, interrupt()), not only at
        # COMPLETED or TERMINATE: a signal must not be swallowed once no engine looks.
        at_run_end(id(self), lambda exception: self._restore())

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            # None: the previous handler was not installed from Python; the default is closest.
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def _end_after_handlers(self, engine: Engine, event: Events) -> None:
        # The run ends after the last handler of COMPLETED (or of TERMINATE, when
        # terminate(skip_completed=True) skips COMPLETED): a signal during any of them (a final
        # checkpoint, one registered after attach() too) must still reach this handler, not the
        # previous one. A handler appended while its event fires runs in the same pass.
        if event == Events.TERMINATE and engine.should_terminate != "skip_completed":
            return  # COMPLETED follows
        if not engine.has_event_handler(self._end, event):
            engine.add_event_handler(event, self._end, event)

    def _end(self, engine: Engine, event: Events) -> None:
        engine.remove_event_handler(self._end, event)
        self._restore()
        if self.received is None or self.preempted or self._reported:
            return
        # The signal came after the run's last check (during the last epoch's EPOCH_COMPLETED
        # handlers or the COMPLETED handlers, or before another handler's terminate()): the
        # run has ended, there is nothing to stop, and a checkpoint of a finished run would
        # make the next launch start a new run. Say that it came; `received` keeps it.
        self._reported = True
        logger.warning(
            "ember: %s received after the run's last check, at iteration %d (epoch %d): "
            "the run completes",
            self.received.name,
            engine.state.iteration,
            engine.state.epoch,
        )

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
            return
        # A second signal: the engine may not be looking any more; let it act as before.
        self._restore()
        signal.raise_signal(signum)

    # ------------------------------------------------------------------------------ stopping
    def _check(self, engine: Engine) -> None:
        if not self._previous:  # a run resumed after interrupt(): STARTED does not fire again
            self._take_signals()
        requested = self.received is not None
        if distributed.get_world_size() > 1:
            requested = bool(distributed.all_reduce(int(requested), op="MAX"))
        if not requested:
            return
        state = engine.state
        if (state.max_iters is not None and state.iteration >= state.max_iters) or (
            state.max_epochs is not None
            and state.epoch_length is not None
            and state.iteration >= state.epoch_length * state.max_epochs
        ):
            # The run's last iteration: a checkpoint of a finished run would make the next
            # launch start a new run from iteration 0 (run() on a done state starts afresh);
            # the run completes instead (its COMPLETED handlers save what it made).
            self._reported = True
            logger.warning(
                "ember: %s at the last iteration (%d) of the run: the run completes",
                self.received.name if self.received is not None else "a signal on another rank",
                state.iteration,
            )
            return
        if state.epoch_length is not None and ends_epoch(
            engine, state.iteration, state.epoch_length
        ):
            # The epoch's last iteration: a checkpoint now would hold the next epoch's position
            # while this epoch's EPOCH_COMPLETED handlers (a scheduler's step, an evaluation)
            # never ran, in this run or the resumed one. Stop after them: a handler added now
            # fires after those already registered.
            if not engine.has_event_handler(self._stop, Events.EPOCH_COMPLETED):
                engine.add_event_handler(Events.EPOCH_COMPLETED, self._stop)
            return
        self._stop(engine)

    def _stop(self, engine: Engine) -> None:
        if engine.has_event_handler(self._stop, Events.EPOCH_COMPLETED):  # deferred: once
            engine.remove_event_handler(self._stop, Events.EPOCH_COMPLETED)
        self.preempted = True
        self.checkpoint(engine)
        wait = getattr(self.checkpoint, "wait", None)  # a Checkpoint(async_save=True) writing
        if callable(wait):
            wait()
        saved = getattr(self.checkpoint, "last_checkpoint", None)
        cause = self.received.name if self.received is not None else "a signal on another rank"
        world_size = distributed.get_world_size()
        where = f" on rank {distributed.get_rank()} of {world_size}" if world_size > 1 else ""
        written = "checkpoint written"
        if isinstance(saved, (str, Path)):
            written = f"checkpoint '{saved}' written"
        ending = "run terminated"
        if self.exit_code is not None:
            ending = f"exiting with code {self.exit_code}"
        message = (
            f"ember: preempted by {cause} at iteration {engine.state.iteration} "
            f"(epoch {engine.state.epoch}){where}: {written}, {ending}"
        )
        logger.warning(message)
        self._restore()
        if self.exit_code is None:
            engine.terminate()
            return
        raise Preempted(message, self.exit_code)
