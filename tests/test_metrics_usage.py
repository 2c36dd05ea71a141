"""ember.metrics on an engine: usages, attach/detach, results, arithmetic, state_dict."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ember.engine import Events
from ember.metrics import (
    Accuracy,
    Average,
    BatchFiltered,
    BatchWise,
    ConfusionMatrix,
    EpochWise,
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
    RunningBatchWise,
    RunningEpochWise,
    SingleEpochRunningBatchWise,
    TopKCategoricalAccuracy,
)
from test_metrics_support import joined, multiclass_batches, multilabel_batches


def batch_accuracy(batches: list[tuple[Any, Any]]) -> float:
    y_pred, y = joined(batches)
    return float((y_pred.argmax(1) == y).mean())


def record(engine: Any, event: Any, name: str) -> list[Any]:
    """Values of ``state.metrics[name]`` each time ``event`` fires (after the metric's handler)."""
    values: list[Any] = []
    engine.add_event_handler(event, lambda e: values.append(e.state.metrics.get(name)))
    return values


def accuracy_after_each_iteration(make_engine: Any, data: Any, usage: Any) -> list[Any]:
    """The value of an Accuracy attached with ``usage``, after each iteration of two epochs."""
    engine = make_engine()
    Accuracy().attach(engine, "acc", usage=usage)
    values = record(engine, Events.ITERATION_COMPLETED, "acc")
    engine.run(data, max_epochs=2)
    return values


class CountingMetric(Metric):
    """Counts its updates and resets; its value is the number of updates since the reset."""

    required_output_keys = None
    _state_attrs = ("updates",)

    def __init__(self) -> None:
        self.resets = 0
        super().__init__()

    def reset(self) -> None:
        self.resets += 1
        self.updates = 0

    def update(self, output: Any) -> None:
        self.updates += 1

    def compute(self) -> int:
        if self.updates == 0:
            raise NotComputableError("CountingMetric saw nothing")
        return self.updates


# ---------------------------------------------------------------------------------------- usages
def test_epoch_wise_is_the_default(make_engine: Any) -> None:
    data = multiclass_batches(0)
    engine = make_engine()
    metric = Accuracy()
    metric.attach(engine, "acc")
    assert metric.is_attached(engine)
    assert metric.is_attached(engine, EpochWise())
    assert metric.is_attached(engine, "epoch_wise")
    assert not metric.is_attached(engine, BatchWise())
    assert engine.run(data).metrics["acc"] == pytest.approx(batch_accuracy(data))


def test_batch_wise_computes_each_batch_alone(make_engine: Any) -> None:
    data = multiclass_batches(1, count=5)
    values = accuracy_after_each_iteration(make_engine, data, BatchWise())
    assert values == pytest.approx([batch_accuracy([b]) for b in data] * 2)


def test_running_batch_wise_accumulates_over_the_run(make_engine: Any) -> None:
    data = multiclass_batches(2, count=3)
    values = accuracy_after_each_iteration(make_engine, data, "running_batch_wise")
    seen = data * 2
    assert values == pytest.approx([batch_accuracy(seen[: i + 1]) for i in range(6)])


def test_single_epoch_running_batch_wise_restarts_each_epoch(make_engine: Any) -> None:
    data = multiclass_batches(3, count=3)
    values = accuracy_after_each_iteration(make_engine, data, SingleEpochRunningBatchWise())
    assert values == pytest.approx([batch_accuracy(data[: i + 1]) for i in range(3)] * 2)


def test_running_epoch_wise_accumulates_over_epochs(make_engine: Any) -> None:
    per_epoch = [multiclass_batches(4), multiclass_batches(5), multiclass_batches(6)]
    engine = make_engine(lambda e, index: per_epoch[e.state.epoch - 1][index])
    Accuracy().attach(engine, "running", usage=RunningEpochWise())
    Accuracy().attach(engine, "epoch")
    running = record(engine, Events.EPOCH_COMPLETED, "running")
    epoch = record(engine, Events.EPOCH_COMPLETED, "epoch")
    engine.run(range(4), max_epochs=3)
    assert epoch == pytest.approx([batch_accuracy(d) for d in per_epoch])
    cumulative = [[b for d in per_epoch[: i + 1] for b in d] for i in range(3)]
    assert running == pytest.approx([batch_accuracy(batches) for batches in cumulative])


def test_batch_filtered_takes_only_the_filtered_iterations(make_engine: Any) -> None:
    data = multiclass_batches(7, count=5)
    engine = make_engine()
    Accuracy().attach(engine, "every2", usage=BatchFiltered(every=2))
    state = engine.run(data, max_epochs=2)
    # every=2 counts the engine's iteration: 2, 4 in epoch 1; 6, 8, 10 in epoch 2.
    assert state.metrics["every2"] == pytest.approx(batch_accuracy([data[0], data[2], data[4]]))
    engine2 = make_engine()
    metric = Accuracy()
    metric.attach(engine2, "acc", usage=BatchFiltered(every=2))
    assert metric.is_attached(engine2, BatchFiltered(every=2))
    Accuracy().attach(engine2, "once", usage=BatchFiltered(once=[1, 5]))
    metrics = engine2.run(data).metrics
    assert metrics["acc"] == pytest.approx(batch_accuracy([data[1], data[3]]))
    assert metrics["once"] == pytest.approx(batch_accuracy([data[0], data[4]]))
    metric.detach(engine2, BatchFiltered(every=2))
    assert not metric.is_attached(engine2, BatchFiltered(every=2))
    assert not engine2.has_event_handler(metric.iteration_completed)


def test_batch_filtered_epoch_without_a_taken_iteration_is_not_computable(make_engine: Any) -> None:
    engine = make_engine()
    Accuracy().attach(engine, "acc", usage=BatchFiltered(once=100))
    with pytest.raises(NotComputableError, match="Accuracy must have at least one example"):
        engine.run(multiclass_batches(8, count=3))


def test_usage_names_and_bad_usages() -> None:
    from ember.metrics._base import _check_usage

    for name, cls in (
        ("epoch_wise", EpochWise),
        ("running_epoch_wise", RunningEpochWise),
        ("batch_wise", BatchWise),
        ("running_batch_wise", RunningBatchWise),
        ("single_epoch_running_batch_wise", SingleEpochRunningBatchWise),
    ):
        assert type(_check_usage(name)) is cls
        assert cls.usage_name == name
    with pytest.raises(ValueError, match="Argument usage should be a MetricUsage or one of"):
        _check_usage("every_batch")
    with pytest.raises(TypeError, match=r"should be a MetricUsage instance: BatchWise\(\)"):
        _check_usage(BatchWise)
    with pytest.raises(TypeError, match="Argument usage should be a MetricUsage or a str"):
        _check_usage(3)


def test_attach_validates_usage_and_name(make_engine: Any) -> None:
    engine = make_engine()
    with pytest.raises(ValueError, match="'weekly'"):
        Accuracy().attach(engine, "acc", usage="weekly")
    with pytest.raises(TypeError, match="Argument name should be a str"):
        Accuracy().attach(engine, 3)


# -------------------------------------------------------------------------------- attach/detach
def test_attach_under_two_names_then_detach(make_engine: Any) -> None:
    data = multiclass_batches(9)
    engine = make_engine()
    metric = Accuracy()
    metric.attach(engine, "a")
    metric.attach(engine, "b")
    state = engine.run(data)
    assert state.metrics["a"] == state.metrics["b"] == pytest.approx(batch_accuracy(data))
    metric.detach(engine)
    assert not metric.is_attached(engine)
    for handler in (metric.started, metric.iteration_completed, metric.completed):
        assert not engine.has_event_handler(handler)
    state.metrics.clear()
    assert "a" not in engine.run(data).metrics
    metric.detach(engine)  # detaching again is a no-op


def test_detach_one_usage_keeps_the_other(make_engine: Any) -> None:
    data = multiclass_batches(10)
    engine = make_engine()
    epoch_metric, batch_metric = Accuracy(), Accuracy()
    epoch_metric.attach(engine, "epoch")
    batch_metric.attach(engine, "batch", usage=BatchWise())
    batch_metric.detach(engine, usage="batch_wise")
    assert epoch_metric.is_attached(engine)
    assert not batch_metric.is_attached(engine, "batch_wise")
    metrics = engine.run(data).metrics
    assert set(metrics) == {"epoch"}


def test_output_transform_and_mapping_output(make_engine: Any) -> None:
    data = multiclass_batches(11)
    engine = make_engine(lambda e, b: {"y_pred": b[0], "y": b[1], "x": None})
    Accuracy().attach(engine, "from_mapping")
    Accuracy(output_transform=lambda o: (o["y_pred"], o["y"])).attach(engine, "transformed")
    TopKCategoricalAccuracy(
        k=1, output_transform=lambda o: {"y": o["y"], "y_pred": o["y_pred"]}
    ).attach(engine, "top1")
    metrics = engine.run(data).metrics
    expected = batch_accuracy(data)
    assert metrics["from_mapping"] == metrics["transformed"] == pytest.approx(expected)
    assert metrics["top1"] == pytest.approx(expected)


def test_mapping_output_without_the_keys_is_refused(make_engine: Any) -> None:
    engine = make_engine(lambda e, b: {"pred": b[0], "target": b[1]})
    Accuracy().attach(engine, "acc")
    with pytest.raises(ValueError, match=r"contain the keys \['y_pred', 'y'\].*'pred', 'target'"):
        engine.run(multiclass_batches(12))


def test_update_runs_without_autograd(make_engine: Any) -> None:
    torch.manual_seed(0)
    weights = torch.randn(3, 4, requires_grad=True)
    data = [(torch.randn(5, 3), torch.randint(0, 4, (5,))) for _ in range(3)]
    engine = make_engine(lambda e, b: (b[0] @ weights, b[1]))
    loss = Loss(torch.nn.functional.cross_entropy)
    loss.attach(engine, "loss")
    seen: list[bool] = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.append(loss._sum.requires_grad)
    )
    engine.run(data)
    assert seen == [False] * 3
    assert isinstance(engine.state.metrics["loss"], float)


