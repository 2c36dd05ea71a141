"""Checkpointing: ``Checkpoint``, ``DiskSaver``, ``ModelCheckpoint`` (ignite's names and files).

What differs from ignite 0.5.5, on purpose:

* **No checkpoint is deleted before its replacement is on disk.** ignite removes the file that
  falls out of ``n_saved`` *before* writing the new one, so a crash in between leaves no
  checkpoint at all (bug C1). Here the new file is written first, and the old one removed only
  after the write succeeded; a failed write leaves the files and ``last_checkpoint`` as they were.
* **Atomic, durable writes.** ``DiskSaver(atomic=True)`` writes a hidden temporary file in the
  target directory, ``os.replace``\\ s it onto the final name, and ``fsync``\\ s the file and the
  directory (by default in a background thread, the saves of ``durability_delay`` seconds
  together, before the durable file a rotation drops is deleted; ``durability="inline"``: in
  the call, the file before its rename): a reader sees either the previous file or the
  complete new one after a ``SIGKILL``, and after a power loss the last durable checkpoint is
  kept until a newer one is durable. Temporary files left by killed
  writers are removed when a ``DiskSaver`` is constructed on the directory (a writer holds an
  ``flock`` on its temporary file, so a live writer's file is never taken for a stale one).
* **Clear loading errors.** :meth:`Checkpoint.load_objects` names the file when it is missing,
  truncated, not a checkpoint, or lacks an entry, and adds the file and key to errors raised by
  ``load_state_dict``.
* A ``score_function`` returning NaN raises ``ValueError`` (ignite would store ``..._nan.pt`` and
  then order the kept files arbitrarily).
* ``include_self=True`` with a single object stores ``{name: state_dict, "checkpointer": ...}``
  instead of writing the key ``"checkpointer"`` into the object's own state_dict.
* ``async_save=True`` (not in ignite): the training thread copies the state into reusable host
  buffers and a background thread writes it (see :class:`Checkpoint`).
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import ctypes
import errno
import functools
import inspect
import logging
import math
import numbers
import operator
import os
import shutil
import stat
import sys
import threading
import time
import weakref
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

import torch
from torch import nn

from ember.distributed import _context
from ember.engine import Engine, EventEnum, Events
from ember.engine._run_scope import at_run_end, waits_stopped
from ember.engine._state_dict import check_state_dict

try:
    from ember import _core
except ImportError:  # the pure-Python install (EMBER_BACKEND=python): copies with memmove
    _core = None  # type: ignore[assignment]

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "BaseSaveHandler",
    "Checkpoint",
    "CheckpointEvents",
    "DiskSaver",
    "ModelCheckpoint",
    "global_step_from_engine",
]

# Temporary files are ".{final name}.{random}.ember-tmp" next to the final file.
TEMPORARY_SUFFIX = ".ember-tmp"
# The name of the threads that write asynchronous checkpoints (one per save, ended when done).
WRITER_THREAD_NAME = "ember-checkpoint-writer"
# The thread that makes synchronous saves durable (DiskSaver's durability="background"): one per
# process, started by the first such save.
DURABILITY_THREAD_NAME = "ember-checkpoint-durability"
# DiskSaver's durability modes.
DURABILITY_MODES = ("background", "inline")
# DiskSaver's default durability_delay: the seconds the background work of a save may wait for
# later saves, to make them all durable with one directory fsync.
DEFAULT_DURABILITY_DELAY = 1.0
# What _DurabilityBatch.removal answers DiskSaver.remove.
_REMOVE_NOW, _REMOVAL_WAITS, _REMOVE_AFTER_WAIT = "now", "waits", "after wait"
# The open files a batch may hold (saves that all stay, e.g. n_saved=None, many per second):
# then it is due at once, so that the descriptors never run out.
MAX_BATCH_FILES = 64
# The extension of a sharded checkpoint: a torch.distributed.checkpoint directory.
SHARDED_EXT = "dcp"
# The priority of a Checkpoint.Item (its first field), as a sort key that runs no Python frame.
_PRIORITY = operator.itemgetter(0)
# The Profiler row (kind "handler") of the time a save waited for the previous write.
PROFILER_WAIT_ROW = "Checkpoint: waiting for the previous write"

_logger = logging.getLogger(__name__)


class CheckpointEvents(EventEnum):
    """Events fired by :class:`Checkpoint`: ``SAVED_CHECKPOINT`` after each completed save.

    The checkpointer registers them on the engine it is called with, on its first call. To add a
    handler before that, register them yourself: ``engine.register_events(*CheckpointEvents)``.
    """

    SAVED_CHECKPOINT = "saved_checkpoint"


def _rank() -> int:
    """This process's rank; refuses a process launched as one of several without its group,
    which would otherwise believe it is rank 0 and write too."""
    if _context.is_initialized():  # knows once for all whether torch has torch.distributed
        return torch.distributed.get_rank()
    _context.refuse_launched_process("Checkpoint")  # refuse_without_group, without asking again
    return 0


def _writes(save_on_rank: int) -> bool:
    """Whether this process is the one that writes. A ``save_on_rank`` that is no rank of the
    group raises, on every rank alike: else no process would ever write, while
    ``last_checkpoint`` named the files."""
    rank = _rank()
    if _context.is_initialized():
        world_size = torch.distributed.get_world_size()
        if save_on_rank >= world_size:
            raise ValueError(
                f"save_on_rank={save_on_rank} is no rank of this group of {world_size} "
                "process(es): no checkpoint would be written"
            )
    return rank == save_on_rank


def _tree_map(function: Callable[[Any], Any], objects: Any) -> Any:
    """Apply ``function`` to the leaves of nested mappings, lists and tuples."""
    if isinstance(objects, Mapping):
        return {key: _tree_map(function, value) for key, value in objects.items()}
    if isinstance(objects, (list, tuple)):
        return [_tree_map(function, value) for value in objects]
    return function(objects)


def _unwrap(obj: Any) -> Any:
    if isinstance(obj, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return obj.module
    return obj


def _state_dict_of(obj: Any) -> Any:
    try:
        state_dict = _unwrap(obj).state_dict
    except AttributeError:  # an object put in to_save after it was checked
        raise TypeError(f"Object {type(obj)} should have `state_dict` method") from None
    return state_dict()


def _accepts_metadata(save_handler: Callable[..., Any]) -> bool:
    try:
        inspect.signature(save_handler).bind({}, "name", None)
    except TypeError:
        return False
    except ValueError:  # no signature (a builtin): try with metadata, as ignite does
        return True
    return True


# How a temporary file is opened: created, never an existing file nor through a symlink.
_TEMPORARY_FLAGS = (
    os.O_RDWR
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


# A temporary file is created with the permissions ignite's files end up with (0644); the
# umask may take some away, and the read access of group and others is then added back.
_TEMPORARY_MODE = 0o644
_READ_BY_OTHERS = stat.S_IRGRP | stat.S_IROTH


def _readable_by_all(fd: int, path: str, mode: int) -> None:
    """Add read access for group and others to the file's ``mode`` (its permissions at
    creation) unless it has it: by descriptor where the system can."""
    if mode & _READ_BY_OTHERS == _READ_BY_OTHERS:
        return  # the usual umask (022, 002) kept it: no chmod
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode | _READ_BY_OTHERS)
    else:  # pragma: no cover - Windows before Python 3.13
        os.chmod(path, mode | _READ_BY_OTHERS)  # noqa: PTH101


# What fsync of a directory raises where the system or file system does not support it.
_UNSUPPORTED_FSYNC = {errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EOPNOTSUPP}


def _fsync_directory(directory: str | Path) -> None:
    """Make a rename or creation in ``directory`` durable: a no-op where a directory cannot be
    opened or fsynced (Windows, some file systems); other errors (``EIO``) are raised."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in _UNSUPPORTED_FSYNC:
            raise
    finally:
        os.close(fd)


def _remove_path(path: str) -> None:
    """Delete the checkpoint at ``path``: a file, a symlink, or the directory of a sharded
    checkpoint; nothing if it is gone."""
    try:  # a file or a symlink: no stat first, unlink says what it found
        os.unlink(path)  # noqa: PTH108
    except FileNotFoundError:
        pass
    except OSError:
        if not (os.path.isdir(path) and not os.path.islink(path)):  # noqa: PTH112, PTH114
            raise
        shutil.rmtree(path)  # a sharded checkpoint (EISDIR on Linux, EPERM on macOS)


