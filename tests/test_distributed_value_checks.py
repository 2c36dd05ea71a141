"""Bad input on one rank only raises on every rank, without waiting for the group's timeout:
value checks at the same compute(), a broadcast whose source cannot send its value
(tests/isolated/dist_value_checks.py: 2 spawned gloo ranks, bad input on rank 1)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from launch import engine_backends, launch_env

SCRIPT = Path(__file__).parent / "isolated" / "dist_value_checks.py"
# Far below the cases' number times the group's timeout (20 s): a launch that ends in time had
# no rank waiting for a collective that the other never joined.
LIMIT = 90


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Each rank's outcome of each case."""
    out_dir = tmp_path_factory.mktemp("value_checks")
    try:
        finished = subprocess.run(
            [sys.executable, str(SCRIPT), str(out_dir)],
            env=launch_env(EMBER_BACKEND=engine_backends()[0]),
            capture_output=True,
            text=True,
            timeout=LIMIT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the launch did not end within {LIMIT} s: a rank waited for the other")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    return [json.loads((out_dir / f"rank{rank}.json").read_text()) for rank in range(2)]


# (case, metric name, rank 1's own message)
FAILING = [
    ("accuracy_class_indices", "Accuracy", r"Accuracy: y holds class indices outside \[0, 3\)"),
    ("accuracy_nothing_on_rank_0", "Accuracy", r"outside \[0, 3\): min -1, max 0"),
    ("precision_binary", "Precision", r"Precision: for binary input, y_pred must contain only"),
    ("lambda_of_two_accuracies", "Accuracy", r"Accuracy: for binary input, y_pred must contain"),
    ("fbeta_binary", "Precision", r"Precision: for binary input, y_pred must contain only"),
]


@pytest.mark.parametrize(("case", "name", "own_message"), FAILING, ids=[c[0] for c in FAILING])
def test_a_check_failed_on_one_rank_raises_on_every_rank(
    results: list[dict[str, Any]], case: str, name: str, own_message: str
) -> None:
    on_rank_0, on_rank_1 = (rank_results[case] for rank_results in results)
    assert on_rank_1.get("error") == "ValueError", on_rank_1
    assert re.search(own_message, on_rank_1["message"]), on_rank_1
    # Rank 0's input passed: it names the rank whose check failed, in the same compute().
    assert on_rank_0.get("error") == "ValueError", on_rank_0
    assert on_rank_0["message"] == f"{name}: the value check failed on rank 1", on_rank_0


def test_checks_failed_on_every_rank_raise_their_own_errors(
    results: list[dict[str, Any]],
) -> None:
    for rank, rank_results in enumerate(results):
        assert rank_results["accuracy_on_every_rank"] == {
            "error": "ValueError",
            "message": f"Accuracy: y holds class indices outside [0, 3): min 0, max {7 + rank}",
        }


def test_a_broadcast_whose_source_passes_none_raises_on_every_rank(
    results: list[dict[str, Any]],
) -> None:
    for rank_results in results:
        assert rank_results["broadcast_none_from_src"] == {
            "error": "ValueError",
            "message": "broadcast: rank 1 (src) should pass a value, got None",
        }


def test_a_broadcast_of_an_object_that_cannot_be_pickled_raises_on_every_rank(
    results: list[dict[str, Any]],
) -> None:
    for rank_results in results:
        outcome = rank_results["broadcast_unpicklable_from_src"]
        assert outcome["error"] == "TypeError", outcome
        assert outcome["message"].startswith(
            "broadcast: the value of rank 1 (src), a function, cannot be pickled: "
        ), outcome


def test_the_ranks_stay_in_step_after_the_failures(results: list[dict[str, Any]]) -> None:
    for rank_results in results:
        assert rank_results["still_in_step"] == {"value": [0.75, 3]}


def test_no_collective_is_added_for_the_checks(results: list[dict[str, Any]]) -> None:
    # The ranks' outcomes travel in the accumulators' all_reduce: Accuracy's kinds exchange and
    # one int64 buffer; Precision's kinds exchange, an int64 and a float64 buffer.
    for rank_results in results:
        assert rank_results["collectives"] == {"Accuracy": 2, "Precision": 3}
