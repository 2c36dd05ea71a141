"""Classification metrics: Accuracy, Precision, Recall, Fbeta, ConfusionMatrix, top-k accuracy.

Input kinds (``y_pred``, ``y``), decided at every update and fixed until the next ``reset()``:

* binary: ``y_pred`` and ``y`` of the same shape ``(N, ...)`` holding 0s and 1s
  (``y_pred`` may also be ``(N, 1, ...)``);
* multiclass: ``y_pred`` of shape ``(N, C, ...)`` with ``C > 1`` (scores or logits; the
  prediction is the argmax over dimension 1) and ``y`` of shape ``(N, ...)`` holding integer
  class indices in ``[0, C)``;
* multilabel (``is_multilabel=True``): ``y_pred`` and ``y`` of shape ``(N, C, ...)`` with
  ``C > 1``, holding 0s and 1s.
"""

from __future__ import annotations

import numbers
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from ember.metrics._base import Metric, MetricsLambda, _identity
from ember.metrics._checks import as_pair, is_integer_dtype, require_binary, shape_of

__all__ = [
    "Accuracy",
    "ConfusionMatrix",
    "Fbeta",
    "Precision",
    "Recall",
    "TopKCategoricalAccuracy",
]


def _require_integer_targets(subject: str, y: torch.Tensor) -> None:
    """Refuse a ``y`` that cannot hold class indices; ``subject`` starts the message."""
    if not is_integer_dtype(y.dtype):
        raise TypeError(
            f"{subject} needs y of an integer dtype holding class indices, got dtype "
            f"{y.dtype} (convert with y.long())"
        )


def _check_class_indices(name: str, y: torch.Tensor, num_classes: int, what: str) -> None:
    _require_integer_targets(f"{name}: {what}", y)
    if y.numel() and (bool((y < 0).any()) or bool((y >= num_classes).any())):
        raise ValueError(
            f"{name}: y holds class indices outside [0, {num_classes}): min {y.min().item()}, "
            f"max {y.max().item()}"
        )


def _safe_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator``, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    positive = denominator > 0
    return torch.where(positive, numerator / torch.where(positive, denominator, 1), 0.0)


class _ClassificationMetric(Metric):
    """Works out the input kind of each update and refuses changes of kind between updates."""

    _state_attrs: tuple[str, ...] = ("_type", "_num_classes")

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = _identity,
        is_multilabel: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(is_multilabel, bool):
            raise TypeError(f"Argument is_multilabel should be a bool, got {type(is_multilabel)}")
        self._is_multilabel = is_multilabel
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._type: str | None = None
        self._num_classes: int | None = None

    def _check_input(self, output: Any) -> tuple[str, torch.Tensor, torch.Tensor, int]:
        """``(kind, y_pred, y, num_classes)``; binary ``y_pred`` of shape (N, 1, ...) is squeezed."""
        name = self._name
        y_pred, y = as_pair(name, output)
        shapes = f"y_pred of shape {shape_of(y_pred)} and y of shape {shape_of(y)}"
        if y_pred.ndim == y.ndim + 1:
            if self._is_multilabel:
                raise ValueError(
                    f"{name}(is_multilabel=True) needs y_pred and y of the same shape "
                    f"(batch_size, num_labels, ...), got {shapes}"
                )
            expected = (y_pred.shape[0], *y_pred.shape[2:])
            if shape_of(y) != expected:
                raise ValueError(
                    f"{name}: y_pred of shape (batch_size, num_classes, ...) = "
                    f"{shape_of(y_pred)} needs y of shape {expected}, got {shape_of(y)}"
                )
            num_classes = y_pred.shape[1]
            if num_classes == 1:
                kind = "binary"
                y_pred = y_pred.squeeze(1)
            else:
                kind = "multiclass"
        elif y_pred.ndim == y.ndim:
            if y_pred.shape != y.shape:
                raise ValueError(f"{name}: y_pred and y must have the same shape, got {shapes}")
            if self._is_multilabel:
                if y.ndim < 2 or y.shape[1] < 2:
                    raise ValueError(
                        f"{name}(is_multilabel=True) needs y_pred and y of shape "
                        f"(batch_size, num_labels, ...) with num_labels > 1, got {shapes}"
                    )
                kind, num_classes = "multilabel", y.shape[1]
            else:
                kind, num_classes = "binary", 1
        else:
            raise ValueError(
                f"{name}: y must have shape (batch_size, ...) and y_pred (batch_size, ...) or "
                f"(batch_size, num_classes, ...), got {shapes}"
            )

        if kind == "multiclass":
            _check_class_indices(
                name, y, num_classes, "multiclass input (y_pred of shape (N, C, ...))"
            )
            if y_pred.dtype == torch.bool:
                raise TypeError(
                    f"{name}: multiclass input needs y_pred of scores (N, C, ...), got dtype bool"
                )
        else:
            require_binary(name, "y_pred", y_pred, kind)
            require_binary(name, "y", y, kind)

        if self._type is not None and self._type != kind:
            raise ValueError(
                f"{name}: input type changed from {self._type} to {kind} between updates "
                f"({shapes}); call reset() before feeding another kind of input"
            )
        if self._num_classes is not None and self._num_classes != num_classes:
            raise ValueError(
                f"{name}: number of classes changed from {self._num_classes} to {num_classes} "
                f"between updates ({shapes})"
            )
        self._type, self._num_classes = kind, num_classes
        return kind, y_pred, y, num_classes


