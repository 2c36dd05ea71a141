"""Classification metrics: Accuracy, Precision, Recall, Fbeta, ConfusionMatrix, top-k accuracy.

Input kinds (``y_pred``, ``y``), decided at every update and fixed until the next ``reset()``:

* binary: ``y_pred`` and ``y`` of the same shape ``(N, ...)`` holding 0s and 1s
  (``y_pred`` may also be ``(N, 1, ...)``);
* multiclass: ``y_pred`` of shape ``(N, C, ...)`` with ``C > 1`` (scores or logits; the
  prediction is the argmax over dimension 1) and ``y`` of shape ``(N, ...)`` holding integer
  class indices in ``[0, C)``;
* multilabel (``is_multilabel=True``): ``y_pred`` and ``y`` of shape ``(N, C, ...)`` with
  ``C > 1``, holding 0s and 1s.

Updates accumulate counts on the device and never read them on the host; ``compute()`` reads
once. Checks of the data's values (0s and 1s, class indices in range) run on the device on the
first update after a reset (``check_values="first"``) or on every update (``"every"``), and
fail at ``compute()`` (see ``_checks.ValueChecks``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ember.metrics._base import (
    Kernel,
    MetricsLambda,
    NotComputableError,
    _identity,
    _PairMetric,
)
from ember.metrics._checks import (
    ValueChecks,
    as_pair,
    check_values_mode,
    is_integer_dtype,
    read_number,
    shape_of,
)

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


def _safe_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator``, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    positive = denominator > 0
    return torch.where(positive, numerator / torch.where(positive, denominator, 1), 0.0)


def _uses_bincount(device: torch.device) -> bool:
    """Whether counts on ``device`` are made with ``bincount`` (the CPU), else ``index_add_``."""
    return device.type == "cpu"


def _code_counter(device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """``count(total, codes)``: ``total[c] += (number of c in codes)`` for 1-d ``codes`` in
    ``[0, len(total))`` on ``device``.

    ``bincount`` on the CPU; elsewhere ``index_add_``, since a GPU's ``bincount`` reads the
    largest code on the host to size its output.
    """
    if _uses_bincount(device):

        def count(total: torch.Tensor, codes: torch.Tensor) -> None:
            total += torch.bincount(codes, minlength=total.shape[0])

    else:

        def count(total: torch.Tensor, codes: torch.Tensor) -> None:
            total.index_add_(0, codes, torch.ones_like(codes))

    return count


class _PairCounts:
    """Counts of (true class, predicted class) pairs, flat: ``C * C`` cells, then one cell
    counting the targets outside ``[0, C)`` (skipped otherwise)."""

    def __init__(self, num_classes: int, device: torch.device) -> None:
        self.num_classes = num_classes
        self.cells = num_classes * num_classes
        self.total = torch.zeros(self.cells + 1, dtype=torch.int64, device=device)
        # On the CPU, bincount refuses negative codes (negative targets): then mask them.
        self._mask = not _uses_bincount(device)

    def add(self, predicted: torch.Tensor, y: torch.Tensor) -> None:
        # An int64 y clamped to [-1, C] first: ``y * C`` of a huge target would wrap around
        # into the code of a real pair (-1 and C still count as outside). Narrower integers are
        # multiplied in int64, where they cannot wrap, and would wrap in their own clamp.
        if y.dtype == torch.int64:
            y = y.clamp(-1, self.num_classes)
        codes = torch.add(predicted, y, alpha=self.num_classes)
        if codes.dim() != 1:
            codes = codes.reshape(-1)
        if not self._mask:
            try:
                self.total += torch.bincount(codes.clamp_(max=self.cells), minlength=self.cells + 1)
            except RuntimeError:
                self._mask = True
            else:
                return
        y = y.reshape(-1)
        in_range = (y >= 0) & (y < self.num_classes)
        codes = torch.where(in_range, codes.clamp(max=self.cells), self.cells)
        _code_counter(self.total.device)(self.total, codes.to(self.total.device))


def _pair_matrix(total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(C x C counts, count of targets outside [0, C), C)`` of flat pair counts."""
    num_classes = math.isqrt(total.shape[0] - 1)
    cells = num_classes * num_classes
    return total[:cells].view(num_classes, num_classes), total[cells], num_classes


