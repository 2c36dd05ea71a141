"""stack_parts.py's reading of callgrind_annotate's listing (the callgrind runs themselves take
minutes and valgrind; they are not run here)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

# Three events per row, as `callgrind_annotate --show=ILmr,DLmr,DLmw` prints them: a count with
# its share, a bare 0, or "." for none.
LISTING = """\
--------------------------------------------------------------------------------
ILmr            DLmr             DLmw
--------------------------------------------------------------------------------
21,408 (100.0%) 110,909 (100.0%) 23,447 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
ILmr         DLmr            DLmw            file:function
--------------------------------------------------------------------------------
285 ( 1.33%) 61,440 (55.40%)   387 ( 1.65%)  ???:mkl_blas_avx2_sgemm_scopy_right4_ea [/v/torch/lib/libtorch_cpu.so]
 36 ( 0.17%)      0          5,707 (24.34%)  ???:void c10::function_ref<void (char**, long const*, long, long)>::callback_fn<at::native::AVX2::VectorizedLoop2d<at::native::(anonymous namespace)::mul_kernel(at::TensorIteratorBase&)::{lambda()#2}>(char**, long const*, long, long) [/v/torch/lib/libtorch_cpu.so]
  7 ( 0.03%)  2,000 ( 1.80%)      .           ???:void c10::function_ref<void (char**, long const*, long, long)>::callback_fn<at::native::AVX2::VectorizedLoop2d<at::native::(anonymous namespace)::mul_kernel(at::TensorIteratorBase&)::{lambda()#3}>(char**, long const*, long, long) [/v/torch/lib/libtorch_cpu.so]
400 ( 1.87%)  3,625 ( 3.27%)    17 ( 0.07%)  /tmp/Python-3.11.7/Python/ceval.c:_PyEval_EvalFrameDefault'2 [/py/lib/libpython3.11.so.1.0]
  0               2 ( 0.00%)     1 ( 0.00%)  ???:at::getStepCallbacksUnlessEmpty(at::RecordScope) [/v/torch/lib/libtorch_cpu.so]
"""


@pytest.fixture
def stack_parts(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    pytest.importorskip("torch")
    pytest.importorskip("tqdm")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("stack_parts")


def test_each_function_row_is_summed_and_the_totals_row_left_out(stack_parts: ModuleType) -> None:
    assert stack_parts.misses_in_listing(LISTING) == {
        "`mkl_blas_avx2_sgemm_scopy_right4_ea` (libtorch_cpu.so)": 285 + 61_440 + 387,
        # two instantiations of one kernel's loop: one row of the kernel's name
        "`mul_kernel` (a torch CPU kernel's loop, libtorch_cpu.so)": 36 + 5_707 + 7 + 2_000,
        "`_PyEval_EvalFrameDefault'2` (libpython3.11.so.1.0)": 400 + 3_625 + 17,
        "`at::getStepCallbacksUnlessEmpty` (libtorch_cpu.so)": 2 + 1,
    }


def test_the_table_lists_the_largest_extra_misses_per_iteration(stack_parts: ModuleType) -> None:
    hand = {"a": 100, "b": 1_000, "gone": 300}
    ember = {"a": 500, "b": 1_100, "new": 200}
    table = stack_parts.extra_misses_table(hand, ember, iterations=100, rows=2)
    assert table.splitlines()[2:] == [
        "| a | 4 |",
        "| new | 2 |",
        "| every other function | -2 |",  # b's +100, gone's -300
    ]
