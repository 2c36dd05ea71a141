"""Distributed training on torch.distributed: ``import ember.distributed as edist``.

The same script runs in a single process, in processes spawned by :class:`Parallel`, or in
processes started by ``torchrun`` (one node or several). Everything goes through
``torch.distributed``'s default process group (gloo on CPUs, nccl on CUDA GPUs).

* Ranks: :func:`get_rank`, :func:`get_local_rank`, :func:`get_world_size`,
  :func:`get_node_rank`, :func:`get_nnodes`, :func:`get_nproc_per_node`, :func:`backend`,
  :func:`device`; without a group: rank 0 of 1 on one node.
* Collectives: :func:`barrier`, :func:`all_reduce`, :func:`all_gather`, :func:`broadcast`;
  without a group they return their input, except in a process a launcher started as one of
  several (``WORLD_SIZE`` > 1 in its environment): there they raise
  :class:`GroupNotInitializedError` rather than return this process's share as the answer.
* :func:`one_rank_only` (e.g. write a checkpoint once), :func:`one_rank_first`.
* :func:`initialize`/:func:`finalize`, :class:`Parallel`.
* :func:`auto_dataloader`, :func:`auto_model`, :func:`auto_optim`.

``ember.metrics`` sum their accumulators over the ranks in ``compute()``.
"""

from __future__ import annotations

from ember.distributed._auto import (
    DistributedProxySampler,
    UnpaddedDistributedSampler,
    auto_dataloader,
    auto_model,
    auto_optim,
)
from ember.distributed._collectives import (
    all_gather,
    all_reduce,
    barrier,
    broadcast,
    one_rank_first,
    one_rank_only,
)
from ember.distributed._context import (
    DEFAULT_TIMEOUT,
    GroupNotInitializedError,
    available_backends,
    backend,
    device,
    finalize,
    get_local_rank,
    get_nnodes,
    get_node_rank,
    get_nproc_per_node,
    get_rank,
    get_world_size,
    initialize,
    is_initialized,
    refuse_without_group,
)
from ember.distributed._launcher import Parallel, WorkerError

__all__ = [
    "DEFAULT_TIMEOUT",
    "DistributedProxySampler",
    "GroupNotInitializedError",
    "Parallel",
    "UnpaddedDistributedSampler",
    "WorkerError",
    "all_gather",
    "all_reduce",
    "auto_dataloader",
    "auto_model",
    "auto_optim",
    "available_backends",
    "backend",
    "barrier",
    "broadcast",
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
    "one_rank_first",
    "one_rank_only",
    "refuse_without_group",
]
