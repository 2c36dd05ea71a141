"""``prefetch(data, device, depth)``: the next ``depth`` batches are on their way to the device
while the step works on the current one.

    trainer.run(prefetch(loader, "cuda", depth=2), max_epochs=10)

On a CUDA device each batch read ahead is pinned (unless the loader pinned it already) and
copied with ``non_blocking=True`` on a side stream, and an event is recorded after its copies.
When the batch is handed to the step, the step's stream waits on that event (so the step never
sees a half-copied batch) and every tensor is ``record_stream``-ed on the step's stream (so the
caching allocator does not give its memory to another tensor while the step still uses it).
On any other device the batch is moved with ``.to(device)`` when it is read ahead: the same
order and semantics, without overlap.

No thread is involved: reading ahead happens in ``next()``, on the caller's thread, and the copy
itself is what runs in the background (on the GPU's copy engine). So a ``break``, an engine's
``terminate()`` or an exception leaves nothing running, and the source is read in exactly the
order and on the thread a plain loop would read it.
"""

from __future__ import annotations

import copy
import numbers
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from typing import Any

import torch

__all__ = ["Prefetcher", "prefetch"]


def map_tensors(value: Any, function: Callable[[torch.Tensor], Any]) -> Any:
    """``value`` with ``function`` applied to every tensor in its tuples (named ones included),
    lists and mappings, each rebuilt as its own type; anything else is passed through as it
    is."""
    if isinstance(value, torch.Tensor):
        return function(value)
    if isinstance(value, Mapping):
        mapped = {key: map_tensors(item, function) for key, item in value.items()}
        if type(value) is dict:
            return mapped
        if not isinstance(value, dict):  # another Mapping: built from a dict, as ignite does
            return type(value)(mapped)  # type: ignore[call-arg]
        subclass_copy = copy.copy(value)  # keeps an OrderedDict's type, a defaultdict's factory
        subclass_copy.update(mapped)
        return subclass_copy
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*(map_tensors(item, function) for item in value))
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(item, function) for item in value)
    return value


