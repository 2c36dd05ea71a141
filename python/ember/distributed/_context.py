"""Where this process stands in torch.distributed's default group: ranks, sizes, initialize/finalize.

Nothing here has its own transport: the group is ``torch.distributed``'s default process group
(gloo on CPU, nccl on CUDA GPUs), rendezvous goes through a ``torch.distributed.TCPStore``.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DEFAULT_TIMEOUT",
    "GroupNotInitializedError",
    "available_backends",
    "backend",
    "device",
    "finalize",
    "get_local_rank",
    "get_nnodes",
    "get_node_rank",
    "get_nproc_per_node",
    "get_rank",
    "get_world_size",
    "initialize",
    "is_initialized",
    "refuse_without_group",
]

DEFAULT_TIMEOUT = timedelta(minutes=30)
"""How long a collective, or the rendezvous, waits for the other ranks (torch's own default)."""

# The variables torchrun sets for every worker (``Parallel`` sets the same ones in its children).
_LAUNCH_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
)


class GroupNotInitializedError(RuntimeError):
    """A collective (or a helper that needs the group) was called in a process that a launcher
    started as one of several (``WORLD_SIZE`` > 1 in its environment) before
    ``torch.distributed`` was initialized: without the group it would silently use this
    process's data alone."""


@dataclasses.dataclass(frozen=True)
class _Context:
    backend: str
    rank: int
    world_size: int
    local_rank: int
    nproc_per_node: int
    node_rank: int
    nnodes: int
    timeout: timedelta
    store: Any = None  # keeps a rank-0-hosted TCPStore server alive as long as the group


class _State:
    context: _Context | None = None
    generation = 0  # how many times this process initialized: keys of one rendezvous are unique


_state = _State()


# ------------------------------------------------------------------------------- environment
def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"ember.distributed: the environment variable {name}={raw!r} should be an integer"
        ) from None


def _launch_env() -> dict[str, int] | None:
    """The launcher's numbers (``RANK``, ``WORLD_SIZE`` and, when set, ``LOCAL_RANK``, ...), or
    ``None`` when this process was not started by a launcher (no ``RANK``/``WORLD_SIZE``)."""
    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        return None
    values = {name: _env_int(name) for name in _LAUNCH_VARIABLES}
    missing = [name for name in ("RANK", "WORLD_SIZE") if values[name] is None]
    if missing:
        raise ValueError(
            "ember.distributed: the environment sets only part of a launch: "
            f"{', '.join(missing)} missing (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, "
            "LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT)"
        )
    return {name: value for name, value in values.items() if value is not None}


def _launched_world_size() -> int | None:
    """``WORLD_SIZE`` from the environment when it is a valid integer, else ``None``."""
    try:
        return _env_int("WORLD_SIZE")
    except ValueError:
        return None


def refuse_without_group(what: str) -> None:
    """Raise :class:`GroupNotInitializedError` when ``what`` is called in a process started as
    one of several (``WORLD_SIZE`` > 1) while torch.distributed is not initialized.

    For code that decides by rank or needs every rank's data (handlers that write once,
    helpers that shard): without the group, every process would believe it is rank 0 of 1.
    """
    if not is_initialized():
        refuse_launched_process(what)


def refuse_launched_process(what: str) -> None:
    """:func:`refuse_without_group` for a caller that found torch.distributed uninitialized."""
    world_size = _launched_world_size()
    if world_size is None or world_size <= 1:
        return
    rank = os.environ.get("RANK", "?")
    raise GroupNotInitializedError(
        f"{what} was called in a process started as rank {rank} of {world_size} (RANK and "
        "WORLD_SIZE are set in its environment, e.g. by torchrun), but torch.distributed is not "
        "initialized: it would use this process's data alone. Call "
        "ember.distributed.initialize(backend) first, or run the code with "
        "`with ember.distributed.Parallel(backend) as parallel: parallel.run(fn)`."
    )


# ------------------------------------------------------------------------------------- queries
# Whether torch was built with torch.distributed: fixed for the process, so asked once (every
# metric's compute() asks is_initialized()).
_DISTRIBUTED_BUILT = dist.is_available()


def is_initialized() -> bool:
    """Whether torch.distributed's default process group exists in this process."""
    return _DISTRIBUTED_BUILT and dist.is_initialized()


