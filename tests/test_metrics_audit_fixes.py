"""Values ember once got wrong where ignite 0.5.5 is right (or where neither was): infinite and
integer running averages, int64 overflow of huge targets, malformed loaded states, a finished
run's running average, empty batches and inputs without classes."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ember.engine import Engine, Events
from ember.metrics import (
    Accuracy,
    Average,
    ConfusionMatrix,
    Fbeta,
    Loss,
    MeanSquaredError,
    Metric,
    MetricsLambda,
    NotComputableError,
    Precision,
    RunningAverage,
    TopKCategoricalAccuracy,
)

MakeEngine = Callable[..., Engine]


def step_by_step(values: list[float], alpha: float) -> float:
    average = values[0]
    for value in values[1:]:
        average = average * alpha + (1 - alpha) * value
    return average


# ---------------------------------------------------------------------- RunningAverage values
@pytest.mark.parametrize("alpha", [0.98, 0.3])
@pytest.mark.parametrize("with_grad", [True, False], ids=["checked-update", "pending-values"])
@pytest.mark.parametrize("count", [4, 300], ids=["unfolded", "folded"])
def test_running_average_stays_infinite_after_an_infinite_value(
    alpha: float, with_grad: bool, count: int
) -> None:
    values = [1.0, math.inf] + [1.0, 2.0] * ((count - 2) // 2)
    metric = RunningAverage(output_transform=lambda x: x, alpha=alpha)
    for value in values:
        metric.update(torch.tensor(value, requires_grad=with_grad))
    assert step_by_step(values, alpha) == math.inf
    assert torch.as_tensor(metric.compute()).item() == math.inf


def test_running_average_of_a_metric_stays_infinite() -> None:
    source = Average()
    metric = RunningAverage(src=source, alpha=0.5)
    for value in [1.0, math.inf, 1.0, 2.0]:
        source.update(torch.tensor(value))
        metric.update(None)
    assert torch.as_tensor(metric.compute()).item() == math.inf


@pytest.mark.parametrize(
    "values",
    [[torch.tensor(2), torch.tensor(2)], [torch.tensor(True), torch.tensor(False)]],
    ids=["int64", "bool"],
)
def test_running_average_of_integer_or_bool_tensors_is_a_float(values: list[Any]) -> None:
    metric = RunningAverage(output_transform=lambda x: x, alpha=0.5)
    metric.update(values[0])
    first = torch.as_tensor(metric.compute())
    assert first.dtype == torch.get_default_dtype()
    metric.update(values[1])
    average = torch.as_tensor(metric.compute())
    assert average.dtype == torch.get_default_dtype()
    assert average.item() == pytest.approx(step_by_step([float(v) for v in values], 0.5))


def test_running_average_of_correct_counts_in_an_engine(make_engine: MakeEngine) -> None:
    batches = [
        (torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1])),
        (torch.tensor([1, 1, 0]), torch.tensor([1, 1, 0])),
        (torch.tensor([2, 0, 0]), torch.tensor([1, 1, 1])),
    ]
    engine = make_engine(lambda engine, batch: (batch[0] == batch[1]).sum())
    RunningAverage(output_transform=lambda correct: correct, alpha=0.5).attach(engine, "correct")
    seen: list[Any] = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.metrics["correct"])
    )
    engine.run(batches)
    assert seen == [pytest.approx(step_by_step([2.0, 3.0, 0.0][:n], 0.5)) for n in (1, 2, 3)]
    assert all(type(value) is float for value in seen)


# -------------------------------------------------------------- a finished run's stored value
def test_a_finished_run_s_entry_keeps_its_value(make_engine: MakeEngine) -> None:
    metric = RunningAverage(output_transform=lambda x: x, alpha=0.5)
    engine = make_engine(lambda engine, batch: batch * 1)
    metric.attach(engine, "ra")
    engine.run([torch.tensor(1.0), torch.tensor(3.0)])
    metric.update(torch.tensor(100.0))
    assert engine.state.metrics["ra"] == 2.0
    assert torch.as_tensor(metric.compute()).item() == 51.0


def test_each_engine_keeps_its_run_s_value(make_engine: MakeEngine) -> None:
    metric = RunningAverage(output_transform=lambda x: x, alpha=0.5)
    first, second = (make_engine(lambda engine, batch: batch * 1) for _ in range(2))
    metric.attach(first, "ra")
    metric.attach(second, "ra")
    first.run([torch.tensor(1.0), torch.tensor(3.0)])
    second.run([torch.tensor(10.0), torch.tensor(30.0)])
    metric.update(torch.tensor(100.0))
    assert (first.state.metrics["ra"], second.state.metrics["ra"]) == (2.0, 20.0)


def test_an_update_from_a_handler_mid_run_joins_the_average(make_engine: MakeEngine) -> None:
    metric = RunningAverage(output_transform=lambda x: x, alpha=0.5)
    engine = make_engine(lambda engine, batch: batch * 1)
    metric.attach(engine, "ra")
    seen: list[Any] = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.metrics["ra"])
    )
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=2), lambda e: metric.update(torch.tensor(9.0))
    )
    engine.run([torch.tensor(v) for v in (1.0, 3.0, 5.0, 7.0)])
    # The entry read at iteration 2 is that iteration's value; later ones include the 9.
    assert seen == [1.0, 2.0, step_by_step([1, 3, 9, 5], 0.5), step_by_step([1, 3, 9, 5, 7], 0.5)]
    assert engine.state.metrics["ra"] == step_by_step([1, 3, 9, 5, 7], 0.5)


# ------------------------------------------------------------------------- int64 overflow
@pytest.mark.parametrize("target", [2**62 + 1, -(2**62) + 1, 2**63 - 1, -(2**63)])
def test_confusion_matrix_skips_targets_too_large_for_int64_codes(target: int) -> None:
    metric = ConfusionMatrix(4)
    metric.update((torch.tensor([[9.0, 0, 0, 0], [0, 0, 9.0, 0]]), torch.tensor([target, 2])))
    expected = torch.zeros(4, 4, dtype=torch.int64)
    expected[2, 2] = 1
    assert torch.equal(metric.compute(), expected)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int32, torch.int64])
def test_confusion_matrix_and_precision_count_narrow_integer_targets(dtype: torch.dtype) -> None:
    """The clamp against int64 wrap-around ran in y's own dtype: -1 wraps to 255 in uint8, so
    every uint8 target was clamped to "outside" (an all-zero matrix; Precision refused)."""
    y_pred = torch.eye(3)[[0, 1, 2, 2]]
    y = torch.tensor([0, 1, 1, 2], dtype=dtype)
    matrix = ConfusionMatrix(3)
    matrix.update((y_pred, y))
    assert matrix.compute().tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    precision = Precision(average=False)
    precision.update((y_pred, y))
    assert precision.compute().tolist() == [1.0, 1.0, 0.5]


# ---------------------------------------------------------------------- malformed loaded states
def _updated(metric: Metric, *outputs: Any) -> Metric:
    for output in outputs:
        metric.update(output)
    return metric


_MULTICLASS = (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))

MALFORMED = [
    (lambda: _updated(Accuracy(), _MULTICLASS), "_num_examples", -4, ValueError),
    (lambda: _updated(Accuracy(), _MULTICLASS), "_num_examples", 4.0, TypeError),
    (lambda: _updated(Accuracy(), _MULTICLASS), "_type", "foo", ValueError),
    (lambda: _updated(Accuracy(), _MULTICLASS), "_type", "multilabel", ValueError),
    (lambda: _updated(Accuracy(), _MULTICLASS), "_num_classes", 1, ValueError),
    (lambda: _updated(Accuracy(), _MULTICLASS), "_num_correct", torch.tensor(3), ValueError),
    (lambda: _updated(Accuracy(), _MULTICLASS), "_num_correct", torch.tensor(-1), ValueError),
    (lambda: _updated(Accuracy(), _MULTICLASS), "_num_correct", 1, TypeError),
    (lambda: ConfusionMatrix(3), "_pair_counts", torch.zeros(5, dtype=torch.int64), ValueError),
    (
        lambda: ConfusionMatrix(3),
        "_pair_counts",
        ConfusionMatrix(10).state_dict()["_pair_counts"],
        ValueError,
    ),
    (lambda: ConfusionMatrix(3), "_pair_counts", torch.zeros(10), ValueError),
    (lambda: Loss(torch.nn.functional.mse_loss), "_sum", 3.0, TypeError),
    (lambda: _updated(Precision(), _MULTICLASS), "_counts", torch.zeros(4), ValueError),
    (Precision, "_counts", torch.zeros(4, dtype=torch.int64), ValueError),
    (Average, "_num_examples", 3, ValueError),
    (Average, "_accumulator", 1.0, TypeError),
    (
        lambda: RunningAverage(output_transform=lambda x: x),
        "_value",
        torch.tensor(3),
        TypeError,
    ),
    (TopKCategoricalAccuracy, "_num_correct", torch.tensor(1.0), ValueError),
    (MeanSquaredError, "_sum_of_errors", torch.zeros(2), ValueError),
]


def _same_state(first: Any, second: Any) -> bool:
    if isinstance(first, torch.Tensor):
        return isinstance(second, torch.Tensor) and torch.equal(first, second)
    if isinstance(first, dict):
        return first.keys() == second.keys() and all(
            _same_state(first[key], second[key]) for key in first
        )
    return bool(first == second)


@pytest.mark.parametrize(
    ("make", "key", "value", "error"),
    MALFORMED,
    ids=[f"{index}-{case[1]}" for index, case in enumerate(MALFORMED)],
)
def test_a_malformed_state_is_refused_and_the_metric_unchanged(
    make: Callable[[], Metric], key: str, value: Any, error: type[Exception]
) -> None:
    metric = make()
    before = dict(metric.state_dict())
    state = dict(before)
    state[key] = value
    with pytest.raises(error, match=f"{type(metric).__name__}.load_state_dict: '{key}'"):
        metric.load_state_dict(state)
    assert _same_state(dict(metric.state_dict()), before)


def test_a_state_refused_in_a_held_metric_leaves_the_holder_unchanged() -> None:
    """The metrics a metric holds (a RunningAverage's src, a lambda's arguments) are checked
    with it, before anything is loaded: the first ones were loaded, then the last raised."""
    average = RunningAverage(src=Accuracy())
    average.src.update(_MULTICLASS)  # type: ignore[union-attr]
    average.update(None)  # the average of src's value, src reset
    before = dict(average.state_dict())
    state = dict(before)
    state["_value"] = 0.25
    state["src"] = {**before["src"], "_num_examples": -1}
    with pytest.raises(ValueError, match=r"Accuracy\.load_state_dict: '_num_examples'"):
        average.load_state_dict(state)
    assert _same_state(dict(average.state_dict()), before)

    f1 = Fbeta(1.0)
    _updated(f1, _MULTICLASS)
    before = f1.state_dict()
    precision_state, recall_state = before["metrics"]
    bad_recall = {**recall_state, "_num_samples": -1}
    fresh = Fbeta(1.0)
    with pytest.raises(ValueError, match=r"Recall\.load_state_dict: '_num_samples'"):
        fresh.load_state_dict({"metrics": [precision_state, bad_recall], "_updated": True})
    with pytest.raises(NotComputableError):
        fresh.compute()  # its Precision was loaded before its Recall raised
    with pytest.raises(TypeError, match="'_updated' should be a bool"):
        fresh.load_state_dict({"metrics": [precision_state, recall_state], "_updated": "x"})


def test_a_well_formed_state_still_loads() -> None:
    metric = _updated(Precision(), _MULTICLASS)
    resumed = Precision()
    resumed.load_state_dict(metric.state_dict())
    assert torch.equal(resumed.compute(), metric.compute())


# ---------------------------------------------------------------------------- empty inputs
def test_an_empty_batch_leaves_the_loss_as_it_was() -> None:
    metric = Loss(lambda y_pred, y: ((y_pred - y) ** 2).sum() / len(y))
    metric.update((torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])))
    metric.update((torch.zeros(0), torch.zeros(0)))
    assert metric.compute() == 5.0


def test_accuracy_refuses_y_pred_without_classes() -> None:
    with pytest.raises(ValueError, match=r"y_pred .* \(3, 0\) has no classes"):
        Accuracy().update((torch.zeros(3, 0), torch.zeros(3, dtype=torch.int64)))


# ---------------------------------------------------------------------- copies and lambdas
def test_a_deep_copy_updates_its_own_accumulators(backend: str) -> None:
    """A metric's planned kernel adds to the metric it was planned for: a copy plans its own
    (the copy's updates went into the original), also for Accuracy, which keeps its plan across
    resets."""
    y_pred = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    accuracy = Accuracy()
    evaluator = Engine(lambda e, batch: batch, backend=backend)
    accuracy.attach(evaluator, "accuracy")
    evaluator.run([(y_pred, torch.tensor([0, 0]))])
    copied = copy.deepcopy(accuracy)
    other = Engine(lambda e, batch: batch, backend=backend)
    copied.attach(other, "accuracy")
    assert other.run([(y_pred, torch.tensor([0, 1]))]).metrics["accuracy"] == 1.0
    assert (accuracy._num_examples, accuracy.compute()) == (2, 0.5)

    error = MeanSquaredError()
    error.update((torch.tensor([1.0, 2.0]), torch.zeros(2)))
    error_copy = copy.deepcopy(error)
    error_copy.update((torch.zeros(2), torch.zeros(2)))
    assert (error.compute(), error_copy.compute()) == (2.5, 1.25)


def test_a_deep_copy_of_a_weighted_fbeta_reads_its_own_support() -> None:
    data = (torch.eye(3)[[0, 1, 2, 2, 1]], torch.tensor([0, 1, 1, 2, 0]))
    other = (torch.eye(3)[[0, 0, 2]], torch.tensor([0, 1, 2]))
    fbeta = Fbeta(1.0, average="weighted")
    copied = copy.deepcopy(fbeta)
    with pytest.raises(NotComputableError):
        copied.compute()  # a bare AssertionError: it read the original's (empty) support
    copied.update(data)
    fbeta.update(other)
    fresh = Fbeta(1.0, average="weighted")
    fresh.update(data)
    assert copied.compute() == pytest.approx(fresh.compute())


def test_integer_and_bool_results_of_a_lambda_keep_their_type(backend: str) -> None:
    """A lambda over a metric whose value checks are pending read its result through float64
    (one host read with the checks): an index, a count or a flag came back a float."""
    precision = Precision(average=False)
    engine = Engine(lambda e, batch: batch, backend=backend)
    precision.argmax().attach(engine, "best")
    MetricsLambda(lambda p: (p > 0.3).sum(), precision).attach(engine, "count")
    MetricsLambda(lambda p: (p >= 0).all(), precision).attach(engine, "all")
    metrics = engine.run([(torch.eye(3)[[0, 1, 2, 2]], torch.tensor([0, 1, 1, 2]))]).metrics
    assert (metrics["best"], metrics["count"], metrics["all"]) == (0, 3, True)
    assert (type(metrics["best"]), type(metrics["count"]), type(metrics["all"])) == (int, int, bool)


def test_a_lambda_updated_by_hand_updates_a_shared_metric_once() -> None:
    """cm[0, 0] + cm[1, 1] uses cm twice: updating the lambda counted each batch twice (ignite
    too), where attaching it counts it once."""
    matrix = ConfusionMatrix(2)
    diagonal = matrix[0, 0] + matrix[1, 1]
    diagonal.update((torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]]), torch.tensor([0, 1, 1])))
    assert int(diagonal.compute()) == 2
    assert matrix._num_examples == 3


def test_an_average_started_in_inference_mode_goes_on_outside() -> None:
    for first, then in (
        (torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])),
        (3.0, 1.0),
    ):
        average = Average()
        with torch.inference_mode():
            average.update(first)
        average.update(then)  # the accumulator was an inference tensor: in-place add refused
        with torch.inference_mode():
            average.update(then)
        expected = (torch.as_tensor(first) + 2 * torch.as_tensor(then)).double() / 3
        assert torch.allclose(average.compute(), expected)


def test_top_k_takes_targets_of_shape_n_by_1() -> None:
    """ignite's TopKCategoricalAccuracy takes y of shape (N, 1) (it views y as a column);
    ember refused it."""
    y_pred = torch.tensor([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
    column, flat = TopKCategoricalAccuracy(k=2), TopKCategoricalAccuracy(k=2)
    column.update((y_pred, torch.tensor([[0], [1], [2]])))
    flat.update((y_pred, torch.tensor([0, 1, 2])))
    assert column.compute() == flat.compute() == pytest.approx(2 / 3)
