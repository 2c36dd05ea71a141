"""``Parallel``: one script that runs alone, spawns local workers, or joins a torchrun launch."""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import torch.distributed as dist
from torch.multiprocessing.spawn import (
    ProcessException,
    ProcessExitedException,
    start_processes,
)

from ember.distributed import _context

__all__ = ["Parallel", "WorkerError"]


class WorkerError(RuntimeError):
    """A process spawned by :class:`Parallel` failed without an exception that could be
    re-raised in the parent (it was killed, exited with a non-zero code, or raised an exception
    that cannot be pickled). ``rank``, ``local_rank`` and ``exitcode`` say which and how."""

    def __init__(
        self, message: str, rank: int, local_rank: int, exitcode: int | None = None
    ) -> None:
        super().__init__(message)
        self.rank = rank
        self.local_rank = local_rank
        self.exitcode = exitcode


@dataclass(frozen=True)
class _Spawn:
    backend: str
    timeout: timedelta
    nproc_per_node: int
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    error_dir: str

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def rank_of(self, local_rank: int) -> int:
        """The group rank of this node's process ``local_rank``."""
        return self.node_rank * self.nproc_per_node + local_rank


def _record_failure(spec: _Spawn, rank: int, local_rank: int, exc: BaseException) -> None:
    """Leave the exception where the parent finds it: pickled when possible, as text always."""
    pickled: bytes | None
    try:
        pickled = pickle.dumps(exc)
        pickle.loads(pickled)  # some exceptions pickle but do not unpickle
    except Exception:  # noqa: BLE001 - any failure means "cannot travel"
        pickled = None
    record = {
        "time": time.time(),
        "rank": rank,
        "local_rank": local_rank,
        "type": type(exc).__qualname__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
        "exception": pickled,
    }
    path = Path(spec.error_dir) / f"rank{rank}.pkl"
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(pickle.dumps(record))
    temporary.replace(path)


def _spawned(local_rank: int, spec: _Spawn, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
    """Entry point of a spawned worker: the torchrun environment, the group, ``fn``."""
    rank = spec.rank_of(local_rank)
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(local_rank),
            "WORLD_SIZE": str(spec.world_size),
            "LOCAL_WORLD_SIZE": str(spec.nproc_per_node),
            "GROUP_RANK": str(spec.node_rank),
            "GROUP_WORLD_SIZE": str(spec.nnodes),
            "MASTER_ADDR": spec.master_addr,
            "MASTER_PORT": str(spec.master_port),
            # The parent of node 0 hosts the store, as torchrun's agent does.
            "TORCHELASTIC_USE_AGENT_STORE": "True",
        }
    )
    try:
        _context.initialize(spec.backend, spec.timeout)
        fn(local_rank, *args, **kwargs)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            _record_failure(spec, rank, local_rank, exc)
        raise
    except BaseException as exc:
        _record_failure(spec, rank, local_rank, exc)
        raise
    finally:
        # On failure this also closes the connections: ranks waiting on this one fail at once.
        _context.finalize()


def _free_port_store(address: str, port: int | None, timeout: timedelta) -> Any:
    try:
        return dist.TCPStore(  # type: ignore[attr-defined]
            address,
            port or 0,
            is_master=True,
            timeout=timeout,
            wait_for_workers=False,
            multi_tenant=True,
        )
    except (RuntimeError, dist.DistError) as exc:
        raise RuntimeError(
            f"Parallel: cannot host the rendezvous store on {address}:{port or 'a free port'}: "
            f"{exc}"
        ) from exc