class _ValueCheckedMetric(_PairMetric):
    """A ``(y_pred, y)`` metric whose checks of the data's values run on the device, on the
    first update after a reset (``check_values="first"``) or on every update (``"every"``),
    and are read at compute() with the value."""

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = _identity,
        device: str | torch.device = "cpu",
        check_values: str = "first",
    ) -> None:
        self._check_values = check_values_mode(type(self).__name__, check_values)
        self._checks = ValueChecks(type(self).__name__)
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._values_checked = False
        self._checks.clear()
        super().reset()

    def _value_checks(self) -> ValueChecks:
        return self._checks

    def _reuse_plans(self) -> bool:
        return self._check_values == "first"

    def _wants_value_checks(self) -> bool:
        """Whether this update's values are to be checked (then they count as checked)."""
        wanted = self._check_values == "every" or not self._values_checked
        self._values_checked = True
        return wanted

    def _check_loaded_correct_count(self, state: Mapping[str, Any]) -> None:
        """A loaded ``_num_correct`` is at most ``_num_examples`` (read on the host, once per
        load)."""
        correct, examples = int(state["_num_correct"]), state["_num_examples"]
        if correct > examples:
            raise ValueError(
                self._loaded_state_error(
                    "_num_correct", f"at most '_num_examples' ({examples})", correct
                )
            )

    def _checked_ratio(self, total: torch.Tensor, count: int) -> float:
        """``total / count`` over all ranks, read with the pending value checks."""
        total, count = self._sum_over_ranks(total, count)
        if count == 0:
            raise self._not_computable()
        # The division on the host: one device op less, the same correctly rounded float.
        summed: float = self._checks.read_count(total)
        return summed / int(count)