def _current() -> _Context | None:
    """The group's description, from :func:`initialize` or, for a group made by other code
    (``torch.distributed.init_process_group``), from the launcher's environment."""
    if not is_initialized():
        _state.context = None
        return None
    rank, world_size = dist.get_rank(), dist.get_world_size()
    known = _state.context
    if known is not None and (known.rank, known.world_size) == (rank, world_size):
        return known
    env = _launch_env() or {}
    return _layout(str(dist.get_backend()), rank, world_size, env, DEFAULT_TIMEOUT)


def _layout(
    backend: str, rank: int, world_size: int, env: dict[str, int], timeout: timedelta
) -> _Context:
    """Where ``rank`` of ``world_size`` stands: the launcher's variables in ``env`` where it set
    them, else derived from ``LOCAL_WORLD_SIZE`` processes per node (all of them on one node
    without it)."""
    nproc = env.get("LOCAL_WORLD_SIZE", world_size)
    per_node = max(nproc, 1)  # a bad LOCAL_WORLD_SIZE must not divide by zero
    return _Context(
        backend=backend,
        rank=rank,
        world_size=world_size,
        local_rank=env.get("LOCAL_RANK", rank % per_node),
        nproc_per_node=nproc,
        node_rank=env.get("GROUP_RANK", rank // per_node),
        nnodes=env.get("GROUP_WORLD_SIZE", math.ceil(world_size / per_node)),
        timeout=timeout,
    )


def get_rank() -> int:
    """This process's rank in the group (0 without a group)."""
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    """The number of processes in the group (1 without a group)."""
    return dist.get_world_size() if is_initialized() else 1


def get_local_rank() -> int:
    """This process's index on its node (0 without a group)."""
    context = _current()
    return 0 if context is None else context.local_rank


def get_nproc_per_node() -> int:
    """Processes per node (1 without a group)."""
    context = _current()
    return 1 if context is None else context.nproc_per_node


def get_nnodes() -> int:
    """Number of nodes (1 without a group)."""
    context = _current()
    return 1 if context is None else context.nnodes


def get_node_rank() -> int:
    """This node's index (0 without a group)."""
    context = _current()
    return 0 if context is None else context.node_rank


def backend() -> str | None:
    """The group's backend (``"gloo"``, ``"nccl"``, ...), ``None`` without a group."""
    return str(dist.get_backend()) if is_initialized() else None


def device() -> torch.device:
    """Where this rank computes: ``cuda:<local rank>`` with nccl, the CPU with other backends;
    without a group, the current CUDA device when there is one, else the CPU."""
    name = backend()
    if name == "nccl":
        return torch.device(f"cuda:{get_local_rank()}")
    if name is None and torch.cuda.is_available():
        return torch.device(f"cuda:{torch.cuda.current_device()}")
    return torch.device("cpu")


def group_timeout() -> timedelta:
    context = _current()
    return DEFAULT_TIMEOUT if context is None else context.timeout


def describe() -> str:
    """``"rank R of W"`` (with the node and local rank when there are several nodes)."""
    context = _current()
    if context is None:
        return "a single process"
    where = f"rank {context.rank} of {context.world_size}"
    if context.nnodes > 1:
        where += f" (node {context.node_rank}, local rank {context.local_rank})"
    return where


def available_backends() -> tuple[str, ...]:
    """The torch.distributed backends this process can initialize: ``gloo`` (CPU), ``nccl``
    (CUDA GPUs present), ``mpi`` (torch built with MPI)."""
    if not dist.is_available():
        return ()
    names = []
    if dist.is_gloo_available():
        names.append("gloo")
    if dist.is_nccl_available() and torch.cuda.is_available():
        names.append("nccl")
    if dist.is_mpi_available():
        names.append("mpi")
    return tuple(names)


def default_backend() -> str:
    """``nccl`` when CUDA GPUs and nccl are present, else ``gloo``."""
    return "nccl" if "nccl" in available_backends() else "gloo"


# ------------------------------------------------------------------------- initialize/finalize
def as_timeout(timeout: timedelta | float) -> timedelta:
    if isinstance(timeout, bool) or not isinstance(timeout, (timedelta, int, float)):
        raise TypeError(
            f"timeout should be a datetime.timedelta or a number of seconds, got {timeout!r}"
        )
    if not isinstance(timeout, timedelta):
        timeout = timedelta(seconds=float(timeout))
    if timeout.total_seconds() <= 0:
        raise ValueError(f"timeout should be positive, got {timeout}")
    return timeout


def check_backend(name: Any) -> str:
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this build of torch")
    if not isinstance(name, str):
        raise TypeError(f"backend should be a str such as 'gloo' or 'nccl', got {name!r}")
    available = available_backends()
    if name not in available:
        hint = ""
        if name == "nccl":
            hint = " (nccl needs CUDA GPUs; use 'gloo' on CPUs)"
        raise ValueError(
            f"Unknown or unavailable backend {name!r}{hint}; available here: {list(available)}"
        )
    return name


def _store_error(what: str, exc: BaseException, address: str) -> RuntimeError:
    return RuntimeError(
        f"ember.distributed.initialize: {what} the rendezvous store at {address} failed: {exc}. "
        "Check that the process of rank 0 (node rank 0) is running and that MASTER_ADDR and "
        "MASTER_PORT are the same on every node."
    )


def _attempt_prefix() -> str:
    """Keys of this rendezvous in the store: torch elastic's agent keeps its store across
    restarts of the worker group, where the keys of the group that died (the ranks' gloo
    addresses...) would otherwise be read by the new one."""
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return f"ember/{restart}/{_state.generation}/"


def _meet(store: Any, context: _Context) -> None:
    """Check, through the store and before any collective, that every rank was started with
    the same world size, backend and layout, and that no rank number is taken twice.

    Without it, mismatched launches hang in gloo's connection setup or fail much later.
    """
    keys = dist.PrefixStore(f"{_attempt_prefix()}meet/", store)  # type: ignore[attr-defined]
    me = context.rank
    layout = f"{context.world_size}|{context.backend}|{context.nnodes}"
    claimed = keys.add(f"claim/{me}", 1)
    if claimed > 1:
        keys.set("verdict", f"rank {me} was claimed by {claimed} processes")
        raise RuntimeError(
            f"ember.distributed.initialize: rank {me} was claimed by more than one process: "
            "check RANK / --node-rank / nproc_per_node on every node"
        )
    keys.set(f"layout/{me}", layout)

    def describe_layout(text: str) -> str:
        world_size, backend_name, nnodes = text.split("|")
        return f"world size {world_size}, backend {backend_name}, {nnodes} node(s)"

    def wait_for(key: str) -> bool:
        try:
            keys.wait([key], context.timeout)
        except (RuntimeError, dist.DistError):
            return False
        return True

    mine = describe_layout(layout)
    if me == 0:
        verdict = "ok"
        for rank in range(1, context.world_size):
            if not wait_for(f"layout/{rank}"):
                verdict = (
                    f"rank {rank} did not join within {context.timeout} (a process is missing, "
                    "or was started with another world size)"
                )
                break
            theirs = keys.get(f"layout/{rank}").decode()
            if theirs != layout:
                verdict = f"rank 0 was started with {mine} but rank {rank} with " + (
                    describe_layout(theirs)
                )
                break
        keys.set("verdict", verdict)
    elif not wait_for("layout/0"):
        verdict = f"rank 0 did not join within {context.timeout}"
    else:
        theirs = keys.get("layout/0").decode()
        if theirs != layout:
            verdict = f"rank 0 was started with {describe_layout(theirs)} but rank {me} with {mine}"
        elif wait_for("verdict"):
            verdict = keys.get("verdict").decode()
        else:
            verdict = f"rank 0 gave no verdict within {context.timeout}"
    if verdict != "ok":
        raise RuntimeError(
            f"ember.distributed.initialize: the processes do not form one group: {verdict}. "
            "Every process must be started with the same world size (WORLD_SIZE, or torchrun's "
            "--nnodes x --nproc-per-node) and backend, and every rank must be started."
        )


def initialize(backend: str, timeout: timedelta | float = DEFAULT_TIMEOUT) -> None:
    """Create torch.distributed's default process group for this process.

    The rank, world size and rendezvous address come from the environment a launcher sets
    (``torchrun``, or :class:`Parallel` in its children): ``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``, ``GROUP_WORLD_SIZE``, ``MASTER_ADDR``
    and ``MASTER_PORT``. Without them, the process forms a group of one.

    Before the group is created, the ranks check through the rendezvous store that they were
    all started with the same world size, backend and number of nodes and that each rank
    number is taken once: a mismatch raises ``RuntimeError`` on every rank instead of hanging.
    ``timeout`` (a ``timedelta`` or seconds) bounds the rendezvous and every later collective.

    Raises ``RuntimeError`` when a group already exists (call :func:`finalize` first).
    """
    name = check_backend(backend)
    timeout = as_timeout(timeout)
    if is_initialized():
        raise RuntimeError(
            f"ember.distributed.initialize: torch.distributed is already initialized "
            f"(backend {dist.get_backend()}, world size {dist.get_world_size()}); call "
            "ember.distributed.finalize() first"
        )
    env = _launch_env()
    if env is None:
        env = {"RANK": 0, "WORLD_SIZE": 1}
    rank, world_size = env["RANK"], env["WORLD_SIZE"]
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"ember.distributed.initialize: RANK={rank} and WORLD_SIZE={world_size} do not "
            "describe a rank of a group (0 <= RANK < WORLD_SIZE)"
        )
    # Checked as the launcher gave it, a missing LOCAL_RANK as RANK (LOCAL_WORLD_SIZE without
    # LOCAL_RANK is refused past the first node, not guessed); once valid, it is context's.
    local_rank = env.get("LOCAL_RANK", rank)
    context = _layout(name, rank, world_size, env, timeout)
    nproc = context.nproc_per_node
    if not 0 <= local_rank < nproc or nproc > world_size:
        raise ValueError(
            f"ember.distributed.initialize: LOCAL_RANK={local_rank} and LOCAL_WORLD_SIZE={nproc} "
            f"do not fit a group of {world_size} (0 <= LOCAL_RANK < LOCAL_WORLD_SIZE <= WORLD_SIZE)"
        )
    if name == "nccl":
        torch.cuda.set_device(local_rank)

    _pin_no_group_in_torch_defaults()
    _state.generation += 1
    store: Any
    if world_size == 1 and "MASTER_PORT" not in os.environ:
        store = dist.HashStore()  # type: ignore[attr-defined]
    else:
        address = os.environ.get("MASTER_ADDR", "")
        port = _env_int("MASTER_PORT")
        if not address or port is None:
            raise ValueError(
                "ember.distributed.initialize: a group of several processes needs MASTER_ADDR "
                "and MASTER_PORT in the environment (torchrun and Parallel set them)"
            )
        if not 0 < port < 65536:
            raise ValueError(f"ember.distributed.initialize: MASTER_PORT={port} is not a port")
        # As torch's env:// rendezvous: under torchrun (and Parallel) the launcher hosts the
        # store; otherwise rank 0 does.
        hosted = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        try:
            store = dist.TCPStore(  # type: ignore[attr-defined]
                address,
                port,
                world_size,
                is_master=rank == 0 and not hosted,
                timeout=timeout,
                wait_for_workers=False,
                multi_tenant=True,
            )
        except (RuntimeError, dist.DistError) as exc:
            raise _store_error("reaching", exc, f"{address}:{port}") from exc
        _meet(store, context)
        store = dist.PrefixStore(f"{_attempt_prefix()}group/", store)  # type: ignore[attr-defined]
    try:
        dist.init_process_group(
            name, store=store, rank=rank, world_size=world_size, timeout=timeout
        )
    except (RuntimeError, dist.DistError) as exc:
        exc.add_note(
            f"ember.distributed.initialize: creating the {name} group failed on rank {rank} of "
            f"{world_size} (timeout {timeout})"
        )
        raise
    _state.context = dataclasses.replace(context, store=store)
    _quiet_other_ranks(rank)