def test_device_holds_the_accumulators(make_engine: Any) -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    data = multiclass_batches(13)
    for device in devices:
        engine = make_engine()
        attached = {
            "acc": Accuracy(device=device),
            "cm": ConfusionMatrix(4, device=device),
            "mse": MeanSquaredError(
                device=device, output_transform=lambda o: (o[0][:, 0], o[0][:, 1])
            ),
            "p": Precision(device=device),
        }
        for name, metric in attached.items():
            metric.attach(engine, name)
            assert metric.device == torch.device(device)
        metrics = engine.run(data).metrics
        assert attached["acc"]._num_correct.device.type == device
        assert attached["cm"].confusion_matrix.device.type == device
        assert attached["p"]._counts.device.type == device
        assert metrics["cm"].device.type == "cpu"  # results come back to the CPU
    assert Accuracy(device=torch.device("cpu")).device == torch.device("cpu")
    assert Accuracy().device == torch.device("cpu")  # the default


# ------------------------------------------------------------------------------------- results
class DictMetric(CountingMetric):
    def compute(self) -> Any:
        return {"updates": super().compute(), "half": torch.tensor(self.updates / 2)}


def test_dict_results_are_spread_into_state_metrics(make_engine: Any) -> None:
    engine = make_engine()
    DictMetric().attach(engine, "counts")
    metrics = engine.run(range(4)).metrics
    assert metrics["updates"] == 4
    assert metrics["counts"]["updates"] == 4
    assert torch.equal(metrics["half"], torch.tensor(2.0))