class _DurabilityBatch:
    """The saves of one :class:`DiskSaver` (``durability="background"``) that the durability
    thread makes durable together once its delay has passed or somebody waits for them:
    ``fsync`` of each file still there, one ``fsync`` per directory, and only then the deletion
    of the durable checkpoints whose removal waited for them. ``error`` is the first error and
    ``failed_path`` the file it is about.

    Its fields are guarded by the durability thread's condition. A save joins the batch only
    while the thread has not taken it (``taken``), and the thread does not take it while a save
    that joins writes its file (``writers``)."""

    __slots__ = (
        "deadline",
        "done",
        "error",
        "failed_path",
        "files",
        "hurried",
        "removals",
        "taken",
        "writers",
    )

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        # final path -> its open file to fsync (None: fsynced in the call, its directory only)
        self.files: dict[str, IO[bytes] | None] = {}
        # Durable checkpoints to delete once the files are; None once the thread has taken them.
        self.removals: list[str] | None = []
        self.taken = False
        self.hurried = False  # somebody waits: due now
        # Thread id -> the saves of that thread writing into the batch now (a signal handler
        # may save while its thread's save is interrupted).
        self.writers: dict[int, int] = {}
        # Held until the work is done (a plain lock costs less than an Event).
        self.done = threading.Lock()
        self.done.acquire()
        self.error: BaseException | None = None
        self.failed_path = ""

    def written_by_this_thread(self) -> bool:
        """Whether a save of this thread is writing into the batch: a signal handler or a
        ``__del__`` that interrupted it and now waits for the batch would wait for ever."""
        with _durability_thread.condition:
            return threading.get_ident() in self.writers

    def join(self) -> bool:
        """Let a save that is about to write join the batch (it then calls :meth:`add`, and
        :meth:`leave` in a ``finally``); ``False`` if it is too late: taken, waited for, or past
        its delay."""
        with _durability_thread.condition:
            if self.taken or self.hurried or _clock() >= self.deadline:
                return False
            writer = threading.get_ident()
            self.writers[writer] = self.writers.get(writer, 0) + 1
            return True

    def add(self, path: str, file: IO[bytes] | None) -> IO[bytes] | None:
        """Add the file a joined save wrote; return the file it replaces in the batch (the
        same name saved again before being durable), for the caller to close. A removal of
        that name waiting in the batch is dropped: it was meant for the file this one replaced."""
        with _durability_thread.condition:
            replaced = self.files.pop(path, None)
            self.files[path] = file
            if self.removals is not None and path in self.removals:
                self.removals.remove(path)
            if len(self.files) >= MAX_BATCH_FILES:
                self.hurried = True
        return replaced

    def will_fsync(self, path: str) -> bool:
        """Whether ``path`` is a file of the batch that it has yet to fsync."""
        with _durability_thread.condition:
            return self.files.get(path) is not None

    def removal(self, path: str, one_waits: bool) -> tuple[str, list[str], IO[bytes] | None]:
        """How :meth:`DiskSaver.remove` deletes ``path``, given this batch of its saver:

        * ``_REMOVE_NOW``: a file of the batch not made durable yet, taken out of it and
          returned for the caller to close (outside the condition: a close may write out a
          network file system's data): deleting it at once leaves the durable files as they are;
        * ``_REMOVAL_WAITS``: a durable file, deleted by the batch once its newer files are; with
          ``one_waits`` the removals that waited before it come back, to be deleted now (this
          newer durable file stays until then);
        * ``_REMOVE_AFTER_WAIT``: ``path`` is a file of the batch being made durable (or fsynced
          in its call), or the thread has taken the batch's removals: once the batch is done,
          ``path`` is deleted.
        """
        with _durability_thread.condition:
            # None: fsynced in the call, replacing a durable file of its name (counts as durable)
            file = None if self.taken else self.files.get(path)
            if file is not None:
                del self.files[path]
                return _REMOVE_NOW, [], file
            if path in self.files or self.removals is None:
                return _REMOVE_AFTER_WAIT, [], None
            earlier: list[str] = []
            if one_waits:
                earlier, self.removals = self.removals, []
            self.removals.append(path)
            return _REMOVAL_WAITS, earlier, None

    def leave(self) -> None:
        """A save of this thread that joined ends (with its file added or not). Called in a
        ``finally``, also where ``join`` may not have counted it: an exception (a Ctrl-C) can
        come between any two steps, and a count left behind would keep the batch from the
        thread for ever (and every wait for it)."""
        with _durability_thread.condition:
            writer = threading.get_ident()
            count = self.writers.pop(writer, 0)
            if count > 1:
                self.writers[writer] = count - 1
            if not self.writers and (self.hurried or _clock() >= self.deadline):
                _durability_thread.condition.notify()  # the thread waited for this save

    def hurry(self) -> None:
        """Have the thread take the batch now, without waiting for the end of its delay."""
        with _durability_thread.condition:
            if not self.taken:
                self.hurried = True
                _durability_thread.condition.notify()

    def wait(self) -> None:
        with self.done:
            pass

    def run(self) -> None:
        condition = _durability_thread.condition
        try:
            with condition:
                files = list(self.files.items())
            self._make_durable(files)
            with condition:
                removals, self.removals = self.removals or [], None
            if self.error is None:
                self._remove(removals)
            else:
                kept = f": {', '.join(repr(path) for path in removals)} kept" if removals else ""
                self.error.add_note(
                    f"while making checkpoint file '{self.failed_path}' durable in the "
                    "background (DiskSaver durability='background'): the file has its final "
                    "name but may not be on disk; the checkpoints it was to replace were not "
                    "removed" + kept
                )
        except BaseException as error:  # noqa: BLE001 - not expected; reported like the others
            self.error = self.error or error
        finally:
            if self.error is not None:
                _unreported_failures.add(self)
            self.done.release()

    def _make_durable(self, files: list[tuple[str, IO[bytes] | None]]) -> None:
        directories: dict[str, None] = {}  # in order, once each
        for path, file in files:
            directories[os.path.dirname(path)] = None  # noqa: PTH120
            if file is None or file.closed:  # closed: done before a fork, in the parent
                continue
            try:
                if self.error is None:
                    os.fsync(file.fileno())
            except BaseException as error:  # noqa: BLE001 - handed to the saver
                self.error, self.failed_path = error, path
            finally:
                file.close()  # also releases the temporary file's lock
        if self.error is not None or not files:
            return
        try:
            for directory in directories:
                _fsync_directory(directory)
        except BaseException as error:  # noqa: BLE001 - handed to the saver
            self.error, self.failed_path = error, files[-1][0]

    def _remove(self, removals: list[str]) -> None:
        newest = next(reversed(self.files), "")
        for path in removals:
            try:
                _remove_path(path)
            except BaseException as error:  # noqa: BLE001 - the others are still removed
                error.add_note(
                    f"while removing checkpoint '{path}' in the background, once '{newest}' "
                    "was durable"
                )
                if self.error is None:
                    self.error, self.failed_path = error, path


class _DurabilityThread:
    """The one thread of the process that runs :class:`_DurabilityBatch`\\ es, each once it is
    due (its delay has passed, or somebody waits for it), in the order they were submitted
    (started by the first background save). It holds nothing but the batches: a saver, a
    checkpointer or an engine is never kept alive by it."""

    def __init__(self) -> None:
        # Guards the scheduling and the batches' fields.
        self.condition = threading.Condition()
        self.scheduled: list[_DurabilityBatch] = []  # not taken yet, in submission order
        self.running: _DurabilityBatch | None = None
        self.thread: threading.Thread | None = None

    def after_fork_in_child(self) -> None:
        """The child has no thread: a fresh one runs the batches the parent had not finished
        (the child's savers wait for them); no save of the child is writing. The child only
        makes their files durable (a second fsync does no harm): the deletions that waited in
        them are the parent's, which runs them itself, and may have saved a file of that name
        again by the time the child would."""
        unfinished = [batch for batch in self._batches() if batch.done.locked()]
        self.condition = threading.Condition()
        self.scheduled = []
        self.running = None
        self.thread = None
        for batch in unfinished:
            batch.writers.clear()
            batch.removals = []
            self.submit(batch)

    def _batches(self) -> list[_DurabilityBatch]:
        """The batch running, then those not taken yet."""
        return [*([self.running] if self.running is not None else []), *self.scheduled]

    def submit(self, batch: _DurabilityBatch) -> None:
        with self.condition:
            if self.thread is None:
                thread = threading.Thread(
                    target=_run_forever, args=(self,), name=DURABILITY_THREAD_NAME, daemon=True
                )
                with contextlib.suppress(RuntimeError):  # none now (interpreter shutdown, limits)
                    thread.start()
                    self.thread = thread
            if self.thread is not None:
                self.scheduled.append(batch)
                self.condition.notify()
                return
        # Queued without a thread to run it, the batch would be waited for for ever: its
        # work is done here, in the save.
        batch.taken = True
        batch.run()

    def next_due(self) -> _DurabilityBatch:
        """Wait for the first batch that is due and take it."""
        with self.condition:
            self.running = None
            while True:
                now = _clock()
                timeout: float | None = None
                for batch in self.scheduled:
                    if not (batch.hurried or batch.deadline <= now):
                        left = batch.deadline - now
                        timeout = left if timeout is None else min(timeout, left)
                    elif not batch.writers:  # else the save that writes notifies when done
                        self.scheduled.remove(batch)
                        batch.taken = True
                        self.running = batch
                        return batch
                self.condition.wait(timeout)

    def drain(self) -> None:
        """Make every batch due now and wait until they are done (but for a batch that a save
        still writes into, at the interpreter's exit, in a thread that will not finish it)."""
        with self.condition:
            batches = self._batches()
            for batch in self.scheduled:
                batch.hurried = True
            self.condition.notify()
            batches = [batch for batch in batches if not batch.writers]
        for batch in batches:
            batch.wait()


def _run_forever(scheduler: _DurabilityThread) -> None:
    # A batch thread (Linux) does not preempt the thread that wakes it: the save call that
    # hands over its work goes on, and the work runs on an idle core or after it.
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    while True:
        batch = scheduler.next_due()
        try:
            batch.run()
        except BaseException:  # pragma: no cover - _DurabilityBatch.run catches its errors
            _logger.exception("ember's checkpoint durability thread")
        del batch


_durability_thread = _DurabilityThread()
# The clock of the batches' deadlines (tests replace it to drive the delays).
_clock = time.monotonic
# Batches that failed and whose error no saver has raised yet: logged at interpreter exit.
_unreported_failures: set[_DurabilityBatch] = set()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_durability_thread.after_fork_in_child)