def _pin_no_group_in_torch_defaults() -> None:
    """Import ``torch.distributed.nn.functional`` while no group exists.

    Its functions take ``group=group.WORLD`` as a default argument, evaluated on import: imported
    while a group exists (DDP and torch._dynamo import it), they hold that group for the life of
    the process. ``destroy_process_group`` then cannot free it, its gloo worker threads outlive
    :func:`finalize`, and one still dropping a finished collective while the interpreter shuts
    down needs the GIL, which a finalizing interpreter refuses: the process aborts with
    "terminate called without an active exception". Imported first, the defaults are ``None``,
    which torch reads as "the default group" when the functions run.
    """
    import torch.distributed.nn.functional  # noqa: F401


def _quiet_other_ranks(rank: int) -> None:
    """ember's own INFO and DEBUG messages (run start, epoch times) come from rank 0 only, as
    its ProgressBar does; warnings and errors still show on every rank. Loggers given a level
    of their own keep it."""
    if rank != 0:
        logging.getLogger("ember").setLevel(logging.WARNING)


def finalize() -> None:
    """Destroy the default process group, if any (safe to call without one).

    Garbage is collected first: a DDP model in a reference cycle (with an engine's handlers, say)
    holds the group through its reducer, and the group's worker threads stop only when the last
    holder lets go. Stopped here, they cannot outlive the interpreter (see
    :func:`_pin_no_group_in_torch_defaults`).
    """
    if is_initialized():
        gc.collect()
        dist.destroy_process_group()
    _state.context = None
