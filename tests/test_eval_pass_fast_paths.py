"""The shortcuts of an evaluation pass against hostile input: the default evaluation step, the
metrics' direct per-batch path and Accuracy's plan kept across resets. Each gives what the
general path gives, and steps aside where a program changed what it relies on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ember.engine import Engine, Events, create_supervised_evaluator
from ember.engine.supervised import supervised_evaluation_step
from ember.metrics import Accuracy, Loss, Precision
from test_metrics_support import binary_batches, multiclass_batches


def _counts(data: list[tuple[Any, Any]]) -> float:
    correct = sum(int((scores.argmax(dim=1) == y).sum()) for scores, y in data)
    return correct / sum(len(y) for _, y in data)


def _evaluator(make_engine: Callable[..., Engine], **metrics: Any) -> Engine:
    engine = make_engine(lambda e, batch: batch)
    for name, metric in metrics.items():
        metric.attach(engine, name)
    return engine


# ------------------------------------------------------------------ the direct per-batch path
def test_a_subclass_update_sees_every_batch_of_every_pass(make_engine: Any) -> None:
    seen: list[int] = []

    class Counting(Accuracy):
        def update(self, output: Any) -> None:
            seen.append(len(output[1]))
            super().update(output)

    data = multiclass_batches(seed=1, count=4)
    engine = _evaluator(make_engine, acc=Counting())
    for _ in range(2):
        assert engine.run(data).metrics["acc"] == _counts(data)
    assert seen == [len(y) for _, y in data] * 2


def test_an_update_replaced_on_the_instance_is_called(make_engine: Any) -> None:
    metric = Accuracy()
    data = multiclass_batches(seed=2, count=3)
    engine = _evaluator(make_engine, acc=metric)
    engine.run(data)  # the plan is made
    calls: list[Any] = []
    original = metric.update

    def spy(output: Any) -> None:
        calls.append(output)
        original(output)

    metric.update = spy  # type: ignore[method-assign]
    assert engine.run(data).metrics["acc"] == _counts(data)
    assert len(calls) == len(data)


def test_a_transformed_output_override_is_honoured(make_engine: Any) -> None:
    """A subclass whose _transformed_output changes exact tuples gets its change."""

    class Swapped(Loss):
        def _transformed_output(self, engine: Any) -> Any:
            y_pred, y = engine.state.output
            return y_pred, y.flip(0)

    class Flipped(Accuracy):
        def _transformed_output(self, engine: Any) -> Any:
            y_pred, y = engine.state.output
            return y_pred, y.flip(0)

    data = multiclass_batches(seed=3, count=3)
    flipped = [(scores, y.flip(0)) for scores, y in data]
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(2):
        got = _evaluator(make_engine, acc=Flipped(), loss=Swapped(loss_fn)).run(data).metrics
        expected = _evaluator(make_engine, acc=Accuracy(), loss=Loss(loss_fn)).run(flipped)
        assert got["acc"] == expected.metrics["acc"]
        assert got["loss"] == pytest.approx(expected.metrics["loss"], rel=1e-12)


def test_an_output_transform_set_after_attach_is_applied(make_engine: Any) -> None:
    metric = Accuracy()
    data = multiclass_batches(seed=4, count=3)
    engine = _evaluator(make_engine, acc=metric)
    engine.run(data)
    metric._output_transform = lambda output: (output[0], output[1].flip(0))
    flipped = [(scores, y.flip(0)) for scores, y in data]
    assert engine.run(data).metrics["acc"] == _counts(flipped)


# ------------------------------------------------------------------ Accuracy's kept plan
def test_value_checks_run_again_in_every_pass(make_engine: Any) -> None:
    good = multiclass_batches(seed=5, num_classes=3, count=3)
    bad = [(scores, y.clone()) for scores, y in good]
    bad[0][1][0] = 3  # the first batch of the second pass holds a class index out of range
    engine = _evaluator(make_engine, acc=Accuracy())
    assert engine.run(good).metrics["acc"] == _counts(good)
    with pytest.raises(ValueError, match=r"class indices outside \[0, 3\): min 0, max 3"):
        engine.run(bad)
    assert engine.run(good).metrics["acc"] == _counts(good)


def test_another_kind_of_input_after_a_reset_is_checked_as_new(make_engine: Any) -> None:
    multiclass = multiclass_batches(seed=6, num_classes=3, count=3)
    binary = binary_batches(seed=6, count=3)
    engine = _evaluator(make_engine, acc=Accuracy())
    metric_values = [engine.run(data).metrics["acc"] for data in (multiclass, binary, multiclass)]
    binary_value = sum(int((p == y).sum()) for p, y in binary) / sum(len(y) for _, y in binary)
    assert metric_values == [_counts(multiclass), binary_value, _counts(multiclass)]
    wide = multiclass_batches(seed=6, num_classes=5, count=3)
    assert engine.run(wide).metrics["acc"] == _counts(wide)


def test_the_kept_plan_redoes_the_input_kind_of_a_reset_metric() -> None:
    metric = Accuracy()
    batch = multiclass_batches(seed=7, num_classes=3, count=1)[0]
    metric.update(batch)
    metric.reset()
    assert (metric._type, metric._num_classes) == (None, None)
    metric.update(batch)
    assert (metric._type, metric._num_classes) == ("multiclass", 3)
    binary = binary_batches(seed=7, count=1)[0]
    with pytest.raises(ValueError, match="input type changed from multiclass to binary"):
        metric.update(binary)


def test_load_state_dict_drops_the_kept_plan() -> None:
    """A restored state holds an input kind: the next update is checked against it, as a
    metric that never made a plan checks it."""
    binary_state = Accuracy()
    binary_state.update(binary_batches(seed=8, count=1)[0])
    saved = binary_state.state_dict()
    batch = multiclass_batches(seed=8, num_classes=3, count=1)[0]
    used, fresh = Accuracy(), Accuracy()
    used.update(batch)
    for metric in (used, fresh):
        metric.load_state_dict(saved)
        with pytest.raises(ValueError, match="input type changed from binary to multiclass"):
            metric.update(batch)


def test_a_subclass_with_its_own_prepare_keeps_no_plan() -> None:
    """Its kernels may hold what a reset replaces: a new plan after every reset."""
    prepared: list[int] = []

    class Capturing(Accuracy):
        def _prepare(self, output: Any) -> Any:
            prepared.append(1)
            correct = self._num_correct  # this reset's accumulator, held by the kernel

            def kernel(y_pred: Any, y: Any) -> None:
                correct.add_(torch.eq(y_pred.argmax(dim=1), y).sum())
                self._num_examples += y.numel()

            self._check_input(output)
            return kernel

    data = [(torch.randn(8, 3), torch.randint(0, 3, (8,))) for _ in range(2)]
    metric = Capturing()
    for _ in range(3):
        metric.reset()
        for batch in data:
            metric.update(batch)
        assert metric.compute() == _counts(data)
    assert len(prepared) == 3
    assert metric._kept_plan is None


def test_accuracy_prepares_once_over_passes_of_one_layout(make_engine: Any) -> None:
    """What the kept plan saves: _prepare's checks and kernels run in the first pass only."""
    prepared: list[int] = []

    class Counting(Accuracy):
        _self_contained_kernels = True

        def _prepare(self, output: Any) -> Any:
            prepared.append(1)
            return super()._prepare(output)

    data = [(torch.randn(8, 3), torch.randint(0, 3, (8,))) for _ in range(3)]
    engine = _evaluator(make_engine, acc=Counting())
    for _ in range(3):
        assert engine.run(data).metrics["acc"] == _counts(data)
    assert len(prepared) == 1


