"""``auto_dataloader``, ``auto_model``, ``auto_optim`` and the samplers they use."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from ember.distributed import _context
from ember.distributed._context import refuse_without_group

__all__ = [
    "DistributedProxySampler",
    "UnpaddedDistributedSampler",
    "auto_dataloader",
    "auto_model",
    "auto_optim",
]

logger = logging.getLogger("ember.distributed")


def _group_place(who: str, num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """A sampler's ``num_replicas`` and ``rank``: the group's where not given. Unlike torch's
    ``DistributedSampler`` this works without a group (rank 0 of 1), except in a process
    launched as one of several, where it refuses."""
    if num_replicas is None:
        refuse_without_group(who)
        num_replicas = _context.get_world_size()
    if rank is None:
        rank = _context.get_rank()
    return num_replicas, rank


class UnpaddedDistributedSampler(DistributedSampler):  # type: ignore[type-arg]
    """A ``DistributedSampler`` that shards without padding: rank ``r`` of ``W`` takes the
    samples at positions ``r, r + W, r + 2W, ...`` of the (optionally shuffled) order, so
    every sample is seen exactly once over the ranks, and ranks may differ by one sample.

    ``torch.utils.data.DistributedSampler`` instead repeats samples until every rank has as many
    (``drop_last=False``) or drops the tail (``drop_last=True``): either way, a metric summed
    over the ranks is no longer the metric of the data set when its size does not divide by the
    world size. This sampler is for evaluation; training with DDP needs every rank to run as
    many iterations (use ``DistributedSampler`` there).
    """

    def __init__(
        self,
        dataset: Any,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        num_replicas, rank = _group_place("UnpaddedDistributedSampler", num_replicas, rank)
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        size = len(dataset)
        self.num_samples = len(range(self.rank, size, self.num_replicas))
        self.total_size = size

    def __iter__(self) -> Iterator[int]:
        size = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(size, generator=generator).tolist()
        else:
            order = list(range(size))
        return iter(order[self.rank : size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


class DistributedProxySampler(DistributedSampler):  # type: ignore[type-arg]
    """Shards the order of another sampler: every epoch, the wrapped sampler's order is made
    once per rank, with torch's global random generator seeded by ``seed + epoch`` (and then
    restored), so that a sampler drawing from it gives the same order on every rank; the order
    is padded by repeating its start to a multiple of the world size (as ``DistributedSampler``)
    and rank ``r`` takes positions ``r, r + W, ...``. A sampler with its own generator must
    seed it identically on every rank.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(sampler, Sampler):
            raise TypeError(f"DistributedProxySampler: expected a Sampler, got {type(sampler)}")
        if isinstance(sampler, DistributedSampler):
            raise TypeError("DistributedProxySampler: the sampler is already distributed")
        if not hasattr(sampler, "__len__"):
            raise TypeError("DistributedProxySampler: the sampler should have a length")
        num_replicas, rank = _group_place("DistributedProxySampler", num_replicas, rank)
        super().__init__(
            sampler,  # type: ignore[arg-type]  # only its length is used
            num_replicas=num_replicas,
            rank=rank,
            shuffle=False,
            seed=seed,
        )
        self.sampler = sampler

    def __iter__(self) -> Iterator[int]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + self.epoch)
            order = list(self.sampler)
        if len(order) < self.total_size and order:
            repeats = math.ceil((self.total_size - len(order)) / len(order))
            order += (order * repeats)[: self.total_size - len(order)]
        return iter(order[self.rank : self.total_size : self.num_replicas])