@atexit.register
def _finish_durability_at_exit() -> None:
    try:
        _durability_thread.drain()
    except KeyboardInterrupt:
        _logger.warning(
            "The background fsync of checkpoint files did not finish: the wait for it at exit "
            "was interrupted (the files have their final names; the checkpoints they replace "
            "were kept)"
        )
        return
    for batch in list(_unreported_failures):
        _logger.error(
            "Checkpoint file '%s' was not made durable or its replaced checkpoints not "
            "removed: %s: %s",
            batch.failed_path,
            type(batch.error).__name__,
            batch.error,
        )
    _unreported_failures.clear()


def _is_priority(value: Any) -> bool:
    """Whether ``value`` orders with the priorities a save stores: a real number or a one-element
    real tensor, not NaN."""
    if isinstance(value, torch.Tensor):
        real = value.numel() == 1 and not value.is_complex()
    else:
        real = isinstance(value, numbers.Number) and not (
            isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real)
        )
    return real and bool(value == value)  # noqa: PLR0124 - NaN is not equal to itself


def _checked_rank(save_on_rank: Any) -> int:
    """``save_on_rank`` as given, or a ``TypeError``/``ValueError`` naming it: another value
    would match no rank, and the checkpoints would silently never be written."""
    if isinstance(save_on_rank, bool) or not isinstance(save_on_rank, numbers.Integral):
        raise TypeError(f"save_on_rank should be an int, got {save_on_rank!r}")
    if save_on_rank < 0:
        raise ValueError(f"save_on_rank should be a rank (>= 0), got {save_on_rank!r}")
    return int(save_on_rank)


def _checked_delay(delay: Any) -> float:
    """``durability_delay`` as a float, or a ``TypeError``/``ValueError`` naming it."""
    if isinstance(delay, bool) or not isinstance(delay, numbers.Real):
        raise TypeError(
            f"Argument durability_delay should be a number of seconds, got {type(delay).__name__}"
        )
    seconds = float(delay)
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(
            f"Argument durability_delay should be a finite number of seconds >= 0, got {delay!r}"
        )
    return seconds


def global_step_from_engine(engine: Engine) -> Callable[[Any, Any], int]:
    """A ``global_step_transform`` that reads ``engine``'s counter for the event being handled
    (e.g. the trainer's epoch when a checkpointer runs on the evaluator's COMPLETED)."""

    def global_step_transform(_: Any, event_name: Any) -> int:
        return int(engine.state.get_event_attrib_value(event_name))

    return global_step_transform


class BaseSaveHandler:
    """Base class of save handlers: ``__call__(checkpoint, filename, metadata=None)`` saves,
    ``remove(filename)`` deletes. :class:`Checkpoint` calls ``remove`` only for a file it saved
    earlier, and only after the save that made it redundant has succeeded."""

    def __call__(
        self,
        checkpoint: Mapping[str, Any],
        filename: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        raise NotImplementedError

    def remove(self, filename: str) -> None:
        raise NotImplementedError


class DiskSaver(BaseSaveHandler):
    """Saves checkpoints as files in ``dirname`` with ``torch.save``.

    Args:
        dirname: the directory.
        atomic: write a temporary file and ``os.replace`` it onto the final name, so the final
            name never holds a partial file. With ``False`` the file is written in place.
        create_dir: create ``dirname`` (and parents) if missing.
        require_empty: raise ``ValueError`` if ``dirname`` already holds ``.pt`` files.
        save_on_rank: in a distributed run, the rank that writes.
        durability: where the ``fsync`` of the file and of its directory run.
            ``"background"`` (default): the call writes the temporary file and renames it into
            place, so that the file survives the death of the process as soon as the call
            returns; ember's durability thread then ``fsync``\\ s the file and the directory,
            and only after that deletes the durable checkpoints :meth:`remove` was asked to
            delete meanwhile (the checkpoint a rotation drops), so that after a power loss or
            an OS crash the last durable checkpoint is still there until a newer one is
            durable. The saves of ``durability_delay`` seconds are made durable together; a
            file removed before it was made durable is deleted at once, never ``fsync``\\ ed.
            A file that would replace a durable one of the same name is ``fsync``\\ ed before
            its rename, in the call. A save after the delay (and :meth:`remove` of a file being
            made durable) first waits for that work, and raises its error; the end of the
            outermost ``Engine.run``, :meth:`wait` and the interpreter's exit have it done at
            once and wait for it. ``"inline"``: both ``fsync``\\ s run in the call, before it
            returns (ember's behaviour before this option): the file is durable when the call
            returns, at about 1 ms per save on an ordinary disk.
        durability_delay: with ``durability="background"``, the seconds (default 1) a save's
            ``fsync``\\ s may wait for the saves that follow, to be made durable together: one
            ``fsync`` per file still there and one of the directory for all of them. ``0``:
            each save is made durable on its own, as soon as the thread can. One durable file
            waits for deletion at a time: when a rotation drops another, the one that waited
            goes at once (the newer stays until the new files are durable), so a rotating
            checkpointer's directory holds at most ``n_saved + 1`` files between its calls.
            Saves that all stay are made durable at once by 64 (:data:`MAX_BATCH_FILES`).
        kwargs: passed to ``torch.save``.

    Constructing a ``DiskSaver`` removes the temporary files that killed writers left in
    ``dirname`` (:meth:`remove_stale_temporary_files`).
    """

    def __init__(
        self,
        dirname: str | Path,
        atomic: bool = True,
        create_dir: bool = True,
        require_empty: bool = True,
        save_on_rank: int = 0,
        durability: str = "background",
        durability_delay: float = DEFAULT_DURABILITY_DELAY,
        **kwargs: Any,
    ) -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(
                f"Argument durability should be one of {DURABILITY_MODES}, got {durability!r}"
            )
        self.dirname = Path(dirname).expanduser()
        self._atomic = bool(atomic)
        self.save_on_rank = _checked_rank(save_on_rank)
        self.durability = durability
        self.durability_delay = _checked_delay(durability_delay)
        self.kwargs = kwargs
        # The background work of the last saves, until it is seen finished.
        self._durability_batch: _DurabilityBatch | None = None
        if _writes(self.save_on_rank):
            self._check_and_setup(create_dir, require_empty)

    def __getstate__(self) -> dict[str, Any]:
        # The work in progress belongs to this saver, not to a copy (and does not pickle).
        state = self.__dict__.copy()
        state["_durability_batch"] = None
        return state

    def _check_and_setup(self, create_dir: bool, require_empty: bool) -> None:
        if create_dir:
            self.dirname.mkdir(parents=True, exist_ok=True)
        if not self.dirname.is_dir():
            raise ValueError(f"Directory path '{self.dirname}' is not found")
        self.remove_stale_temporary_files()
        if require_empty:
            extensions = (".pt", f".{SHARDED_EXT}")
            matched = sorted(p.name for p in self.dirname.iterdir() if p.name.endswith(extensions))
            if matched:
                raise ValueError(
                    f"Files {matched} with extension '.pt' (or sharded checkpoints '.dcp') are "
                    f"already present in the directory "
                    f"{self.dirname}. If you want to use this directory anyway, pass "
                    "`require_empty=False`."
                )

    def remove_stale_temporary_files(self) -> list[str]:
        """Delete the temporary files of writers that died in ``dirname``; return their names.

        A writer holds an exclusive ``flock`` on its temporary file until the file has its final
        name, and the kernel drops the lock when the writer dies: a file whose lock can be taken
        is stale. (Without ``fcntl``, on Windows, every temporary file is taken for stale.)
        """
        removed: list[str] = []
        try:
            paths = list(self.dirname.iterdir())
        except FileNotFoundError:
            return removed
        for path in paths:
            name = path.name
            if not (name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)):
                continue
            if path.is_dir() and not path.is_symlink():  # of a sharded save that died
                shutil.rmtree(path, ignore_errors=True)
                removed.append(name)
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        continue  # a live writer holds it
                try:
                    if not os.path.samestat(path.stat(), os.fstat(fd)):
                        continue
                    path.unlink()
                except OSError:
                    continue
                removed.append(name)
            finally:
                os.close(fd)
        return removed

    def __call__(
        self,
        checkpoint: Mapping[str, Any],
        filename: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not _writes(self.save_on_rank):
            return
        # Plain strings and os calls (hence the noqa PTH): pathlib's objects cost more than the
        # syscalls here.
        path = os.path.join(self.dirname, filename)  # noqa: PTH118
        if self.durability != "background":
            self.wait()  # the mode may have been switched with work pending
            self._write_durably(checkpoint, path)
            return
        batch = self._durability_batch
        try:
            if batch is not None and not batch.join():
                batch = None  # not joined: nothing of this thread's to leave (an outer save's is)
                self.wait()  # past its delay: those saves are durable first (or this raises)
            file = self._write_in_background(checkpoint, path, batch)
            if batch is None:
                fresh = _DurabilityBatch(_clock() + self.durability_delay)
                fresh.files[path] = file
                _durability_thread.submit(fresh)  # queued before the saver waits for it
                self._durability_batch = fresh
            else:
                replaced = batch.add(path, file)
                if replaced is not None:
                    replaced.close()  # the inode that had the name before: never made durable
        finally:
            if batch is not None:
                batch.leave()
        at_run_end(id(self), self._finish_at_run_end)

    def _write_durably(self, checkpoint: Mapping[str, Any], path: str) -> None:
        """``durability="inline"``: the file and its directory fsynced in the call."""
        if self._atomic:
            file = self._write_and_rename(checkpoint, path, fsync=True)
        else:
            file = open(path, "wb")  # noqa: PTH123, SIM115 - closed here
            self._write(checkpoint, file, fsync=True)
        file.close()  # releases the temporary file's lock, after the rename
        _fsync_directory(os.path.dirname(path))  # noqa: PTH120

    def _write_in_background(
        self, checkpoint: Mapping[str, Any], path: str, batch: _DurabilityBatch | None
    ) -> IO[bytes] | None:
        """Write ``path`` for the durability thread to make durable; return the open file it
        must fsync (None: fsynced here)."""
        if not self._atomic:
            in_place = open(path, "wb")  # noqa: PTH123, SIM115 - closed by the batch
            self._write(checkpoint, in_place, fsync=False)
            return in_place
        # A durable file is never replaced by one that is not yet: a file replacing one of the
        # same name is fsynced first, unless that one is itself waiting in the batch, unsynced
        # (an entry None was fsynced in its call: it counts as durable).
        fsync = os.path.lexists(path) and (batch is None or not batch.will_fsync(path))
        file = self._write_and_rename(checkpoint, path, fsync)
        if fsync:
            file.close()  # releases the temporary file's lock, after the rename
            return None
        return file

    def _write(self, checkpoint: Mapping[str, Any], file: IO[bytes], fsync: bool) -> None:
        """``torch.save`` into ``file``, flushed, and ``fsync``\\ ed if asked; the file is
        closed if this raises."""
        try:
            torch.save(checkpoint, file, **self.kwargs)
            file.flush()
            if fsync:
                os.fsync(file.fileno())
        except BaseException:
            file.close()
            raise

    def _write_and_rename(self, checkpoint: Mapping[str, Any], path: str, fsync: bool) -> IO[bytes]:
        """Write a temporary file and rename it to ``path``; return it, still open (its lock
        held)."""
        fd, temporary, mode = self._create_temporary(path)
        file = os.fdopen(fd, "wb")
        try:
            self._write(checkpoint, file, fsync)
            _readable_by_all(fd, temporary, mode)
            os.replace(temporary, path)  # noqa: PTH105
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)  # noqa: PTH108
            file.close()
            raise
        return file

    def wait(self) -> None:
        """Make the files this saver wrote durable now (without waiting for the end of
        ``durability_delay``), wait for that and for the removals that waited for them; raise
        the error of that work (once), naming the file. Returns at once when nothing is
        pending (always with ``durability="inline"``)."""
        batch = self._durability_batch
        if batch is None:
            return
        if batch.written_by_this_thread():
            raise RuntimeError(
                f"DiskSaver('{self.dirname}'): waiting for its background work from inside one "
                "of its saves (a signal handler or __del__ that interrupted a save in this "
                "thread) would wait for ever: that save can only finish once this returns"
            )
        batch.hurry()
        batch.wait()
        self._durability_batch = None
        if batch.error is not None:
            _unreported_failures.discard(batch)
            raise batch.error

    def _finish_at_run_end(self, exception: BaseException | None) -> None:
        """Called when the outermost run ends: wait for the background work. With an exception
        in flight, an error of the work is logged and noted on that exception."""
        batch = self._durability_batch
        if batch is not None and waits_stopped():
            batch.hurry()  # made durable in the background; the exit waits for it
            return
        if batch is None or exception is None:
            self.wait()
            return
        try:
            self.wait()
        except KeyboardInterrupt:  # not a failed fsync: the run's end stops waiting
            raise
        except BaseException as error:  # noqa: BLE001 - the run's exception goes on
            message = (
                f"The background fsync of checkpoint file '{batch.failed_path}' (or a removal "
                f"after it) failed too: {type(error).__name__}: {error}"
            )
            _logger.error(message)
            exception.add_note(message)

    @staticmethod
    def _create_temporary(path: str) -> tuple[int, str, int]:
        """Create and lock a temporary file next to ``path``; return its descriptor, path and
        permission bits.

        As ``tempfile.mkstemp`` (``O_EXCL``, no symlink followed, retried on a collision),
        without its Python-level name generator: one token from ``os.urandom``; created with
        the final file's permissions (0644 less the umask; see :func:`_readable_by_all`).
        """
        directory, name = os.path.split(path)
        prefix = os.path.join(directory, f".{name[:120]}.")  # noqa: PTH118
        for _ in range(100):
            temporary = f"{prefix}{os.urandom(6).hex()}{TEMPORARY_SUFFIX}"
            try:
                fd = os.open(temporary, _TEMPORARY_FLAGS, _TEMPORARY_MODE)
            except FileExistsError:
                continue
            try:
                status = os.fstat(fd)
                if fcntl is None:
                    return fd, temporary, stat.S_IMODE(status.st_mode)
                fcntl.flock(fd, fcntl.LOCK_EX)
                # A cleaner may have taken the file for stale before the lock: check it is ours.
                if os.path.samestat(os.stat(temporary), status):  # noqa: PTH116
                    return fd, temporary, stat.S_IMODE(status.st_mode)
            except FileNotFoundError:
                pass
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        raise RuntimeError(f"Could not create a temporary file in '{directory}'")

    def remove(self, filename: str) -> None:
        if not _writes(self.save_on_rank):
            return
        path = os.path.join(self.dirname, filename)  # noqa: PTH118
        batch = self._durability_batch
        if batch is not None:
            # One removal waits at a time where saves are grouped: the newer one.
            how, earlier, unsynced = batch.removal(path, one_waits=self.durability_delay > 0)
            if unsynced is not None:
                unsynced.close()  # also releases the temporary file's lock
            if how == _REMOVAL_WAITS:
                for earlier_path in earlier:
                    _remove_path(earlier_path)
                return
            if how == _REMOVE_AFTER_WAIT:
                self.wait()  # raises if the batch failed: the file stays
        _remove_path(path)


