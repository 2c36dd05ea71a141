"""Hostile programs on both loops: no signal, no hang, and the same outcome wherever the loops
do not differ on purpose.

The programs (``tests/isolated/hostile_fuzz.py``) vandalise the engine and its state from
handlers and subclasses. They run in subprocesses, many to a process, so that a crash fails a
test instead of killing pytest and a hang is cut by a timeout; the run resumes after the
program that crashed or hung. CI runs 1,000 programs per loop (seconds); the long run is::

    EMBER_HOSTILE_PROGRAMS=10000 python -m pytest -q -s tests/test_hostile_fuzz.py

which ``.ci/sanitize`` also runs under ASan and UBSan (figures in docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent / "isolated" / "hostile_fuzz.py"
PROGRAMS = int(os.environ.get("EMBER_HOSTILE_PROGRAMS", "1000"))
FIRST = int(os.environ.get("EMBER_HOSTILE_FIRST", "0"))
# Generous: a program takes about a millisecond, tens under the sanitizers.
SECONDS_PER_PROGRAM = 0.2


@dataclass
class Results:
    outcomes: dict[int, dict[str, Any]] = field(default_factory=dict)
    crashes: dict[int, int] = field(default_factory=dict)  # seed -> return code
    hangs: list[int] = field(default_factory=list)
    seconds: float = 0.0


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def run_programs(backend: str, first: int, count: int) -> Results:
    results = Results()
    started = time.monotonic()
    end = first + count
    while first < end:
        command = [sys.executable, str(SCRIPT), backend, str(first), str(end - first)]
        timeout = 10 + SECONDS_PER_PROGRAM * (end - first)
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
            stdout, returncode = done.stdout, done.returncode
        except subprocess.TimeoutExpired as expired:
            stdout, returncode = _text(expired.stdout), None
        last_begun = first - 1
        for line in stdout.splitlines():
            if line.startswith("begin "):
                last_begun = int(line.split()[1])
            elif line.startswith("{"):
                outcome = json.loads(line)
                results.outcomes[outcome["seed"]] = outcome
        if returncode == 0:
            break
        if last_begun < first or last_begun in results.outcomes:
            # Died outside a program (at start-up, say): nothing to resume from.
            results.crashes[first] = returncode if returncode is not None else -1
            break
        if returncode is None:
            results.hangs.append(last_begun)
        else:
            results.crashes[last_begun] = returncode
        first = last_begun + 1
    results.seconds = time.monotonic() - started
    return results


@pytest.fixture(scope="module")
def hostile_results() -> dict[str, Results]:
    return {}


def _results(cache: dict[str, Results], backend: str) -> Results:
    if backend not in cache:
        cache[backend] = run_programs(backend, FIRST, PROGRAMS)
    return cache[backend]


def test_no_hostile_program_crashes_or_hangs(
    backend: str, hostile_results: dict[str, Results]
) -> None:
    results = _results(hostile_results, backend)
    sys.stdout.write(
        f"\nhostile fuzz: backend={backend} programs={len(results.outcomes)} "
        f"crashes={len(results.crashes)} hangs={len(results.hangs)} "
        f"seconds={results.seconds:.1f}\n"
    )
    assert results.crashes == {}, f"seeds that killed the interpreter: {results.crashes}"
    assert results.hangs == [], f"seeds that hung: {results.hangs}"
    assert len(results.outcomes) == PROGRAMS


def _differs_on_purpose(outcome: dict[str, Any]) -> bool:
    return any(entry[:1] == ["vandal"] and entry[2:3] == [True] for entry in outcome["log"])


@pytest.mark.cpp
def test_both_loops_give_the_same_outcome(hostile_results: dict[str, Results]) -> None:
    pytest.importorskip("ember._core")
    compiled = _results(hostile_results, "cpp").outcomes
    python = _results(hostile_results, "python").outcomes
    compared = 0
    mismatches = []
    for seed, outcome in compiled.items():
        other = python.get(seed)
        if other is None or _differs_on_purpose(outcome) or _differs_on_purpose(other):
            continue
        compared += 1
        if (outcome["outcome"], outcome["log"]) != (other["outcome"], other["log"]):
            mismatches.append(seed)
    assert mismatches == [], f"seeds where the loops disagree: {mismatches[:20]}"
    # Most programs are comparable: the documented differences stay the exception.
    assert compared >= 0.85 * len(compiled)