def tensors_of(value: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    map_tensors(value, found.append)
    return found


class DirectTransfer:
    """Moves a batch with ``.to(device)`` when it is read ahead (CPU and non-CUDA devices)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def start(self, batch: Any) -> Any:
        return map_tensors(batch, lambda tensor: tensor.to(self.device))

    def finish(self, started: Any) -> Any:
        return started


class CudaTransfer:
    """Copies a batch on a side stream; hands it over to the consumer's stream when taken."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]

    def _copy(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type == "cpu" and not tensor.is_pinned():
            tensor = tensor.pin_memory()  # a pageable source would make the copy synchronous
        return tensor.to(self.device, non_blocking=True)

    def start(self, batch: Any) -> tuple[Any, torch.cuda.Event]:
        with torch.cuda.stream(self.stream):
            moved = map_tensors(batch, self._copy)
            copied = torch.cuda.Event()  # type: ignore[no-untyped-call]
            copied.record(self.stream)
        return moved, copied

    def finish(self, started: tuple[Any, torch.cuda.Event]) -> Any:
        moved, copied = started
        consumer = torch.cuda.current_stream(self.device)
        consumer.wait_event(copied)  # the consumer's next kernels run after the copies
        for tensor in tensors_of(moved):
            if tensor.device.type == "cuda":
                # Allocated on the side stream: without this, its memory could be reused by the
                # side stream's next copy while the consumer's kernels still read it.
                tensor.record_stream(consumer)
        return moved


class _Failure:
    """An exception the source raised while being read ahead, raised again at its position."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _returns_itself(self: Any) -> Any:
    return self


def _may_restart(iterator: Iterator[Any]) -> bool:
    """Whether ``iter(iterator)``, which returned the iterator itself, may have restarted it:
    its class's ``__iter__`` is Python code that does more than return the object (a
    hand-written loader that rewinds, say). Generators, built-in iterators and an ``__iter__``
    that only returns ``self`` continue their pass."""
    code = getattr(getattr(type(iterator), "__iter__", None), "__code__", None)
    return code is not None and code.co_code != _returns_itself.__code__.co_code


class _NotStarted:
    """A batch read ahead whose copy a Ctrl-C interrupted: copied when it is handed out."""

    __slots__ = ("batch",)

    def __init__(self, batch: Any) -> None:
        self.batch = batch


class PrefetchIterator:
    """One pass over the source, keeping up to ``depth`` batches in flight."""

    __slots__ = ("_depth", "_exhausted", "_pending", "_source", "_transfer")

    def __init__(self, source: Iterator[Any], transfer: Any, depth: int) -> None:
        self._source = source
        self._transfer = transfer
        self._depth = depth
        self._pending: deque[Any] = deque()
        self._exhausted = False

    def __iter__(self) -> PrefetchIterator:
        return self

    def __next__(self) -> Any:
        if not self._pending:
            self._fill()  # after a failure was raised, or the source was asked again
            if not self._pending:
                raise StopIteration
        entry = self._pending.popleft()
        if isinstance(entry, _Failure):
            raise entry.error
        if isinstance(entry, _NotStarted):
            try:
                entry = self._transfer.start(entry.batch)
            except BaseException as error:
                if not isinstance(error, Exception):  # a Ctrl-C again: still to be copied
                    self._pending.appendleft(entry)
                raise  # an error of the copy, at the batch's position as if read ahead
        try:
            self._fill()  # start the next copies before this batch's step runs
        except BaseException:
            # A KeyboardInterrupt (not kept as a _Failure: it must not wait for its position)
            # while reading further: this batch was taken from the source; keep it for later.
            self._pending.appendleft(entry)
            raise
        return self._transfer.finish(entry)

    def read_ahead(self) -> PrefetchIterator:
        """Start reading ahead, as ``iter()`` of a ``DataLoader`` starts its workers: the first
        copies overlap with whatever runs before the first ``next()``, and a shuffling loader
        draws its order right when ``iter()`` is called (a DeterministicEngine seeds just
        before)."""
        self._fill()
        return self

    def read_again(self) -> None:
        """Let an exhausted source be asked again (what a new ``iter()`` of an iterator does)."""
        self._exhausted = False

    def _fill(self) -> None:
        pending = self._pending
        while len(pending) < self._depth and not self._exhausted:
            if pending and isinstance(pending[-1], _Failure):
                return  # read no further than a failure the consumer has not seen yet
            try:
                batch = next(self._source)
            except StopIteration:
                self._exhausted = True
                continue
            except Exception as error:  # noqa: BLE001 (raised when the consumer reaches it)
                pending.append(_Failure(error))
                continue
            try:
                pending.append(self._transfer.start(batch))
            except Exception as error:  # noqa: BLE001 (raised when the consumer reaches it)
                pending.append(_Failure(error))
            except BaseException:
                # A Ctrl-C during the copy: the batch is taken from the source; keep it, to be
                # copied when its turn comes.
                pending.append(_NotStarted(batch))
                raise


class Prefetcher:
    """An iterable over ``data`` whose batches arrive already moved to ``device``.

    Built by :func:`prefetch`. Each ``iter()`` starts a new pass over ``data`` (so an engine
    restarts it each epoch, as it restarts a ``DataLoader``), except when ``data`` is itself an
    iterator: then, as with the iterator itself, every ``iter()`` continues the one pass, batches
    already read ahead included. An iterator whose class's ``__iter__`` runs code of its own
    (one that rewinds itself and returns ``self``) is taken to start a new pass: the batches
    read ahead from the previous one are dropped. ``len()`` is ``len(data)``; ``sampler`` and ``batch_sampler``
    are those of ``data`` (so an engine still calls a ``DistributedSampler``'s ``set_epoch``).
    """

    def __init__(self, data: Iterable[Any], device: str | torch.device, depth: int = 2) -> None:
        if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
            raise TypeError(
                f"Argument data should be an iterable of batches, got {type(data).__name__}"
            )
        if not isinstance(depth, numbers.Integral) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"Argument depth should be an integer >= 1, got {depth!r}")
        try:
            self.device: torch.device = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"Argument device is not a torch device: {device!r}") from error
        self.data: Iterable[Any] = data
        self.depth: int = int(depth)
        self._transfer: DirectTransfer | CudaTransfer | None = None
        self._one_pass: PrefetchIterator | None = None

    def _get_transfer(self) -> DirectTransfer | CudaTransfer:
        # Made at the first iter(), so that building a Prefetcher does not initialize CUDA.
        if self._transfer is None:
            if self.device.type == "cuda":
                self._transfer = CudaTransfer(self.device)
            else:
                self._transfer = DirectTransfer(self.device)
        return self._transfer

    def __iter__(self) -> PrefetchIterator:
        source = iter(self.data)
        if source is not self.data:
            return PrefetchIterator(source, self._get_transfer(), self.depth).read_ahead()
        if self._one_pass is None or _may_restart(self.data):
            # Kept before it reads ahead: what it has read when a Ctrl-C stops it stays.
            self._one_pass = PrefetchIterator(source, self._get_transfer(), self.depth)
            return self._one_pass.read_ahead()
        self._one_pass.read_again()
        return self._one_pass

    def __len__(self) -> int:
        if not isinstance(self.data, Sized):
            raise TypeError(f"the data of this prefetch ({type(self.data).__name__}) has no len()")
        return len(self.data)

    @property
    def sampler(self) -> Any:
        return getattr(self.data, "sampler", None)

    @property
    def batch_sampler(self) -> Any:
        return getattr(self.data, "batch_sampler", None)

    def __repr__(self) -> str:
        return f"prefetch({self.data!r}, {str(self.device)!r}, depth={self.depth})"


def prefetch(data: Iterable[Any], device: str | torch.device, depth: int = 2) -> Prefetcher:
    """Batches of ``data`` moved to ``device``, the next ``depth`` ones already on their way.

    Tensors inside tuples (named ones too), lists and mappings are moved; anything else in a batch
    is passed through. The batches come in the order of ``data``, each exactly once per pass; an
    exception ``data`` raises is raised at the position it was raised at, not when read ahead.

    Args:
        data: an iterable of batches (a ``DataLoader``, a list, a generator...). Use a
            ``DataLoader`` with ``pin_memory=True`` for CUDA: its batches then need no pinning
            here, on the training thread.
        device: where the batches go, e.g. ``"cuda"``, ``"cuda:1"``, ``"cpu"``.
        depth: how many batches are read ahead of the one being used, at least 1.

    Example::

        trainer = create_supervised_trainer(model, optimizer, loss_fn, device="cuda")
        trainer.run(prefetch(loader, "cuda", depth=2), max_epochs=10)
    """
    return Prefetcher(data, device, depth)