class _ClassificationMetric(_ValueCheckedMetric):
    """Works out the input kind of each update and refuses changes of kind between updates."""

    _state_attrs: tuple[str, ...] = ("_type", "_num_classes")

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = _identity,
        is_multilabel: bool = False,
        device: str | torch.device = "cpu",
        *,
        check_values: str = "first",
    ) -> None:
        if not isinstance(is_multilabel, bool):
            raise TypeError(f"Argument is_multilabel should be a bool, got {type(is_multilabel)}")
        self._is_multilabel = is_multilabel
        super().__init__(output_transform, device, check_values)

    def reset(self) -> None:
        self._type: str | None = None
        self._num_classes: int | None = None
        super().reset()

    def _check_input(self, output: Any) -> tuple[str, int, bool]:
        """``(kind, num_classes, squeeze)``: ``squeeze`` when binary ``y_pred`` is (N, 1, ...).

        Shapes and dtypes only; the values are checked by :meth:`_check_values_of`.
        """
        name = self._name
        y_pred, y = as_pair(name, output)
        squeeze = False
        if y_pred.ndim == y.ndim + 1:
            if self._is_multilabel:
                raise ValueError(
                    f"{name}(is_multilabel=True) needs y_pred and y of the same shape "
                    f"(batch_size, num_labels, ...), got {_shapes(y_pred, y)}"
                )
            expected = (y_pred.shape[0], *y_pred.shape[2:])
            if shape_of(y) != expected:
                raise ValueError(
                    f"{name}: y_pred of shape (batch_size, num_classes, ...) = "
                    f"{shape_of(y_pred)} needs y of shape {expected}, got {shape_of(y)}"
                )
            num_classes = y_pred.shape[1]
            if num_classes == 0:
                raise ValueError(
                    f"{name}: y_pred of shape (batch_size, num_classes, ...) = "
                    f"{shape_of(y_pred)} has no classes (num_classes is 0)"
                )
            if num_classes == 1:
                kind, squeeze = "binary", True
            else:
                kind = "multiclass"
        elif y_pred.ndim == y.ndim:
            if y_pred.shape != y.shape:
                raise ValueError(
                    f"{name}: y_pred and y must have the same shape, got {_shapes(y_pred, y)}"
                )
            if self._is_multilabel:
                if y.ndim < 2 or y.shape[1] < 2:
                    raise ValueError(
                        f"{name}(is_multilabel=True) needs y_pred and y of shape "
                        f"(batch_size, num_labels, ...) with num_labels > 1, got "
                        f"{_shapes(y_pred, y)}"
                    )
                kind, num_classes = "multilabel", y.shape[1]
            else:
                kind, num_classes = "binary", 1
        else:
            raise ValueError(
                f"{name}: y must have shape (batch_size, ...) and y_pred (batch_size, ...) or "
                f"(batch_size, num_classes, ...), got {_shapes(y_pred, y)}"
            )

        if kind == "multiclass":
            _require_integer_targets(f"{name}: multiclass input (y_pred of shape (N, C, ...))", y)
            if y_pred.dtype == torch.bool:
                raise TypeError(
                    f"{name}: multiclass input needs y_pred of scores (N, C, ...), got dtype bool"
                )

        if self._type is not None and self._type != kind:
            raise ValueError(
                f"{name}: input type changed from {self._type} to {kind} between updates "
                f"({_shapes(y_pred, y)}); call reset() before feeding another kind of input"
            )
        if self._num_classes is not None and self._num_classes != num_classes:
            raise ValueError(
                f"{name}: number of classes changed from {self._num_classes} to {num_classes} "
                f"between updates ({_shapes(y_pred, y)})"
            )
        if self._wants_value_checks():
            self._check_values_of(kind, y_pred, y, num_classes)
        self._type, self._num_classes = kind, num_classes
        return kind, num_classes, squeeze

    def _check_loaded_state(self, state: Mapping[str, Any]) -> None:
        super()._check_loaded_state(state)
        kind, num_classes = state["_type"], state["_num_classes"]
        kinds = ("multilabel",) if self._is_multilabel else ("binary", "multiclass")
        if kind is not None and kind not in kinds:
            raise ValueError(
                self._loaded_state_error(
                    "_type", f"None or one of {kinds} (is_multilabel={self._is_multilabel})", kind
                )
            )
        if kind is None:
            expected, valid = "None (as '_type' is None)", num_classes is None
        elif kind == "binary":
            expected, valid = "1 (as '_type' is 'binary')", type(num_classes) is int
            valid = valid and num_classes == 1
        else:
            expected = f"an int > 1 (as '_type' is {kind!r})"
            valid = type(num_classes) is int and num_classes > 1
        if not valid:
            raise ValueError(self._loaded_state_error("_num_classes", expected, num_classes))

    def _reset_work_state(self) -> tuple[str | None, int | None]:
        return self._type, self._num_classes

    def _redo_reset_work(
        self, y_pred: torch.Tensor, y: torch.Tensor, saved: tuple[str, int]
    ) -> None:
        kind, num_classes = saved
        if self._wants_value_checks():
            self._check_values_of(kind, y_pred, y, num_classes)
        self._type, self._num_classes = kind, num_classes

    def _check_values_of(
        self, kind: str, y_pred: torch.Tensor, y: torch.Tensor, num_classes: int
    ) -> None:
        """Queue the device-side checks of the data's values (read at compute)."""
        if kind == "multiclass":
            self._checks.class_indices(y, num_classes)
        else:
            self._checks.binary("y_pred", y_pred, kind)
            self._checks.binary("y", y, kind)


def _shapes(y_pred: torch.Tensor, y: torch.Tensor) -> str:
    return f"y_pred of shape {shape_of(y_pred)} and y of shape {shape_of(y)}"


def _squeezing(kernel: Kernel) -> Kernel:
    def squeezed(y_pred: torch.Tensor, y: torch.Tensor) -> None:
        kernel(y_pred.squeeze(1), y)

    return squeezed


