"""``TerminateOnNan``: stop training when the output holds a NaN or an infinity.

Reading a tensor's value makes the host wait for the device. ignite's handler reads the output
at every iteration; this one, by default, keeps the output's tensors (0-d ones as they are,
larger ones reduced on their device to one "all finite" flag) and reads them together every
``check_every`` iterations and at the last iteration of each epoch: one host sync per check
instead of one per iteration. Python numbers and numpy arrays cost no sync and are checked at
once. ``exact=True`` checks every tensor at every iteration, as ignite does. A run that ends
before the next check (another handler stopped it) has what was kept read when it ends.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import operator
import sys
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from ember.engine._run_scope import at_run_end
from ember.engine.sink import OutputSink, ends_epoch_or_run

__all__ = ["TerminateOnNan"]


def _identity(output: Any) -> Any:
    return output


def _walk_values(value: Any, on_tensor: Callable[[Any], None] | None) -> bool:
    """Whether ``value`` (a number, tensor, array, or nested tuple/list/dict of them) holds a NaN
    or an infinity among the values the host can read without waiting. Each floating or complex
    torch tensor goes to ``on_tensor`` if given, else is read on the spot. torch and numpy are
    only consulted if already imported."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):  # first: the common output
        if not (value.is_floating_point() or value.is_complex()):
            return False
        if on_tensor is None:
            return not bool(torch.isfinite(value).all())
        on_tensor(value)
        return False
    if isinstance(value, (bool, numbers.Integral)):
        return False
    if isinstance(value, numbers.Real):
        return not math.isfinite(value)
    if isinstance(value, numbers.Complex):
        return not (math.isfinite(value.real) and math.isfinite(value.imag))
    if isinstance(value, (str, bytes)):
        return False
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        # Every item is walked, past a first hit: each tensor must reach on_tensor.
        hits = [_walk_values(item, on_tensor) for item in value]
        return any(hits)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, (numpy.ndarray, numpy.generic)):
        if numpy.issubdtype(value.dtype, numpy.inexact):
            return not bool(numpy.isfinite(value).all())
        return False
    return False


def _finite_flag(tensor: Any) -> Any:
    """A 0-d bool tensor: whether all of ``tensor`` is finite (a bool tensor holds such flags)."""
    torch = sys.modules["torch"]
    return tensor.all() if tensor.dtype == torch.bool else torch.isfinite(tensor).all()


def _attached_with_a_filter(engine: Any, handler: Any) -> bool:
    """Whether ``engine``'s registry holds ``handler`` behind a filter (ignite's and ember's
    filtered entries keep a weak reference to it as ``_parent``). Read once, when an engine that
    does not call ``_attached_to`` first calls the handler."""
    registry = getattr(engine, "_event_handlers", None)
    if not isinstance(registry, Mapping):
        return False
    for entries in list(registry.values()):
        for entry in list(entries):
            # Only a weak reference is called: another handler's own _parent may do anything.
            parent = getattr(entry[0], "_parent", None)
            if isinstance(parent, weakref.ref) and parent() is handler:
                return True
    return False


def _no_engine() -> None:
    """The engine reference of a handler not attached yet."""


class _NothingYet:
    """The accepted type of a sink that has not seen torch yet: no output is of this type."""


# Once per process: the walk over torch's namespace costs ~70 us, which every new handler's
# first call would otherwise pay (a run's first iteration).
@functools.cache
def _floating_dtypes(torch: Any) -> tuple[Any, ...]:
    """Every floating dtype once, the usual dtypes of a loss first (``in`` compares in order)."""
    found = (dtype for dtype in vars(torch).values() if isinstance(dtype, torch.dtype))
    usual = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
    return tuple(dict.fromkeys((*usual, *(d for d in found if d.is_floating_point))))


