"""The shortcuts of a metric's per-batch and per-pass path (cheap no_grad, the exact-tuple
output, ``Loss``'s ``len(y)``, the host-side division of ``Accuracy``, the evaluator's
inference mode) against hostile input: every shortcut gives what the general path gives."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ember.engine import Engine, Events, create_supervised_evaluator
from ember.metrics import Accuracy, Loss, Metric, TopKCategoricalAccuracy
from test_metrics_support import evaluate, multiclass_batches

Pair = namedtuple("Pair", ["y_pred", "y"])


class _GradRecorder(Metric):
    """Sums ``y_pred * weight`` with a weight that requires grad, as a metric using a model
    in update() would; records the grad mode update() ran in."""

    def __init__(self) -> None:
        self.weight = torch.ones((), requires_grad=True)
        self.grad_modes: list[bool] = []
        super().__init__()

    def reset(self) -> None:
        self._total: torch.Tensor = torch.zeros(())

    def update(self, output: Any) -> None:
        self.grad_modes.append(torch.is_grad_enabled())
        self._total = self._total + (output[0] * self.weight).sum()

    def compute(self) -> Any:
        return self._total


def _pairs(count: int = 3) -> list[tuple[Any, Any]]:
    return [(torch.randn(4, requires_grad=True), torch.randn(4)) for _ in range(count)]


def test_update_of_a_subclass_builds_no_graph_and_grad_mode_comes_back(make_engine: Any) -> None:
    metric = _GradRecorder()
    engine = make_engine(lambda e, batch: batch)
    metric.attach(engine, "total")
    seen_after: list[bool] = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen_after.append(torch.is_grad_enabled())
    )
    engine.run(_pairs())
    assert metric.grad_modes == [False] * 3
    assert seen_after == [True] * 3  # the next handler sees autograd on again
    assert not metric._total.requires_grad
    assert torch.is_grad_enabled()


def test_grad_mode_already_off_stays_off(make_engine: Any) -> None:
    metric = _GradRecorder()
    engine = make_engine(lambda e, batch: batch)
    metric.attach(engine, "total")
    with torch.no_grad():
        engine.run(_pairs())
        assert not torch.is_grad_enabled()
    assert metric.grad_modes == [False] * 3
    assert torch.is_grad_enabled()


def test_an_update_switching_autograd_on_does_not_leak_it(make_engine: Any) -> None:
    """As with torch.no_grad(): the mode before the update comes back after it."""

    class Switching(_GradRecorder):
        def update(self, output: Any) -> None:
            torch.set_grad_enabled(True)

    engine = make_engine(lambda e, batch: batch)
    Switching().attach(engine, "total")
    seen_after: list[bool] = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen_after.append(torch.is_grad_enabled())
    )
    with torch.no_grad():
        engine.run(_pairs(2))
    assert seen_after == [False, False]


def test_grad_mode_comes_back_when_update_raises(make_engine: Any) -> None:
    class Failing(_GradRecorder):
        def update(self, output: Any) -> None:
            raise RuntimeError("update failed")

    engine = make_engine(lambda e, batch: batch)
    Failing().attach(engine, "total")
    with pytest.raises(RuntimeError, match="update failed"):
        engine.run(_pairs())
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("transform", ["identity", "lambda"])
def test_every_output_container_gives_the_value_of_plain_pairs(
    make_engine: Any, transform: str
) -> None:
    """Tuples, lists, tuple subclasses and mappings mixed within one pass, with the default
    output_transform and with a user's (the shortcut covers exact tuples only)."""
    data = multiclass_batches(seed=4, count=8)
    wrappers = [
        tuple,
        list,
        lambda pair: Pair(*pair),
        lambda pair: {"y_pred": pair[0], "y": pair[1]},
    ]
    mixed = [wrappers[i % len(wrappers)](pair) for i, pair in enumerate(data)]
    loss_fn = torch.nn.CrossEntropyLoss()

    def options() -> dict[str, Any]:
        return {} if transform == "identity" else {"output_transform": lambda output: output}

    expected = evaluate(
        make_engine, {"acc": Accuracy(), "loss": Loss(loss_fn)}, [tuple(p) for p in data]
    )
    got = evaluate(
        make_engine,
        {"acc": Accuracy(**options()), "loss": Loss(loss_fn, **options())},
        mixed,
    )
    assert got == pytest.approx(expected, rel=1e-12)
    assert got["acc"] == expected["acc"]


