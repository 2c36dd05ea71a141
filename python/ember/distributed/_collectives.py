"""Collectives over torch.distributed's default group, identity operations in a single process.

Every function here is called by every rank, in the same order (as torch.distributed's own
collectives). Without a group they return their input (``all_gather``: a one-item list, or the
tensor), except in a process a launcher started as one of several (``WORLD_SIZE`` > 1), where
they raise :class:`~ember.distributed.GroupNotInitializedError`: there the input alone would be
a wrong answer.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import pickle
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist

from ember.distributed import _context
from ember.distributed._context import refuse_without_group

__all__ = ["all_gather", "all_reduce", "barrier", "broadcast", "one_rank_first", "one_rank_only"]

F = TypeVar("F", bound=Callable[..., Any])

_OPS = ("SUM", "PRODUCT", "MIN", "MAX", "AND", "OR")


@contextlib.contextmanager
def collective(name: str) -> Iterator[None]:
    """Add where and why to an error of a torch.distributed collective."""
    try:
        yield
    except (RuntimeError, dist.DistError) as exc:
        if isinstance(exc, _context.GroupNotInitializedError):
            raise
        exc.add_note(
            f"ember.distributed.{name} failed on {_context.describe()}: another rank crashed, "
            "stopped, or called a different collective (every rank must call the same "
            f"collectives in the same order); the group's timeout is {_context.group_timeout()}"
        )
        raise


def _check_op(op: Any) -> str:
    if not isinstance(op, str) or op.upper() not in _OPS:
        raise ValueError(f"all_reduce: op should be one of {list(_OPS)}, got {op!r}")
    return op.upper()


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real)


def _reduce_tensor(tensor: torch.Tensor, op: str) -> torch.Tensor:
    """Reduce a copy of ``tensor`` over the group; the result has the input's dtype and device,
    except that AND/OR give bool and SUM/PRODUCT of bools give int64."""
    target = _context.device()
    # Contiguous: the backends reduce the raw memory, and ranks may hold other layouts.
    work = tensor.detach().to(target, copy=True, memory_format=torch.contiguous_format)
    if op in ("AND", "OR"):
        work = (work != 0).to(torch.uint8)
        reduce_op = dist.ReduceOp.MIN if op == "AND" else dist.ReduceOp.MAX
        result_dtype = torch.bool
    else:
        reduce_op = getattr(dist.ReduceOp, op)
        result_dtype = torch.int64 if tensor.dtype == torch.bool else tensor.dtype
        if tensor.dtype == torch.bool:
            work = work.to(torch.int64)
        elif tensor.dtype in (torch.float16, torch.bfloat16):
            work = work.to(torch.float32)  # gloo reduces neither
    with collective("all_reduce"):
        dist.all_reduce(work, op=reduce_op)
    return work.to(device=tensor.device, dtype=result_dtype)


def all_reduce(tensor: Any, op: str = "SUM") -> Any:
    """Reduce a tensor or a number over all ranks: ``op`` is ``"SUM"`` (default),
    ``"PRODUCT"``, ``"MIN"``, ``"MAX"``, ``"AND"`` or ``"OR"`` (logical, giving bools).

    Returns a new tensor (same dtype and device; the input is not modified) or a Python number
    (an int stays an int). Without a group: the input itself.
    """
    op = _check_op(op)
    if not isinstance(tensor, torch.Tensor) and not _is_number(tensor):
        raise TypeError(
            f"all_reduce expects a torch.Tensor or a number, got {type(tensor).__name__}"
        )
    refuse_without_group("ember.distributed.all_reduce")
    if not _context.is_initialized():
        return tensor
    if isinstance(tensor, torch.Tensor):
        return _reduce_tensor(tensor, op)
    if isinstance(tensor, bool) or op in ("AND", "OR"):
        value = _reduce_tensor(torch.tensor(bool(tensor)), op).item()
        return bool(value) if op in ("AND", "OR") else int(value)
    if isinstance(tensor, numbers.Integral):
        return int(_reduce_tensor(torch.tensor(int(tensor), dtype=torch.int64), op).item())
    return float(_reduce_tensor(torch.tensor(float(tensor), dtype=torch.float64), op).item())


def _gather_objects(value: Any) -> list[Any]:
    gathered: list[Any] = [None] * dist.get_world_size()
    with collective("all_gather"):
        dist.all_gather_object(gathered, value)
    return gathered


def _gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's tensor along dimension 0 (first dimensions may differ)."""
    if tensor.ndim == 0:
        tensor = tensor.unsqueeze(0)
    shapes = _gather_objects((tuple(tensor.shape[1:]), str(tensor.dtype), int(tensor.shape[0])))
    trailing = {shape[:2] for shape in shapes}
    if len(trailing) > 1:
        shown = ", ".join(f"rank {r}: {s[1]} {(s[2], *s[0])}" for r, s in enumerate(shapes))
        raise ValueError(
            "all_gather: the ranks' tensors should have the same dtype and the same shape "
            f"after the first dimension, got {shown}"
        )
    lengths = [shape[2] for shape in shapes]
    longest = max(lengths)
    work = tensor.detach().to(_context.device())
    if work.dtype == torch.bool:
        work = work.to(torch.uint8)
    if work.shape[0] < longest:
        padding = work.new_zeros((longest - work.shape[0], *work.shape[1:]))
        work = torch.cat([work, padding])
    pieces = [torch.empty_like(work) for _ in lengths]
    with collective("all_gather"):
        dist.all_gather(pieces, work.contiguous())
    result = torch.cat([piece[:length] for piece, length in zip(pieces, lengths, strict=True)])
    return result.to(device=tensor.device, dtype=tensor.dtype)


