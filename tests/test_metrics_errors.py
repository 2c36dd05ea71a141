"""Bad input to ember.metrics: each case raises a ValueError, TypeError or NotComputableError
whose message names the metric and what is wrong."""

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
    MetricsLambda,
    NotComputableError,
    Precision,
    Recall,
    RootMeanSquaredError,
    RunningAverage,
    TopKCategoricalAccuracy,
)

T = torch.tensor
LOGITS = torch.randn(4, 3)
LABELS = T([0, 2, 1, 1])
BITS = T([0, 1, 1, 0])
ML = T([[0, 1, 1], [1, 0, 0]])

# (metric factory, updates: the last one fails, exception, message pattern)
BAD_UPDATES: dict[str, tuple[Callable[[], Any], list[Any], type[Exception], str]] = {
    "not a pair": (
        Accuracy,
        [LOGITS],
        TypeError,
        r"Accuracy.update expects the output \(y_pred, y\)",
    ),
    "triple": (Precision, [(LOGITS, LABELS, LABELS)], TypeError, "a tuple of length 3"),
    "y not a tensor": (
        Accuracy,
        [(LOGITS, [0, 2, 1, 1])],
        TypeError,
        "Accuracy: y should be a torch.Tensor, got list",
    ),
    "0-d": (Accuracy, [(T(1), T(1))], ValueError, "y_pred should have a batch dimension"),
    "complex": (
        Recall,
        [(LOGITS.to(torch.complex64), LABELS)],
        TypeError,
        "should hold real numbers",
    ),
    "batch sizes differ": (
        Accuracy,
        [(LOGITS, T([0, 1, 2]))],
        ValueError,
        "same batch size, got y_pred of shape \\(4, 3\\) and y of shape \\(3,\\)",
    ),
    "multiclass shape": (
        Accuracy,
        [(torch.randn(4, 3, 2), T([[0, 1, 2], [0, 1, 2], [0, 1, 2], [0, 1, 2]]))],
        ValueError,
        r"needs y of shape \(4, 2\), got \(4, 3\)",
    ),
    "binary shape": (
        Accuracy,
        [(T([[0, 1], [1, 0]]), T([[0, 1, 1], [1, 0, 0]]))],
        ValueError,
        "same shape",
    ),
    "ndim gap": (
        Accuracy,
        [(torch.randn(4, 3, 2, 2), LABELS)],
        ValueError,
        r"y must have shape \(batch_size, ...\)",
    ),
    "float multiclass targets": (
        Accuracy,
        [(LOGITS, LABELS.float())],
        TypeError,
        "Accuracy: multiclass input .* needs y of an integer dtype .* got dtype torch.float32",
    ),
    "bool multiclass targets": (Precision, [(LOGITS, LABELS > 0)], TypeError, "integer dtype"),
    "binary then multiclass": (
        Accuracy,
        [(BITS, BITS), (LOGITS, LABELS)],
        ValueError,
        "Accuracy: input type changed from binary to multiclass between updates",
    ),
    "multiclass then binary": (
        Precision,
        [(LOGITS, LABELS), (BITS, BITS)],
        ValueError,
        "input type changed from multiclass to binary",
    ),
    "class count changes": (
        Recall,
        [(LOGITS, LABELS), (torch.randn(4, 5), LABELS)],
        ValueError,
        "number of classes changed from 3 to 5",
    ),
    "multilabel given multiclass": (
        lambda: Accuracy(is_multilabel=True),
        [(LOGITS, LABELS)],
        ValueError,
        r"is_multilabel=True\) needs y_pred and y of the same shape",
    ),
    "multilabel one label": (
        lambda: Precision(is_multilabel=True),
        [(T([[1], [0]]), T([[1], [1]]))],
        ValueError,
        "num_labels > 1",
    ),
    "cm classes": (
        lambda: ConfusionMatrix(4),
        [(LOGITS, LABELS)],
        ValueError,
        r"ConfusionMatrix: y_pred should have shape \(batch_size, num_classes=4, ...\), got \(4, 3\)",
    ),
    "cm 1-d": (lambda: ConfusionMatrix(3), [(LABELS, LABELS)], ValueError, "num_classes=3"),
    "cm target shape": (
        lambda: ConfusionMatrix(3),
        [(LOGITS, LABELS.reshape(4, 1))],
        ValueError,
        r"needs y of shape \(4,\), got \(4, 1\)",
    ),
    "cm float targets": (
        lambda: ConfusionMatrix(3),
        [(LOGITS, LABELS.double())],
        TypeError,
        "ConfusionMatrix needs y of an integer dtype",
    ),
    "topk k too large": (
        lambda: TopKCategoricalAccuracy(k=5),
        [(LOGITS, LABELS)],
        ValueError,
        r"k=5 is larger than the number of classes \(3\)",
    ),
    "topk shape": (
        lambda: TopKCategoricalAccuracy(k=1),
        [(torch.randn(4, 3, 2), LABELS)],
        ValueError,
        r"y_pred should have shape \(batch_size, num_classes\)",
    ),
    "topk float targets": (
        lambda: TopKCategoricalAccuracy(k=1),
        [(LOGITS, LABELS.float())],
        TypeError,
        "integer dtype",
    ),
    "mse shape": (
        MeanSquaredError,
        [(torch.randn(4, 2), torch.randn(4, 3))],
        ValueError,
        r"MeanSquaredError: y_pred and y must have the same shape, got y_pred of shape \(4, 2\)",
    ),
    "mae bool": (
        MeanAbsoluteError,
        [(BITS > 0, BITS)],
        TypeError,
        "MeanAbsoluteError: y_pred should hold numbers, got dtype bool",
    ),
    "rmse batch": (
        RootMeanSquaredError,
        [(torch.randn(3), torch.randn(4))],
        ValueError,
        "same batch size",
    ),
    "loss not average": (
        lambda: Loss(lambda p, y: (p - y) ** 2),
        [(torch.randn(4), torch.randn(4))],
        ValueError,
        r"loss_fn did not return the average loss.*shape \(4,\)",
    ),
    "loss output": (
        lambda: Loss(torch.nn.functional.mse_loss),
        [torch.randn(4)],
        TypeError,
        r"Loss.update expects \(y_pred, y\)",
    ),
    "loss kwargs": (
        lambda: Loss(torch.nn.functional.mse_loss),
        [(torch.randn(4), torch.randn(4), 3)],
        TypeError,
        "should be a mapping",
    ),
    "loss returns text": (
        lambda: Loss(lambda p, y: "small"),
        [(LOGITS, LABELS)],
        TypeError,
        "loss_fn should return a tensor or a number, got str",
    ),
    "loss batch size": (
        lambda: Loss(torch.nn.functional.mse_loss, batch_size=lambda y: -1),
        [(torch.randn(4), torch.randn(4))],
        ValueError,
        r"batch_size\(y\) should be a non-negative int, got -1",
    ),
    "average text": (
        Average,
        ["3"],
        TypeError,
        "Average.update expects a number or a torch.Tensor, got str",
    ),
    "average shape change": (
        Average,
        [torch.ones(3), torch.ones(4)],
        ValueError,
        r"value shape changed from \(3,\) to \(4,\)",
    ),
    "running average text": (
        lambda: RunningAverage(output_transform=lambda o: o),
        ["3"],
        TypeError,
        "RunningAverage.update expects a number or a torch.Tensor",
    ),
}


