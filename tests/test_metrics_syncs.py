"""Host syncs of the metrics, counted by dispatch (deterministic): at most one per metric per
evaluation pass, none in update(); the device code paths (index_add_) give the CPU's values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ember.metrics import (
    Accuracy,
    Average,
    ConfusionMatrix,
    Fbeta,
    Loss,
    MeanAbsoluteError,
    MeanSquaredError,
    Metric,
    Precision,
    Recall,
    RootMeanSquaredError,
    RunningAverage,
    TopKCategoricalAccuracy,
    classification,
)
from syncs import HostSyncCounter

BATCHES = 20


def _data(kind: str) -> list[Any]:
    generator = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(BATCHES):
        if kind == "multiclass":
            batch = (
                torch.randn(16, 5, generator=generator),
                torch.randint(0, 5, (16,), generator=generator),
            )
        elif kind == "binary":
            batch = tuple(torch.randint(0, 2, (16,), generator=generator) for _ in range(2))
        elif kind == "multilabel":
            batch = tuple(torch.randint(0, 2, (16, 4), generator=generator) for _ in range(2))
        else:
            batch = (torch.randn(16, generator=generator), torch.randn(16, generator=generator))
        batches.append(batch)
    return batches


def _precision_times_recall() -> Metric:
    """A MetricsLambda of a MetricsLambda."""
    return (Precision() * Recall()).mean()


# name -> (metric factory, input kind, host syncs per pass of 20 batches)
PASSES: dict[str, tuple[Callable[[], Metric], str, int]] = {
    "Accuracy multiclass": (Accuracy, "multiclass", 1),
    "Accuracy binary": (Accuracy, "binary", 1),
    "Accuracy multilabel": (lambda: Accuracy(is_multilabel=True), "multilabel", 1),
    "Accuracy every batch checked": (lambda: Accuracy(check_values="every"), "binary", 1),
    "Precision multiclass": (Precision, "multiclass", 1),
    "Precision binary": (Precision, "binary", 1),
    "Precision binary per class": (lambda: Precision(average=None), "binary", 1),
    "Precision macro": (lambda: Precision(average=True), "multiclass", 1),
    "Precision micro": (lambda: Precision(average="micro"), "multiclass", 1),
    "Recall weighted": (lambda: Recall(average="weighted"), "multiclass", 1),
    "Recall multilabel": (lambda: Recall(is_multilabel=True), "multilabel", 1),
    "Recall samples": (lambda: Recall(average="samples", is_multilabel=True), "multilabel", 1),
    # The matrix is stored as a CPU tensor: on a GPU, one copy to the host (no scalar read).
    "ConfusionMatrix": (lambda: ConfusionMatrix(5), "multiclass", 0),
    "ConfusionMatrix recall": (lambda: ConfusionMatrix(5, average="recall"), "multiclass", 0),
    "TopKCategoricalAccuracy": (lambda: TopKCategoricalAccuracy(2), "multiclass", 1),
    "MeanSquaredError": (MeanSquaredError, "regression", 1),
    "MeanAbsoluteError": (MeanAbsoluteError, "regression", 1),
    "RootMeanSquaredError": (RootMeanSquaredError, "regression", 1),
    "Loss": (lambda: Loss(torch.nn.functional.cross_entropy), "multiclass", 1),
    "Average": (lambda: Average(output_transform=lambda o: o[0].mean()), "regression", 1),
    # Precision's and Recall's checks read with the F value.
    "Fbeta": (lambda: Fbeta(1.0), "multiclass", 1),
    "Fbeta weighted": (lambda: Fbeta(1.0, average="weighted"), "multiclass", 1),
    "Fbeta per class": (lambda: Fbeta(1.0, average=False), "binary", 1),
    "precision * recall": (_precision_times_recall, "multilabel", 1),
}


@pytest.mark.parametrize("name", sorted(PASSES))
def test_one_host_sync_per_metric_per_evaluation_pass(make_engine: Any, name: str) -> None:
    factory, kind, expected = PASSES[name]
    data = _data(kind)
    engine = make_engine(lambda engine, batch: batch)
    factory().attach(engine, "value")
    engine.run(data[:2])  # a first run: nothing below depends on what happens only once
    with HostSyncCounter() as syncs:
        state = engine.run(data)
    assert syncs.count == expected, syncs.names
    assert state.metrics["value"] is not None


def test_the_stack_of_the_issue_syncs_twice_per_pass(make_engine: Any) -> None:
    # Accuracy and Loss on 20 batches: 42 host syncs before, one per metric now.
    data = _data("multiclass")
    engine = make_engine(lambda engine, batch: batch)
    Accuracy().attach(engine, "accuracy")
    Loss(torch.nn.functional.cross_entropy).attach(engine, "loss")
    with HostSyncCounter() as syncs:
        engine.run(data)
    assert syncs.count == 2, syncs.names


@pytest.mark.parametrize("name", sorted(PASSES))
def test_updates_alone_never_sync(name: str) -> None:
    factory, kind, _ = PASSES[name]
    metric = factory()
    if name == "Average":
        data: list[Any] = [batch[0].mean() for batch in _data(kind)]
    else:
        data = _data(kind)
    with HostSyncCounter() as syncs:
        for output in data:
            metric.update(output)
    assert syncs.names == []


# ----------------------------------------------------------- the device paths, run on the CPU
def _values(factory: Callable[[], Metric], data: list[Any]) -> Any:
    metric = factory()
    for output in data:
        metric.update(output)
    return metric.compute()


def _with_ignored_targets(data: list[Any]) -> list[Any]:
    """Targets 255 and -1 in some batches (a ConfusionMatrix skips them)."""
    marked = []
    for index, (y_pred, targets) in enumerate(data):
        y = targets.clone()
        if index % 3 == 1:
            y[::4] = 255
        if index % 3 == 2:
            y[1::5] = -1
        marked.append((y_pred, y))
    return marked


DEVICE_PATHS: dict[str, tuple[Callable[[], Metric], list[Any]]] = {
    "precision multiclass": (Precision, _data("multiclass")),
    "recall binary per class": (lambda: Recall(average=None), _data("binary")),
    "precision binary": (lambda: Precision(average="weighted"), _data("binary")),
    "confusion matrix": (lambda: ConfusionMatrix(5), _data("multiclass")),
    "confusion matrix, ignored targets": (
        lambda: ConfusionMatrix(5),
        _with_ignored_targets(_data("multiclass")),
    ),
}


@pytest.mark.parametrize("name", sorted(DEVICE_PATHS))
def test_index_add_path_gives_the_bincount_values(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory, data = DEVICE_PATHS[name]
    on_cpu = _values(factory, data)
    monkeypatch.setattr(classification, "_uses_bincount", lambda device: False)
    with HostSyncCounter() as syncs:
        metric = factory()
        for output in data:
            metric.update(output)
    assert syncs.names == []  # no bincount, no boolean mask: nothing a GPU would wait for
    off_cpu = metric.compute()
    assert torch.equal(torch.as_tensor(off_cpu), torch.as_tensor(on_cpu))


def test_ignored_targets_are_skipped_by_the_confusion_matrix() -> None:
    data = _with_ignored_targets(_data("multiclass"))
    matrix = _values(lambda: ConfusionMatrix(5), data)
    y_pred = torch.cat([b[0] for b in data]).argmax(dim=1)
    y = torch.cat([b[1] for b in data])
    keep = (y >= 0) & (y < 5)
    expected = torch.zeros(5, 5, dtype=torch.int64)
    for true, predicted in zip(y[keep].tolist(), y_pred[keep].tolist(), strict=True):
        expected[true, predicted] += 1
    assert torch.equal(matrix, expected)


def test_running_average_of_a_loss_syncs_only_when_read(make_engine: Any) -> None:
    engine = make_engine(lambda engine, batch: torch.nn.functional.cross_entropy(*batch))
    RunningAverage(output_transform=lambda loss: loss).attach(engine, "loss")
    with HostSyncCounter() as syncs:
        engine.run(_data("multiclass"))
    assert syncs.count == 0
    with HostSyncCounter() as syncs:
        assert isinstance(engine.state.metrics["loss"], float)
    assert syncs.count == 1
