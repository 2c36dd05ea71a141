"""ember.metrics against scikit-learn, through real evaluator runs on both loops.

Each test draws several batches of different sizes (seeded), attaches metrics to an ember
``Engine`` whose process function returns the batch, runs it, and compares ``state.metrics``
with scikit-learn on the concatenated data.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
metrics = pytest.importorskip("sklearn.metrics")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ember.engine import Engine, Events
from ember.metrics import (
    Accuracy,
    Average,
    ConfusionMatrix,
    Fbeta,
    Loss,
    MeanAbsoluteError,
    MeanSquaredError,
    Precision,
    Recall,
    RootMeanSquaredError,
    RunningAverage,
    TopKCategoricalAccuracy,
)
from test_metrics_support import (
    binary_batches,
    evaluate,
    joined,
    multiclass_batches,
    multilabel_batches,
    regression_batches,
)

SEEDS = [0, 1, 2]
AVERAGES = [False, "macro", "micro", "weighted"]
BATCHES = {
    "binary": binary_batches,
    "multiclass": multiclass_batches,
    "multilabel": multilabel_batches,
}


def approx(expected: Any) -> Any:
    return pytest.approx(expected, rel=1e-9, abs=1e-12)


def as_array(value: Any) -> Any:
    return value.numpy() if isinstance(value, torch.Tensor) else value


# --------------------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_matches_sklearn(make_engine: Any, seed: int) -> None:
    binary = binary_batches(seed)
    multiclass = multiclass_batches(seed, num_classes=5)
    multilabel = multilabel_batches(seed, num_labels=3)
    for data, is_multilabel, to_labels in (
        (binary, False, lambda p: p),
        (multiclass, False, lambda p: p.argmax(axis=1)),
        (multilabel, True, lambda p: p),
    ):
        got = evaluate(make_engine, {"acc": Accuracy(is_multilabel=is_multilabel)}, data)
        y_pred, y = joined(data)
        assert got["acc"] == approx(metrics.accuracy_score(y, to_labels(y_pred)))


def test_accuracy_of_binary_scores_of_shape_n_1(make_engine: Any) -> None:
    torch.manual_seed(3)
    data = [(torch.randint(0, 2, (n, 1)).float(), torch.randint(0, 2, (n,))) for n in (4, 9, 2)]
    got = evaluate(make_engine, {"acc": Accuracy()}, data)
    y_pred, y = joined(data)
    assert got["acc"] == approx(metrics.accuracy_score(y, y_pred[:, 0]))


def test_multiclass_accuracy_over_extra_dimensions(make_engine: Any) -> None:
    torch.manual_seed(4)
    data = [(torch.randn(n, 3, 5), torch.randint(0, 3, (n, 5))) for n in (2, 6, 3)]
    got = evaluate(make_engine, {"acc": Accuracy()}, data)
    y_pred, y = joined(data)
    assert got["acc"] == approx(metrics.accuracy_score(y.ravel(), y_pred.argmax(axis=1).ravel()))


# ----------------------------------------------------------------------------- precision, recall
def _sklearn_precision_recall(kind: str, y: Any, labels_pred: Any, average: Any) -> tuple[Any, Any]:
    if kind == "binary" and average is False:
        options: dict[str, Any] = {"average": "binary"}
    elif kind == "multilabel":
        options = {"average": None if average is False else average}
    else:
        classes = 2 if kind == "binary" else 4
        options = {"average": None if average is False else average, "labels": list(range(classes))}
    precision = metrics.precision_score(y, labels_pred, zero_division=0, **options)
    recall = metrics.recall_score(y, labels_pred, zero_division=0, **options)
    return precision, recall


@pytest.mark.parametrize("kind", list(BATCHES))
@pytest.mark.parametrize("seed", SEEDS)
def test_precision_and_recall_match_sklearn(make_engine: Any, kind: str, seed: int) -> None:
    data = BATCHES[kind](seed)
    multilabel = kind == "multilabel"
    averages = AVERAGES + (["samples"] if multilabel else [])
    attached: dict[str, Any] = {}
    for average in averages:
        attached[f"P-{average}"] = Precision(average=average, is_multilabel=multilabel)
        attached[f"R-{average}"] = Recall(average=average, is_multilabel=multilabel)
    got = evaluate(make_engine, attached, data)

    y_pred, y = joined(data)
    labels_pred = y_pred.argmax(axis=1) if kind == "multiclass" else y_pred
    for average in averages:
        precision, recall = _sklearn_precision_recall(kind, y, labels_pred, average)
        assert as_array(got[f"P-{average}"]) == approx(precision), average
        assert as_array(got[f"R-{average}"]) == approx(recall), average


def test_average_true_is_macro_and_none_is_per_class(make_engine: Any) -> None:
    data = multiclass_batches(7)
    got = evaluate(
        make_engine,
        {
            "true": Precision(average=True),
            "macro": Precision(average="macro"),
            "none": Recall(average=None),
            "false": Recall(average=False),
        },
        data,
    )
    assert got["true"] == got["macro"]
    assert isinstance(got["none"], torch.Tensor)
    assert got["none"].shape == (4,)
    assert torch.equal(got["none"], got["false"])


# ------------------------------------------------------------------------------------------ Fbeta
@pytest.mark.parametrize("kind", list(BATCHES))
@pytest.mark.parametrize("seed", SEEDS)
def test_fbeta_matches_sklearn(make_engine: Any, kind: str, seed: int) -> None:
    data = BATCHES[kind](seed)
    multilabel = kind == "multilabel"
    attached: dict[str, Any] = {}
    for beta in (0.5, 1, 2):
        for average in (False, True, "micro", "weighted"):
            if multilabel:  # Fbeta's own Precision/Recall are not multilabel: give such ones
                inner = "micro" if average == "micro" else False
                fbeta = Fbeta(
                    beta,
                    average=average,
                    precision=Precision(average=inner, is_multilabel=True),
                    recall=Recall(average=inner, is_multilabel=True),
                )
            else:
                fbeta = Fbeta(beta, average=average)
            attached[f"{beta}-{average}"] = fbeta
    got = evaluate(make_engine, attached, data)

    y_pred, y = joined(data)
    labels_pred = y_pred.argmax(axis=1) if kind == "multiclass" else y_pred
    labels = {} if multilabel else {"labels": list(range(4 if kind == "multiclass" else 2))}
    for beta in (0.5, 1, 2):
        for average in (False, True, "micro", "weighted"):
            if kind == "binary" and average != "micro":
                options: dict[str, Any] = {"average": "binary"}
            else:
                sk_average = {False: None, True: "macro"}.get(average, average)
                options = {"average": sk_average, **labels}
            expected = metrics.fbeta_score(y, labels_pred, beta=beta, zero_division=0, **options)
            assert as_array(got[f"{beta}-{average}"]) == approx(expected), (beta, average)


def test_f1_from_metric_arithmetic_matches_sklearn(make_engine: Any) -> None:
    data = multiclass_batches(11)
    precision, recall = Precision(average=False), Recall(average=False)
    f1 = (precision * recall * 2 / (precision + recall + 1e-20)).mean()
    got = evaluate(make_engine, {"f1": f1}, data)
    y_pred, y = joined(data)
    expected = metrics.f1_score(
        y, y_pred.argmax(axis=1), average="macro", labels=range(4), zero_division=0
    )
    assert got["f1"] == approx(expected)


# ------------------------------------------------------------------------------- confusion matrix
@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_matrix_matches_sklearn(make_engine: Any, seed: int) -> None:
    data = multiclass_batches(seed, num_classes=5)
    got = evaluate(
        make_engine,
        {
            "cm": ConfusionMatrix(5),
            "recall": ConfusionMatrix(5, average="recall"),
            "precision": ConfusionMatrix(5, average="precision"),
            "samples": ConfusionMatrix(5, average="samples"),
        },
        data,
    )
    y_pred, y = joined(data)
    labels_pred, labels = y_pred.argmax(axis=1), list(range(5))
    expected = metrics.confusion_matrix(y, labels_pred, labels=labels)
    assert got["cm"].dtype == torch.int64
    np.testing.assert_array_equal(got["cm"].numpy(), expected)
    for average, normalize in (("recall", "true"), ("precision", "pred"), ("samples", "all")):
        normalized = metrics.confusion_matrix(y, labels_pred, labels=labels, normalize=normalize)
        np.testing.assert_allclose(got[average].numpy(), normalized, rtol=1e-12, atol=1e-15)


def test_confusion_matrix_skips_targets_outside_the_classes(make_engine: Any) -> None:
    y_pred = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    y = torch.tensor([0, 255, 2, -1])
    got = evaluate(make_engine, {"cm": ConfusionMatrix(3)}, [(y_pred, y)])
    assert got["cm"].tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]


# ------------------------------------------------------------------------------ top-k accuracy
@pytest.mark.parametrize("seed", SEEDS)
def test_top_k_accuracy_matches_sklearn(make_engine: Any, seed: int) -> None:
    data = multiclass_batches(seed, num_classes=6)
    got = evaluate(
        make_engine, {f"top{k}": TopKCategoricalAccuracy(k=k) for k in (1, 2, 3, 5)}, data
    )
    y_pred, y = joined(data)
    for k in (1, 2, 3, 5):
        expected = metrics.top_k_accuracy_score(y, y_pred, k=k, labels=list(range(6)))
        assert got[f"top{k}"] == approx(expected), k


# ------------------------------------------------------------------------------------ regression
@pytest.mark.parametrize("shape", [(), (1,)], ids=["N", "N-1"])
@pytest.mark.parametrize("seed", SEEDS)
def test_regression_metrics_match_sklearn(
    make_engine: Any, seed: int, shape: tuple[int, ...]
) -> None:
    data = regression_batches(seed, shape)
    got = evaluate(
        make_engine,
        {"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "rmse": RootMeanSquaredError()},
        data,
    )
    y_pred, y = (a.astype(np.float64) for a in joined(data))
    mse = metrics.mean_squared_error(y, y_pred)
    assert got["mse"] == approx(mse)
    assert got["mae"] == approx(metrics.mean_absolute_error(y, y_pred))
    assert got["rmse"] == approx(math.sqrt(mse))


def test_regression_metrics_sum_over_outputs_like_ignite(make_engine: Any) -> None:
    """For (N, D) targets the error is summed over a sample's D outputs, then averaged over N."""
    data = regression_batches(5, (3,))
    got = evaluate(make_engine, {"mse": MeanSquaredError(), "mae": MeanAbsoluteError()}, data)
    y_pred, y = (a.astype(np.float64) for a in joined(data))
    assert got["mse"] == approx(3 * metrics.mean_squared_error(y, y_pred))
    assert got["mae"] == approx(3 * metrics.mean_absolute_error(y, y_pred))