# Checks of the data's values run on the device and fail at compute(), with the same messages.
BAD_VALUES: dict[str, tuple[Callable[[], Any], list[Any], type[Exception], str]] = {
    "class index too large": (
        Accuracy,
        [(LOGITS, T([0, 1, 3, 2]))],
        ValueError,
        r"class indices outside \[0, 3\): min 0, max 3",
    ),
    "negative class index": (Recall, [(LOGITS, T([0, -1, 2, 2]))], ValueError, r"outside \[0, 3\)"),
    "scores for binary": (
        Accuracy,
        [(T([0.2, 0.9, 0.4, 0.7]), BITS)],
        ValueError,
        r"for binary input, y_pred must contain only 0s and 1s, got the value 0.2.*threshold",
    ),
    "non-binary targets": (
        Accuracy,
        [(BITS, T([0, 1, 2, 1]))],
        ValueError,
        "for binary input, y must contain only 0s and 1s, got the value 2",
    ),
    "multilabel scores": (
        lambda: Recall(is_multilabel=True, average="samples"),
        [(ML * 0.7, ML)],
        ValueError,
        "for multilabel input, y_pred must contain only 0s and 1s",
    ),
    "topk bad index": (
        lambda: TopKCategoricalAccuracy(k=1),
        [(LOGITS, T([0, 9, 1, 1]))],
        ValueError,
        "outside",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_UPDATES))
def test_bad_updates_are_refused(case: str) -> None:
    factory, updates, exception, pattern = BAD_UPDATES[case]
    metric = factory()
    for output in updates[:-1]:
        metric.update(output)
    with pytest.raises(exception, match=pattern):
        metric.update(updates[-1])


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
@pytest.mark.parametrize("mode", ["first", "every"])
def test_bad_values_fail_at_compute(case: str, mode: str) -> None:
    factory, updates, exception, pattern = BAD_VALUES[case]
    metric = factory()
    metric._check_values = mode
    for output in updates:
        metric.update(output)
    for _ in range(2):  # the metric stays refused until reset()
        with pytest.raises(exception, match=pattern):
            metric.compute()
    metric.reset()
    with pytest.raises(NotComputableError):
        metric.compute()