def all_gather(tensor: Any) -> Any:
    """Every rank's value, in rank order.

    A tensor gives one tensor: the ranks' tensors concatenated along dimension 0 (0-d tensors
    become one element each; the first dimensions may differ between ranks, the rest may not).
    A number or a str gives a list with one item per rank. Without a group: the tensor itself
    (a 0-d one as shape ``(1,)``), or ``[value]``.
    """
    if not isinstance(tensor, (torch.Tensor, str)) and not _is_number(tensor):
        raise TypeError(
            f"all_gather expects a torch.Tensor, a number or a str, got {type(tensor).__name__}"
        )
    refuse_without_group("ember.distributed.all_gather")
    if not _context.is_initialized():
        if isinstance(tensor, torch.Tensor):
            return tensor.unsqueeze(0) if tensor.ndim == 0 else tensor
        return [tensor]
    if isinstance(tensor, torch.Tensor):
        return _gather_tensor(tensor)
    return _gather_objects(tensor)


def broadcast(tensor: Any, src: int = 0) -> Any:
    """The value of rank ``src`` on every rank: a tensor, a number, a str (or any picklable
    object). Other ranks may pass ``None``. A tensor arrives on this rank's device (on the
    device of the tensor it passed, if any). Without a group: the value itself.
    """
    if isinstance(src, bool) or not isinstance(src, int):
        raise TypeError(f"broadcast: src should be an int rank, got {src!r}")
    refuse_without_group("ember.distributed.broadcast")
    world_size = _context.get_world_size()
    if not 0 <= src < world_size:
        raise ValueError(f"broadcast: src should be a rank in [0, {world_size}), got {src}")
    if not _context.is_initialized():
        return tensor
    rank = dist.get_rank()
    header: list[Any] = [_broadcast_header(tensor, src) if rank == src else None]
    with collective("broadcast"):
        dist.broadcast_object_list(header, src=src, device=_context.device())
    kind, *rest = header[0]
    if kind == "error":  # src's value cannot be sent: every rank raises, none waits for it
        error_type, message = rest
        raise error_type(message)
    if kind == "object":
        return tensor if rank == src else pickle.loads(rest[0])
    shape, dtype = rest
    home = tensor.device if isinstance(tensor, torch.Tensor) else _context.device()
    if rank == src:
        # Contiguous: the receivers read the raw memory into tensors of the plain layout.
        work = tensor.detach().to(
            _context.device(), copy=True, memory_format=torch.contiguous_format
        )
    else:
        work = torch.empty(shape, dtype=dtype, device=_context.device())
    if work.dtype == torch.bool:
        work = work.to(torch.uint8)
    with collective("broadcast"):
        dist.broadcast(work, src=src)
    if rank == src:
        return tensor
    return work.to(device=home, dtype=dtype)


def _broadcast_header(value: Any, src: int) -> tuple[Any, ...]:
    """What rank ``src`` sends first: a tensor's shape and dtype, or the object pickled; or,
    where ``value`` cannot be sent, the error that every rank then raises. Raised on ``src``
    alone, it would leave the other ranks waiting for the header until the group's timeout."""
    if value is None:
        return ("error", ValueError, f"broadcast: rank {src} (src) should pass a value, got None")
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype)
    # Pickled here, where a failure can still be sent, rather than in broadcast_object_list,
    # where it would strand the other ranks; the bytes then travel as they are.
    try:
        return ("object", pickle.dumps(value))
    except Exception as error:  # noqa: BLE001 - any pickling failure is reported to every rank
        message = (
            f"broadcast: the value of rank {src} (src), a {type(value).__name__}, cannot be "
            f"pickled: {type(error).__name__}: {error}"
        )
        return ("error", TypeError, message)


def barrier() -> None:
    """Wait until every rank calls ``barrier()``. With gloo, a rank that does not arrive within
    the group's timeout is named in the error. Without a group: returns at once."""
    refuse_without_group("ember.distributed.barrier")
    if not _context.is_initialized():
        return
    with collective("barrier"):
        name = _context.backend()
        if name == "gloo":
            dist.monitored_barrier(timeout=_context.group_timeout(), wait_all_ranks=True)
        elif name == "nccl":
            dist.barrier(device_ids=[_context.get_local_rank()])
        else:
            dist.barrier()


def _check_rank(rank: Any) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank should be a non-negative int, got {rank!r}")
    return rank


def one_rank_only(rank: int = 0, with_barrier: bool = False) -> Callable[[F], F]:
    """Decorator: run the function on rank ``rank`` only; the other ranks return ``None``.

    With ``with_barrier=True`` every rank then waits for the others (so that, for example, a
    file written by rank 0 exists on every rank afterwards). Every rank must call the decorated
    function when ``with_barrier`` is set. In a single process it always runs.
    """
    _check_rank(rank)

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            refuse_without_group(f"one_rank_only({function.__qualname__})")
            world_size = _context.get_world_size()
            if rank >= world_size:
                raise ValueError(
                    f"one_rank_only: rank {rank} does not exist in a group of {world_size}"
                )
            result = function(*args, **kwargs) if _context.get_rank() == rank else None
            if with_barrier:
                barrier()
            return result

        return cast(F, wrapper)

    return decorate


@contextlib.contextmanager
def one_rank_first(rank: int = 0) -> Iterator[None]:
    """Context manager: rank ``rank`` runs the block first, the others once it is done (e.g.
    rank 0 downloads a data set, the others then read it). Every rank must enter it."""
    _check_rank(rank)
    refuse_without_group("one_rank_first")
    world_size = _context.get_world_size()
    if rank >= world_size:
        raise ValueError(f"one_rank_first: rank {rank} does not exist in a group of {world_size}")
    me = _context.get_rank()
    if me != rank:
        barrier()
    yield
    if me == rank:
        barrier()