def test_regression_accepts_n_1_predictions_for_n_targets(make_engine: Any) -> None:
    torch.manual_seed(6)
    data = [(torch.randn(n, 1), torch.randn(n)) for n in (3, 8)]
    got = evaluate(make_engine, {"mse": MeanSquaredError()}, data)
    y_pred, y = (a.astype(np.float64) for a in joined(data))
    assert got["mse"] == approx(metrics.mean_squared_error(y, y_pred[:, 0]))


# ------------------------------------------------------------------------------------- Loss etc.
@pytest.mark.parametrize("seed", SEEDS)
def test_loss_is_the_sample_weighted_mean(make_engine: Any, seed: int) -> None:
    data = multiclass_batches(seed)
    cross_entropy = torch.nn.functional.cross_entropy
    got = evaluate(make_engine, {"loss": Loss(cross_entropy)}, data)
    y_pred = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data])
    # sklearn's log_loss of the softmax probabilities is the same quantity.
    probabilities = torch.softmax(y_pred.double(), dim=1).numpy()
    assert got["loss"] == pytest.approx(cross_entropy(y_pred.double(), y).item(), rel=1e-6)
    assert got["loss"] == pytest.approx(
        metrics.log_loss(y, probabilities, labels=range(4)), rel=1e-6
    )