def auto_dataloader(dataset: Dataset[Any], **kwargs: Any) -> DataLoader[Any]:
    """A ``DataLoader`` of ``dataset`` for this process: ``DataLoader(dataset, **kwargs)`` in a
    single process; with a group of ``W`` > 1 processes:

    * ``batch_size`` is the *global* batch: each rank loads ``batch_size // W`` (a warning
      when it does not divide); ``num_workers`` is split between the processes of a node;
    * ``shuffle=True`` (training): a ``DistributedSampler`` that shuffles (seeded alike on every
      rank; the engine calls its ``set_epoch`` so each epoch differs) and pads so that every rank
      runs as many iterations, which DDP needs;
    * ``shuffle=False``, the default (evaluation): an :class:`UnpaddedDistributedSampler`: no
      sample is repeated or dropped, so metrics summed over the ranks equal the single-process
      value even when the data set's size does not divide by ``W``;
    * ``sampler=`` a ``DistributedSampler`` is used as it is; another sampler is wrapped in a
      :class:`DistributedProxySampler`; a ``batch_sampler`` is kept (with a warning: it must
      shard by itself), and so is an ``IterableDataset`` (it must yield each rank's share).

    ``pin_memory`` defaults to ``True`` when the device is a GPU.
    """
    if "dataset" in kwargs:
        raise TypeError("auto_dataloader: pass the dataset as the first argument")
    refuse_without_group("ember.distributed.auto_dataloader")
    world_size = _context.get_world_size()
    rank = _context.get_rank()
    if world_size > 1:
        batch_size = kwargs.get("batch_size")
        if isinstance(batch_size, int) and not isinstance(batch_size, bool):
            if batch_size < 1:  # as DataLoader refuses it in one process, not rounded to 1
                raise ValueError(
                    f"auto_dataloader: batch_size should be a positive integer, got {batch_size}"
                )
            if batch_size % world_size:
                warnings.warn(
                    f"auto_dataloader: batch_size={batch_size} (the global batch) does not "
                    f"divide by the world size {world_size}: each rank loads "
                    f"{max(batch_size // world_size, 1)}",
                    UserWarning,
                    stacklevel=2,
                )
            kwargs["batch_size"] = max(batch_size // world_size, 1)
        nproc = _context.get_nproc_per_node()
        workers = kwargs.get("num_workers")
        if isinstance(workers, int) and workers >= nproc:
            kwargs["num_workers"] = (workers + nproc - 1) // nproc
        if "batch_sampler" in kwargs:
            warnings.warn(
                "auto_dataloader: a batch_sampler is used as it is: make sure it gives each "
                "rank its own share of the data",
                UserWarning,
                stacklevel=2,
            )
        elif isinstance(dataset, IterableDataset):
            logger.info(
                "auto_dataloader: an IterableDataset gets no sampler: it must yield each "
                "rank's own share"
            )
        else:
            shuffle = bool(kwargs.pop("shuffle", False))
            kwargs["sampler"] = _shard(dataset, kwargs.get("sampler"), shuffle, world_size, rank)
    kwargs.setdefault("pin_memory", _context.device().type == "cuda")
    return DataLoader(dataset, **kwargs)


def _shard(
    dataset: Dataset[Any], sampler: Any, shuffle: bool, world_size: int, rank: int
) -> Sampler[Any]:
    """The sampler that gives rank ``rank`` of ``world_size`` its share (see auto_dataloader)."""
    if sampler is None:
        if shuffle:
            return DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True)
        size = len(dataset)  # type: ignore[arg-type]
        if size < world_size:
            # Every rank knows both numbers and raises here: a rank without data would fail at
            # its run (empty data), leaving the others waiting in the metrics' collectives.
            raise ValueError(
                f"auto_dataloader: the dataset has {size} sample(s), fewer than the "
                f"{world_size} ranks, and unpadded shards would leave a rank without data; "
                "run this evaluation on fewer ranks, or on rank 0 alone"
            )
        return UnpaddedDistributedSampler(dataset, num_replicas=world_size, rank=rank)
    if isinstance(sampler, DistributedSampler):
        if (sampler.num_replicas, sampler.rank) != (world_size, rank):
            raise ValueError(
                "auto_dataloader: the given DistributedSampler is for rank "
                f"{sampler.rank} of {sampler.num_replicas}, this process is rank "
                f"{rank} of {world_size}"
            )
        return sampler
    if shuffle:
        raise ValueError("auto_dataloader: sampler option is mutually exclusive with shuffle")
    return DistributedProxySampler(sampler, num_replicas=world_size, rank=rank)


def auto_model(model: torch.nn.Module, sync_bn: bool = False, **kwargs: Any) -> torch.nn.Module:
    """``model`` on :func:`device`, wrapped in ``DistributedDataParallel`` when the group has
    more than one process (``kwargs`` go to DDP; ``sync_bn=True`` converts batch norms to
    ``SyncBatchNorm`` first). DDP averages the gradients over the ranks in ``backward()``, and
    starts every rank from rank 0's weights. In a single process: the model, moved.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"auto_model: expected a torch.nn.Module, got {type(model).__name__}")
    refuse_without_group("ember.distributed.auto_model")
    target = _context.device()
    model = model.to(target)
    if _context.get_world_size() > 1 and not isinstance(
        model, torch.nn.parallel.DistributedDataParallel
    ):
        if sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
        if target.type == "cuda":
            kwargs.setdefault("device_ids", [target.index])
        model = torch.nn.parallel.DistributedDataParallel(model, **kwargs)
    return model


def auto_optim(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer, as it is: with torch.distributed's DDP the gradients are already averaged
    over the ranks when it steps (kept for code written against ``ignite.distributed``)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"auto_optim: expected a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    return optimizer