def test_every_checks_later_updates_first_only_the_first() -> None:
    good, bad = (BITS, BITS), (BITS, T([0, 1, 2, 1]))
    every, first = Accuracy(check_values="every"), Accuracy()
    for metric in (every, first):
        metric.update(good)
        metric.update(bad)
    with pytest.raises(ValueError, match="y must contain only 0s and 1s, got the value 2"):
        every.compute()
    assert first.compute() == pytest.approx(6 / 8)
    first.reset()  # the first update after a reset is checked again
    first.update(bad)
    with pytest.raises(ValueError, match="only 0s and 1s"):
        first.compute()


def test_out_of_range_targets_of_later_updates_fail_precision_and_recall() -> None:
    # Counted in an overflow cell of every update's counts: no separate check needed.
    for metric in (Precision(), Recall(average=True)):
        metric.update((LOGITS, LABELS))
        metric.update((LOGITS, T([0, 1, 7, 1])))
        with pytest.raises(ValueError, match=r"class indices outside \[0, 3\)"):
            metric.compute()


def test_a_refused_update_leaves_the_metric_unchanged() -> None:
    metric = Accuracy()
    metric.update((BITS, BITS))
    with pytest.raises(ValueError, match="input type changed"):
        metric.update((LOGITS, LABELS))
    with pytest.raises(ValueError, match="same batch size"):
        metric.update((BITS, T([[0, 1, 2, 1]])))
    assert metric.compute() == 1.0
    metric.reset()
    metric.update((LOGITS, LABELS))  # a reset allows another input kind


BAD_CONSTRUCTION: dict[str, tuple[Callable[[], Any], type[Exception], str]] = {
    "transform": (
        lambda: Accuracy(output_transform=3),
        TypeError,
        "Argument output_transform should be callable",
    ),
    "is_multilabel": (
        lambda: Accuracy(is_multilabel="yes"),
        TypeError,
        "is_multilabel should be a bool",
    ),
    "average": (
        lambda: Precision(average="median"),
        ValueError,
        "Precision: argument average should be one of .*'median'",
    ),
    "average int": (lambda: Recall(average=1), ValueError, "argument average should be one of"),
    "samples multiclass": (
        lambda: Recall(average="samples"),
        ValueError,
        r"average='samples' needs multilabel input",
    ),
    "fbeta beta": (lambda: Fbeta(0), ValueError, "Fbeta: beta should be a positive number, got 0"),
    "fbeta average": (
        lambda: Fbeta(1, average="samples"),
        ValueError,
        "Fbeta: argument average should be one of",
    ),
    "fbeta averaged precision": (
        lambda: Fbeta(1, precision=Precision(average=True)),
        ValueError,
        r"Fbeta\(average=True\) needs a Precision with average=False, got average='macro'",
    ),
    "fbeta micro recall": (
        lambda: Fbeta(1, average="micro", recall=Recall()),
        ValueError,
        "needs a Recall with average='micro'",
    ),
    "fbeta wrong class": (
        lambda: Fbeta(1, precision=Recall()),
        TypeError,
        "argument precision should be a Precision, got Recall",
    ),
    "fbeta transform": (
        lambda: Fbeta(1, recall=Recall(), output_transform=lambda o: o),
        ValueError,
        "output_transform and device should be None",
    ),
    "cm classes": (lambda: ConfusionMatrix(1), ValueError, "num_classes should be > 1, got 1"),
    "cm classes type": (lambda: ConfusionMatrix("3"), TypeError, "num_classes should be an int"),
    "cm average": (
        lambda: ConfusionMatrix(3, average="macro"),
        ValueError,
        "ConfusionMatrix: argument average should be None or one of",
    ),
    "topk k": (
        lambda: TopKCategoricalAccuracy(k=0),
        ValueError,
        "k should be a positive int, got 0",
    ),
    "loss fn": (lambda: Loss(3), TypeError, "Loss: loss_fn should be callable"),
    "loss batch": (
        lambda: Loss(torch.nn.functional.mse_loss, batch_size=3),
        TypeError,
        "batch_size should be callable",
    ),
    "ra src": (lambda: RunningAverage(src=3), TypeError, "src should be a Metric or None"),
    "ra alpha": (
        lambda: RunningAverage(Accuracy(), alpha=0.0),
        ValueError,
        r"alpha should be a number in \(0, 1\], got 0.0",
    ),
    "ra alpha big": (
        lambda: RunningAverage(Accuracy(), alpha=1.5),
        ValueError,
        "alpha should be a number",
    ),
    "ra both": (
        lambda: RunningAverage(Accuracy(), output_transform=lambda o: o),
        ValueError,
        "output_transform should be None when src is a Metric",
    ),
    "ra neither": (RunningAverage, ValueError, "give src .* or output_transform"),
    "ra device": (
        lambda: RunningAverage(Accuracy(), device="cpu"),
        ValueError,
        "device should be None when src is a Metric",
    ),
    "ra epoch_bound": (
        lambda: RunningAverage(Accuracy(), epoch_bound="yes"),
        TypeError,
        "epoch_bound should be a bool or None",
    ),
    "lambda f": (lambda: MetricsLambda(3, Accuracy()), TypeError, "Argument f should be callable"),
    "check_values": (
        lambda: Accuracy(check_values="never"),
        ValueError,
        "Accuracy: check_values should be 'first' or 'every', got 'never'",
    ),
    "topk check_values": (
        lambda: TopKCategoricalAccuracy(check_values=True),
        ValueError,
        "check_values should be",
    ),
    "device": (lambda: Accuracy(device="nowhere"), RuntimeError, "nowhere"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONSTRUCTION))