def test_other_metrics_keep_no_plan_across_resets(make_engine: Any) -> None:
    data = multiclass_batches(seed=10, num_classes=3, count=2)
    metric = Precision(average="macro")
    engine = _evaluator(make_engine, p=metric)
    first = engine.run(data).metrics["p"]
    assert engine.run(data).metrics["p"] == first
    assert metric._kept_plan is None


# ------------------------------------------------------------------ the default evaluation step
def test_the_default_step_refuses_a_batch_that_is_not_a_pair() -> None:
    model = torch.nn.Linear(3, 2)
    step = supervised_evaluation_step(model)
    with pytest.raises(ValueError, match="prepare_batch expects batches of \\(x, y\\)"):
        step(Engine(lambda e, b: b), (torch.randn(2, 3),))


def _outputs_of(evaluator: Engine, data: list[Any]) -> list[Any]:
    outputs: list[Any] = []
    evaluator.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output)
    )
    evaluator.run(data)
    return outputs


@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu")])
def test_the_default_step_gives_what_the_general_step_gives(backend: str, device: Any) -> None:
    torch.manual_seed(11)
    model = torch.nn.Linear(3, 2)
    data = [(torch.randn(4, 3), torch.randint(0, 2, (4,))) for _ in range(3)]
    plain = create_supervised_evaluator(model, device=device, backend=backend)
    general = create_supervised_evaluator(
        model, device=device, model_fn=lambda m, x: m(x), backend=backend
    )
    results = []
    for evaluator in (plain, general):
        model.train()
        outputs = _outputs_of(evaluator, data)
        assert not model.training
        assert all(type(output) is tuple and len(output) == 2 for output in outputs)
        assert all(output[0].is_inference() for output in outputs)
        assert all(output[1] is y for output, (_, y) in zip(outputs, data, strict=True))
        results.append(outputs)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a[0], b[0])