def test_layout_changes_between_batches(make_engine: Any) -> None:
    """Batch size, target dtype, requires_grad and the device-less dtype of the scores change
    from batch to batch: every change replans, the value is that of the plain counts."""
    generator = torch.Generator().manual_seed(5)
    data: list[tuple[Any, Any]] = []
    for i, size in enumerate([6, 6, 3, 3, 9, 6]):
        scores = torch.randn(size, 3, generator=generator)
        y = torch.randint(0, 3, (size,), generator=generator)
        if i == 1:
            y = y.int()
        if i == 3:
            scores = scores.double()
        if i == 4:
            scores.requires_grad_(True)
        data.append((scores, y))
    correct = sum(int((s.argmax(dim=1) == y).sum()) for s, y in data)
    total = sum(len(y) for _, y in data)

    def loss_fn(scores: Any, y: Any) -> Any:
        return torch.nn.functional.cross_entropy(scores, y.long())

    expected_loss = sum(float(loss_fn(s.detach(), y)) * len(y) for s, y in data) / total
    got = evaluate(make_engine, {"acc": Accuracy(), "loss": Loss(loss_fn)}, data)
    assert got["acc"] == correct / total
    assert got["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert torch.is_grad_enabled()


def test_an_output_that_is_not_a_pair_midway_still_fails_with_the_usual_message(
    make_engine: Any,
) -> None:
    data: list[Any] = [*multiclass_batches(seed=6, count=2), (torch.randn(4, 4),)]
    engine = make_engine(lambda e, batch: batch)
    Accuracy().attach(engine, "acc")
    with pytest.raises(TypeError, match=r"Accuracy.update expects the output \(y_pred, y\)"):
        engine.run(data)
    engine = make_engine(lambda e, batch: batch)
    Loss(torch.nn.CrossEntropyLoss()).attach(engine, "loss")
    with pytest.raises(TypeError, match=r"Loss.update expects \(y_pred, y\).*tuple of length 1"):
        engine.run(data)


def test_a_reset_in_the_middle_of_a_pass(make_engine: Any) -> None:
    data = multiclass_batches(seed=7, count=6)
    accuracy, loss = Accuracy(), Loss(torch.nn.CrossEntropyLoss())
    engine = make_engine(lambda e, batch: batch)
    accuracy.attach(engine, "acc")
    loss.attach(engine, "loss")

    @engine.on(Events.ITERATION_COMPLETED(once=3))
    def forget(_: Engine) -> None:
        accuracy.reset()
        loss.reset()

    state = engine.run(data)
    later = data[3:]
    correct = sum(int((s.argmax(dim=1) == y).sum()) for s, y in later)
    total = sum(len(y) for _, y in later)
    assert state.metrics["acc"] == correct / total
    loss_fn = torch.nn.CrossEntropyLoss()
    expected_loss = sum(float(loss_fn(s, y)) * len(y) for s, y in later) / total
    assert state.metrics["loss"] == pytest.approx(expected_loss, rel=1e-12)


def test_loss_takes_len_of_y_as_len_does() -> None:
    loss_fn = torch.nn.MSELoss()
    with pytest.raises(TypeError, match=r"len\(\) of a 0-d tensor"):
        Loss(loss_fn).update((torch.tensor(1.0), torch.tensor(2.0)))

    class Marked(torch.Tensor):
        pass

    metric = Loss(loss_fn)
    metric.update((torch.zeros(3), torch.ones(3).as_subclass(Marked)))
    metric.update([torch.zeros(2), torch.ones(2)])
    metric.update((torch.zeros(1, 2), torch.ones(1, 2)))
    assert metric._num_examples == 6
    assert metric.compute() == 1.0


@pytest.mark.parametrize("size", [True, -1, 2.0])
def test_loss_refuses_a_bad_batch_size_with_the_value_given(size: Any) -> None:
    metric = Loss(torch.nn.MSELoss(), batch_size=lambda y: size)
    with pytest.raises(ValueError, match=rf"non-negative int, got {size!r}$"):
        metric.update((torch.zeros(2), torch.zeros(2)))


def test_loss_takes_an_integral_batch_size_that_is_not_an_int() -> None:
    np = pytest.importorskip("numpy")
    metric = Loss(torch.nn.MSELoss(), batch_size=lambda y: np.int64(4))
    metric.update((torch.zeros(2), torch.ones(2)))
    metric.update((torch.zeros(2), torch.full((2,), 3.0)))
    assert type(metric._num_examples) is int
    assert metric.compute() == 5.0


@pytest.mark.parametrize("check_values", ["first", "every"])
def test_accuracy_is_the_exact_ratio_of_its_counts(check_values: str) -> None:
    """The division happens on the host now: the same correctly rounded float as before."""
    for correct, total in [(1, 3), (2, 7), (10, 49), (999_999, 1_000_003)]:
        metric = Accuracy(check_values=check_values)
        y = torch.zeros(total, dtype=torch.long)
        y_pred = torch.zeros(total, dtype=torch.long)
        y_pred[correct:] = 1
        metric.update((y_pred, y))
        value = metric.compute()
        assert type(value) is float
        assert value == correct / total
        assert value == (torch.tensor(correct, dtype=torch.float64) / total).item()


def test_value_checks_still_fail_at_compute_with_one_or_several_checks() -> None:
    one = Accuracy()  # multiclass: one check, the class indices
    one.update((torch.randn(2, 3), torch.tensor([0, 5])))
    with pytest.raises(ValueError, match=r"outside \[0, 3\): min 0, max 5"):
        one.compute()
    several = Accuracy(check_values="every")  # binary: two checks a batch
    several.update((torch.tensor([0, 1]), torch.tensor([1, 1])))
    several.update((torch.tensor([0, 1]), torch.tensor([1, 2])))
    with pytest.raises(ValueError, match="y must contain only 0s and 1s, got the value 2"):
        several.compute()
    top_k = TopKCategoricalAccuracy(k=2)
    top_k.update((torch.randn(2, 3), torch.tensor([0, 1])))
    assert top_k.compute() == 1.0


def test_evaluator_leaves_inference_mode_after_each_step(backend: str) -> None:
    model = torch.nn.Linear(2, 1)
    modes: list[bool] = []
    evaluator = create_supervised_evaluator(model, backend=backend)
    evaluator.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: modes.append(torch.is_inference_mode_enabled()),
    )
    evaluator.run([(torch.randn(3, 2), torch.randn(3, 1))] * 2)
    assert modes == [False, False]
    assert evaluator.state.output[0].is_inference()


def test_evaluator_leaves_inference_mode_when_the_model_raises(backend: str) -> None:
    class Broken(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            assert torch.is_inference_mode_enabled()
            raise RuntimeError("forward failed")

    evaluator = create_supervised_evaluator(Broken(), backend=backend)
    with pytest.raises(RuntimeError, match="forward failed"):
        evaluator.run([(torch.randn(3, 2), torch.randn(3, 1))])
    assert not torch.is_inference_mode_enabled()
    assert torch.is_grad_enabled()
