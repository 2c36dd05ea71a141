"""Sharded state (FSDP2 / DTensor) is checkpointed with torch.distributed.checkpoint: every rank
writes its own shards into one directory, no rank gathers the state; synchronous and
``async_save=True``, on 2 spawned gloo processes (``tests/isolated/sharded_checkpoint.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from ember.handlers import Checkpoint, DiskSaver
from ember.handlers.checkpoint import TEMPORARY_SUFFIX
from launch import launch_env

SCRIPT = Path(__file__).resolve().parent / "isolated" / "sharded_checkpoint.py"


def test_fsdp2_checkpoints_are_written_per_rank_and_load_back(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=launch_env(),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for rank in (0, 1):
        record = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for mode in ("sync", "async"):
            outcome = record[mode]
            # n_saved=2 rotation, no temporary directory left, one shard file per rank
            assert outcome["listing"] == ["checkpoint_2.dcp", "checkpoint_3.dcp"], mode
            assert outcome["last"] == "checkpoint_3.dcp"
            assert outcome["last_files"] == [".metadata", "__0_0.distcp", "__1_0.distcp"]
            saved = [[2, "checkpoint_2.dcp"], [3, "checkpoint_3.dcp"]]
            assert outcome["saved"] == outcome["resumed_saved"] == saved
            # the weights at the save, although they were changed right after the call
            assert outcome["weights_equal"], (rank, mode)
            assert outcome["iteration"] == 3
            assert outcome["local_shard_rows"] == 4  # still sharded after loading: 8 rows / 2
        replicated = record["replicated"]  # not sharded: one writer, as without async_save
        assert replicated["listing"] == ["model_2.pt"]
        assert replicated["saved"] == [[2, "model_2.pt"]]
        assert replicated["host_buffers"] == (2 if rank == 0 else 0)


def test_an_incomplete_sharded_checkpoint_is_named(tmp_path: Path) -> None:
    partial = tmp_path / "checkpoint_3.dcp"
    partial.mkdir()
    (partial / "__0_0.distcp").write_bytes(b"shard")
    with pytest.raises(
        ValueError, match=r"checkpoint_3\.dcp' is not a complete sharded checkpoint"
    ):
        Checkpoint.load_objects({"model": torch.nn.Linear(2, 2)}, partial)
    with pytest.raises(ValueError, match=r"\['checkpoint_3\.dcp'\].*require_empty=False"):
        DiskSaver(tmp_path)
    stale = tmp_path / f".checkpoint_4.dcp{TEMPORARY_SUFFIX}"  # a sharded save that died
    stale.mkdir()
    (stale / "__1_0.distcp").write_bytes(b"shard")
    DiskSaver(tmp_path, require_empty=False)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint_3.dcp"]