def test_dict_result_key_conflicting_with_the_name_is_refused(make_engine: Any) -> None:
    engine = make_engine()
    DictMetric().attach(engine, "updates")
    with pytest.raises(
        ValueError, match="Argument name 'updates' is conflicting with mapping keys"
    ):
        engine.run(range(2))


def test_one_element_tensors_become_numbers(make_engine: Any) -> None:
    engine = make_engine(lambda e, b: torch.full((1, 1), float(b)))
    Average().attach(engine, "one")
    Average(output_transform=lambda o: o.expand(2, 3)).attach(engine, "many")
    metrics = engine.run(range(4)).metrics
    assert metrics["one"] == pytest.approx(1.5)
    assert isinstance(metrics["one"], float)
    assert isinstance(metrics["many"], torch.Tensor)
    assert metrics["many"].shape == (3,)


# ------------------------------------------------------------------------------ RunningAverage
def test_running_average_epoch_bound(make_engine: Any) -> None:
    engine = make_engine(lambda e, b: float(b))
    RunningAverage(output_transform=lambda o: o, alpha=0.5, epoch_bound=True).attach(
        engine, "bound"
    )
    RunningAverage(output_transform=lambda o: o, alpha=0.5, epoch_bound=False).attach(
        engine, "free"
    )
    bound = record(engine, Events.ITERATION_COMPLETED, "bound")
    free = record(engine, Events.ITERATION_COMPLETED, "free")
    engine.run([2.0, 4.0], max_epochs=2)
    assert bound == [2.0, 3.0, 2.0, 3.0]
    assert free == [2.0, 3.0, 2.5, 3.25]


