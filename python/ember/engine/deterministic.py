"""``DeterministicEngine``: runs that resume exactly, from any iteration, even mid-epoch.

What the rest of the run sees after a resume is a function of the checkpoint alone:

- Each pass over the data (each ``iter(dataloader)``) starts by seeding ``random``, NumPy and
  torch with ``state.seed + pass``; a torch ``DataLoader`` then draws its whole order of batch
  indices at once. The position in the data, ``(pass, batches drawn in it)``, is part of
  ``state_dict()``.
- ``state_dict()`` also holds the world size of the run (the data position of a run sharded over
  ``W`` processes means nothing to a run over another number: loading it there raises) and the
  random states of ``random``, NumPy and torch (CPU and CUDA)
  at the time it is taken. A resumed run rebuilds the pass, skips the batches already drawn
  (for a ``DataLoader`` without loading them), and only then restores those random states, so
  the order of the epoch is drawn as in the run that was never stopped (ignite's
  DeterministicEngine restores them first, and a shuffling DataLoader then sees another order).

What user code must do: draw all randomness from the global generators of ``random``, NumPy
and torch (or from generators it checkpoints itself), run ``DataLoader`` workers without
randomness of their own or with ``num_workers=0``, and save the engine's ``state_dict()`` with
the model and optimizer (``Checkpoint`` does, with the trainer in ``to_save``).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast

import torch

from ember.distributed import get_world_size
from ember.engine._state_dict import check_state_dict
from ember.engine.engine import Engine, _is_integer
from ember.engine.events import Events

__all__ = ["DeterministicEngine", "get_rng_states", "manual_seed", "set_rng_states"]

try:
    import numpy as np
except ImportError:  # numpy is optional
    np = None  # type: ignore[assignment]


def manual_seed(seed: int) -> None:
    """Seed ``random``, NumPy (when installed) and torch, CUDA included."""
    random.seed(seed)
    torch.manual_seed(seed)
    if np is not None:
        np.random.seed(seed % 2**32)


def get_rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"random": random.getstate(), "torch": torch.get_rng_state()}
    if np is not None:
        # Plain Python values, not an ndarray: checkpoints load with torch.load(weights_only=True).
        name, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
        states["numpy"] = (name, np.asarray(keys).tolist(), position, has_gauss, cached_gaussian)
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    random.setstate(states["random"])
    torch.set_rng_state(states["torch"])
    if np is not None and "numpy" in states:
        name, keys, position, has_gauss, cached_gaussian = states["numpy"]
        keys = np.asarray(keys, dtype=np.uint32)
        np.random.set_state((name, keys, position, has_gauss, cached_gaussian))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class _BatchList(torch.utils.data.Sampler):  # type: ignore[type-arg]
    """A batch sampler over batches of indices drawn in advance."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _dataloader_from(
    loader: torch.utils.data.DataLoader[Any], seed: int, skip: int
) -> Iterator[Any]:
    generator = getattr(loader.sampler, "generator", None)
    if generator is not None:
        generator.manual_seed(seed)
    batches = [list(batch) for batch in loader.batch_sampler]  # type: ignore[union-attr]
    rebuilt = torch.utils.data.DataLoader(
        loader.dataset,
        batch_sampler=_BatchList(batches[skip:]),
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
    )
    return iter(rebuilt)


class _Counted:
    """Counts the batches drawn from an iterator, for the data position in ``state_dict()``."""

    __slots__ = ("drawn", "iterator")

    def __init__(self, iterator: Iterator[Any], drawn: int) -> None:
        self.iterator = iterator
        self.drawn = drawn

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> Any:
        batch = next(self.iterator)
        self.drawn += 1
        return batch