def test_loss_passes_criterion_kwargs_and_uses_batch_size(make_engine: Any) -> None:
    torch.manual_seed(8)
    weight = torch.tensor([1.0, 2.0, 0.5])
    data = [
        {
            "y_pred": torch.randn(n, 3),
            "y": torch.randint(0, 3, (n,)),
            "criterion_kwargs": {"weight": weight},
        }
        for n in (4, 6)
    ]
    seen: list[int] = []

    def count(y: Any) -> int:
        seen.append(len(y))
        return len(y)

    got = evaluate(
        make_engine, {"loss": Loss(torch.nn.functional.cross_entropy, batch_size=count)}, data
    )
    expected = (
        sum(
            torch.nn.functional.cross_entropy(b["y_pred"], b["y"], weight=weight).item()
            * len(b["y"])
            for b in data
        )
        / 10
    )
    assert got["loss"] == pytest.approx(expected, rel=1e-6)
    assert seen == [4, 6]


def test_average_of_numbers_and_tensors(make_engine: Any) -> None:
    torch.manual_seed(9)
    values = torch.randn(5)
    vectors = torch.randn(5, 3)
    batches = [torch.randn(n, 2) for n in (3, 1, 4)]
    engine_output = list(
        zip(values.tolist(), vectors, batches + [torch.randn(2, 2)] * 2, strict=True)
    )
    got = evaluate(
        make_engine,
        {
            "number": Average(output_transform=lambda o: o[0]),
            "vector": Average(output_transform=lambda o: o[1]),
            "batch": Average(output_transform=lambda o: o[2]),
        },
        engine_output,
    )
    assert got["number"] == approx(values.double().mean().item())
    np.testing.assert_allclose(
        got["vector"].numpy(), vectors.double().mean(dim=0).numpy(), rtol=1e-12
    )
    all_rows = torch.cat([o[2] for o in engine_output]).double()
    np.testing.assert_allclose(got["batch"].numpy(), all_rows.mean(dim=0).numpy(), rtol=1e-12)