def _tensor_leaves(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """The tensors in nested mappings, lists and tuples, with their paths."""
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _tensor_leaves(value, (*path, key))
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield from _tensor_leaves(value, (*path, index))


def _bytes_of(tensor: torch.Tensor) -> Any:
    """The memory of a contiguous CPU tensor as a writable ctypes buffer (no copy). Valid while
    the tensor's storage is neither freed nor resized."""
    size = tensor.numel() * tensor.element_size()
    return (ctypes.c_char * size).from_address(tensor.data_ptr())


def _copy_bytes(buffer: torch.Tensor, tensor: torch.Tensor) -> None:
    """Copy the contiguous CPU ``tensor`` into ``buffer`` (same shape and dtype), on this
    thread: the copy is bound by memory bandwidth, and torch's intra-op threads gain little
    there but stall badly when the cores are shared. ``ember._core.stream_copy`` writes with
    streaming stores (1.6x memcpy's speed on a snapshot; csrc/bind_copy.cpp says why); without
    the compiled module, one memmove."""
    if buffer.numel() == 0:
        return
    if _core is None:
        ctypes.memmove(buffer.data_ptr(), tensor.data_ptr(), buffer.numel() * buffer.element_size())
    else:
        _core.stream_copy(_bytes_of(buffer), _bytes_of(tensor))


class _HostSnapshot:
    """Copies of a checkpoint's tensors in host buffers that are allocated once and reused.

    A buffer is kept per place in the checkpoint (its path of keys) and reallocated only when the
    tensor there changes shape, dtype or kind of device; buffers for tensors on a GPU are pinned
    and filled with non-blocking copies, ordered on the tensor's stream before whatever training
    does next, so the training thread does not wait for them: the writer waits for the events
    :meth:`take` returns.
    """

    def __init__(self) -> None:
        # path -> (buffer, pinned)
        self._buffers: dict[tuple[Any, ...], tuple[torch.Tensor, bool]] = {}

    def take(self, checkpoint: Any) -> tuple[Any, list[Any]]:
        """A deep copy of ``checkpoint`` whose tensors are the buffers, and the CUDA events the
        copies are complete after. Call only once the previous snapshot has been written."""
        copies: dict[int, Any] = {}  # id of a tensor -> its copy: deepcopy's memo
        buffers: dict[tuple[Any, ...], tuple[torch.Tensor, bool]] = {}
        gpu_devices: set[torch.device] = set()
        with torch.no_grad():
            for path, tensor in _tensor_leaves(checkpoint):
                if id(tensor) not in copies:
                    copies[id(tensor)] = self._copy(path, tensor, buffers)
                    if tensor.device.type == "cuda":
                        gpu_devices.add(tensor.device)
        self._buffers = buffers  # drops the buffers of tensors that are no longer saved
        events = []
        for device in gpu_devices:
            with torch.cuda.device(device):
                event = torch.cuda.Event()  # type: ignore[no-untyped-call]
                event.record()
                events.append(event)
        return copy.deepcopy(checkpoint, copies), events

    def _copy(
        self,
        path: tuple[Any, ...],
        tensor: torch.Tensor,
        buffers: dict[tuple[Any, ...], tuple[torch.Tensor, bool]],
    ) -> torch.Tensor:
        plain = type(tensor) in (torch.Tensor, nn.Parameter) and tensor.layout == torch.strided
        if not plain or tensor.is_quantized or tensor.device.type == "meta":
            return tensor.detach().clone()  # rare kinds: a fresh copy, not a reused buffer
        on_gpu = tensor.device.type == "cuda"
        buffer, pinned = self._buffers.get(path, (None, False))
        if (
            buffer is None
            or buffer.shape != tensor.shape
            or buffer.dtype != tensor.dtype
            or pinned != on_gpu
        ):
            buffer = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=on_gpu)
        raw_bytes = not (tensor.is_conj() or tensor.is_neg())  # lazy conjugate/negative views
        if tensor.device.type == "cpu" and tensor.is_contiguous() and raw_bytes:
            _copy_bytes(buffer, tensor)
        else:
            buffer.copy_(tensor.detach(), non_blocking=on_gpu)
        buffers[path] = (buffer, on_gpu)
        if isinstance(tensor, nn.Parameter):
            return nn.Parameter(buffer, requires_grad=tensor.requires_grad)
        return buffer