class Accuracy(_ClassificationMetric):
    """Fraction of correct predictions.

    Binary: elementwise equality of 0/1 predictions. Multiclass: the argmax of the scores equals
    the target. Multilabel: a sample (position) counts only if all its labels are right (subset
    accuracy, as ``sklearn.metrics.accuracy_score``).

    ``check_values``: ``"first"`` (default) checks the data's values (0s and 1s, class indices in
    range) on the first update after each reset, ``"every"`` on every update; the checks run on
    the device and a failure raises ``ValueError`` at ``compute()``.
    """

    _state_attrs = ("_num_correct", "_num_examples", "_type", "_num_classes")
    _accumulator_attrs = ("_num_correct",)
    # The kernels depend on the layout and the device; they read the accumulators from self.
    _self_contained_kernels = True

    def reset(self) -> None:
        self._num_correct = torch.zeros((), dtype=torch.int64, device=self._device)
        self._num_examples = 0
        super().reset()

    def _prepare(self, output: Any) -> Kernel:
        kind, num_classes, squeeze = self._check_input(output)
        # None: the counts are made where the accumulator is. The kernels add to it themselves
        # (a Python frame less a batch than a shared helper).
        move = self._device if output[0].device != self._device else None

        def binary(y_pred: torch.Tensor, y: torch.Tensor) -> None:
            correct = torch.eq(y_pred, y).sum()
            self._num_correct += correct if move is None else correct.to(move)
            self._num_examples += y.numel()

        def multiclass(y_pred: torch.Tensor, y: torch.Tensor) -> None:
            correct = torch.eq(y_pred.argmax(dim=1), y).sum()
            self._num_correct += correct if move is None else correct.to(move)
            self._num_examples += y.numel()

        def multilabel(y_pred: torch.Tensor, y: torch.Tensor) -> None:
            correct = torch.eq(y_pred, y).all(dim=1).sum()
            self._num_correct += correct if move is None else correct.to(move)
            self._num_examples += y.numel() // num_classes

        kernel = {"binary": binary, "multiclass": multiclass, "multilabel": multilabel}[kind]
        return _squeezing(kernel) if squeeze else kernel

    def compute(self) -> float:
        return self._checked_ratio(self._num_correct, self._num_examples)

    def _check_loaded_state(self, state: Mapping[str, Any]) -> None:
        super()._check_loaded_state(state)
        self._check_loaded_correct_count(state)


_AVERAGES = (False, None, True, "macro", "micro", "weighted", "samples")


def _check_average(name: str, average: Any, allowed: tuple[Any, ...]) -> Any:
    # The type check first: 1 == True and 0 == False would let ints through ``in allowed``.
    if not (average is None or isinstance(average, (bool, str))) or average not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name}: argument average should be one of {shown}; got {average!r}")
    return "macro" if average is True else average