def test_running_average_of_output_and_of_a_metric(make_engine: Any) -> None:
    data = multiclass_batches(12, count=6)
    losses = [torch.nn.functional.cross_entropy(*batch).item() for batch in data]
    accuracies = [(p.argmax(1) == y).double().mean().item() for p, y in data]
    engine = make_engine(lambda e, batch: (torch.nn.functional.cross_entropy(*batch), *batch))
    RunningAverage(output_transform=lambda o: o[0], alpha=0.9).attach(engine, "loss")
    RunningAverage(Accuracy(output_transform=lambda o: o[1:]), alpha=0.5).attach(engine, "acc")
    seen: list[tuple[float, float]] = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: seen.append((e.state.metrics["loss"], e.state.metrics["acc"])),
    )
    engine.run(data)
    loss_ema = acc_ema = None
    for (loss_seen, acc_seen), loss, acc in zip(seen, losses, accuracies, strict=True):
        loss_ema = loss if loss_ema is None else 0.9 * loss_ema + 0.1 * loss
        acc_ema = acc if acc_ema is None else 0.5 * acc_ema + 0.5 * acc
        assert loss_seen == pytest.approx(loss_ema, rel=1e-6)
        assert acc_seen == approx(acc_ema)


# ------------------------------------------------------------------------------------- epochs
def test_epoch_wise_metrics_reset_every_epoch(make_engine: Any) -> None:
    per_epoch = [multiclass_batches(20), multiclass_batches(21)]
    engine = make_engine(lambda e, index: per_epoch[e.state.epoch - 1][index])
    Accuracy().attach(engine, "acc")
    ConfusionMatrix(4).attach(engine, "cm")
    values: list[tuple[float, Any]] = []
    engine.add_event_handler(
        Events.EPOCH_COMPLETED,
        lambda e: values.append((e.state.metrics["acc"], e.state.metrics["cm"])),
    )
    engine.run(range(4), max_epochs=2)
    for (acc, cm), data in zip(values, per_epoch, strict=True):
        y_pred, y = joined(data)
        assert acc == approx(metrics.accuracy_score(y, y_pred.argmax(1)))
        np.testing.assert_array_equal(
            cm.numpy(), metrics.confusion_matrix(y, y_pred.argmax(1), labels=range(4))
        )