class TerminateOnNan(OutputSink):
    """Calls ``engine.terminate()`` when the output has a NaN or infinite value.

    Attach it to ITERATION_COMPLETED: ``trainer.add_event_handler(Events.ITERATION_COMPLETED,
    TerminateOnNan())``. The output may be a number, a tensor (or numpy array), or nested
    tuples, lists and dicts of them; strings and other objects are ignored.

    By default the tensors of the output are read in groups, without a host sync per
    iteration: the run stops at most ``check_every - 1`` iterations after the one whose output
    was not finite, and never later than the last iteration of that epoch when the epoch length
    is known (so EPOCH_COMPLETED handlers such as an evaluation or a checkpoint never run on that
    epoch). Python numbers and numpy arrays are checked at once. The warning names the iteration
    whose output was not finite. ``exact=True`` reads every tensor at every iteration and stops
    at that very iteration, as ignite does. Attached with a filter, or to a second engine (one
    instance on a trainer and on the evaluator that runs inside it), it reads at each call.

    A run that ends before the next read (another handler calls ``terminate()`` or
    ``interrupt()``, or raises; data of unknown length runs out) has what was kept read once
    when it ends (one host sync), and a NaN is reported with its iteration. After
    ``terminate()`` the run's outcome stays the one asked for (``terminate()`` is not called
    again); after ``interrupt()`` the handler calls ``terminate()``, so the ``run()`` that
    resumes ends at once (TERMINATE, COMPLETED); after an exception the run raises it and the
    engine is not terminated (a read that fails then is logged, not raised). This read happens
    when the outermost ``Engine.run`` of the thread ends (``ember.engine._run_scope``), which
    registers nothing on the engine: an engine run inside another's handler is read when the
    outer run ends or, if its own next run comes first, at that run's first read (a warning
    naming the earlier run; nothing is terminated).
    ``terminate_epoch()`` cuts an epoch where nothing is read: that epoch's EPOCH_COMPLETED
    runs, and a kept NaN is read at the next check (the next epoch's end at the latest).

    On ignite's ``Engine``, whose ``add_event_handler`` does not tell the handler where it goes
    (``_attached_to``), each call runs in Python (a frame, not a host sync) and compares the
    calling engine with the first one (a weak reference): a second engine has what the first
    left read for the first, then each call reads. A filter is found in the engine's registry
    (ignite's filtered entries name the handler as ``_parent``) at the first call; a filter
    added to that engine after its first call is not seen, and the outputs of the calls it
    lets through are then read every ``check_every`` calls or at an epoch's last iteration
    only, so a NaN may be read late or, at the end of a run, only at the next run's first
    read. ignite's ``run()`` has no end-of-run callback: what a run stopped early by another
    handler kept is read at the next run's first read (a warning, nothing terminated); attach
    ``handler.check`` to COMPLETED to read it when the run ends.

    It is an :class:`~ember.engine.sink.OutputSink`: with the default ``output_transform`` and
    ``exact=False``, the compiled loop keeps a detached floating 0-d output (a loss) without
    calling Python, and the handler looks at the kept outputs, in order, when a check is due or
    an output of another kind comes.

    Args:
        output_transform: selects what to check from ``engine.state.output``.
        exact: check tensors at every iteration (one host sync per tensor and iteration).
        check_every: the most calls of the handler (iterations, on an unfiltered
            ITERATION_COMPLETED) between two reads of the collected tensors.
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = _identity,
        exact: bool = False,
        check_every: int = 100,
    ) -> None:
        if not callable(output_transform):
            raise TypeError(f"output_transform should be callable, got {type(output_transform)}")
        if not isinstance(exact, bool):
            raise TypeError(f"exact should be a bool, got {exact!r}")
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"check_every should be a positive int, got {check_every!r}")
        super().__init__(self._take_outputs, 1, flush_at_epoch_end=True, accepted_type=_NothingYet)
        self._check_every = check_every
        self._transform = output_transform
        self._exact = exact
        self._sinks_outputs = False
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        # Collected since the last check: (iteration, tensor), where the tensor is a 0-d value
        # of the output (a detached loss as it is) or a 0-d "all finite" flag of a larger one.
        self._pending: list[tuple[int, Any]] = []
        self._only_values = True  # no "all finite" flag in _pending
        # torch.Tensor, once a call saw torch imported (this module does not import it).
        self._tensor_type: Any = None
        self._iteration = 0
        self._iterations_since_check = 0
        self._read_each_call = False  # attached with a filter, or to two engines (_attached_to)
        self._engine: Callable[[], Any] = _no_engine  # the first engine it was attached to
        # Called by an engine whose add_event_handler did not call _attached_to (ignite's):
        # every call comes to Python (limit 1), which compares the calling engine.
        self._untold = False
        self._check_due = False  # outputs taken for a new setting, read at the next call
        # A read at the end of the run is registered (at_run_end) for the run in progress.
        self._reads_at_run_end = False
        self._choose_mode()

    @property
    def check_every(self) -> int:
        return self._check_every

    @check_every.setter
    def check_every(self, check_every: int) -> None:
        self._check_every = check_every
        self._choose_mode()

    @property
    def exact(self) -> bool:
        return self._exact

    @exact.setter
    def exact(self, exact: bool) -> None:
        self._take_kept_outputs()
        self._exact = exact
        self._choose_mode()

    @property
    def _output_transform(self) -> Callable[[Any], Any]:
        return self._transform

    @_output_transform.setter
    def _output_transform(self, output_transform: Callable[[Any], Any]) -> None:
        self._take_kept_outputs()
        self._transform = output_transform
        self._choose_mode()

    def _choose_mode(self) -> None:
        """Outputs wait in the sink only where the check of each one may wait: the common output
        without a transform. Otherwise every call looks at its output at once (limit 1). So
        does the first call of a run, which registers the read at the run's end."""
        self._sinks_outputs = (
            self._transform is _identity
            and not self._exact
            and not self._read_each_call
            and not self._untold
        )
        self.limit = (
            max(1, self._check_every - self._iterations_since_check)
            if self._sinks_outputs and self._reads_at_run_end
            else 1
        )

    def _attached_to(self, engine: Any, filtered: bool) -> None:
        """Called by ``Engine.add_event_handler``. Each call reads what it keeps (a host sync
        per call, not per iteration) once this handler is attached

        - with a filter (``every=``, ``once=``, ``event_filter=``) that makes it skip
          iterations: it may then never be called at an epoch's last iteration, where what it
          keeps is read;
        - to a second engine alive: the outputs of two engines (a trainer's, and those of the
          evaluator that runs inside it) would mix, and each one's iterations would look like a
          new run to the other, which drops what was kept."""
        first = self._engine()
        if first is None:
            self._engine = weakref.ref(engine)
        if filtered or (first is not None and first is not engine):
            self._read_each_call = True
            self._choose_mode()

    def _met(self, engine: Any) -> None:
        """A call from ``engine``, not the engine this handler knows: one whose
        ``add_event_handler`` does not call :meth:`_attached_to` (ignite's ``Engine``), or a
        second one. On such an engine each call comes to Python (a frame, not a host sync),
        where the engine is compared. A second engine alive makes each call read, as
        :meth:`_attached_to` does; so does a filter found on the first one's registry."""
        first = self._engine()
        if first is None:
            self._engine = weakref.ref(engine)
            self._untold = True
            if _attached_with_a_filter(engine, self):
                self._read_each_call = True
        else:
            # What the first engine left is read for it now (the second one's iterations would
            # look like a new run and drop it), then each call reads its own output.
            self._read(first, terminate=True)
            self._read_each_call = True
        self._choose_mode()

    def _read_at_run_end(self, engine: Any) -> None:
        """Register the read at the end of the run in progress (once per run): a run that
        another handler ends early (``terminate()``, ``interrupt()``, an exception) does not
        reach the iteration where what is kept would be read."""
        self._reads_at_run_end = at_run_end(id(self), self._run_ended(weakref.ref(engine)))

    def _run_ended(self, engine_ref: Callable[[], Any]) -> Callable[[BaseException | None], None]:
        def run_ended(exception: BaseException | None) -> None:
            self._reads_at_run_end = False
            engine = engine_ref()
            try:
                if engine is not None and (self._pending or self.values):
                    self._read_after_the_run(engine, exception)
            finally:
                self._choose_mode()  # the next run's first call comes to Python

        return run_ended

    def _read_after_the_run(self, engine: Any, exception: BaseException | None) -> None:
        """Read what the run left (one host sync) and warn of a NaN. ``terminate()`` is called
        only after an ``interrupt()``, so that a ``run()`` that resumes ends at once (TERMINATE,
        COMPLETED); a terminated run is not terminated again, and after a completed or failed
        run a later ``run()`` starts or resumes as it would have."""
        interrupted = exception is None and getattr(engine, "_resume_point", None) is not None
        if exception is None:
            self._read(engine, terminate=interrupted)
            return
        try:  # with an exception in flight, nothing may raise: the run raises its own
            self._read(engine, terminate=False)
        except Exception:
            self.logger.exception(
                "%s: the outputs kept since the last check could not be read after the run failed",
                type(self).__name__,
            )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_engine"] = _no_engine  # a weak reference does not pickle
        state["_reads_at_run_end"] = False  # registered for a run of this process
        return state

    def _take_kept_outputs(self) -> None:
        """Collect the outputs waiting in the sink, before a setting that changes how an output
        is taken: each was a detached loss, due no check, when it came."""
        values, iterations = self.take()
        for iteration, output in zip(iterations, values, strict=True):
            self._take(None, output, iteration, current=False)

    def _take_outputs(self, engine: Any) -> None:
        """The sink's ``on_full``: take the kept outputs in order, the last one being the
        current iteration's. Those before it are detached losses (an output of another kind
        empties the sink at once), due no check: collected in one go when they come from
        increasing iterations of the run seen so far."""
        if not self._read_each_call and self._engine() is not engine and self.values:
            # This call's output is the calling engine's; those kept before it, the first's.
            output, iteration = self.values.pop(), self.iterations.pop()
            self._met(engine)
            self.values.append(output)
            self.iterations.append(iteration)
        if not self._reads_at_run_end:
            self._read_at_run_end(engine)
        values, iterations = self.take()
        if values:
            output, iteration = values.pop(), iterations.pop()
            if (
                self._sinks_outputs
                and iterations
                and iterations[0] > self._iteration
                and all(map(operator.lt, iterations, iterations[1:]))
                and self._iterations_since_check + len(iterations) < self._check_every
            ):
                self._pending.extend(zip(iterations, values, strict=True))
                self._iteration = iterations[-1]
                self._iterations_since_check += len(iterations)
            else:
                for earlier, kept in zip(iterations, values, strict=True):
                    self._take(engine, kept, earlier, current=False)
            self._take(engine, output, iteration, current=True)
        # The next call that is due a check, counted from the last one, fills the sink.
        self._choose_mode()

    def _take(self, engine: Any, output: Any, iteration: int, current: bool) -> None:
        if self._transform is not _identity:
            output = self._transform(output)
        if iteration <= self._iteration:  # a new run: what the old one left is read, then dropped
            if self._pending:
                self._report_left_by_an_earlier_run()
            self._pending = []
            self._only_values = True
            self._iterations_since_check = 0
            self._check_due = False
        elif engine is not None and self._check_due:
            self._check_due = False
            self.check(engine)
        self._iteration = iteration
        if (
            type(output) is self._tensor_type
            and not self._exact
            and not output.requires_grad
            and output.ndim == 0
            and output.is_floating_point()
        ):  # a detached loss: kept as it is
            self._pending.append((iteration, output))
        elif self._stopped_at_once(engine, output, iteration):
            return
        calls = self._iterations_since_check = self._iterations_since_check + 1
        if engine is None:  # taken for a new setting (no engine at hand): the next call checks
            self._check_due = True
            return
        if calls >= self._check_every or (current and self._read_each_call):
            self.check(engine)
            return
        if not current:
            return
        if ends_epoch_or_run(engine, engine.state, iteration):
            self.check(engine)

    def _stopped_at_once(self, engine: Any, output: Any, iteration: int) -> bool:
        """Check what the host can read of the (transformed) ``output`` now (everything, if
        ``exact``) and stop the run on a NaN or an infinity; collect the rest. True when nothing
        is left to do."""
        torch = sys.modules.get("torch")
        if torch is not None and self._tensor_type is None:
            self._tensor_type = torch.Tensor
            if self._sinks_outputs:
                self.accepted_type = torch.Tensor
                self.accepted_attributes = (
                    ("requires_grad", (False,)),
                    ("ndim", (0,)),
                    ("dtype", _floating_dtypes(torch)),
                )
        if self._exact:
            if _walk_values(output, None):
                self._stop(engine, output, iteration)
            return True
        if _walk_values(output, self._collect):
            self._stop(engine, output, iteration)
            return True
        return False

    def _collect(self, tensor: Any) -> None:
        if tensor.requires_grad:
            tensor = tensor.detach()
        if tensor.ndim != 0:
            tensor = _finite_flag(tensor)
            self._only_values = False
        self._pending.append((self._iteration, tensor))

    def check(self, engine: Any) -> None:
        """Read what was collected since the last check (one host sync per device) and terminate
        if any of it was not finite. Called by the handler itself; call it to check now."""
        self._read(engine, terminate=True)

    def _read(self, engine: Any, terminate: bool) -> None:
        """:meth:`check`; ``terminate=False`` only warns (the read at the end of a run)."""
        self._take_kept_outputs()
        pending, self._pending = self._pending, []
        only_values, self._only_values = self._only_values, True
        self._iterations_since_check = 0
        self._check_due = False
        self._choose_mode()
        found = self._first_not_finite(pending, only_values)
        if found is not None:
            self._stop(engine, found[1], found[0], terminate)

    def _report_left_by_an_earlier_run(self) -> None:
        """Read what an earlier run left unread (one host sync) and warn of a NaN; nothing is
        terminated, that run is over. Reached where no read at the run's end came first: an
        engine run inside another's handler (read when the outer run ends), or ignite's
        ``Engine`` (no end-of-run callback)."""
        found = self._first_not_finite(self._pending, self._only_values)
        if found is None:
            return
        self.logger.warning(
            "%s: Output '%s' of iteration %d of an earlier run contains NaN or Inf (that run "
            "ended before it was read)",
            type(self).__name__,
            found[1],
            found[0],
        )

    def _first_not_finite(
        self, pending: list[tuple[int, Any]], only_values: bool
    ) -> tuple[int, Any] | None:
        """``(iteration, what to show)`` of the first collected tensor that is not finite (a
        flag is shown as words), or None when all are: one host sync when all are finite."""
        if not pending or self._all_finite([tensor for _, tensor in pending], only_values):
            return None
        iteration, tensor = next((i, t) for i, t in pending if not bool(_finite_flag(t)))
        is_flag = tensor.dtype == sys.modules["torch"].bool
        return iteration, "a tensor with NaN or Inf" if is_flag else tensor

    @staticmethod
    def _all_finite(tensors: list[Any], only_values: bool) -> bool:
        """Whether every tensor is finite (a flag: true). ``only_values``: no flags among them
        (the losses of the common case), read in one stack unless they are on several devices;
        else grouped by device and dtype (a flag is never promoted to a number)."""
        torch = sys.modules["torch"]
        if only_values:
            try:
                stacked = torch.stack(tensors)
            except RuntimeError:
                pass  # several devices
            else:
                # A NaN or an infinity makes the sum non-finite, so a finite sum says that
                # every value is: one reduction read (two ops fewer than a flag per value, about
                # 50 us of an epoch's last iteration). A sum of finite values that overflows is
                # told apart by the exact check. The sum is in double precision (where only
                # double values can overflow) on the devices sure to have it; elsewhere (mps,
                # some XPUs) in the values' own dtype.
                wide = torch.float64 if stacked.device.type in ("cpu", "cuda") else None
                if math.isfinite(stacked.sum(dtype=wide).item()):
                    return True
                return bool(torch.isfinite(stacked).all())
        flags_by_device: dict[Any, list[Any]] = {}
        groups: dict[tuple[Any, Any], list[Any]] = {}
        for tensor in tensors:
            groups.setdefault((tensor.device, tensor.dtype), []).append(tensor)
        for (device, _), group in groups.items():
            flags_by_device.setdefault(device, []).append(_finite_flag(torch.stack(group)))
        return all(bool(torch.stack(flags).all()) for flags in flags_by_device.values())

    def _stop(self, engine: Any, output: Any, iteration: int, terminate: bool = True) -> None:
        self._pending = []
        now = engine.state.iteration
        found = "" if iteration == now else f", found at iteration {now}"
        self.logger.warning(
            "%s: Output '%s' of iteration %d contains NaN or Inf%s. Stop training",
            type(self).__name__,
            output,
            iteration,
            found,
        )
        if terminate:
            engine.terminate()