def _labels_last(tensor: torch.Tensor, num_labels: int) -> torch.Tensor:
    """(N, C, ...) -> (N * ..., C)."""
    return torch.movedim(tensor, 1, -1).reshape(-1, num_labels)


class Accuracy(_ClassificationMetric):
    """Fraction of correct predictions.

    Binary: elementwise equality of 0/1 predictions. Multiclass: the argmax of the scores equals
    the target. Multilabel: a sample (position) counts only if all its labels are right (subset
    accuracy, as ``sklearn.metrics.accuracy_score``).
    """

    _state_attrs = ("_num_correct", "_num_examples", "_type", "_num_classes")

    def reset(self) -> None:
        self._num_correct = torch.tensor(0, dtype=torch.int64, device=self._device)
        self._num_examples = 0
        super().reset()

    def update(self, output: Any) -> None:
        kind, y_pred, y, num_classes = self._check_input(output)
        if kind == "binary":
            correct = y_pred.reshape(-1) == y.reshape(-1)
        elif kind == "multiclass":
            correct = (torch.argmax(y_pred, dim=1) == y).reshape(-1)
        else:
            correct = (
                _labels_last(y_pred, num_classes) == _labels_last(y, num_classes).to(y_pred.dtype)
            ).all(dim=-1)
        self._num_correct += correct.sum().to(self._device)
        self._num_examples += correct.numel()

    def compute(self) -> float:
        return self._ratio_over_ranks(self._num_correct, self._num_examples)


_AVERAGES = (False, None, True, "macro", "micro", "weighted", "samples")


def _check_average(name: str, average: Any, allowed: tuple[Any, ...]) -> Any:
    # The type check first: 1 == True and 0 == False would let ints through ``in allowed``.
    if not (average is None or isinstance(average, (bool, str))) or average not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name}: argument average should be one of {shown}; got {average!r}")
    return "macro" if average is True else (False if average is None else average)