# --------------------------------------------------------------------------------- hypothesis
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=5),
    num_classes=st.integers(2, 6),
    seed=st.integers(0, 2**16),
)
def test_multiclass_metrics_match_sklearn_on_any_batches(
    backend: str, sizes: list[int], num_classes: int, seed: int
) -> None:
    torch.manual_seed(seed)
    data = [(torch.randn(n, num_classes), torch.randint(0, num_classes, (n,))) for n in sizes]
    engine = Engine(lambda e, batch: batch, backend=backend)
    attached = {
        "acc": Accuracy(),
        "precision": Precision(average="weighted"),
        "recall": Recall(average=False),
        "f2": Fbeta(2, average="macro"),
        "cm": ConfusionMatrix(num_classes),
        "top2": TopKCategoricalAccuracy(k=2),
    }
    for name, metric in attached.items():
        metric.attach(engine, name)
    got = engine.run(data).metrics
    y_pred, y = joined(data)
    labels_pred, labels = y_pred.argmax(axis=1), list(range(num_classes))
    assert got["acc"] == approx(metrics.accuracy_score(y, labels_pred))
    assert got["precision"] == approx(
        metrics.precision_score(y, labels_pred, labels=labels, average="weighted", zero_division=0)
    )
    assert got["recall"].numpy() == approx(
        metrics.recall_score(y, labels_pred, labels=labels, average=None, zero_division=0)
    )
    assert got["f2"] == approx(
        metrics.fbeta_score(y, labels_pred, beta=2, labels=labels, average="macro", zero_division=0)
    )
    np.testing.assert_array_equal(
        got["cm"].numpy(), metrics.confusion_matrix(y, labels_pred, labels=labels)
    )
    if num_classes > 2:  # scikit-learn wants 1-d scores for two classes (and k=2 is then trivial)
        expected_top2 = metrics.top_k_accuracy_score(y, y_pred, k=2, labels=labels)
        assert got["top2"] == approx(expected_top2)
    else:
        assert got["top2"] == 1.0


# ------------------------------------------------------------------------------ ignite parity
@pytest.mark.ignite
@pytest.mark.parametrize("seed", SEEDS)
def test_values_equal_ignite_metrics_on_the_same_run(make_engine: Any, seed: int) -> None:
    """ignite 0.5.5's metrics, attached to the same ember engine, give the same values."""
    im = pytest.importorskip("ignite.metrics")
    import ember.metrics as em

    def both(make: Any) -> tuple[Any, Any]:
        return make(im), make(em)

    pairs = {
        "acc": both(lambda m: m.Accuracy()),
        "p": both(lambda m: m.Precision(average=False)),
        "p_macro": both(lambda m: m.Precision(average="macro")),
        "p_weighted": both(lambda m: m.Precision(average="weighted")),
        "r_micro": both(lambda m: m.Recall(average="micro")),
        "f2": both(lambda m: m.Fbeta(2.0)),
        "f1_classes": both(lambda m: m.Fbeta(1.0, average=False)),
        "cm": both(lambda m: m.ConfusionMatrix(4)),
        "cm_recall": both(lambda m: m.ConfusionMatrix(4, average="recall")),
        "top2": both(lambda m: m.TopKCategoricalAccuracy(k=2)),
        "loss": both(lambda m: m.Loss(torch.nn.functional.cross_entropy)),
        "mse": both(
            lambda m: m.MeanSquaredError(output_transform=lambda o: (o[0][:, 0], o[0][:, 1]))
        ),
        "mae": both(
            lambda m: m.MeanAbsoluteError(output_transform=lambda o: (o[0][:, :2], o[0][:, 2:]))
        ),
        "rmse": both(
            lambda m: m.RootMeanSquaredError(output_transform=lambda o: (o[0][:, 0], o[0][:, 1]))
        ),
    }
    engine = make_engine(lambda e, batch: batch)
    for name, (ignite_metric, ember_metric) in pairs.items():
        ignite_metric.attach(engine, f"ignite-{name}")
        ember_metric.attach(engine, name)
    got = engine.run(multiclass_batches(seed)).metrics
    for name in pairs:
        expected, value = got[f"ignite-{name}"], got[name]
        if isinstance(expected, torch.Tensor):
            assert torch.allclose(value.double(), expected.double(), rtol=1e-5, atol=1e-7), name
        else:
            assert value == pytest.approx(expected, rel=1e-5), name
