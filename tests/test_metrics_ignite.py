"""Every ember metric against pytorch-ignite 0.5.5's: the same values, shapes and types
(a Python float or a tensor, and its dtype) over binary, multiclass, multilabel and regression
input. The differences kept on purpose are listed in ``DIFFERENCES`` (and docs/migration.md)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch")
ignite_metrics = pytest.importorskip("ignite.metrics")

from ember import metrics as ember_metrics

pytestmark = pytest.mark.ignite


def _batches(kind: str, seed: int = 0) -> list[Any]:
    generator = torch.Generator().manual_seed(seed)

    def ints(high: int, *shape: int) -> Any:
        return torch.randint(0, high, shape, generator=generator)

    sizes = (16, 16, 7)
    if kind == "binary":
        return [(ints(2, n), ints(2, n)) for n in sizes]
    if kind == "binary (N, 1)":
        return [(ints(2, n, 1), ints(2, n)) for n in sizes]
    if kind == "binary float":
        return [(ints(2, n).float(), ints(2, n)) for n in sizes]
    if kind == "multiclass":
        return [(torch.randn(n, 4, generator=generator), ints(4, n)) for n in sizes]
    if kind == "multiclass (N, C, L)":
        return [(torch.randn(n, 4, 3, generator=generator), ints(4, n, 3)) for n in sizes]
    if kind == "multilabel":
        return [(ints(2, n, 3), ints(2, n, 3)) for n in sizes]
    if kind == "multilabel (N, C, L)":
        return [(ints(2, n, 3, 2), ints(2, n, 3, 2)) for n in sizes]
    if kind == "regression":
        return [
            (torch.randn(n, generator=generator), torch.randn(n, generator=generator))
            for n in sizes
        ]
    if kind == "regression (N, 1)":
        return [
            (torch.randn(n, 1, generator=generator), torch.randn(n, 1, generator=generator))
            for n in sizes
        ]
    if kind == "regression (N, D)":
        return [
            (torch.randn(n, 3, generator=generator), torch.randn(n, 3, generator=generator))
            for n in sizes
        ]
    if kind == "values (N, 1)":
        return [torch.randn(n, 1, generator=generator) for n in sizes]
    if kind == "values (N, 3)":
        return [torch.randn(n, 3, generator=generator) for n in sizes]
    if kind == "values 0-d":
        return [torch.randn((), generator=generator) for _ in sizes]
    if kind == "values (3,)":
        return [torch.randn(3, generator=generator) for _ in sizes]
    if kind == "numbers":
        return [float(v) for v in torch.randn(3, generator=generator)]
    if kind == "losses":
        return [torch.rand((), generator=generator) for _ in range(6)]
    raise AssertionError(kind)


CLASSIFICATION = ("binary", "binary (N, 1)", "binary float", "multiclass", "multiclass (N, C, L)")
MULTILABEL = ("multilabel", "multilabel (N, C, L)")
REGRESSION = ("regression", "regression (N, 1)", "regression (N, D)")
VALUES = ("values (N, 1)", "values (N, 3)", "values 0-d", "values (3,)", "numbers")


def _cases() -> dict[str, tuple[Callable[[Any], Any], str]]:
    """id -> (factory taking the metrics module, input kind)."""
    cases: dict[str, tuple[Callable[[Any], Any], str]] = {}
    for kind in CLASSIFICATION:
        cases[f"Accuracy {kind}"] = (lambda m: m.Accuracy(), kind)
        for average in (False, None, True, "micro", "weighted"):
            for name in ("Precision", "Recall"):
                cases[f"{name}({average!r}) {kind}"] = (
                    lambda m, name=name, average=average: getattr(m, name)(average=average),
                    kind,
                )
        for average in (False, True):
            cases[f"Fbeta({average!r}) {kind}"] = (
                lambda m, average=average: m.Fbeta(2.0, average=average),
                kind,
            )
    for kind in MULTILABEL:
        cases[f"Accuracy {kind}"] = (lambda m: m.Accuracy(is_multilabel=True), kind)
        for average in (False, None, True, "micro", "weighted", "samples"):
            for name in ("Precision", "Recall"):
                cases[f"{name}({average!r}) {kind}"] = (
                    lambda m, name=name, average=average: getattr(m, name)(
                        average=average, is_multilabel=True
                    ),
                    kind,
                )
    for kind in ("multiclass", "multiclass (N, C, L)"):
        for average in (None, "samples", "recall", "precision"):
            cases[f"ConfusionMatrix({average!r}) {kind}"] = (
                lambda m, average=average: m.ConfusionMatrix(4, average=average),
                kind,
            )
    cases["TopKCategoricalAccuracy multiclass"] = (
        lambda m: m.TopKCategoricalAccuracy(k=2),
        "multiclass",
    )
    for kind in REGRESSION:
        for name in ("MeanSquaredError", "MeanAbsoluteError", "RootMeanSquaredError"):
            cases[f"{name} {kind}"] = (lambda m, name=name: getattr(m, name)(), kind)
    cases["Loss multiclass"] = (lambda m: m.Loss(torch.nn.functional.cross_entropy), "multiclass")
    cases["Loss regression"] = (lambda m: m.Loss(torch.nn.functional.mse_loss), "regression")
    for kind in VALUES:
        cases[f"Average {kind}"] = (lambda m: m.Average(), kind)
    cases["RunningAverage losses"] = (
        lambda m: m.RunningAverage(output_transform=lambda x: x, alpha=0.9),
        "losses",
    )
    return cases


CASES = _cases()

# The differences kept on purpose (docs/migration.md, "ember.metrics and ignite.metrics").
FLOAT64_CONFUSION = "a normalised ConfusionMatrix is float64 (ignite: float32)"
DIFFERENCES: dict[str, str] = {
    **{
        f"ConfusionMatrix({average!r}) {kind}": FLOAT64_CONFUSION
        for average in ("samples", "recall", "precision")
        for kind in ("multiclass", "multiclass (N, C, L)")
    },
}


def _describe(value: Any) -> tuple[str, tuple[int, ...], Any]:
    if isinstance(value, torch.Tensor):
        return "tensor", tuple(value.shape), value.dtype
    return type(value).__name__, (), None


def _compute(module: Any, factory: Callable[[Any], Any], data: list[Any]) -> Any:
    metric = factory(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ignite's deprecation and dtype warnings
        for output in data:
            metric.update(output)
        return metric.compute()


def _assert_values_agree(ours: Any, theirs: Any) -> None:
    # ignite sums float32 values in float32 (Loss, the regression errors) and adds eps=1e-15 to
    # Fbeta's denominator; ember sums in float64: the values agree to float32 precision.
    torch.testing.assert_close(
        torch.as_tensor(ours, dtype=torch.float64),
        torch.as_tensor(theirs, dtype=torch.float64),
        rtol=1e-6,
        atol=1e-9,
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_value_shape_and_type_as_ignite(case: str) -> None:
    factory, kind = CASES[case]
    data = _batches(kind)
    theirs = _compute(ignite_metrics, factory, data)
    ours = _compute(ember_metrics, factory, data)
    if case in DIFFERENCES:
        assert _describe(ours)[:2] == _describe(theirs)[:2]
        assert _describe(ours)[2] != _describe(theirs)[2], f"no longer differs: {DIFFERENCES[case]}"
    else:
        assert _describe(ours) == _describe(theirs)
    _assert_values_agree(ours, theirs)


def test_fbeta_micro_and_weighted_are_what_they_say() -> None:
    """ignite's Fbeta takes any true ``average`` for the macro mean; ember's computes the
    micro and weighted F (scikit-learn's meaning)."""
    data = _batches("multiclass")
    macro = _compute(ember_metrics, lambda m: m.Fbeta(1.0, average="macro"), data)
    for average in ("micro", "weighted"):
        theirs = _compute(ignite_metrics, lambda m, a=average: m.Fbeta(1.0, average=a), data)
        ours = _compute(ember_metrics, lambda m, a=average: m.Fbeta(1.0, average=a), data)
        assert theirs == pytest.approx(macro)
        assert ours != pytest.approx(macro)
    micro = _compute(ember_metrics, lambda m: m.Fbeta(1.0, average="micro"), data)
    accuracy = _compute(ember_metrics, lambda m: m.Accuracy(), data)
    assert micro == pytest.approx(accuracy)  # micro F of single-label input is the accuracy


@pytest.mark.parametrize(
    "case",
    [
        "Precision(False) binary",
        "Precision(None) binary",
        "Average values (N, 1)",
        "Average values 0-d",
        "RunningAverage losses",
        "Fbeta(False) binary",
    ],
)
def test_state_metrics_hold_what_ignite_stores(case: str, backend: str) -> None:
    """What ``attach`` stores: as ignite, except that any one-element tensor becomes a number
    (ignite: 0-d tensors only)."""
    from ignite.engine import Engine as IgniteEngine

    from ember.engine import Engine

    factory, kind = CASES[case]
    data = _batches(kind)
    stored = []
    for module, engine in (
        (ignite_metrics, IgniteEngine(lambda engine, batch: batch)),
        (ember_metrics, Engine(lambda engine, batch: batch, backend=backend)),
    ):
        factory(module).attach(engine, "value")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stored.append(engine.run(data).metrics["value"])
    theirs, ours = stored
    if isinstance(theirs, torch.Tensor) and theirs.numel() == 1:
        assert isinstance(ours, float)
        theirs = theirs.item()
    else:
        assert _describe(ours) == _describe(theirs)
    _assert_values_agree(ours, theirs)