def test_running_average_epoch_wise_averages_epoch_values(make_engine: Any) -> None:
    per_epoch = [multiclass_batches(14), multiclass_batches(15), multiclass_batches(16)]
    engine = make_engine(lambda e, index: per_epoch[e.state.epoch - 1][index])
    average = RunningAverage(Accuracy(), alpha=0.5)
    average.attach(engine, "acc", usage=RunningEpochWise())
    assert average.is_attached(engine, RunningEpochWise())
    values = record(engine, Events.EPOCH_COMPLETED, "acc")
    engine.run(range(4), max_epochs=3)
    a, b, c = (batch_accuracy(d) for d in per_epoch)
    assert values == pytest.approx([a, (a + b) / 2, ((a + b) / 2 + c) / 2])


def test_running_average_detach_removes_its_source(make_engine: Any) -> None:
    engine = make_engine()
    source = Accuracy()
    average = RunningAverage(source)
    average.attach(engine, "ra")
    assert average.is_attached(engine)
    assert engine.has_event_handler(source.iteration_completed)
    average.detach(engine)
    assert not average.is_attached(engine)
    assert not engine.has_event_handler(source.iteration_completed)
    assert not engine.has_event_handler(average.iteration_completed)


# ---------------------------------------------------------------------------------- arithmetic
def constant(value: Any) -> Average:
    """A metric whose value is ``value`` whatever the engine does."""
    return Average(output_transform=lambda output: value)