class _Summing(torch.nn.Module):
    """A model taking a mapping, as prepare_batch moves mappings item by item."""

    def forward(self, x: Any) -> Any:
        return x["a"] + x["b"]


@pytest.mark.parametrize("device", [None, "cpu"])
def test_the_default_step_hands_other_batches_to_prepare_batch(backend: str, device: Any) -> None:
    """A mapping x, a list batch and a tensor subclass go through prepare_batch."""
    mapping_batch = ({"a": torch.ones(2, 3), "b": torch.ones(2, 3)}, torch.zeros(2))
    list_batch = [torch.ones(2, 3), torch.zeros(2)]
    subclass_batch = (torch.nn.Parameter(torch.ones(2, 3)), torch.zeros(2))
    outputs = _outputs_of(
        create_supervised_evaluator(_Summing(), device=device, backend=backend), [mapping_batch]
    )
    assert torch.equal(outputs[0][0], torch.full((2, 3), 2.0))
    identity = torch.nn.Identity()
    outputs = _outputs_of(
        create_supervised_evaluator(identity, device=device, backend=backend),
        [list_batch, subclass_batch],
    )
    assert [type(output) for output in outputs] == [tuple, tuple]
    assert outputs[0][1] is list_batch[1]
    assert torch.equal(outputs[1][0], torch.ones(2, 3))


def test_kernels_in_inference_mode_leave_normal_accumulators(make_engine: Any) -> None:
    """Accuracy's kernels run in inference mode on the direct path: the accumulator they add
    to stays a normal tensor, usable outside it, and the modes come back."""
    metric = Accuracy()
    scores = torch.randn(6, 3, requires_grad=True)
    data = [(scores, torch.randint(0, 3, (6,))) for _ in range(3)]
    engine = _evaluator(make_engine, acc=metric)
    modes: list[tuple[bool, bool]] = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled())),
    )
    assert engine.run(data).metrics["acc"] == _counts([(s.detach(), y) for s, y in data])
    assert not metric._num_correct.is_inference()
    assert not metric._num_correct.requires_grad
    metric._num_correct += 1  # in place, outside inference mode
    assert modes == [(False, True)] * 3
    assert not torch.is_inference_mode_enabled()


# ------------------------------------------------------------------ the count read with its checks
@pytest.mark.parametrize("dtype", [torch.int64, torch.float64])
def test_read_count_gives_the_count_or_the_failure_as_read_does(dtype: Any) -> None:
    from ember.metrics._checks import ValueChecks

    for count in (0, 7, -3):  # a negative count: a state a program loaded
        for failing in (False, True, None):
            checks, reference = ValueChecks("M"), ValueChecks("M")
            for target in (checks, reference):
                if failing is not None:
                    target.count(torch.tensor(int(failing)), "M: bad values")
                target.count(torch.tensor(0), "M: never")
            value = torch.tensor(count, dtype=dtype)
            if failing:
                with pytest.raises(ValueError, match="M: bad values"):
                    checks.read_count(value)
                with pytest.raises(ValueError, match="M: bad values"):
                    reference.read(value)
                continue
            assert checks.read_count(value) == reference.read(value) == count
            assert not checks.pending