class _PrecisionRecall(_ClassificationMetric):
    """Counts per class: true positives, predicted positives and actual positives.

    The accumulator ``_counts`` depends on the input kind: binary, the 4 counts of
    ``2 * y + y_pred``; multiclass, the (true, predicted) pair counts (:class:`_PairCounts`);
    multilabel, per label the true, predicted and actual positives.
    """

    _state_attrs = (
        "_counts",
        "_samples_sum",
        "_num_samples",
        "_type",
        "_num_classes",
    )
    _accumulator_attrs = ("_samples_sum",)

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = _identity,
        average: bool | str | None = False,
        is_multilabel: bool = False,
        device: str | torch.device = "cpu",
        *,
        check_values: str = "first",
    ) -> None:
        self._average = _check_average(type(self).__name__, average, _AVERAGES)
        if self._average == "samples" and not is_multilabel:
            raise ValueError(
                f"{type(self).__name__}: average='samples' needs multilabel input "
                "(is_multilabel=True)"
            )
        super().__init__(
            output_transform,
            is_multilabel=is_multilabel,
            device=device,
            check_values=check_values,
        )

    @property
    def average(self) -> bool | str | None:
        """``False`` (per class; binary: the positive class), ``None`` (per class, binary too),
        ``"macro"``, ``"micro"``, ``"weighted"`` or ``"samples"``."""
        return self._average

    def reset(self) -> None:
        self._counts: torch.Tensor | None = None
        self._pairs: _PairCounts | None = None
        self._samples_sum = torch.tensor(0.0, dtype=self._double_dtype, device=self._device)
        self._num_samples = 0
        super().reset()

    def _check_loaded_state(self, state: Mapping[str, Any]) -> None:
        super()._check_loaded_state(state)
        kind, num_classes, counts = state["_type"], state["_num_classes"], state["_counts"]
        if kind is None:
            if counts is not None:
                raise ValueError(
                    self._loaded_state_error("_counts", "None (as '_type' is None)", counts)
                )
            return
        # The accumulator of each input kind, as the kernels make it.
        shape: tuple[int, ...]
        if kind == "binary":
            dtype, shape = torch.int64, (4,)
        elif kind == "multiclass":
            dtype, shape = torch.int64, (num_classes * num_classes + 1,)
        else:
            dtype, shape = self._double_dtype, (3, num_classes)
        self._require_loaded_tensor("_counts", counts, dtype, shape)

    def _denominator(self, predicted: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
        """What the true positives are divided by: ``predicted`` (precision) or ``actual``
        (recall), per class or per sample."""
        raise NotImplementedError

    def _prepare(self, output: Any) -> Kernel:
        kind, num_classes, squeeze = self._check_input(output)
        y_pred, y = output
        if kind == "multiclass":
            kernel = self._multiclass_kernel(num_classes)
        elif kind == "binary":
            kernel = self._binary_kernel(y_pred, y)
        else:
            kernel = self._multilabel_kernel(y_pred, y, num_classes)
        return _squeezing(kernel) if squeeze else kernel

    def _multiclass_kernel(self, num_classes: int) -> Kernel:
        if self._pairs is None or self._pairs.total is not self._counts:
            self._pairs = _PairCounts(num_classes, self._device)
            if self._counts is not None:  # restored by load_state_dict
                self._pairs.total = self._counts
            self._counts = self._pairs.total
        pairs = self._pairs

        def multiclass(y_pred: torch.Tensor, y: torch.Tensor) -> None:
            pairs.add(y_pred.argmax(dim=1), y)

        return multiclass

    def _binary_kernel(self, y_pred: torch.Tensor, y: torch.Tensor) -> Kernel:
        if self._counts is None:
            self._counts = torch.zeros(4, dtype=torch.int64, device=self._device)
        counts = self._counts
        convert = not (is_integer_dtype(y_pred.dtype) and is_integer_dtype(y.dtype))
        count, home = _code_counter(counts.device), counts.device
        move = y_pred.device != home

        def binary(y_pred: torch.Tensor, y: torch.Tensor) -> None:
            if convert:
                y_pred, y = y_pred.long(), y.long()
            codes = torch.add(y_pred, y, alpha=2)  # 0: tn, 1: fp, 2: fn, 3: tp
            if codes.dim() != 1:
                codes = codes.reshape(-1)
            codes = codes.clamp_(0, 3)
            count(counts, codes.to(home) if move else codes)

        return binary

    def _multilabel_kernel(self, y_pred: torch.Tensor, y: torch.Tensor, num_labels: int) -> Kernel:
        if self._counts is None:
            self._counts = torch.zeros(3, num_labels, dtype=self._double_dtype, device=self._device)
        counts = self._counts
        # Sum over everything but the labels: the batch and any dimension after the labels.
        dims = (1, *range(3, y.ndim + 1))
        common = torch.promote_types(y_pred.dtype, y.dtype)
        if common == torch.bool:
            common = torch.int64
        samples = self._average == "samples"
        convert_pred, convert_y = y_pred.dtype != common, y.dtype != common
        move = y_pred.device != counts.device

        def multilabel(y_pred: torch.Tensor, y: torch.Tensor) -> None:
            if convert_pred:
                y_pred = y_pred.to(common)
            if convert_y:
                y = y.to(common)
            hits = y_pred * y
            batch_counts = torch.stack((hits, y_pred, y)).sum(dim=dims)
            counts.add_(batch_counts.to(counts.device) if move else batch_counts)
            if samples:
                self._add_samples(hits, y_pred, y, num_labels)

        return multilabel

    def _add_samples(
        self, hits: torch.Tensor, y_pred: torch.Tensor, y: torch.Tensor, num_labels: int
    ) -> None:
        """Each sample's (position's) own precision or recall, summed."""

        def per_position(tensor: torch.Tensor) -> torch.Tensor:
            return torch.movedim(tensor, 1, -1).reshape(-1, num_labels).sum(dim=1)

        ratio = _safe_ratio(
            per_position(hits).to(self._double_dtype),
            self._denominator(per_position(y_pred), per_position(y)).to(self._double_dtype),
        )
        self._samples_sum += ratio.sum().to(self._device)
        self._num_samples += ratio.shape[0]

    def _totals(self, check: bool = True) -> tuple[Any, Any, Any, Any, int]:
        """``(true, predicted, actual positives, samples_sum, num_samples)`` over all ranks;
        with ``check``, multiclass targets outside the classes are queued as a failed check."""
        counts, samples_sum, num_samples = self._sum_over_ranks(
            self._counts, self._samples_sum, self._num_samples
        )
        if counts is None:
            return None, None, None, samples_sum, num_samples
        counts = counts.to(self._double_dtype)
        # The kind from the counts' shape, the same on every rank (one that saw nothing has no
        # kind of its own): multilabel (3, C), binary (4,), multiclass (C * C + 1,).
        if counts.dim() == 1 and counts.shape[0] != 4:
            matrix, outside, num_classes = _pair_matrix(counts)  # rows: true class
            if check:
                self._checks.count(
                    outside, f"{self._name}: y holds class indices outside [0, {num_classes})"
                )
            return matrix.diagonal(), matrix.sum(dim=0), matrix.sum(dim=1), samples_sum, num_samples
        if counts.dim() == 1:
            tn, fp, fn, tp = counts
            true = torch.stack((tn, tp))
            predicted = torch.stack((tn + fn, fp + tp))
            actual = torch.stack((tn + fp, fn + tp))
            if self._average is False:  # the positive class alone
                true, predicted, actual = true[1], predicted[1], actual[1]
            return true, predicted, actual, samples_sum, num_samples
        return counts[0], counts[1], counts[2], samples_sum, num_samples

    def _result(self, read: bool) -> float | torch.Tensor:
        """The value; a one-element per-class value is read as a number when ``read``."""
        true_positives, predicted, actual, samples_sum, num_samples = self._totals()
        if true_positives is None:
            raise self._not_computable()
        if self._average == "samples":
            if num_samples == 0:
                raise self._not_computable()
            return float(self._checks.read(samples_sum / num_samples))
        denominator = self._denominator(predicted, actual)
        if self._average == "micro":
            return float(self._checks.read(_safe_ratio(true_positives.sum(), denominator.sum())))
        per_class = _safe_ratio(true_positives, denominator)
        if self._average in (False, None):
            if read and per_class.numel() == 1:
                return float(self._checks.read(per_class))
            self._checks.read()
            return per_class
        if self._average == "macro":
            return float(self._checks.read(per_class.mean()))
        weights = actual  # "weighted": by support, as scikit-learn
        return float(self._checks.read(_safe_ratio((per_class * weights).sum(), weights.sum())))

    def compute(self) -> float | torch.Tensor:
        return self._result(read=False)

    def _compute_for_state(self) -> Any:
        return self._result(read=True)


class Precision(_PrecisionRecall):
    """Precision, ``TP / (TP + FP)`` (0 where nothing was predicted positive).

    ``average=False``: binary input gives the positive class's precision (a 0-d tensor);
    multiclass and multilabel input give a tensor with one value per class. ``None``: one value
    per class, binary input too (both classes, as ignite and scikit-learn).
    ``True``/``"macro"``: the unweighted mean over classes (binary input counts both classes).
    ``"micro"``: from the counts summed over classes. ``"weighted"``: the mean weighted by each
    class's support. ``"samples"`` (multilabel): the mean over samples of each sample's
    precision.

    ``check_values`` as for :class:`Accuracy`; targets outside the classes of multiclass input
    are refused at ``compute()`` whatever the update that brought them.
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
    mode = False if mode is None else mode
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

    def fbeta_per_class(p: Any, r: Any) -> Any:
        return _fbeta_value(beta_squared, p, r)

    def fbeta_macro(p: Any, r: Any) -> float:
        value = _fbeta_value(beta_squared, p, r)
        return read_number(value.mean()) if isinstance(value, torch.Tensor) else value

    if mode == "weighted":
        return MetricsLambda(_WeightedFbeta(beta_squared, recall), precision, recall)
    function = fbeta_per_class if mode in (False, "micro") else fbeta_macro
    return MetricsLambda(function, precision, recall)


class _WeightedFbeta:
    """Fbeta's support-weighted mean. An object, not a closure: ``copy.deepcopy`` of the
    Fbeta copies it with the lambda's arguments, so a copy reads its own Recall's support."""

    def __init__(self, beta_squared: float, support: Recall) -> None:
        self.beta_squared = beta_squared
        self.support = support

    def __call__(self, p: Any, r: Any) -> float:
        value = _fbeta_value(self.beta_squared, p, r)
        if not isinstance(value, torch.Tensor):
            return value
        weights = self.support._totals(check=False)[2]  # the support over all ranks
        if weights is None:
            raise NotComputableError(
                "Fbeta must have at least one example before it can be computed"
            )
        weights = weights.cpu()  # with the values (MetricsLambda moves them to the CPU)
        return read_number(_safe_ratio((value * weights).sum(), weights.sum()))


class ConfusionMatrix(_PairMetric):
    """The ``num_classes x num_classes`` confusion matrix: rows are true classes, columns the
    predicted ones (argmax of ``y_pred`` of shape ``(N, C, ...)``; ``y`` of shape ``(N, ...)``).

    Targets outside ``[0, num_classes)`` (an "ignore" label such as 255 or -1) are skipped.
    ``average``: ``None`` gives counts (int64); ``"samples"`` divides by the number of samples
    (the batch dimension); ``"recall"`` normalises each row, ``"precision"`` each column
    (float64).
    """

    _state_attrs = ("_pair_counts", "_num_examples")
    _accumulator_attrs = ("_pair_counts",)

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
        self._pairs = _PairCounts(self.num_classes, self._device)
        self._pair_counts = self._pairs.total
        self._num_examples = 0
        super().reset()

    @property
    def confusion_matrix(self) -> torch.Tensor:
        """The counts so far (a view of the accumulator)."""
        return _pair_matrix(self._pair_counts)[0]

    def _after_load(self) -> None:
        super()._after_load()
        self._pairs.total = self._pair_counts

    def _prepare(self, output: Any) -> Kernel:
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

        def count(y_pred: torch.Tensor, y: torch.Tensor) -> None:
            self._pairs.add(y_pred.argmax(dim=1), y)
            self._num_examples += y.shape[0]

        return count

    def compute(self) -> torch.Tensor:
        total: torch.Tensor
        total, count = self._sum_over_ranks(self._pair_counts, self._num_examples)
        if count == 0:
            raise self._not_computable()
        matrix = _pair_matrix(total)[0]
        if self.average is None:
            return matrix.clone()
        matrix = matrix.to(self._double_dtype)
        if self.average == "samples":
            return matrix / int(count)
        if self.average == "recall":
            return _safe_ratio(matrix, matrix.sum(dim=1, keepdim=True))
        return _safe_ratio(matrix, matrix.sum(dim=0, keepdim=True))


class TopKCategoricalAccuracy(_ValueCheckedMetric):
    """Fraction of samples whose true class is among the ``k`` highest scores of ``y_pred``
    (shape ``(N, C)``, ``y`` of shape ``(N,)`` or ``(N, 1)`` with class indices);
    ``check_values`` as for :class:`Accuracy`."""

    _state_attrs = ("_num_correct", "_num_examples")
    _accumulator_attrs = ("_num_correct",)

    def __init__(
        self,
        k: int = 5,
        output_transform: Callable[[Any], Any] = _identity,
        device: str | torch.device = "cpu",
        *,
        check_values: str = "first",
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"TopKCategoricalAccuracy: k should be a positive int, got {k!r}")
        self._k = int(k)
        super().__init__(output_transform, device, check_values)

    def reset(self) -> None:
        self._num_correct = torch.zeros((), dtype=torch.int64, device=self._device)
        self._num_examples = 0
        super().reset()

    def _prepare(self, output: Any) -> Kernel:
        name = "TopKCategoricalAccuracy"
        y_pred, y = as_pair(name, output)
        if y_pred.ndim != 2 or not (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)):
            raise ValueError(
                f"{name}: y_pred should have shape (batch_size, num_classes) and y "
                f"(batch_size,) or (batch_size, 1), got y_pred of shape {shape_of(y_pred)} and "
                f"y of shape {shape_of(y)}"
            )
        num_classes = y_pred.shape[1]
        if self._k > num_classes:
            raise ValueError(
                f"{name}: k={self._k} is larger than the number of classes ({num_classes}) "
                "in y_pred"
            )
        _require_integer_targets(f"{name}: top-k accuracy", y)
        if self._wants_value_checks():
            self._checks.class_indices(y, num_classes)
        k, move = self._k, y_pred.device != self._device

        def count(y_pred: torch.Tensor, y: torch.Tensor) -> None:
            correct = (y_pred.topk(k, dim=1).indices == y.reshape(-1, 1)).any(dim=1).sum()
            self._num_correct += correct.to(self._device) if move else correct
            self._num_examples += y.shape[0]

        return count

    def compute(self) -> float:
        return self._checked_ratio(self._num_correct, self._num_examples)

    def _check_loaded_state(self, state: Mapping[str, Any]) -> None:
        super()._check_loaded_state(state)
        self._check_loaded_correct_count(state)