def test_bad_arguments_are_refused(case: str) -> None:
    factory, exception, pattern = BAD_CONSTRUCTION[case]
    with pytest.raises(exception, match=pattern):
        factory()


EMPTY: dict[str, Callable[[], Metric]] = {
    "Accuracy": Accuracy,
    "Precision": Precision,
    "Recall": lambda: Recall(average="samples", is_multilabel=True),
    "ConfusionMatrix": lambda: ConfusionMatrix(3),
    "TopKCategoricalAccuracy": TopKCategoricalAccuracy,
    "MeanSquaredError": MeanSquaredError,
    "MeanAbsoluteError": MeanAbsoluteError,
    "RootMeanSquaredError": RootMeanSquaredError,
    "Loss": lambda: Loss(torch.nn.functional.mse_loss),
    "Average": Average,
    "RunningAverage": lambda: RunningAverage(output_transform=lambda o: o),
}


@pytest.mark.parametrize("name", sorted(EMPTY))
def test_compute_before_any_update_is_not_computable(name: str) -> None:
    metric = EMPTY[name]()
    with pytest.raises(NotComputableError, match=f"^{name} must have at least one example"):
        metric.compute()
    assert issubclass(NotComputableError, RuntimeError)


def test_fbeta_before_any_update_names_precision() -> None:
    with pytest.raises(NotComputableError, match="Precision must have at least one example"):
        Fbeta(1).compute()


def test_bad_input_in_a_run_escapes_the_run(make_engine: Any) -> None:
    outputs = [(BITS, BITS), (LOGITS, LABELS)]
    engine = make_engine(lambda e, i: outputs[i])
    Accuracy().attach(engine, "acc")
    with pytest.raises(ValueError, match="input type changed from binary to multiclass"):
        engine.run([0, 1])
    assert engine.state.iteration == 2

    engine = make_engine(lambda e, i: (LOGITS, LABELS.float()))
    Precision().attach(engine, "p")
    with pytest.raises(TypeError, match=r"Precision: multiclass input .* integer dtype"):
        engine.run([0])


@pytest.mark.parametrize("average", [True, False, "weighted"])
def test_bad_values_fail_a_metrics_lambda_at_compute(average: Any) -> None:
    """Checks of the metric arguments are read with the lambda's value, nested lambdas too."""
    for metric in (Fbeta(1.0, average=average), (Precision() * Recall()).mean() + 0):
        metric.update((T([0.2, 0.9, 0.4, 0.7]), BITS))
        with pytest.raises(
            ValueError, match=r"y_pred must contain only 0s and 1s, got the value 0\.2"
        ):
            metric.compute()


def test_the_outcome_of_every_rank_is_one_more_check() -> None:
    """What compute() sums over the ranks (tests/test_distributed_value_checks.py runs them):
    a one-hot flag of this rank's outcome; the sum fails the read after this rank's own checks,
    naming the ranks; the next sum replaces it."""
    from ember.metrics._checks import ValueChecks

    cpu = torch.device("cpu")
    checks = ValueChecks("Accuracy")
    assert checks.rank_flags(1, 3, torch.int64, cpu).tolist() == [0, 0, 0]
    checks.note_ranks(T([0, 1, 1]))
    with pytest.raises(ValueError, match=r"^Accuracy: the value check failed on ranks 1, 2$"):
        checks.read()
    assert checks.rank_flags(1, 3, torch.float64, cpu).tolist() == [0.0, 0.0, 0.0]
    checks.note_ranks(T([0, 0, 0]))
    assert checks.read_count(T(5)) == 5

    checks.class_indices(T([0, 4]), 3)
    assert checks.rank_flags(2, 3, torch.int64, cpu).tolist() == [0, 0, 1]
    checks.note_ranks(T([1, 0, 1]))
    with pytest.raises(ValueError, match=r"^Accuracy: y holds class indices outside \[0, 3\)"):
        checks.read_count(T(5))