class DeterministicEngine(Engine):
    """An :class:`Engine` whose data order and random draws depend only on the seed and the
    position in the run, so that a run resumed from a checkpoint taken at any iteration sees
    exactly the batches, random draws and final weights of a run that was never stopped.

    ``state.seed`` is drawn from torch's generator at the first ``STARTED`` (call
    ``torch.manual_seed`` before to fix it) and saved in ``state_dict()``.
    """

    def __init__(
        self, process_function: Callable[[Engine, Any], Any], *, backend: str | None = None
    ) -> None:
        super().__init__(process_function, backend=backend)
        self._data_pass = 0
        self._pass_iterator: _Counted | None = None
        self._pending_position: tuple[int, int] | None = None
        self._pending_rng_states: Mapping[str, Any] | None = None
        self.add_event_handler(Events.STARTED, DeterministicEngine._draw_seed)

    def _draw_seed(self) -> None:
        if self.state.seed is None:
            self.state.seed = int(torch.randint(0, 2**31 - 1, (1,)).item())

    def _data_position(self) -> tuple[int, int]:
        # Kept by the engine rather than read from _dataloader_iter, which a finished or
        # terminated run drops.
        return self._data_pass, 0 if self._pass_iterator is None else self._pass_iterator.drawn

    def state_dict(self) -> Any:
        state_dict = super().state_dict()
        state_dict["seed"] = self.state.seed
        state_dict["data_position"] = self._data_position()
        state_dict["world_size"] = get_world_size()
        state_dict["rng_states"] = get_rng_states()
        return state_dict

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        own = {"seed", "data_position", "rng_states", "world_size"}
        check_state_dict(state_dict)
        self._check_own_keys(state_dict)
        super().load_state_dict({k: v for k, v in state_dict.items() if k not in own})
        self.state.seed = state_dict.get("seed")
        position = state_dict.get("data_position")
        if position is not None:
            self._pending_position = (position[0], position[1])
        self._pending_rng_states = state_dict.get("rng_states")
        self._dataloader_iter = None

    @staticmethod
    def _check_own_keys(state_dict: Mapping[str, Any]) -> None:
        """The keys only a DeterministicEngine has, checked before anything is loaded (a bad one
        would otherwise fail inside the next run, or leave the state half loaded)."""
        saved_world_size = state_dict.get("world_size")
        if saved_world_size is not None and not _is_integer(saved_world_size):
            raise ValueError(f"state_dict['world_size'] should be an int, got {saved_world_size!r}")
        if saved_world_size is not None and saved_world_size != get_world_size():
            raise ValueError(
                f"state_dict was taken in a run of {saved_world_size} process(es) (world_size), "
                f"this run has {get_world_size()}: its data position and random states do not "
                "apply here; resume with the same world size"
            )
        seed = state_dict.get("seed")
        # An int itself: the seed goes to random.seed, which refuses NumPy's integers.
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"state_dict['seed'] should be an int or None, got {seed!r}")
        position = state_dict.get("data_position")
        if position is not None and not (
            isinstance(position, (tuple, list))
            and len(position) == 2
            and all(type(count) is int and count >= 0 for count in position)
        ):
            raise ValueError(
                "state_dict['data_position'] should be (data pass, batches drawn), two ints >= 0, "
                f"got {position!r}"
            )
        states = state_dict.get("rng_states")
        if states is not None and not (
            isinstance(states, Mapping) and "random" in states and "torch" in states
        ):
            raise ValueError(
                "state_dict['rng_states'] should be a dictionary with the 'random' and 'torch' "
                f"states (as DeterministicEngine.state_dict() writes; ignite's list of states is "
                f"another format), got {type(states).__name__}"
            )

    def _setup_engine(self) -> None:
        if self.state.dataloader is None:
            raise ValueError("DeterministicEngine needs data: run(data, ...), not run(None)")
        if self._pending_position is None:
            # A new run starts at pass 0; a state loaded without a data position (an ignite or
            # plain Engine checkpoint) is placed by its iteration count, as ignite does.
            length = self._get_data_length(self.state.dataloader) or 1
            self._pending_position = divmod(self.state.iteration, length)
        super()._setup_engine()

    def _setup_dataloader_iter(self) -> None:
        data = self.state.dataloader
        if self._pending_position is not None:
            self._data_pass, skip = self._pending_position
            self._pending_position = None
        else:
            self._data_pass += 1
            skip = 0
        if self.state.seed is None:
            self._draw_seed()
        seed = cast(int, self.state.seed) + self._data_pass
        manual_seed(seed)
        self._pass_iterator = _Counted(self._positioned(data, seed, skip), skip)
        self._dataloader_iter = self._pass_iterator
        if self._pending_rng_states is not None:
            set_rng_states(self._pending_rng_states)
            self._pending_rng_states = None

    @staticmethod
    def _positioned(data: Iterable[Any], seed: int, skip: int) -> Iterator[Any]:
        if isinstance(data, torch.utils.data.DataLoader) and data.batch_sampler is not None:
            return _dataloader_from(data, seed, skip)
        return itertools.islice(iter(data), skip, None)