class Parallel:
    """Run ``fn(local_rank, *args, **kwargs)`` on every process of a group, however it started.

    ``with Parallel(...) as parallel: parallel.run(fn, *args)`` picks one of these, in order:

    1. **Attached**: torch.distributed is already initialized in this process: ``fn`` runs here.
    2. **Launched**: the environment holds ``RANK`` and ``WORLD_SIZE`` (``torchrun``, or any
       launcher that sets torchrun's variables): the group is initialized here on entering the
       ``with`` block (``backend``, default gloo, or nccl with GPUs) and finalized on leaving it;
       ``fn`` runs here. The launcher decides the layout: ``nnodes``, ``node_rank`` and the
       master address are not used, and ``nproc_per_node``, when given, must equal the
       launcher's ``LOCAL_WORLD_SIZE``.
    3. **Spawned**: ``nproc_per_node`` is given: ``run`` starts that many processes
       (``torch.multiprocessing``, start method ``"spawn"``), each of them joins the group
       (rank ``node_rank * nproc_per_node + local_rank`` of ``nnodes * nproc_per_node``) and runs
       ``fn``; ``run`` returns when all of them have. With ``nnodes`` > 1, run the same script on
       every node with its ``node_rank`` and the same ``master_addr``/``master_port``.
    4. **Group of one**: only ``backend`` is given: a group of one process, here.
    5. **Single process**: nothing is given: ``fn(0, ...)`` runs here, without a group.

    ``fn`` must be picklable to be spawned: a function defined at the top level of a module
    (or of the script, under ``if __name__ == "__main__":``).

    When a spawned process raises, the others are stopped and ``run`` raises that exception
    again in the parent, with a note naming the rank and holding the traceback it had there
    (:class:`WorkerError` when it cannot be pickled, or when a process dies without an
    exception). In the launched and attached modes an exception of ``fn`` gets a note naming
    the rank. ``timeout`` bounds the rendezvous and every collective.

    ``run`` returns ``fn``'s result where ``fn`` runs in this process, ``None`` when it spawns.
    """

    def __init__(
        self,
        backend: str | None = None,
        nproc_per_node: int | None = None,
        nnodes: int = 1,
        node_rank: int = 0,
        master_addr: str = "127.0.0.1",
        master_port: int | None = None,
        timeout: timedelta | float = _context.DEFAULT_TIMEOUT,
        start_method: str = "spawn",
    ) -> None:
        if backend is not None:
            _context.check_backend(backend)
        for label, value in (("nproc_per_node", nproc_per_node), ("nnodes", nnodes)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Parallel: {label} should be a positive int, got {value!r}")
        if isinstance(node_rank, bool) or not isinstance(node_rank, int):
            raise TypeError(f"Parallel: node_rank should be an int, got {node_rank!r}")
        if not 0 <= node_rank < nnodes:
            raise ValueError(
                f"Parallel: node_rank should be in [0, {nnodes}) for nnodes={nnodes}, "
                f"got {node_rank}"
            )
        if nnodes > 1 and nproc_per_node is None:
            raise ValueError("Parallel: nnodes > 1 needs nproc_per_node (the processes per node)")
        if nnodes > 1 and master_port is None:
            raise ValueError(
                "Parallel: nnodes > 1 needs master_port (the same on every node), with "
                "master_addr the address of node 0"
            )
        if master_port is not None and (
            isinstance(master_port, bool)
            or not isinstance(master_port, int)
            or not 0 < master_port < 65536
        ):
            raise ValueError(f"Parallel: master_port should be a port number, got {master_port!r}")
        if not isinstance(master_addr, str) or not master_addr:
            raise ValueError(f"Parallel: master_addr should be a host name, got {master_addr!r}")
        if start_method not in ("spawn", "forkserver", "fork"):
            raise ValueError(
                "Parallel: start_method should be 'spawn', 'forkserver' or 'fork', got "
                f"{start_method!r}"
            )
        self.backend = backend
        self.nproc_per_node = nproc_per_node
        self.nnodes = nnodes
        self.node_rank = node_rank
        self.master_addr = master_addr
        self.master_port = master_port
        self.timeout = _context.as_timeout(timeout)
        self.start_method = start_method
        self._entered = False
        self._owns_group = False
        self._mode: str | None = None

    # ------------------------------------------------------------------------------- mode
    @property
    def mode(self) -> str:
        """``"attached"``, ``"launched"``, ``"spawn"``, ``"group-of-one"`` or ``"single"``: the
        one chosen on entering the ``with`` block, or the one it would choose now."""
        if self._mode is not None:
            return self._mode
        if _context.is_initialized():
            return "attached"
        if _context._launch_env() is not None:
            return "launched"
        if self.nproc_per_node is not None:
            return "spawn"
        if self.backend is not None:
            return "group-of-one"
        return "single"

    def _check_layout(self) -> None:
        if self.nproc_per_node is None:
            return
        if _context.is_initialized():
            actual, source = _context.get_nproc_per_node(), "the existing group"
        else:
            env = _context._launch_env() or {}
            actual = env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", 1))
            source = "the launcher (LOCAL_WORLD_SIZE)"
        if actual != self.nproc_per_node:
            raise ValueError(
                f"Parallel(nproc_per_node={self.nproc_per_node}) runs under {source} with "
                f"{actual} process(es) per node: leave nproc_per_node out when a launcher "
                "such as torchrun starts the processes, or make the two agree"
            )
        if _context.is_initialized() and self.backend not in (None, _context.backend()):
            raise ValueError(
                f"Parallel(backend={self.backend!r}) runs in a group initialized with backend "
                f"{_context.backend()!r}"
            )

    def __enter__(self) -> Self:
        if self._entered:
            raise RuntimeError("Parallel: this context manager is already entered")
        mode = self.mode
        if mode in ("attached", "launched"):
            self._check_layout()
        if mode in ("launched", "group-of-one"):
            _context.initialize(self.backend or _context.default_backend(), self.timeout)
            self._owns_group = True
        self._entered = True
        self._mode = mode
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entered = False
        self._mode = None
        if self._owns_group:
            self._owns_group = False
            _context.finalize()

    # -------------------------------------------------------------------------------- run
    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(local_rank, *args, **kwargs)`` on every process (see the class)."""
        if not callable(fn):
            raise TypeError(f"Parallel.run: fn should be callable, got {type(fn).__name__}")
        if not self._entered:
            with self:
                return self.run(fn, *args, **kwargs)
        if self.mode == "spawn":
            self._spawn(fn, args, kwargs)
            return None
        try:
            return fn(_context.get_local_rank(), *args, **kwargs)
        except BaseException as exc:
            if _context.get_world_size() > 1:
                exc.add_note(f"ember.distributed.Parallel: raised on {_context.describe()}")
            raise

    def _spawn(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        assert self.nproc_per_node is not None
        try:
            pickle.dumps(fn)
        except Exception as exc:  # whatever stops it from travelling
            raise TypeError(
                f"Parallel.run: {fn!r} cannot be sent to spawned processes ({exc}): define the "
                "function at the top level of a module, or of the script under "
                "`if __name__ == '__main__':`"
            ) from exc
        backend = self.backend or _context.default_backend()
        if backend == "nccl":
            import torch

            if torch.cuda.device_count() < self.nproc_per_node:
                raise ValueError(
                    f"Parallel: nccl with nproc_per_node={self.nproc_per_node} needs as many "
                    f"GPUs, found {torch.cuda.device_count()}"
                )
        store = None
        port = self.master_port
        if self.node_rank == 0:
            store = _free_port_store(self.master_addr, self.master_port, self.timeout)
            port = store.port
        assert port is not None
        error_dir = tempfile.mkdtemp(prefix="ember-parallel-")
        spec = _Spawn(
            backend=backend,
            timeout=self.timeout,
            nproc_per_node=self.nproc_per_node,
            nnodes=self.nnodes,
            node_rank=self.node_rank,
            master_addr=self.master_addr,
            master_port=port,
            error_dir=error_dir,
        )
        context = None
        forwarding: dict[int, Any] = {}
        try:
            context = start_processes(  # type: ignore[no-untyped-call]
                _spawned,
                args=(spec, fn, args, kwargs),
                nprocs=self.nproc_per_node,
                join=False,
                start_method=self.start_method,
            )
            assert context is not None
            forwarding = _forward_signals(context.processes)
            while not context.join():
                pass
        except ProcessException as exc:
            processes = context.processes if context is not None else []
            raise _failure(exc, spec, [process.exitcode for process in processes]) from None
        finally:
            for signum, previous in forwarding.items():
                signal.signal(signum, signal.SIG_DFL if previous is None else previous)
            if context is not None:
                for process in context.processes:
                    if process.is_alive():
                        process.terminate()
                for process in context.processes:
                    process.join(timeout=10)
                    if process.is_alive():
                        process.kill()
                        process.join()
            shutil.rmtree(error_dir, ignore_errors=True)
            del store


def _forward_signals(processes: list[Any]) -> dict[int, Any]:
    """Send the SIGTERM this process gets to the spawned processes, as torchrun's agent does;
    return the handlers replaced. A scheduler (Kubernetes) signals only this process: killed at
    once, it left its workers running unaware (a :class:`~ember.handlers.Preemption` in them
    never wrote its checkpoint). Signals reach the main thread only: elsewhere, nothing."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def forward(signum: int, frame: Any) -> None:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    return {signal.SIGTERM: signal.signal(signal.SIGTERM, forward)}


def _failure(exc: ProcessException, spec: _Spawn, exit_codes: list[int | None]) -> BaseException:
    """The exception that tells what went wrong first among the spawned processes.

    One rule: a process that died without a Python exception (os._exit, a kill) is the cause,
    unless its exit is a consequence of another's failure (see :func:`_is_consequence`); the
    others can only have failed for losing it, even when their errors were recorded first.
    Without such a process, the earliest recorded exception is the cause.
    """
    records = _read_records(spec.error_dir)
    recorded = {record["local_rank"] for record in records}
    silent = [
        local_rank
        for local_rank, code in enumerate(exit_codes)
        if local_rank not in recorded
        and not _is_consequence(code, found_by_join=local_rank == exc.error_index)
    ]
    if silent:
        if exc.error_index not in silent:
            exc = _exited(silent[0], exit_codes[silent[0]] or 0)
        return _died_error(exc, spec)
    if records:
        return _raised_error(min(records, key=lambda record: record["time"]), spec)
    return _died_error(exc, spec)


def _read_records(error_dir: str) -> list[dict[str, Any]]:
    """The failures the spawned processes recorded (:func:`_record_failure`) and can be read."""
    records = []
    for path in Path(error_dir).glob("rank*.pkl"):
        try:
            records.append(pickle.loads(path.read_bytes()))
        except (OSError, pickle.UnpicklingError, EOFError):
            continue
    return records


def _is_consequence(code: int | None, found_by_join: bool) -> bool:
    """Whether an exit code says nothing about the cause: the process succeeded or was still
    running; it aborted (SIGABRT: how a rank that lost its peer often ends, in the collective
    library); or it got the SIGTERM with which torch's join stops the processes still running
    once it has found one that failed (the one it found may itself have got a SIGTERM)."""
    if code in (0, None, -signal.SIGABRT):
        return True
    return code == -signal.SIGTERM and not found_by_join


def _exited(local_rank: int, code: int) -> ProcessExitedException:
    """What torch's join would have raised had it found process ``local_rank`` first."""
    return ProcessExitedException(
        f"process {local_rank} terminated with exit code {code}",
        error_index=local_rank,
        error_pid=0,
        exit_code=code,
        signal_name=signal.Signals(-code).name if code < 0 else None,
    )


def _raised_error(record: dict[str, Any], spec: _Spawn) -> BaseException:
    """The recorded exception, raised again here with a note of where, or a WorkerError when it
    cannot be unpickled."""
    where = f"rank {record['rank']} of {spec.world_size} (local rank {record['local_rank']})"
    note = (
        f"ember.distributed.Parallel: raised on {where} in a spawned process; the "
        f"other processes were stopped. Traceback there:\n{record['traceback']}"
    )
    original = pickle.loads(record["exception"]) if record["exception"] else None
    if isinstance(original, BaseException):
        original.add_note(note)
        return original
    return WorkerError(
        f"{where} raised {record['type']}: {record['message']}\n{note}",
        record["rank"],
        record["local_rank"],
        1,
    )


def _died_error(exc: ProcessException, spec: _Spawn) -> WorkerError:
    """A WorkerError for the process ``exc`` names, which ended without a Python exception."""
    local_rank = exc.error_index
    rank = spec.rank_of(local_rank)
    exitcode = getattr(exc, "exit_code", None)
    signal_name = getattr(exc, "signal_name", None)
    how = f"was killed by signal {signal_name}" if signal_name else f"exited with code {exitcode}"
    return WorkerError(
        f"ember.distributed.Parallel: rank {rank} of {spec.world_size} (local rank "
        f"{local_rank}) {how} without raising a Python exception; the other processes were "
        f"stopped. {exc}",
        rank,
        local_rank,
        exitcode,
    )