class _PendingWrite:
    """A save that ``write`` does in a background thread; ``error`` is what it raised."""

    def __init__(self, engine: Engine, filename: str, write: Callable[[], None]) -> None:
        self.engine = weakref.ref(engine)
        self.filename = filename
        self.error: BaseException | None = None
        # Set when the write ends. Not Thread.is_alive()/join(): on CPython before 3.13 a join
        # that Ctrl-C interrupts marks the thread as stopped while it still writes (bpo-45274),
        # so the next wait (and the one at exit) would not wait.
        self.finished = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(write,), name=WRITER_THREAD_NAME, daemon=True
        )
        self.thread.start()

    def _run(self, write: Callable[[], None]) -> None:
        try:
            write()
        except BaseException as error:  # noqa: BLE001 - handed to the training thread
            self.error = error
        finally:
            self.finished.set()

    def join(self) -> None:
        """Wait for the write; if the wait is interrupted (Ctrl-C), say so and re-raise."""
        try:
            self.finished.wait()
        except BaseException:
            _logger.warning(
                "The asynchronous write of checkpoint '%s' did not finish: the wait for it was "
                "interrupted (the previous checkpoint is intact)",
                self.filename,
            )
            raise


def _holds_dtensors(checkpoint: Any) -> bool:
    """Whether the state holds sharded tensors (only possible in a distributed run)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(tensor, DTensor) for _, tensor in _tensor_leaves(checkpoint))


class _ShardedWriter:
    """Saves a state holding DTensors with ``torch.distributed.checkpoint``: every rank writes its
    own shards into one directory (no rank gathers the state), first under a temporary name
    that the saver's rank renames to the final one once the checkpoint is complete.

    Its collectives run on a gloo group of their own, so that a background save never mixes
    its messages with those of training.
    """

    def __init__(self, saver: DiskSaver) -> None:
        self.saver = saver
        self.group: Any = None

    def start(self, state: Any, filename: str, background: bool) -> Callable[[], None]:
        """Begin the save on every rank (in the background: copy the state to host memory and
        hand it to torch's writer thread); return what completes it."""
        import torch.distributed as dist
        from torch.distributed.checkpoint.state_dict_saver import async_save, save

        if self.group is None:
            self.group = dist.new_group(backend="gloo")
        final = self.saver.dirname / filename
        temporary = self.saver.dirname / f".{filename}{TEMPORARY_SUFFIX}"
        renames = _writes(self.saver.save_on_rank)
        if renames and temporary.exists():
            shutil.rmtree(temporary)  # left by a save that died
        dist.barrier(group=self.group)
        if background:
            response = async_save(state, checkpoint_id=temporary, process_group=self.group)
            # a Future, or (with an asynchronous stager) a response holding the upload's
            upload: Any = getattr(response, "upload_completion", response)
            wait: Callable[[], Any] = upload.result
        else:
            save(state, checkpoint_id=temporary, process_group=self.group)

            def wait() -> None:
                return None

        def complete() -> None:
            wait()  # the coordinator has written the metadata: every rank's shards are there
            if renames:
                _replace_directory(temporary, final)

        return complete


def _replace_directory(source: Path, target: Path) -> None:
    """Rename the directory ``source`` to ``target``, replacing a previous ``target``."""
    if target.exists():
        previous = target.with_name(f".{target.name}.previous{TEMPORARY_SUFFIX}")
        if previous.exists():
            shutil.rmtree(previous)
        target.rename(previous)
        source.rename(target)
        shutil.rmtree(previous)
    else:
        source.rename(target)
    _fsync_directory(target.parent)


# Checkpoints with async_save=True, whose pending writes the interpreter's exit waits for.
_async_checkpoints: weakref.WeakSet[Checkpoint] = weakref.WeakSet()


@atexit.register
def _finish_writes_at_exit() -> None:
    for checkpoint in list(_async_checkpoints):
        pending = checkpoint._pending
        if pending is None:
            continue
        try:
            pending.join()
        except KeyboardInterrupt:
            continue
        if pending.error is not None:
            _logger.error(
                "The asynchronous write of checkpoint '%s' failed: %s: %s",
                pending.filename,
                type(pending.error).__name__,
                pending.error,
            )


class Checkpoint:
    """Saves the ``state_dict`` of ``to_save``'s objects when called, keeping the ``n_saved`` best.

    Attach it to an event: ``trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)``.
    The file name is ``{filename_prefix}_{name}_{global_step}_{score_name}={score}.pt``, each part
    present only when defined (see ignite's table): ``name`` is the key of ``to_save`` if it holds
    a single object, else ``"checkpoint"``; without score and ``global_step_transform`` the
    step is the engine's iteration; a float score is written with 4 decimals. Priority is the
    score, else the step; when full, a new checkpoint replaces the lowest priority one if its
    priority is higher (or equal, with ``greater_or_equal``). The replaced file is removed after
    the new one is saved: with a :class:`DiskSaver` of ``durability="background"`` (the default),
    at once if it was not durable yet, else once a newer file is durable, by the saver's
    background thread (perhaps after ``SAVED_CHECKPOINT`` fired; see its ``durability_delay``);
    the end of the outermost ``run()``, the first call past the delay and :meth:`wait` wait for
    that work and raise its errors.

    With ``async_save=True`` a call does not write: it copies the tensors of the state into host
    buffers (allocated on the first save and reused; pinned for tensors on a GPU, whose copies
    the training thread does not wait for), deep-copies the rest, and hands the copy to a
    background thread that writes it with the save handler. The file holds the state as it was
    at the call, whatever training does next. Everything else is as above, done by that thread
    once the file is durable: the replaced file is removed, :attr:`last_checkpoint` and
    :meth:`state_dict` name the new file. At most one write is in flight: a call while the
    previous write runs first waits for it (the seconds waited add up in :attr:`wait_seconds`
    and, with a :class:`~ember.engine.profile.Profiler` attached to the engine, in its handler row
    ``"Checkpoint: waiting for the previous write"``). ``SAVED_CHECKPOINT`` fires in the
    training thread when the checkpointer sees the write done: at its next call, :meth:`wait`, or
    the end of the run. An error of the write is raised by the next call, by :meth:`wait`, or by
    ``run()`` at the end of the run. When the outermost ``run()`` ends (completed, terminated,
    interrupted, or raising) it waits for the pending write; with an exception in flight a
    failed write is logged and noted on that exception (a call outside any run is finished by
    the next call or :meth:`wait`). At interpreter exit a pending write is waited for; a wait
    cut short by Ctrl-C logs that the write did not finish. The host buffers
    (one copy of the state) are kept for the next save.

    In a distributed run, a state holding sharded tensors (``DTensor``, e.g. FSDP2) is not
    gathered: every rank writes its shards with ``torch.distributed.checkpoint`` (its
    ``async_save`` with ``async_save=True``) into a directory ``{name}.dcp`` (same naming, the
    extension ``dcp``), written under a temporary name and renamed when complete.
    :meth:`load_objects` reads such a directory.

    Args:
        to_save: objects with ``state_dict``/``load_state_dict`` (an engine, a model, an
            optimizer, a scheduler, this checkpointer...), by name.
        save_handler: a :class:`DiskSaver`, a directory (a ``DiskSaver`` with ``create_dir=True``
            and ``require_empty=True`` is made), or a callable ``(checkpoint, filename[,
            metadata])``, optionally with ``remove(filename)``.
        filename_prefix: prefix of the file names.
        score_function: ``engine -> number``; the highest scores are kept. NaN raises.
        score_name: shown in the file name; alone, it scores with ``engine.state.metrics[name]``.
        n_saved: how many files to keep (``None``: all); at least 1.
        global_step_transform: ``(engine, event_name) -> int`` for the step in the name.
        filename_pattern: a ``str.format`` pattern over ``filename_prefix``, ``name``,
            ``global_step``, ``score_name``, ``score`` and ``ext``.
        include_self: also save this checkpointer's ``state_dict`` under ``"checkpointer"``.
        greater_or_equal: on equal priority, replace the kept file (default keeps the first).
        save_on_rank: in a distributed run, the rank that writes.
        async_save: write in a background thread from a copy of the state, as described above.
    """

    SAVED_CHECKPOINT = CheckpointEvents.SAVED_CHECKPOINT

    class Item(NamedTuple):
        priority: Any
        filename: str

    _state_dict_all_req_keys = ("_saved",)

    def __init__(
        self,
        to_save: Mapping[str, Any],
        save_handler: str | Path | Callable[..., Any] | BaseSaveHandler,
        filename_prefix: str = "",
        score_function: Callable[[Engine], Any] | None = None,
        score_name: str | None = None,
        n_saved: int | None = 1,
        global_step_transform: Callable[[Engine, Any], int] | None = None,
        filename_pattern: str | None = None,
        include_self: bool = False,
        greater_or_equal: bool = False,
        save_on_rank: int = 0,
        async_save: bool = False,
    ) -> None:
        if not isinstance(async_save, bool):
            raise TypeError(
                f"Argument async_save should be a bool, got {type(async_save).__name__}"
            )
        if not isinstance(to_save, Mapping):
            raise TypeError(f"Argument `to_save` should be a dictionary, but given {type(to_save)}")
        self._check_objects(to_save, "state_dict")
        if include_self:
            if not isinstance(to_save, MutableMapping):
                raise TypeError(
                    "If `include_self` is True, then `to_save` must be mutable, "
                    f"but given {type(to_save)}."
                )
            if "checkpointer" in to_save:
                raise ValueError(
                    f"Cannot have key 'checkpointer' if `include_self` is True: {to_save}"
                )
        if not (isinstance(save_handler, (str, Path)) or callable(save_handler)):
            raise TypeError(
                "Argument `save_handler` should be a string or Path object or callable or "
                "inherit from BaseSaveHandler"
            )
        if score_function is not None and not callable(score_function):
            raise TypeError(f"score_function should be a function, got {type(score_function)}")
        if global_step_transform is not None and not callable(global_step_transform):
            raise TypeError(
                "global_step_transform should be a function, got "
                f"{type(global_step_transform)} instead."
            )
        if n_saved is not None and (
            not isinstance(n_saved, numbers.Integral) or isinstance(n_saved, bool) or n_saved < 1
        ):
            raise ValueError(f"n_saved must be a positive integer or None, got {n_saved!r}")
        if not isinstance(filename_prefix, str):
            raise TypeError(f"filename_prefix should be a string, got {type(filename_prefix)}")
        save_on_rank = _checked_rank(save_on_rank)
        self.to_save = to_save
        self.filename_prefix = filename_prefix
        if isinstance(save_handler, (str, Path)):
            self.save_handler: Any = DiskSaver(
                save_handler, create_dir=True, save_on_rank=save_on_rank
            )
        else:
            self.save_handler = save_handler
        self.score_function = score_function
        self.score_name = score_name
        if score_name is not None and score_function is None:
            self.score_function = self.get_default_score_fn(score_name)
        self.n_saved = n_saved
        self.ext = "pt"
        self.global_step_transform = global_step_transform
        self.filename_pattern = filename_pattern
        self.include_self = include_self
        self.greater_or_equal = greater_or_equal
        self.save_on_rank = save_on_rank
        self._saved: list[Checkpoint.Item] = []
        self.async_save = async_save
        self.wait_seconds = 0.0
        """Seconds the calls (and run ends) waited for the previous asynchronous write."""
        self._pending: _PendingWrite | None = None
        self._host_snapshot = _HostSnapshot()
        self._sharded: _ShardedWriter | None = None
        # (save handler, whether it takes metadata): inspecting a signature costs ~0.1 ms.
        self._metadata_support: tuple[Any, bool] | None = None
        # The engine CheckpointEvents were last found registered on (see _register_events).
        self._events_registered_on: weakref.ref[Engine] | None = None
        if async_save:
            _async_checkpoints.add(self)

    def __getstate__(self) -> dict[str, Any]:
        # A weak reference does not pickle; the cache it holds is rebuilt on the next call.
        state = self.__dict__.copy()
        state["_events_registered_on"] = None
        return state

    # ------------------------------------------------------------------ naming
    def _get_filename_pattern(self, global_step: int | None) -> str:
        if self.filename_pattern is not None:
            return self.filename_pattern
        return self.setup_filename_pattern(
            with_prefix=len(self.filename_prefix) > 0,
            with_score=self.score_function is not None,
            with_score_name=self.score_name is not None,
            with_global_step=global_step is not None,
        )

    @staticmethod
    def setup_filename_pattern(
        with_prefix: bool = True,
        with_score: bool = True,
        with_score_name: bool = True,
        with_global_step: bool = True,
    ) -> str:
        """The default file name pattern, e.g.
        ``"{filename_prefix}_{name}_{global_step}_{score_name}={score}.{ext}"``."""
        if not (with_global_step or with_score):
            raise ValueError("At least one of with_score and with_global_step should be True.")
        if with_score_name and not with_score:
            raise ValueError("If with_score_name is True, with_score should be also True")
        pattern = "{name}"
        if with_global_step:
            pattern += "_{global_step}"
        if with_score_name:
            pattern += "_{score_name}={score}"
        elif with_score:
            pattern += "_{score}"
        if with_prefix:
            pattern = "{filename_prefix}_" + pattern
        return pattern + ".{ext}"

    @staticmethod
    def get_default_score_fn(metric_name: str, score_sign: float = 1.0) -> Callable[[Engine], Any]:
        """``engine -> score_sign * engine.state.metrics[metric_name]`` (use -1 for a loss)."""
        if score_sign not in (1.0, -1.0):
            raise ValueError("Argument score_sign should be 1 or -1")

        def score(engine: Engine) -> Any:
            return score_sign * engine.state.metrics[metric_name]

        return score

    # ------------------------------------------------------------------ saving
    def reset(self) -> None:
        """Forget the saved files (their files stay), e.g. before an independent new run."""
        self.wait()
        self._saved = []

    @property
    def last_checkpoint(self) -> str | Path | None:
        """The file saved last: a ``Path`` for a :class:`DiskSaver`, else the file name."""
        if not self._saved:
            return None
        filename = self._saved[-1].filename
        if isinstance(self.save_handler, DiskSaver):
            return self.save_handler.dirname / filename
        return filename

    def _check_lt_n_saved(self) -> bool:
        return self.n_saved is None or len(self._saved) < self.n_saved

    def _compare_fn(self, new: Any) -> bool:
        if self.greater_or_equal:
            return bool(new >= self._saved[0].priority)
        return bool(new > self._saved[0].priority)

    def _score(self, engine: Engine) -> Any:
        assert self.score_function is not None
        score = self.score_function(engine)
        if not isinstance(score, numbers.Number):
            raise ValueError(  # noqa: TRY004 - ignite's exception type
                f"Output of score_function should be a number, got {type(score).__name__}: "
                f"{score!r}"
            )
        if isinstance(score, numbers.Real) and math.isnan(score):
            name = f" '{self.score_name}'" if self.score_name else ""
            raise ValueError(
                f"score_function{name} returned NaN at iteration {engine.state.iteration}: a NaN "
                "score cannot be ranked, so no checkpoint was saved"
            )
        return score

    def __call__(self, engine: Engine, *args: Any, **kwargs: Any) -> None:
        self._register_events(engine)
        # The event this call is a handler of: finishing the pending write fires
        # SAVED_CHECKPOINT, which becomes the engine's last event.
        event_name = engine.last_event_name
        if self._pending is not None:
            self._finish_pending(engine)
        global_step = None
        if self.global_step_transform is not None:
            global_step = self.global_step_transform(engine, event_name)
        if self.score_function is not None:
            priority = self._score(engine)
        else:
            if global_step is None:
                global_step = engine.state.get_event_attrib_value(Events.ITERATION_COMPLETED)
            priority = global_step
        if not (self._check_lt_n_saved() or self._compare_fn(priority)):
            return

        checkpoint = self._setup_checkpoint()
        name = self._object_name()
        sharded = _holds_dtensors(checkpoint)
        if len(checkpoint) == 1 and not self.include_self and not sharded:
            checkpoint = checkpoint[name]
        score = None
        if self.score_function is not None:
            score = f"{priority}" if isinstance(priority, numbers.Integral) else f"{priority:.4f}"
        filename = self._filename(name, global_step, score, SHARDED_EXT if sharded else self.ext)
        metadata = {
            "basename": f"{self.filename_prefix}{'_' if self.filename_prefix else ''}{name}",
            "score_name": self.score_name,
            "priority": priority,
        }

        # The list as it will be once the save succeeded; nothing changes before that.
        saved = list(self._saved)
        obsolete: Checkpoint.Item | None = None
        same_name = [index for index, item in enumerate(saved) if item.filename == filename]
        if same_name:
            saved.pop(same_name[0])  # the save overwrites it
        elif not self._check_lt_n_saved():
            obsolete = saved.pop(0)
        saved.append(Checkpoint.Item(priority, filename))
        saved.sort(key=_PRIORITY)
        if self.include_self:
            checkpoint["checkpointer"] = self._state_dict_of(saved)

        background = self.async_save and (sharded or self._writes_on_this_rank())
        write: Callable[[], None]
        if sharded:
            write = self._sharded_writer().start(checkpoint, filename, background)
        elif background:
            write = self._snapshot_writer(checkpoint, filename, metadata)
        else:
            write = functools.partial(self._write, checkpoint, filename, metadata)
        if background:

            def write_and_commit() -> None:
                write()
                self._wait_for_save_handler()  # the writer commits a durable file only
                self._commit(filename, saved, obsolete)

            self._pending = _PendingWrite(engine, filename, write_and_commit)
            at_run_end(id(self), self._finish_at_run_end)
            return
        write()
        self._commit(filename, saved, obsolete)
        if not isinstance(engine, Engine):
            # Another library's engine (ignite's): ember does not see the end of its run, so
            # the save is finished here, as with durability="inline".
            self._wait_for_save_handler()
        self._fire_saved(engine)

    def _register_events(self, engine: Engine) -> None:
        """Register :class:`CheckpointEvents` on ``engine`` unless they are. The engine checked
        last is remembered (weakly: a new engine at the same address is another one), since the
        check scans the engine's list of events with Python-level comparisons."""
        known = self._events_registered_on
        if known is not None and known() is engine:
            return
        if not engine.has_registered_events(CheckpointEvents.SAVED_CHECKPOINT):
            try:
                engine.register_events(*CheckpointEvents)
            except TypeError:
                # ignite's Engine takes only its own EventEnum members, or strings: the event's
                # name equals and hashes like ember's event, so it fires and is handled alike.
                engine.register_events(*(event.name for event in CheckpointEvents))
        try:
            self._events_registered_on = weakref.ref(engine)
        except TypeError:  # an engine without weak references: checked at every call
            self._events_registered_on = None

    def _fire_saved(self, engine: Engine) -> None:
        """Fire ``SAVED_CHECKPOINT`` on ``engine``. ember's ``fire_event`` first checks that the
        event is registered, by the same scan as ``has_registered_events``: skipped when
        :meth:`_register_events` saw it registered on this very engine and ``fire_event`` is
        ember's own (a subclass may do more in its override)."""
        known = self._events_registered_on
        if known is not None and known() is engine and type(engine).fire_event is Engine.fire_event:
            engine._fire_event(CheckpointEvents.SAVED_CHECKPOINT)
        else:
            engine.fire_event(CheckpointEvents.SAVED_CHECKPOINT)

    def _write(self, checkpoint: Any, filename: str, metadata: Mapping[str, Any]) -> None:
        handler = self.save_handler
        support = self._metadata_support
        if support is None or support[0] is not handler:
            support = self._metadata_support = (handler, _accepts_metadata(handler))
        if support[1]:
            handler(checkpoint, filename, metadata)
        else:
            handler(checkpoint, filename)

    def _commit(self, filename: str, saved: list[Item], obsolete: Item | None) -> None:
        """What follows a successful write: the list, then the removal of the replaced file."""
        self._saved = saved
        if obsolete is not None and obsolete.filename != filename:
            remove = getattr(self.save_handler, "remove", None)
            if callable(remove):
                remove(obsolete.filename)

    def _writes_on_this_rank(self) -> bool:
        saver = self.save_handler
        return not isinstance(saver, DiskSaver) or _writes(saver.save_on_rank)

    def _sharded_writer(self) -> _ShardedWriter:
        if not isinstance(self.save_handler, DiskSaver):
            raise TypeError(
                "The state holds sharded tensors (DTensor), which are saved with "
                "torch.distributed.checkpoint into a directory: the save handler must be a "
                f"DiskSaver or a directory, got {type(self.save_handler).__name__}"
            )
        if self._sharded is None:
            self._sharded = _ShardedWriter(self.save_handler)
        return self._sharded

    # ------------------------------------------------------------------ asynchronous saving
    def _snapshot_writer(
        self, checkpoint: Any, filename: str, metadata: Mapping[str, Any]
    ) -> Callable[[], None]:
        """Copy the state now; return what writes the copy (in the writer thread)."""
        snapshot, copies_done = self._host_snapshot.take(checkpoint)

        def write() -> None:
            for event in copies_done:
                event.synchronize()
            self._write(snapshot, filename, metadata)

        return write

    @property
    def write_in_progress(self) -> bool:
        """Whether an asynchronous write has been started and not yet seen finished."""
        return self._pending is not None

    def wait(self) -> None:
        """Wait until the pending asynchronous write (if any) is durable, fire
        ``SAVED_CHECKPOINT`` for it, or raise its error; then wait for the save handler's
        background work (a :class:`DiskSaver`'s ``fsync``\\ s and removals) and raise its error.
        A no-op when nothing is pending."""
        pending = self._pending
        if pending is not None:
            self._finish_pending(pending.engine())
        self._wait_for_save_handler()

    def _wait_for_save_handler(self) -> None:
        if isinstance(self.save_handler, DiskSaver):
            self.save_handler.wait()

    def _finish_pending(self, engine: Engine | None) -> None:
        pending = self._pending
        assert pending is not None
        if not pending.finished.is_set():
            started = time.perf_counter()
            pending.join()
            waited = time.perf_counter() - started
            self.wait_seconds += waited
            profiler = getattr(engine, "_profiler", None)
            if profiler is not None:
                profiler.add("handler", PROFILER_WAIT_ROW, waited, 1)
        self._pending = None
        if pending.error is not None:
            pending.error.add_note(
                f"while writing checkpoint '{pending.filename}' in the background "
                "(async_save=True); the previous checkpoint is intact"
            )
            raise pending.error
        if engine is not None:
            self._fire_saved(engine)

    def _finish_at_run_end(self, exception: BaseException | None) -> None:
        """Called when the outermost run ends: wait for the pending write."""
        pending = self._pending
        if pending is None or waits_stopped():  # the exit waits for a write left running
            return
        if exception is None:
            self._finish_pending(pending.engine())
            return
        # The run raises: wait for the write (join logs an interrupted wait, and the run's end
        # stops waiting), but let the run's exception be the one raised.
        pending.join()
        self._pending = None
        if pending.error is not None:
            message = (
                f"The asynchronous write of checkpoint '{pending.filename}' failed too: "
                f"{type(pending.error).__name__}: {pending.error}"
            )
            _logger.error(message)
            exception.add_note(message)

    def _object_name(self) -> str:
        """The ``name`` part of file names: the key of a single object, else "checkpoint"."""
        to_save = self.to_save or {}
        return next(iter(to_save)) if len(to_save) == 1 else "checkpoint"

    def _filename(
        self, name: str, global_step: int | None, score: Any, ext: str | None = None
    ) -> str:
        return self._get_filename_pattern(global_step).format(
            filename_prefix=self.filename_prefix,
            ext=ext or self.ext,
            name=name,
            score_name=self.score_name,
            score=score,
            global_step=global_step,
        )

    def _setup_checkpoint(self) -> dict[str, Any]:
        if self.to_save is None:
            return {}
        return dict(_tree_map(self._state_of, self.to_save))

    def _state_of(self, obj: Any) -> Any:
        """``obj``'s state_dict. A ``ZeroRedundancyOptimizer`` holds a shard of the state on each
        rank: every rank gathers it to the writing rank first (a collective), and the others
        save nothing of it, as ignite does."""
        zero = sys.modules.get("torch.distributed.optim.zero_redundancy_optimizer")
        if zero is not None and isinstance(obj, zero.ZeroRedundancyOptimizer):
            obj.consolidate_state_dict(to=self.save_on_rank)
            if _rank() != self.save_on_rank:
                return {}
        return _state_dict_of(obj)

    @staticmethod
    def _check_objects(objects: Mapping[str, Any], attribute: str) -> None:
        def check(obj: Any) -> None:
            if not hasattr(obj, attribute):
                raise TypeError(f"Object {type(obj)} should have `{attribute}` method")

        _tree_map(check, objects)

    # ------------------------------------------------------------------ loading
    @staticmethod
    def load_objects(
        to_load: Mapping[str, Any],
        checkpoint: str | Path | Mapping[str, Any],
        strict: bool = True,
        **kwargs: Any,
    ) -> None:
        """Call ``load_state_dict`` of each object of ``to_load`` with its entry of ``checkpoint``.

        Args:
            to_load: objects by name, as given to ``to_save``.
            checkpoint: a file path (loaded with ``torch.load(..., weights_only=True)``), the
                directory of a sharded checkpoint (loaded with ``torch.distributed.checkpoint``
                into the objects' current state_dicts, on every rank), or the loaded dictionary. When ``to_load`` holds one object, the checkpoint may also be
                that object's state_dict itself.
            strict: passed to ``torch.nn.Module.load_state_dict``.
            kwargs: also passed to ``torch.nn.Module.load_state_dict``.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: the file is truncated, corrupted, or not a ``torch.save`` file; or an
                entry of ``to_load`` is missing from the checkpoint. The message names the file.
            TypeError: the file holds something other than a dictionary.
        """
        if not isinstance(checkpoint, (Mapping, str, Path)):
            raise TypeError(
                "Argument checkpoint should be a string or a dictionary, "
                f"but given {type(checkpoint)}"
            )
        if not isinstance(to_load, Mapping):
            raise TypeError(f"Argument to_load should be a dictionary, but given {type(to_load)}")
        Checkpoint._check_objects(to_load, "load_state_dict")
        checkpoint_obj: Mapping[str, Any]
        if isinstance(checkpoint, (str, Path)) and Path(checkpoint).is_dir():
            source = f"sharded checkpoint '{checkpoint}'"
            checkpoint_obj = _load_sharded(to_load, Path(checkpoint))
        elif isinstance(checkpoint, (str, Path)):
            source = f"checkpoint file '{checkpoint}'"
            checkpoint_obj = _load_file(Path(checkpoint))
        else:
            source = "the checkpoint dictionary"
            checkpoint_obj = checkpoint

        def load(obj: Any, state: Any, key: str) -> None:
            obj = _unwrap(obj)
            try:
                if isinstance(obj, nn.Module):
                    obj.load_state_dict(state, strict=strict, **kwargs)
                else:
                    obj.load_state_dict(state)
            except Exception as exc:
                exc.add_note(f"while loading '{key}' from {source}")
                raise

        if len(to_load) == 1:
            key, obj = next(iter(to_load.items()))
            if key not in checkpoint_obj:
                load(obj, checkpoint_obj, key)
                return
        for obj, state, path in _paired_entries(to_load, checkpoint_obj, source):
            load(obj, state, path)

    def reload_objects(
        self,
        to_load: Mapping[str, Any],
        load_kwargs: dict[str, Any] | None = None,
        **filename_components: Any,
    ) -> None:
        """:meth:`load_objects` from this checkpointer's directory, the file named from
        ``filename_components`` (``name``, ``score``, ``global_step``) as when saving."""
        if not isinstance(self.save_handler, DiskSaver):
            raise AttributeError(  # noqa: TRY004 - ignite's exception type
                "Checkpoint's `save_handler` should be of type `DiskSaver`, "
                f"given {type(self.save_handler)}"
            )
        filename = self._filename(
            filename_components.get("name", self._object_name()),
            filename_components.get("global_step"),
            filename_components.get("score"),
        )
        Checkpoint.load_objects(
            to_load, self.save_handler.dirname / filename, **(load_kwargs or {})
        )

    # ------------------------------------------------------------------ state
    @staticmethod
    def _state_dict_of(saved: list[Checkpoint.Item]) -> OrderedDict[str, Any]:
        return OrderedDict([("_saved", [(item.priority, item.filename) for item in saved])])

    def state_dict(self) -> OrderedDict[str, Any]:
        """``{"_saved": [(priority, filename), ...]}``, lowest priority first."""
        return self._state_dict_of(self._saved)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the list of saved files, e.g. to go on pruning them after a resume."""
        check_state_dict(state_dict, self._state_dict_all_req_keys)
        self.wait()
        saved = state_dict["_saved"]
        if not isinstance(saved, (list, tuple)):
            raise TypeError(
                "state_dict['_saved'] should be a list of (priority, filename) pairs, got "
                f"{type(saved).__name__}"
            )
        items = []
        for entry in saved:
            if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
                raise TypeError(
                    f"state_dict['_saved'] should hold (priority, filename) pairs, got {entry!r}"
                )
            priority, filename = entry
            # The rotation deletes these files: a name that leaves the directory would delete
            # a file elsewhere.
            parts = Path(filename).parts if isinstance(filename, str) else ()
            if not parts or Path(filename).is_absolute() or ".." in parts:
                raise ValueError(
                    "state_dict['_saved'] should name files inside the checkpoint's directory, "
                    f"got {filename!r}"
                )
            # Compared with the new scores at each save: what a save may store (a score, a global
            # step, a 0-d tensor from a transform), not complex, not NaN.
            if not _is_priority(priority):
                raise ValueError(
                    f"state_dict['_saved'] should hold numbers as priorities, got {priority!r}"
                )
            items.append(Checkpoint.Item(priority, filename))
        self._saved = items


def _load_sharded(to_load: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Load a torch.distributed.checkpoint directory into the current state_dicts of ``to_load``
    (each rank reads its own shards); return them, filled."""
    from torch.distributed.checkpoint.state_dict_loader import load

    _check_sharded_is_complete(path)
    state: dict[str, Any] = _tree_map(lambda obj: _unwrap(obj).state_dict(), to_load)
    try:
        load(state, checkpoint_id=path)
    except Exception as exc:
        raise ValueError(
            f"Sharded checkpoint '{path}' could not be loaded into {sorted(map(str, to_load))} "
            f"({_summary(exc)})"
        ) from exc
    return state


def _check_sharded_is_complete(path: Path) -> None:
    """Raise unless the directory ``path`` holds the ``.metadata`` a finished sharded save
    writes last."""
    if not (path / ".metadata").is_file():
        raise ValueError(
            f"Checkpoint directory '{path}' is not a complete sharded checkpoint: it has no "
            "'.metadata' file (the save did not finish, or it is not a torch.distributed.checkpoint)"
        )


def _summary(exc: BaseException) -> str:
    """``Type: first line of the message``: a loader's message can run to pages."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _damaged_entry(path: Path) -> str | None:
    """The first entry of ``path`` (a zip file, torch.save's format) whose data does not match
    the CRC-32 its header records, or None. torch.load does not check them, so a file with a
    lost or flipped block (a power loss, a bad disk) would load with wrong values. Entries whose
    recorded CRC is 0 are skipped: torch writes 0 when told not to compute them."""
    try:
        archive = zipfile.ZipFile(path)
    except Exception:  # noqa: BLE001 - not a zip, or its directory is damaged: torch.load says
        return None
    with archive:
        for entry in archive.infolist():
            if entry.CRC == 0 or entry.is_dir():
                continue
            try:
                with archive.open(entry) as data:  # checks the CRC when read to the end
                    while data.read(1 << 24):
                        pass
            except Exception:  # noqa: BLE001 - a bad CRC, or a header damaged into another method
                return entry.filename
    return None


def _load_error(path: Path, exc: Exception) -> ValueError:
    """What ``torch.load(path, weights_only=True)`` raising ``exc`` means, as a ValueError
    naming the file: a whole file that holds objects weights-only loading refuses, or one saved
    on a device this machine lacks, is not called corrupted."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    refused = next((line for line in lines if "Unsupported global" in line), None)
    if refused is not None:
        return ValueError(
            f"Checkpoint file '{path}' holds objects that torch.load(weights_only=True) does not "
            f"load ({refused}); ember loads checkpoints weights-only, so that a file cannot run "
            "code: save plain tensors and Python values, or register the class as safe"
        )
    if any("deserialize object on" in line and "device" in line for line in lines):
        return ValueError(
            f"Checkpoint file '{path}' was saved from tensors on a device this machine does not "
            f"have ({_summary(exc)}); load it where that device is, or save it from the CPU"
        )
    return ValueError(
        f"Checkpoint file '{path}' could not be loaded: it is truncated, corrupted or not a "
        f"checkpoint written by torch.save ({_summary(exc)})"
    )


def _load_file(path: Path) -> Any:
    if not path.exists():
        if path.is_symlink():
            raise FileNotFoundError(f"Checkpoint file '{path}' is a link to nothing")
        raise FileNotFoundError(f"Checkpoint file '{path}' does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"Checkpoint file '{path}' is a directory")
    if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the read forever
        raise ValueError(f"Checkpoint file '{path}' is not a regular file")
    damaged = _damaged_entry(path)
    if damaged is not None:
        raise ValueError(
            f"Checkpoint file '{path}' is corrupted: the data of its entry '{damaged}' does not "
            "match the CRC-32 recorded when it was written"
        )
    try:
        obj = torch.load(path, weights_only=True)
    except (FileNotFoundError, PermissionError):
        raise
    except Exception as exc:
        raise _load_error(path, exc) from exc
    if not isinstance(obj, Mapping):
        raise TypeError(
            f"Checkpoint file '{path}' holds a {type(obj).__name__}, not a dictionary of "
            "state_dicts"
        )
    return obj


def _paired_entries(
    to_load: Mapping[str, Any], checkpoint: Any, source: str, parent: str = ""
) -> list[tuple[Any, Any, str]]:
    """``(object, its entry of checkpoint, dotted name)`` for every object of ``to_load`` (nested
    dictionaries followed), in order: a missing or misplaced entry raises here, before any
    object is loaded, so that such a checkpoint leaves every object as it was."""
    if not isinstance(checkpoint, Mapping):
        raise TypeError(
            f"Entry '{parent}' of {source} should be a dictionary, got {type(checkpoint).__name__}"
        )
    pairs = []
    for key, obj in to_load.items():
        path = f"{parent}.{key}" if parent else str(key)
        if key not in checkpoint:
            raise ValueError(
                f"Object '{path}' is not found in {source}; it holds {sorted(map(str, checkpoint))}"
            )
        pairs += _paired(obj, checkpoint[key], source, path)
    return pairs


def _paired(obj: Any, entry: Any, source: str, path: str) -> list[tuple[Any, Any, str]]:
    """``obj`` (an object, or a dictionary, list or tuple of them, as saved) with its entry."""
    if isinstance(obj, Mapping) and not hasattr(obj, "load_state_dict"):
        return _paired_entries(obj, entry, source, path)
    if isinstance(obj, (list, tuple)):
        if not isinstance(entry, (list, tuple)) or len(entry) != len(obj):
            raise ValueError(
                f"Entry '{path}' of {source} should be a list of {len(obj)} states (as saved "
                f"from a list of {len(obj)} objects), got {type(entry).__name__}"
                + (f" of {len(entry)}" if isinstance(entry, (list, tuple)) else "")
            )
        pairs = []
        for index, (item, item_entry) in enumerate(zip(obj, entry, strict=True)):
            pairs += _paired(item, item_entry, source, f"{path}[{index}]")
        return pairs
    return [(obj, entry, path)]


class ModelCheckpoint(Checkpoint):
    """A :class:`Checkpoint` writing to ``dirname`` with a :class:`DiskSaver`, called as
    ``handler(engine, to_save)``::

        handler = ModelCheckpoint("/tmp/models", "myprefix", n_saved=2, require_empty=False)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, handler, {"model": model})

    Arguments as for :class:`Checkpoint` and :class:`DiskSaver`; ``kwargs`` go to ``torch.save``.
    """

    def __init__(
        self,
        dirname: str | Path,
        filename_prefix: str = "",
        score_function: Callable[[Engine], Any] | None = None,
        score_name: str | None = None,
        n_saved: int | None = 1,
        atomic: bool = True,
        require_empty: bool = True,
        create_dir: bool = True,
        global_step_transform: Callable[[Engine, Any], int] | None = None,
        filename_pattern: str | None = None,
        include_self: bool = False,
        greater_or_equal: bool = False,
        save_on_rank: int = 0,
        async_save: bool = False,
        durability: str = "background",
        durability_delay: float = DEFAULT_DURABILITY_DELAY,
        **kwargs: Any,
    ) -> None:
        disk_saver = DiskSaver(
            dirname,
            atomic=atomic,
            create_dir=create_dir,
            require_empty=require_empty,
            save_on_rank=save_on_rank,
            durability=durability,
            durability_delay=durability_delay,
            **kwargs,
        )
        super().__init__(
            to_save={},
            save_handler=disk_saver,
            filename_prefix=filename_prefix,
            score_function=score_function,
            score_name=score_name,
            n_saved=n_saved,
            global_step_transform=global_step_transform,
            filename_pattern=filename_pattern,
            include_self=include_self,
            greater_or_equal=greater_or_equal,
            save_on_rank=save_on_rank,
            async_save=async_save,
        )

    @property
    def last_checkpoint(self) -> Path | None:
        # Narrows the base class's type: the save handler here is always a DiskSaver.
        return cast("Path | None", super().last_checkpoint)

    def __call__(self, engine: Engine, to_save: Mapping[str, Any]) -> None:
        if len(to_save) == 0:
            raise RuntimeError("No objects to checkpoint found.")
        if to_save is not self.to_save:  # the same mapping as last time was checked then
            self._check_objects(to_save, "state_dict")
            self.to_save = to_save
        super().__call__(engine)
