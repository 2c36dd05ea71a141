"""``DeterministicEngine``: runs that resume exactly, from any iteration, even mid-epoch.

What the rest of the run sees after a resume is a function of the checkpoint alone:

- Each pass over the data (each ``iter(dataloader)``, and each ``set_data()`` during a run)
  starts by seeding ``random``, NumPy and torch with ``state.seed + pass``; a torch
  ``DataLoader`` over a map-style dataset is then re-created with its whole order of batch
  indices drawn at once, right after its new iterator has drawn its base seed (the draws of
  ignite's DeterministicEngine, in its order: a seed gives ignite's batches and random numbers).
  The position in the data, ``(pass, batches drawn in it)``, is part of ``state_dict()``.
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

# ignite's bound: a seed drawn from the same torch state is ignite's seed.
_SEED_DRAW_BOUND = 10**9
# torch.manual_seed takes seed + pass in [-2**63, 2**64), and islice skips at most 2**63 - 1.
_INT64_BOUND = 2**63

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


def _numpy_state(saved: Any) -> tuple[Any, ...]:
    """NumPy's state from the plain values ``get_rng_states`` saves."""
    name, keys, position, has_gauss, cached_gaussian = saved
    return name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian


def set_rng_states(states: Mapping[str, Any]) -> None:
    random.setstate(states["random"])
    torch.set_rng_state(states["torch"])
    if np is not None and "numpy" in states:
        np.random.set_state(_numpy_state(states["numpy"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class _DrawnBatches(torch.utils.data.Sampler):  # type: ignore[type-arg]
    """A batch sampler that draws the whole order of ``batch_sampler`` once, at the first
    ``draw()`` or iteration, and yields it from batch ``skip`` on."""

    def __init__(self, batch_sampler: Iterable[Any], skip: int) -> None:
        self._batch_sampler = batch_sampler
        self._skip = skip
        self._batches: list[list[int]] | None = None

    def draw(self) -> list[list[int]]:
        if self._batches is None:
            self._batches = [list(batch) for batch in self._batch_sampler][self._skip :]
        return self._batches

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: iter(DataLoader) draws its base seed before it asks for the first batch,
        # and the order is drawn after that, as from ignite's ReproducibleBatchSampler.
        yield from self.draw()

    def __len__(self) -> int:
        return len(self.draw())


def _dataloader_from(
    loader: torch.utils.data.DataLoader[Any], seed: int, skip: int
) -> Iterator[Any]:
    generator = getattr(loader.sampler, "generator", None)
    if generator is not None:
        generator.manual_seed(seed)
    batches = _DrawnBatches(loader.batch_sampler, skip)  # type: ignore[arg-type]
    options: dict[str, Any] = {}
    if hasattr(loader, "in_order"):  # torch >= 2.6
        options["in_order"] = loader.in_order
    rebuilt = torch.utils.data.DataLoader(
        loader.dataset,
        batch_sampler=batches,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor,
        pin_memory_device=loader.pin_memory_device,
        # Not persistent_workers: a new loader each pass starts its workers anew anyway.
        **options,
    )
    iterator = iter(rebuilt)
    # Drawn now, not at the first batch: a resumed run restores the saved random states next.
    batches.draw()
    return iterator


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


def _check_rng_states(states: Any) -> None:
    """Each state of ``rng_states`` is set on a throwaway generator, so that one the global
    generators would refuse is refused at load, naming it, not inside the next run."""
    if not (isinstance(states, Mapping) and "random" in states and "torch" in states):
        raise ValueError(
            "state_dict['rng_states'] should be a dictionary with the 'random' and 'torch' "
            f"states (as DeterministicEngine.state_dict() writes; ignite's list of states is "
            f"another format), got {type(states).__name__}"
        )
    trials: list[tuple[str, Callable[[Any], object]]] = [
        ("random", random.Random().setstate),
        ("torch", torch.Generator().set_state),
    ]
    if np is not None:
        trials.append(("numpy", _try_numpy_state))
    if "cuda" in states:
        trials.append(("cuda", _check_cuda_states))
    for name, trial in trials:
        if name not in states:
            continue
        try:
            trial(states[name])
        except Exception as error:  # any failure of the trial: the state is not one
            raise ValueError(
                f"state_dict['rng_states'][{name!r}] is not a random state of {name} "
                f"({type(error).__name__}: {error})"
            ) from error


def _try_numpy_state(state: Any) -> None:
    np.random.RandomState().set_state(_numpy_state(state))


def _check_cuda_states(states: Any) -> None:
    # Not set on a trial CUDA generator, which would initialize CUDA at load.
    if not (
        isinstance(states, (list, tuple))
        and all(isinstance(state, torch.Tensor) and state.dtype == torch.uint8 for state in states)
    ):
        raise TypeError("expected a list of torch.ByteTensor, one a device")
    if torch.cuda.is_available() and len(states) > torch.cuda.device_count():
        raise ValueError(f"{len(states)} states, this machine has {torch.cuda.device_count()} GPUs")


class DeterministicEngine(Engine):
    """An :class:`Engine` whose data order and random draws depend only on the seed and the
    position in the run, so that a run resumed from a checkpoint taken at any iteration sees
    exactly the batches, random draws and final weights of a run that was never stopped.

    ``state.seed`` is drawn from torch's generator at each new run's ``STARTED`` as ignite draws
    it (call ``torch.manual_seed`` before to fix it; a run that goes on, after a larger
    ``max_epochs`` or ``load_state_dict``, keeps its seed) and saved in ``state_dict()``.
    """

    def __init__(
        self, process_function: Callable[[Engine, Any], Any], *, backend: str | None = None
    ) -> None:
        super().__init__(process_function, backend=backend)
        self._data_pass = 0
        self._pass_iterator: _Counted | None = None
        self._pending_position: tuple[int, int] | None = None
        self._pending_rng_states: Mapping[str, Any] | None = None
        # Whether load_state_dict gave the seed of the next run (else each run draws its own).
        self._seed_loaded = False
        self.add_event_handler(Events.STARTED, DeterministicEngine._seed_the_run)

    def _seed_the_run(self) -> None:
        """At each run's STARTED: a new run (its state starts at iteration 0) draws a new seed,
        as ignite draws one for every run. A run that goes on keeps its seed, so that it sees
        what a run resumed from a checkpoint sees: a larger ``max_epochs`` after the run ended
        (ignite draws a new one there), a state restored by ``load_state_dict``."""
        loaded, self._seed_loaded = self._seed_loaded, False
        if self.state.seed is None or (self.state.iteration == 0 and not loaded):
            self._draw_seed()

    def _draw_seed(self) -> None:
        self.state.seed = int(torch.randint(0, _SEED_DRAW_BOUND, (1,)).item())

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
        self._seed_loaded = self.state.seed is not None
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
        if seed is not None and (
            isinstance(seed, bool)
            or not isinstance(seed, int)
            or not -_INT64_BOUND <= seed < _INT64_BOUND
        ):
            raise ValueError(
                f"state_dict['seed'] should be an int in [-2**63, 2**63) or None, got {seed!r}"
            )
        position = state_dict.get("data_position")
        if position is not None and not (
            isinstance(position, (tuple, list))
            and len(position) == 2
            and all(type(count) is int and 0 <= count < _INT64_BOUND for count in position)
        ):
            raise ValueError(
                "state_dict['data_position'] should be (data pass, batches drawn), two ints in "
                f"[0, 2**63), got {position!r}"
            )
        states = state_dict.get("rng_states")
        if states is not None:
            _check_rng_states(states)

    def _setup_engine(self) -> None:
        if self.state.dataloader is None:
            raise ValueError("DeterministicEngine needs data: run(data, ...), not run(None)")
        if self._pending_position is None:
            # A new run starts at pass 0; a state loaded without a data position (an ignite or
            # plain Engine checkpoint) is placed by its iteration count, as ignite does.
            length = self._get_data_length(self.state.dataloader) or 1
            self._pending_position = divmod(self.state.iteration, length)
        super()._setup_engine()

    def set_data(self, data: Iterable[Any]) -> None:
        """Switch data now: the next batch comes from ``data``; ``epoch_length`` is unchanged.

        Within a run, ``data`` starts a new data pass, its order drawn from ``seed + pass`` as
        every pass's (so that a run resumed after the switch rebuilds it) while the random
        states of ``random``, NumPy and torch go on as they were. Outside a run it only sets
        ``state.dataloader``: the next run iterates the data given to ``run()``.
        """
        if not isinstance(data, Iterable):
            raise TypeError("Argument data should be iterable")
        self.state.dataloader = data
        if self._dataloader_iter is None:
            return
        states = get_rng_states()
        self._start_pass(self._data_pass + 1, 0)
        set_rng_states(states)

    def _setup_dataloader_iter(self) -> None:
        if self._pending_position is not None:
            data_pass, skip = self._pending_position
            self._pending_position = None
            length = self._get_data_length(self.state.dataloader)
            if length is not None and skip > length:
                # Skipped, the pass would end at once and the run go on from the next one:
                # the checkpoint is of other data.
                raise ValueError(
                    f"state_dict['data_position'] ({data_pass}, {skip}) has {skip} batches "
                    f"drawn of a data pass, but the data has {length} batches: resume with "
                    "the data the checkpoint was taken on"
                )
        else:
            data_pass, skip = self._data_pass + 1, 0
        self._start_pass(data_pass, skip)
        if self._pending_rng_states is not None:
            states, self._pending_rng_states = self._pending_rng_states, None
            set_rng_states(states)

    def _start_pass(self, data_pass: int, skip: int) -> None:
        """Seed with ``seed + data_pass`` and iterate the data from batch ``skip`` of that pass."""
        if self.state.seed is None:
            self._draw_seed()
        self._data_pass = data_pass
        seed = cast(int, self.state.seed) + data_pass
        manual_seed(seed)
        self._pass_iterator = _Counted(self._positioned(self.state.dataloader, seed, skip), skip)
        self._dataloader_iter = self._pass_iterator

    @staticmethod
    def _positioned(data: Iterable[Any], seed: int, skip: int) -> Iterator[Any]:
        # Only a map-style dataset's order can be drawn in advance: the batch sampler of an
        # IterableDataset's DataLoader never ends, and such data is iterated and skipped.
        if (
            isinstance(data, torch.utils.data.DataLoader)
            and data.batch_sampler is not None
            and not isinstance(data.dataset, torch.utils.data.IterableDataset)
        ):
            return _dataloader_from(data, seed, skip)
        return itertools.islice(iter(data), skip, None)