class _PrecisionRecall(_ClassificationMetric):
    """Counts per class: true positives, predicted positives and actual positives."""

    _state_attrs = (
        "_true_positives",
        "_predicted_positives",
        "_actual_positives",
        "_samples_sum",
        "_num_samples",
        "_type",
        "_num_classes",
    )

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = _identity,
        average: bool | str | None = False,
        is_multilabel: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        self._average = _check_average(type(self).__name__, average, _AVERAGES)
        if self._average == "samples" and not is_multilabel:
            raise ValueError(
                f"{type(self).__name__}: average='samples' needs multilabel input "
                "(is_multilabel=True)"
            )
        super().__init__(output_transform, is_multilabel=is_multilabel, device=device)

    @property
    def average(self) -> bool | str:
        """``False`` (per class), ``"macro"``, ``"micro"``, ``"weighted"`` or ``"samples"``."""
        return self._average

    def reset(self) -> None:
        self._true_positives: torch.Tensor | None = None
        self._predicted_positives: torch.Tensor | None = None
        self._actual_positives: torch.Tensor | None = None
        self._samples_sum = torch.tensor(0.0, dtype=self._double_dtype, device=self._device)
        self._num_samples = 0
        super().reset()

    @abstractmethod
    def _denominator(self, predicted: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
        """What the true positives are divided by, ``predicted`` (precision) or ``actual``
        (recall): one-hot rows in :meth:`update`, per-class totals in :meth:`compute`."""

    def _totals(self) -> tuple[Any, Any, Any, Any, int]:
        """``(true, predicted, actual positives, samples_sum, num_samples)`` over all ranks."""
        return self._sum_over_ranks(
            self._true_positives,
            self._predicted_positives,
            self._actual_positives,
            self._samples_sum,
            self._num_samples,
        )

    def update(self, output: Any) -> None:
        kind, y_pred, y, num_classes = self._check_input(output)
        if kind == "binary" and self._average is False:
            # The positive class alone: per-class counts are scalars.
            predicted, actual = y_pred.reshape(-1), y.reshape(-1)
        elif kind == "binary":
            predicted = torch.nn.functional.one_hot(y_pred.reshape(-1).long(), 2)
            actual = torch.nn.functional.one_hot(y.reshape(-1).long(), 2)
        elif kind == "multiclass":
            predicted = torch.nn.functional.one_hot(
                torch.argmax(y_pred, dim=1).reshape(-1), num_classes
            )
            actual = torch.nn.functional.one_hot(y.reshape(-1).long(), num_classes)
        else:
            predicted = _labels_last(y_pred, num_classes)
            actual = _labels_last(y, num_classes)
        predicted = predicted.to(dtype=self._double_dtype, device=self._device)
        actual = actual.to(dtype=self._double_dtype, device=self._device)
        hits = predicted * actual
        counts = (hits.sum(dim=0), predicted.sum(dim=0), actual.sum(dim=0))
        if self._true_positives is None:
            self._true_positives, self._predicted_positives, self._actual_positives = counts
        else:
            self._true_positives = self._true_positives + counts[0]
            self._predicted_positives = self._predicted_positives + counts[1]
            self._actual_positives = self._actual_positives + counts[2]
        if self._average == "samples":
            per_sample = _safe_ratio(
                hits.sum(dim=1), self._denominator(predicted, actual).sum(dim=1)
            )
            self._samples_sum = self._samples_sum + per_sample.sum()
            self._num_samples += hits.shape[0]

    def compute(self) -> float | torch.Tensor:
        true_positives, predicted, actual, samples_sum, num_samples = self._totals()
        if true_positives is None:
            raise self._not_computable()
        if self._average == "samples":
            if num_samples == 0:
                raise self._not_computable()
            return float((samples_sum / num_samples).item())
        denominator = self._denominator(predicted, actual)
        if self._average == "micro":
            return _safe_ratio(true_positives.sum(), denominator.sum()).item()
        per_class = _safe_ratio(true_positives, denominator)
        if self._average is False:
            return per_class.item() if per_class.ndim == 0 else per_class
        if self._average == "macro":
            return per_class.mean().item()
        weights = actual  # "weighted": by support, as scikit-learn
        return _safe_ratio((per_class * weights).sum(), weights.sum()).item()


class Precision(_PrecisionRecall):
    """Precision, ``TP / (TP + FP)`` (0 where nothing was predicted positive).

    ``average=False`` (or ``None``): binary input gives the positive class's precision, a number;
    multiclass and multilabel input give a tensor with one value per class. ``True``/``"macro"``:
    the unweighted mean over classes (binary input counts both classes). ``"micro"``: from the
    counts summed over classes. ``"weighted"``: the mean weighted by each class's support.
    ``"samples"`` (multilabel): the mean over samples of each sample's precision.
    """

    def _denominator(self, predicted: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
        return predicted


class Recall(_PrecisionRecall):
    """Recall, ``TP / (TP + FN)`` (0 where a class never occurs); ``average`` as for Precision."""

    def _denominator(self, predicted: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
        return actual


def _fbeta_value(beta_squared: float, precision: Any, recall: Any) -> Any:
    numerator = (1.0 + beta_squared) * precision * recall
    denominator = beta_squared * precision + recall
    if isinstance(numerator, torch.Tensor) or isinstance(denominator, torch.Tensor):
        return _safe_ratio(torch.as_tensor(numerator), torch.as_tensor(denominator))
    return numerator / denominator if denominator > 0 else 0.0


def Fbeta(  # noqa: N802 - ignite's name; a function that builds a MetricsLambda
    beta: float,
    average: bool | str | None = True,
    precision: Precision | None = None,
    recall: Recall | None = None,
    output_transform: Callable[[Any], Any] | None = None,
    device: str | torch.device | None = None,
) -> MetricsLambda:
    """The F-beta score ``(1 + beta²) P R / (beta² P + R)`` (0 where P = R = 0), as a metric.

    ``average``: ``False``/``None`` gives one score per class (binary input: the positive
    class's score); ``True``/``"macro"`` their mean; ``"weighted"`` their mean weighted by
    support; ``"micro"`` the score of micro-averaged precision and recall. Binary input with
    ``True``/``"macro"``/``"weighted"`` gives the positive class's score (scikit-learn's
    ``average="binary"``).

    ``precision`` and ``recall`` may be given (``average=False`` ones, or ``"micro"`` ones for
    ``average="micro"``), e.g. to share them with other metrics; the missing ones are created
    with ``output_transform`` and ``device``.
    """
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not beta > 0:
        raise ValueError(f"Fbeta: beta should be a positive number, got {beta!r}")
    mode = _check_average("Fbeta", average, (False, None, True, "macro", "micro", "weighted"))
    inner = "micro" if mode == "micro" else False
    for given, cls in ((precision, Precision), (recall, Recall)):
        if given is None:
            continue
        if not isinstance(given, cls):
            raise TypeError(
                f"Fbeta: argument {cls.__name__.lower()} should be a {cls.__name__}, "
                f"got {type(given).__name__}"
            )
        if output_transform is not None or device is not None:
            raise ValueError(
                f"Fbeta: when {cls.__name__.lower()} is given, output_transform and device "
                "should be None (they come from the given metric)"
            )
        if given.average != inner:
            raise ValueError(
                f"Fbeta(average={average!r}) needs a {cls.__name__} with average={inner!r}, "
                f"got average={given.average!r}"
            )
    transform = _identity if output_transform is None else output_transform
    if precision is None:
        precision = Precision(
            transform,
            average=inner,
            is_multilabel=recall._is_multilabel if recall is not None else False,
            device=recall.device if recall is not None else (device or "cpu"),
        )
    if recall is None:
        recall = Recall(
            transform,
            average=inner,
            is_multilabel=precision._is_multilabel,
            device=precision.device,
        )
    beta_squared = float(beta) ** 2
    support = recall

    def fbeta_per_class(p: Any, r: Any) -> Any:
        return _fbeta_value(beta_squared, p, r)

    def fbeta_macro(p: Any, r: Any) -> float:
        value = _fbeta_value(beta_squared, p, r)
        return value.mean().item() if isinstance(value, torch.Tensor) else value

    def fbeta_weighted(p: Any, r: Any) -> float:
        value = _fbeta_value(beta_squared, p, r)
        if not isinstance(value, torch.Tensor):
            return value
        weights = support._totals()[2]  # the support over all ranks
        assert weights is not None
        weights = weights.cpu()
        return _safe_ratio((value * weights).sum(), weights.sum()).item()

    function = {
        False: fbeta_per_class,
        "micro": fbeta_per_class,
        "macro": fbeta_macro,
        "weighted": fbeta_weighted,
    }[mode]
    return MetricsLambda(function, precision, recall)


class ConfusionMatrix(Metric):
    """The ``num_classes x num_classes`` confusion matrix: rows are true classes, columns the
    predicted ones (argmax of ``y_pred`` of shape ``(N, C, ...)``; ``y`` of shape ``(N, ...)``).

    Targets outside ``[0, num_classes)`` (an "ignore" label such as 255 or -1) are skipped.
    ``average``: ``None`` gives counts (int64); ``"samples"`` divides by the number of samples
    (the batch dimension); ``"recall"`` normalises each row, ``"precision"`` each column.
    """

    _state_attrs = ("confusion_matrix", "_num_examples")

    def __init__(
        self,
        num_classes: int,
        average: str | None = None,
        output_transform: Callable[[Any], Any] = _identity,
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
            raise TypeError(
                f"ConfusionMatrix: num_classes should be an int, got {type(num_classes)}"
            )
        if num_classes <= 1:
            raise ValueError(f"ConfusionMatrix: num_classes should be > 1, got {num_classes}")
        if average not in (None, "samples", "recall", "precision"):
            raise ValueError(
                "ConfusionMatrix: argument average should be None or one of 'samples', 'recall', "
                f"'precision'; got {average!r}"
            )
        self.num_classes = int(num_classes)
        self.average = average
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self.confusion_matrix = torch.zeros(
            self.num_classes, self.num_classes, dtype=torch.int64, device=self._device
        )
        self._num_examples = 0

    def update(self, output: Any) -> None:
        y_pred, y = as_pair("ConfusionMatrix", output)
        c = self.num_classes
        if y_pred.ndim < 2 or y_pred.shape[1] != c:
            raise ValueError(
                f"ConfusionMatrix: y_pred should have shape (batch_size, num_classes={c}, ...), "
                f"got {shape_of(y_pred)}"
            )
        expected = (y_pred.shape[0], *y_pred.shape[2:])
        if shape_of(y) != expected:
            raise ValueError(
                f"ConfusionMatrix: y_pred of shape {shape_of(y_pred)} needs y of shape "
                f"{expected}, got {shape_of(y)}"
            )
        _require_integer_targets("ConfusionMatrix", y)
        predicted = torch.argmax(y_pred, dim=1).reshape(-1)
        target = y.reshape(-1).long()
        keep = (target >= 0) & (target < c)
        cells = target[keep] * c + predicted[keep]
        counts = torch.bincount(cells, minlength=c * c).reshape(c, c)
        self.confusion_matrix += counts.to(self.confusion_matrix)
        self._num_examples += y_pred.shape[0]

    def compute(self) -> torch.Tensor:
        matrix: torch.Tensor
        matrix, count = self._sum_over_ranks(self.confusion_matrix, self._num_examples)
        if count == 0:
            raise self._not_computable()
        if self.average is None:
            return matrix.clone()
        matrix = matrix.to(self._double_dtype)
        if self.average == "samples":
            return matrix / int(count)
        if self.average == "recall":
            return _safe_ratio(matrix, matrix.sum(dim=1, keepdim=True))
        return _safe_ratio(matrix, matrix.sum(dim=0, keepdim=True))


class TopKCategoricalAccuracy(Metric):
    """Fraction of samples whose true class is among the ``k`` highest scores of ``y_pred``
    (shape ``(N, C)``, ``y`` of shape ``(N,)`` with class indices)."""

    _state_attrs = ("_num_correct", "_num_examples")

    def __init__(
        self,
        k: int = 5,
        output_transform: Callable[[Any], Any] = _identity,
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"TopKCategoricalAccuracy: k should be a positive int, got {k!r}")
        self._k = int(k)
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._num_correct = torch.tensor(0, dtype=torch.int64, device=self._device)
        self._num_examples = 0

    def update(self, output: Any) -> None:
        name = "TopKCategoricalAccuracy"
        y_pred, y = as_pair(name, output)
        if y_pred.ndim != 2 or y.ndim != 1:
            raise ValueError(
                f"{name}: y_pred should have shape (batch_size, num_classes) and y "
                f"(batch_size,), got y_pred of shape {shape_of(y_pred)} and y of shape "
                f"{shape_of(y)}"
            )
        num_classes = y_pred.shape[1]
        if self._k > num_classes:
            raise ValueError(
                f"{name}: k={self._k} is larger than the number of classes ({num_classes}) "
                "in y_pred"
            )
        _check_class_indices(name, y, num_classes, "top-k accuracy")
        top = torch.topk(y_pred, self._k, dim=1).indices
        correct = (top == y.reshape(-1, 1)).any(dim=1)
        self._num_correct += correct.sum().to(self._device)
        self._num_examples += correct.numel()

    def compute(self) -> float:
        return self._ratio_over_ranks(self._num_correct, self._num_examples)
