"""The generated docs pages are current and every claim in them still holds (both loops, ignite)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.ignite
@pytest.mark.parametrize("script", ["generate_event_order.py", "check_migration.py"])
def test_generated_docs_are_current(script: str) -> None:
    pytest.importorskip("ember._core")
    pytest.importorskip("ignite")
    result = subprocess.run(
        [sys.executable, str(DOCS / script), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
