"""Differential tests: the compiled loop, the Python loop and ignite 0.5.5 on random programs."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from ember.engine import Engine
from programs import Program, programs, trace

EXAMPLES = int(os.environ.get("EMBER_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=not os.environ.get("EMBER_FUZZ_RANDOM"),
)


@pytest.mark.cpp
@FUZZ
@given(programs())
def test_compiled_loop_matches_python_loop(program: Program) -> None:
    pytest.importorskip("ember._core")
    assert trace(program, Engine, backend="cpp") == trace(program, Engine, backend="python")


def _most_stalled_epochs_in_a_row(events: list) -> int:
    names = [entry[0] for entry in events if isinstance(entry, tuple)]
    most = in_a_row = 0
    epoch_had_iteration = None
    for name in [*names, "EPOCH_STARTED"]:
        if name == "EPOCH_STARTED":
            if epoch_had_iteration is False:
                in_a_row += 1
                most = max(most, in_a_row)
            elif epoch_had_iteration:
                in_a_row = 0
            epoch_had_iteration = False
        elif name == "ITERATION_STARTED":
            epoch_had_iteration = True
    return most


def _first_epoch_cut_short_with_unknown_length(program: Program, ember_trace: list) -> bool:
    """Data of unknown length whose first epoch a swallowed exception or terminate_epoch() ended,
    followed by another epoch: ember learns the epoch length per iterator, ignite per epoch."""
    if program.epoch_length is not None or program.data_kind not in ("unsized", "generator"):
        return False
    events = [entry for entry in ember_trace if isinstance(entry, tuple)]
    cut_short = any(
        entry[0] in ("EXCEPTION_RAISED", "TERMINATE_SINGLE_EPOCH") and entry[1] == 1
        for entry in events
    )
    return cut_short and any(entry[0] == "EPOCH_STARTED" and entry[1] == 2 for entry in events)


def _ember_fixes_apply(program: Program, ember_trace: list) -> bool:
    """True when the program meets an ignite bug that ember fixes on purpose (docs/migration.md)."""
    if "trace too long" in ember_trace:
        return True
    if _first_epoch_cut_short_with_unknown_length(program, ember_trace):
        return True
    if program.max_epochs is None and _most_stalled_epochs_in_a_row(ember_trace) >= 2:
        # H1/H3: two epochs in a row without an iteration end a max_iters run in ember, where
        # ignite loops on.
        return True
    # Data of unknown length that yields nothing: ember raises "Input data has zero size" where
    # ignite sets epoch_length to 0.
    return any("zero size" in repr(entry) for entry in ember_trace)


@pytest.mark.ignite
@FUZZ
@given(programs())
def test_python_loop_matches_ignite(program: Program) -> None:
    ignite_engine = pytest.importorskip("ignite.engine")
    ember_trace = trace(program, Engine, backend="python")
    if _ember_fixes_apply(program, ember_trace):
        return
    ignite_trace = trace(program, ignite_engine.Engine)
    assert ember_trace == ignite_trace
