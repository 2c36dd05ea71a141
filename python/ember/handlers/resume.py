"""Resume a run from the newest complete checkpoint of a directory: :func:`resume_from`.

Made for runs that are restarted by a launcher (``torchrun --max-restarts N`` after a process
died, a scheduler after a preemption): the same script runs again from the top, and one call
before ``trainer.run()`` puts the trainer, model, optimizer, scheduler and data position back
where the last durable checkpoint left them, on every rank, all ranks from the same file.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ember import distributed
from ember.engine import Engine
from ember.handlers.checkpoint import Checkpoint, _check_sharded_is_complete, _load_file

__all__ = ["resume_from"]

logger = logging.getLogger("ember.handlers.resume")


# Rank 0's decision, sent to every rank: the file to load (``None``: a new run), the error to
# raise as (exception class name, message), and the newer files skipped because they do not load.
_Choice = tuple[str | None, tuple[str, str] | None, list[str]]

_ERRORS: dict[str, type[Exception]] = {
    error.__name__: error
    for error in (FileNotFoundError, NotADirectoryError, PermissionError, OSError, ValueError)
}


def _candidates(directory: Path, pattern: str) -> list[Path]:
    """The entries matching ``pattern``, newest first (modification time, then name): files,
    sharded checkpoints (directories), and whatever else matches, which then fails to load and
    is reported (a dangling link, a directory that is not a checkpoint): a run never starts from
    scratch past something it was asked to resume from. Hidden entries, among them the
    temporary files of writers that died, are never candidates. The directory is listed with
    ``os.scandir``, which raises where it cannot be read (``Path.glob`` answers nothing)."""
    with os.scandir(directory) as entries:
        names = [entry.name for entry in entries if not entry.name.startswith(".")]
    matching = [directory / name for name in names if fnmatch.fnmatchcase(name, pattern)]

    def newest_first(path: Path) -> tuple[int, list[Any]]:
        # Equal times are common (file systems stamp with a clock tick of 1-10 ms, or 1-2 s):
        # then the name decides, its numbers compared as numbers, so that checkpoint_10.pt is
        # newer than checkpoint_9.pt (as text it sorts before it).
        parts = re.split(r"(\d+)", path.name)  # text, number, text, ...: odd ones are numbers
        name = [int(part) if index % 2 else part for index, part in enumerate(parts)]
        try:
            return path.stat().st_mtime_ns, name
        except OSError:  # a dangling link: listed with the others, reported when loaded
            return 0, name

    return sorted(matching, key=newest_first, reverse=True)


def _load_candidate(path: Path) -> Any:
    """``path``'s contents, or ``None`` for a sharded checkpoint, which every rank loads itself
    (``Checkpoint.load_objects``) once it is chosen; raises where it cannot load."""
    if path.is_dir():
        _check_sharded_is_complete(path)
        return None
    return _load_file(path)


def _newest_loadable(
    directory: Path, pattern: str, start_fresh_if_empty: bool
) -> tuple[Path | None, Any, list[str]]:
    """Rank 0's part: the newest checkpoint that loads (``None`` for a new run), its contents,
    and the problems of the newer files that do not load."""
    fresh = " (pass start_fresh_if_empty=True to start a new run when there is nothing to resume)"
    if not directory.exists():
        if start_fresh_if_empty:
            return None, None, []
        raise FileNotFoundError(
            f"resume_from: the checkpoint directory '{directory}' does not exist{fresh}"
        )
    if not directory.is_dir():
        raise NotADirectoryError(f"resume_from: '{directory}' is not a directory")
    candidates = _candidates(directory, pattern)
    if not candidates:
        if start_fresh_if_empty:
            return None, None, []
        raise FileNotFoundError(
            f"resume_from: no checkpoint matching '{pattern}' in '{directory}'{fresh}"
        )
    problems: list[str] = []
    for path in candidates:
        try:
            return path, _load_candidate(path), problems
        except (OSError, ValueError, TypeError) as exc:
            problems.append(str(exc))
    listed = "\n  ".join(problems)
    raise ValueError(
        f"resume_from: none of the {len(candidates)} checkpoint file(s) in '{directory}' can be "
        "loaded (a run that found only these would start from scratch, so it stops instead):"
        f"\n  {listed}"
    )


def _load_into(to_load: Mapping[str, Any], path: Path, contents: Any, strict: bool) -> str:
    """Load ``contents`` (of ``path``) into ``to_load``; the problem as a message, or ``""``."""
    try:
        if contents is None:  # a sharded checkpoint, or not loaded on this rank yet
            contents = path if path.is_dir() else _load_file(path)
        Checkpoint.load_objects(to_load, contents, strict=strict)
    except Exception as exc:  # noqa: BLE001 - whatever load_state_dict raises is reported
        notes = [
            note.replace(" from the checkpoint dictionary", "")
            for note in getattr(exc, "__notes__", [])
        ]
        where = f" ({'; '.join(notes)})" if notes else ""
        hint = ""
        if isinstance(contents, Mapping) and any(name not in contents for name in to_load):
            # The newest file of the pattern may be another checkpointer's (a best model's).
            hint = (
                "; if the directory holds the files of another checkpointer too (a best "
                "model's), give resume_from a pattern that matches only the files to resume "
                "from, such as pattern='checkpoint_*.pt' (Checkpoint's names without a prefix)"
            )
        return (
            f"checkpoint file '{path}' does not fit the objects to resume{where}: "
            f"{type(exc).__name__}: {exc}{hint}"
        )
    return ""


def resume_from(
    directory: str | Path,
    to_load: Mapping[str, Any],
    *,
    start_fresh_if_empty: bool = False,
    pattern: str = "*.pt",
    strict: bool = True,
) -> Path | None:
    """Load the newest complete checkpoint of ``directory`` into ``to_load``'s objects.

    Call it once, on every rank, after the objects are built (and the process group is
    initialized) and before ``trainer.run()``: the same script then starts a new run or goes on
    from where the last checkpoint left it, as a launcher that restarts it (``torchrun
    --max-restarts``, a scheduler's requeue) needs. Give it the ``to_save`` of the
    :class:`~ember.handlers.Checkpoint` that writes the directory.

    * The newest file matching ``pattern`` that loads is chosen (by modification time, then by
      name, numbers compared as numbers: ``checkpoint_10.pt`` is newer than ``checkpoint_9.pt``);
      files that do not load (truncated, corrupted, not written by ``torch.save``) are skipped
      with a warning naming each and its problem. Temporary files of writers that died are hidden and
      never candidates (``DiskSaver`` writes atomically: a file with the final name is whole).
    * In a distributed run, rank 0 chooses and sends its choice to the other ranks, so every
      rank loads the same file (every rank reads it: the directory must be reachable from every
      node). Every rank then reports whether its objects took the file, and all of them raise
      if one did not.
    * Checkpoints of a :class:`~ember.engine.DeterministicEngine` hold the world size of the
      run that wrote them; another world size is refused (the data position would not apply).

    Args:
        directory: where the checkpoints are (``DiskSaver``'s ``dirname``).
        to_load: objects by name, as given to ``Checkpoint``'s ``to_save`` (engine, model,
            optimizer, scheduler, the checkpointer itself to go on pruning its old files...).
        start_fresh_if_empty: when ``directory`` is missing or holds no file matching
            ``pattern``, return ``None`` and leave the objects as they are (a new run) instead
            of raising ``FileNotFoundError``. Files that exist but do not load always raise.
        pattern: a glob pattern (of names, matched with ``fnmatch``) selecting the
            checkpoints in ``directory``: ``"*.pt"`` for files, ``"*.dcp"`` for sharded
            checkpoints (``torch.distributed.checkpoint`` directories with their ``.metadata``).
        strict: passed to ``torch.nn.Module.load_state_dict``.

    Returns:
        The file loaded, or ``None`` when a new run starts (``start_fresh_if_empty``).

    Raises:
        FileNotFoundError: nothing to resume from and ``start_fresh_if_empty`` is false.
        NotADirectoryError: ``directory`` is a file.
        ValueError: no file loads, or the newest that loads does not fit ``to_load`` (entries
            missing, keys or shapes of another model, another world size...); the message names
            the file and the problem (and the rank, in a distributed run).
    """
    if not isinstance(to_load, Mapping):
        raise TypeError(f"resume_from: to_load should be a dictionary, got {type(to_load)}")
    if not isinstance(directory, (str, Path)):
        raise TypeError(f"resume_from: directory should be a str or a Path, got {directory!r}")
    # Checked on every rank: an error only rank 0 met would leave the others waiting for it.
    if not isinstance(pattern, str) or not pattern or "/" in pattern or os.sep in pattern:
        raise ValueError(
            f"resume_from: pattern should be a glob pattern of names in the directory, such as "
            f"'*.pt', got {pattern!r}"
        )
    Checkpoint._check_objects(to_load, "load_state_dict")
    distributed.refuse_without_group("resume_from")
    directory = Path(directory).expanduser()
    rank = distributed.get_rank()

    contents: Any = None
    choice: _Choice | None = None
    if rank == 0:
        try:
            path, contents, skipped = _newest_loadable(directory, pattern, start_fresh_if_empty)
            choice = (None if path is None else str(path), None, skipped)
        except Exception as exc:  # noqa: BLE001 - raised on every rank, below: no rank waits
            choice = (None, (type(exc).__name__, str(exc)), [])
    if distributed.get_world_size() > 1:
        choice = distributed.broadcast(choice, src=0)
    assert choice is not None
    chosen, error, skipped = choice
    if error is not None:
        name, message = error
        raise _ERRORS.get(name, RuntimeError)(message)
    for problem in skipped if rank == 0 else []:
        warnings.warn(
            f"resume_from: skipped a newer checkpoint that does not load: {problem}",
            UserWarning,
            stacklevel=2,
        )
    if chosen is None:
        logger.info("resume_from: nothing to resume in '%s': a new run starts", directory)
        return None

    path = Path(chosen)
    problem = _load_into(to_load, path, contents, strict)
    if distributed.get_world_size() > 1:
        problems = distributed.all_gather(problem)
        failed = [f"rank {r}: {text}" for r, text in enumerate(problems) if text]
        if failed:
            raise ValueError("resume_from: " + "\n".join(failed))
    elif problem:
        raise ValueError(f"resume_from: {problem}")
    engines = [obj for obj in to_load.values() if isinstance(obj, Engine)]
    for engine in engines if rank == 0 else []:
        if engine._is_done(engine.state):
            # run() on a finished state starts a new run (as ignite's): silently, the relaunch
            # of a finished job would train it all again from the final weights.
            warnings.warn(
                f"resume_from: '{path}' holds a finished run (iteration "
                f"{engine.state.iteration}): trainer.run() starts a new run from iteration 0; "
                "to train further, give run() a larger max_epochs or max_iters",
                UserWarning,
                stacklevel=2,
            )
    iterations = sorted({engine.state.iteration for engine in engines})
    logger.info(
        "resume_from: resumed from '%s'%s",
        path,
        f" at iteration {iterations[0]}" if len(iterations) == 1 else "",
    )
    return path