def test_operators_build_metrics(make_engine: Any) -> None:
    a, b = constant(6.0), constant(4.0)
    vector = constant(torch.tensor([1.0, 2.0, 6.0]))
    expressions = {
        "add": (a + b, 10.0),
        "radd": (1 + a, 7.0),
        "sub": (a - b, 2.0),
        "rsub": (10 - a, 4.0),
        "mul": (a * b, 24.0),
        "rmul": (0.5 * a, 3.0),
        "div": (a / b, 1.5),
        "rdiv": (12 / a, 2.0),
        "pow": (b**2, 16.0),
        "rpow": (2**b, 16.0),
        "floordiv": (a // b, 1.0),
        "rfloordiv": (13 // a, 2.0),
        "mod": (a % b, 2.0),
        "rmod": (13 % a, 1.0),
        "neg": (-a, -6.0),
        "abs": (abs(-a), 6.0),
        "pos": (+a, 6.0),
        "index": (vector[2], 6.0),
        "mean": (vector.mean(), 3.0),
        "sum": (vector.sum(), 9.0),
        "nested": ((a + b) * (a - b) / 2, 10.0),
        "lambda": (MetricsLambda(lambda x, y, z=0: x * y + z, a, b, z=b), 28.0),
    }
    engine = make_engine()
    for name, (metric, _) in expressions.items():
        assert isinstance(metric, MetricsLambda)
        metric.attach(engine, name)
        assert metric.is_attached(engine)
    metrics = engine.run(range(3)).metrics
    for name, (_, expected) in expressions.items():
        assert metrics[name] == pytest.approx(expected), name
    assert not a.is_attached(engine)  # a dependency is updated, not stored


def test_dependencies_attach_once_and_update_once(make_engine: Any) -> None:
    counting = CountingMetric()
    double = counting * 2
    engine = make_engine()
    counting.attach(engine, "count")
    double.attach(engine, "double")
    (counting + double).attach(engine, "triple", usage=EpochWise())
    metrics = engine.run(range(5)).metrics
    assert metrics == {"count": 5, "double": 10, "triple": 15}


def test_lambda_attached_batch_wise_attaches_its_dependencies_batch_wise(make_engine: Any) -> None:
    counting = CountingMetric()
    lam = counting + 0
    engine = make_engine()
    lam.attach(engine, "per_batch", usage=BatchWise())
    assert lam.is_attached(engine, BatchWise())
    assert not lam.is_attached(engine)
    values = record(engine, Events.ITERATION_COMPLETED, "per_batch")
    engine.run(range(3))
    assert values == [1, 1, 1]


def test_lambda_detach_and_update_api(make_engine: Any) -> None:
    data = multilabel_batches(17)
    precision = Precision(average=False, is_multilabel=True)
    recall = Recall(average=False, is_multilabel=True)
    f1 = precision * recall * 2 / (precision + recall)
    for batch in data:
        f1.update(batch)
    direct = f1.compute()
    engine = make_engine()
    with pytest.raises(ValueError, match="already updated, can't attach"):
        f1.attach(engine, "f1")
    f1.reset()
    f1.attach(engine, "f1")
    with pytest.raises(ValueError, match="can't use the update API while it's attached"):
        f1.update(data[0])
    assert torch.allclose(engine.run(data).metrics["f1"], direct)
    f1.detach(engine)
    assert not f1.is_attached(engine)
    assert f1.engine is None
    engine.state.metrics.clear()
    assert "f1" not in engine.run(data).metrics
    f1.update(data[0])  # usable again once detached


def test_lambda_of_an_unupdated_metric_names_the_dependency() -> None:
    ratio = Accuracy() / 2
    with pytest.raises(NotComputableError, match="Accuracy must have at least one example"):
        ratio.compute()


def test_metric_attribute_access_is_limited_to_tensor_methods() -> None:
    metric = Accuracy()
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        metric.no_such_thing  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute '_hidden'"):
        metric._hidden  # noqa: B018
    with pytest.raises(TypeError, match="not iterable"):
        list(metric)
    assert isinstance(metric.argmax(), MetricsLambda)
    on_a_number = Accuracy().argmax()  # Accuracy computes a float
    on_a_number.update((torch.tensor([1, 0]), torch.tensor([1, 1])))
    with pytest.raises(AttributeError, match="has no method 'argmax'"):
        on_a_number.compute()


# ---------------------------------------------------------------------------------- state_dict
STATEFUL = {
    "accuracy": Accuracy,
    "precision": lambda: Precision(average=False),
    "precision_weighted": lambda: Precision(average="weighted"),
    "recall_micro": lambda: Recall(average="micro"),
    "fbeta": lambda: Fbeta(2.0),
    "confusion": lambda: ConfusionMatrix(4, average="recall"),
    "top2": lambda: TopKCategoricalAccuracy(k=2),
    "mse": lambda: MeanSquaredError(output_transform=lambda o: (o[0][:, 0], o[0][:, 1])),
    "mae": lambda: MeanAbsoluteError(output_transform=lambda o: (o[0][:, 0], o[0][:, 1])),
    "rmse": lambda: RootMeanSquaredError(output_transform=lambda o: (o[0][:, 0], o[0][:, 1])),
    "loss": lambda: Loss(torch.nn.functional.cross_entropy),
    "average": lambda: Average(output_transform=lambda o: o[0]),
    "running_src": lambda: RunningAverage(Accuracy(), alpha=0.7),
    "running_out": lambda: RunningAverage(output_transform=lambda o: o[0].mean(), alpha=0.7),
    "lambda": lambda: (Precision() * Recall()).mean() + 1,
}


def feed(metric: Metric, batch: Any) -> None:
    """What an engine does at ITERATION_COMPLETED for ``metric`` (and a RunningAverage's source)."""
    engine = SimpleNamespace(state=SimpleNamespace(output=batch))
    if isinstance(metric, RunningAverage) and metric.src is not None:
        metric.src.iteration_completed(engine)
    metric.iteration_completed(engine)


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_state_dict_round_trip_continues_the_accumulation(name: str) -> None:
    make = STATEFUL[name]
    data = multiclass_batches(18, count=6)
    whole, first, resumed = make(), make(), make()
    for batch in data:
        feed(whole, batch)
    for batch in data[:3]:
        feed(first, batch)
    saved = first.state_dict()
    # Before serializing: had state_dict() shared tensors with `first`, `resumed` would take
    # these batches too and differ from `whole` below.
    for batch in data[:3]:
        feed(first, batch)
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for batch in data[3:]:
        feed(resumed, batch)
    expected, got = whole.compute(), resumed.compute()
    if isinstance(expected, torch.Tensor):
        assert torch.allclose(got, expected)
    else:
        assert got == pytest.approx(expected)


def test_state_dict_keeps_the_input_kind() -> None:
    metric = Accuracy()
    metric.update((torch.tensor([1, 0]), torch.tensor([1, 1])))
    resumed = Accuracy()
    resumed.load_state_dict(metric.state_dict())
    with pytest.raises(ValueError, match="input type changed from binary to multiclass"):
        resumed.update((torch.randn(2, 3), torch.tensor([0, 2])))


def test_load_state_dict_refuses_foreign_state() -> None:
    metric = Accuracy()
    with pytest.raises(TypeError, match="should be a mapping"):
        metric.load_state_dict([1, 2])
    with pytest.raises(ValueError, match=r"missing \['_num_examples'\].*unexpected \['other'\]"):
        metric.load_state_dict(
            {"_num_correct": torch.tensor(1), "_type": None, "_num_classes": None, "other": 1}
        )
    with pytest.raises(ValueError, match="expected the keys"):
        (Accuracy() + 1).load_state_dict({"metrics": []})
    with pytest.raises(ValueError, match="should hold 1 state dicts"):
        (Accuracy() + 1).load_state_dict({"metrics": [], "_updated": False})


def test_state_dict_is_a_copy_both_ways() -> None:
    batch = (torch.tensor([1, 0, 1]), torch.tensor([1, 1, 1]))
    metric = Accuracy()
    metric.update(batch)
    saved = metric.state_dict()
    metric.update(batch)
    assert saved["_num_correct"].item() == 2
    assert saved["_num_examples"] == 3
    resumed = Accuracy()
    resumed.load_state_dict(saved)
    resumed.update(batch)
    assert saved["_num_correct"].item() == 2
    assert resumed.compute() == metric.compute() == pytest.approx(4 / 6)
