"""RunningAverage of a device value: no host sync per iteration, the same values when read."""

from __future__ import annotations

import copy
import json
import math
import pickle
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ember.engine import Events
from ember.metrics import Accuracy, RunningAverage
from ember.metrics._deferred import DeferredMetrics, DeferredValue
from syncs import HostSyncCounter

LOSSES = [0.5, 2.0, 1.0, 4.0, 3.0]


def tensor_loss_engine(
    make_engine: Any, output_transform: Callable[[Any], Any] = lambda loss: loss, **kwargs: Any
) -> Any:
    """A trainer whose output is a 0-d float32 tensor loss, with RunningAverage ``"loss"``."""
    engine = make_engine(lambda engine, batch: torch.tensor(batch, dtype=torch.float32))
    RunningAverage(output_transform=output_transform, alpha=0.9, **kwargs).attach(engine, "loss")
    return engine


def _detached(loss: Any) -> Any:
    """A transform that does not return its argument: RunningAverage's default handler then
    stores a DeferredValue snapshot at each iteration instead of one live value."""
    return loss.detach()


def expected_running(values: list[float], alpha: float) -> list[float]:
    running: list[float] = []
    for value in values:
        running.append(value if not running else alpha * running[-1] + (1 - alpha) * value)
    return running


def assert_each_sees_its_own_value(placeholders: list[Any], losses: list[float]) -> None:
    """Read the placeholders of a run over ``losses`` (one per iteration, alpha 0.9) out of
    order, older than the last read and across folds, then all in order: each gives the
    running average of its own iteration."""
    expected = expected_running(losses, 0.9)
    order = [10, 3, 70, 64, 149, 0, 65, 128, 127, *range(len(losses))]
    seen = [placeholders[i].get() for i in order]
    assert seen == pytest.approx([expected[i] for i in order], rel=1e-6)


def test_nobody_reads_no_sync(make_engine: Any) -> None:
    engine = tensor_loss_engine(make_engine)
    with HostSyncCounter() as syncs:
        engine.run(LOSSES * 4, max_epochs=2)
    assert syncs.names == []
    assert isinstance(engine.state.metrics, DeferredMetrics)
    assert engine.state.metrics["loss"] == pytest.approx(expected_running(LOSSES * 8, 0.9)[-1])


def test_each_read_syncs_once_and_sees_the_eager_value(make_engine: Any) -> None:
    deferred, eager = (
        tensor_loss_engine(make_engine),
        tensor_loss_engine(make_engine, deferred=False),
    )
    seen: dict[str, list[Any]] = {"deferred": [], "eager": []}
    syncs = HostSyncCounter()
    for label, engine in (("deferred", deferred), ("eager", eager)):

        @engine.on(Events.ITERATION_COMPLETED)
        def read(engine: Any, label: str = label) -> None:
            metrics = engine.state.metrics
            seen[label].append(metrics["loss"])
            seen[label].append(metrics["loss"])  # a second read of the same value: no sync

    with syncs:
        deferred.run(LOSSES, max_epochs=2)
    assert syncs.count == len(LOSSES) * 2
    with HostSyncCounter() as eager_syncs:
        eager.run(LOSSES, max_epochs=2)
    assert eager_syncs.count == len(LOSSES) * 2  # ignite's way: one per iteration
    # Equal to float32 rounding: the deferred value folds the newest values in at once.
    assert seen["deferred"] == pytest.approx(seen["eager"], rel=1e-6)
    assert all(type(value) is float for value in seen["deferred"])
    assert seen["deferred"][::2] == pytest.approx(expected_running(LOSSES * 2, 0.9))


def test_a_reset_does_not_change_the_stored_value(make_engine: Any) -> None:
    engine = make_engine(lambda engine, batch: torch.tensor(batch))
    RunningAverage(output_transform=lambda o: o, alpha=0.5, epoch_bound=True).attach(engine, "ra")
    at_epoch_start: list[float] = []
    engine.add_event_handler(
        Events.EPOCH_STARTED, lambda e: at_epoch_start.append(e.state.metrics.get("ra"))
    )
    engine.run([2.0, 4.0], max_epochs=2)
    # Reset at EPOCH_STARTED (before this reader): the entry still holds epoch 1's last value.
    assert at_epoch_start == [None, 3.0]
    assert engine.state.metrics["ra"] == 3.0


def test_vector_values_are_stored_on_cpu(make_engine: Any) -> None:
    engine = make_engine(lambda engine, batch: torch.tensor([batch, 2 * batch]))
    RunningAverage(output_transform=lambda o: o, alpha=0.5).attach(engine, "ra")
    engine.run([2.0, 4.0])
    value = engine.state.metrics["ra"]
    assert isinstance(value, torch.Tensor)
    assert value.device.type == "cpu"
    assert value.tolist() == [3.0, 6.0]


def test_number_outputs_are_stored_as_they_are(make_engine: Any) -> None:
    engine = make_engine(lambda engine, batch: batch)
    RunningAverage(output_transform=lambda o: o, alpha=0.5).attach(engine, "ra")
    engine.run([2.0, 4.0])
    assert type(engine.state.metrics) is dict  # nothing deferred: the user's dict stays
    assert engine.state.metrics["ra"] == 3.0


def test_a_metric_source_is_averaged_as_before(make_engine: Any) -> None:
    engine = make_engine(lambda engine, batch: batch)
    RunningAverage(Accuracy(), alpha=0.5).attach(engine, "acc")
    batches = [
        (torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1])),
        (torch.tensor([[0.1, 0.9]]), torch.tensor([1])),
    ]
    assert engine.run(batches).metrics["acc"] == 0.75


def test_another_mapping_type_is_filled_eagerly(make_engine: Any) -> None:
    class Recorded(dict[str, Any]):
        pass

    engine = tensor_loss_engine(make_engine)
    engine.state.metrics = Recorded()
    engine.run(LOSSES)
    assert type(engine.state.metrics) is Recorded
    assert type(dict.__getitem__(engine.state.metrics, "loss")) is float


def test_an_existing_dict_keeps_its_entries(make_engine: Any) -> None:
    engine = tensor_loss_engine(make_engine)
    engine.state.metrics["before"] = 1
    engine.run(LOSSES)
    assert engine.state.metrics["before"] == 1


def test_deferred_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="deferred should be a bool"):
        RunningAverage(output_transform=lambda o: o, deferred=1)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ the mapping itself
def deferred_mapping() -> DeferredMetrics:
    metrics = DeferredMetrics({"plain": 1.0})
    dict.__setitem__(metrics, "late", DeferredValue(torch.tensor(2.5, dtype=torch.float64)))
    return metrics


def updated(target: Any, source: Any) -> Any:
    target.update(source)
    return target


READS = {
    "getitem": lambda m: {key: m[key] for key in m},
    "get": lambda m: {key: m.get(key) for key in m},
    "dict": dict,
    "unpack": lambda m: {**m},
    "dict.update": lambda m: updated({}, m),
    "OrderedDict": lambda m: dict(OrderedDict(m)),
    "OrderedDict.update": lambda m: dict(updated(OrderedDict(), m)),
    "items": lambda m: dict(m.items()),
    "values": lambda m: dict(zip(m, m.values(), strict=True)),
    "copy": lambda m: m.copy(),
    "copy.copy": copy.copy,
    "copy.deepcopy": copy.deepcopy,
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    "json": lambda m: json.loads(json.dumps(m)),
    "pop": lambda m: {key: m.pop(key) for key in list(m)},
    "setdefault": lambda m: {key: m.setdefault(key) for key in list(m)},
    "popitem": lambda m: dict(m.popitem() for _ in range(len(m))),
}


@pytest.mark.parametrize("read", READS.values(), ids=list(READS))
def test_every_read_resolves(read: Any) -> None:
    result = read(deferred_mapping())
    assert result == {"plain": 1.0, "late": 2.5}
    assert all(type(value) is float for value in result.values())


def test_comparison_and_repr_resolve() -> None:
    metrics = deferred_mapping()
    assert metrics == {"plain": 1.0, "late": 2.5}
    assert {"plain": 1.0, "late": 2.5} == metrics  # noqa: SIM300 - the reflected comparison
    assert metrics != {"plain": 1.0}
    assert repr(metrics) == repr({"plain": 1.0, "late": 2.5})
    assert type(pickle.loads(pickle.dumps(metrics))) is dict


@pytest.mark.ignite
@pytest.mark.parametrize("bar", ["ember", "ignite"])
def test_a_progress_bar_shows_the_running_loss(make_engine: Any, bar: str) -> None:
    """The bar reads state.metrics at its refresh: the value read is the running average."""
    import io

    if bar == "ignite":
        from ignite.handlers import ProgressBar
    else:
        from ember.handlers import ProgressBar

    engine = make_engine(lambda engine, batch: torch.tensor(batch))
    RunningAverage(output_transform=lambda loss: loss, alpha=0.5).attach(engine, "loss")
    stream = io.StringIO()
    ProgressBar(file=stream, persist=True).attach(engine, metric_names="all")
    engine.run([1.0, 3.0, 5.0, 7.0])
    assert "loss=5.25 " in stream.getvalue()  # the averages 1, 2, 3.5, 5.25: the last one


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_folding_many_values_at_once_equals_the_step_by_step_average(
    make_engine: Any, dtype: torch.dtype
) -> None:
    # 150 iterations per epoch: more than one fold of 64 values, reads in between and at the
    # folds' edges; epoch_bound restarts the average (from the first value) at each epoch.
    losses = [float((7 * i) % 13) / 3.0 for i in range(150)]
    engine = make_engine(lambda engine, batch: torch.tensor(batch, dtype=dtype))
    RunningAverage(output_transform=lambda loss: loss, alpha=0.9, epoch_bound=True).attach(
        engine, "loss"
    )
    read_at = {1, 2, 63, 64, 65, 100, 128, 129, 150}
    seen: list[float] = []

    @engine.on(Events.ITERATION_COMPLETED)
    def read(engine: Any) -> None:
        if engine.state.iteration % 150 in {i % 150 for i in read_at}:
            seen.append(engine.state.metrics["loss"])

    engine.run(losses, max_epochs=2)
    expected = expected_running(losses, 0.9)
    per_epoch = [expected[i - 1] for i in sorted(read_at)]
    assert seen == pytest.approx(per_epoch * 2, rel=1e-6 if dtype == torch.float32 else 1e-12)


def test_a_folded_vector_average_keeps_dtype_and_shape() -> None:
    metric = RunningAverage(output_transform=lambda o: o, alpha=0.5)
    rows = [torch.tensor([float(i), -float(i)], dtype=torch.float16) for i in range(100)]
    for row in rows:
        metric.update(row)
    value = metric.compute()
    assert value.dtype == torch.float16 and value.shape == (2,)
    expected = expected_running([float(i) for i in range(100)], 0.5)[-1]
    assert value.tolist() == pytest.approx([expected, -expected], rel=1e-3)
    metric.reset()
    metric.update(torch.tensor([1.0, 2.0], dtype=torch.float16))
    assert metric.compute().tolist() == [1.0, 2.0]  # the first value as it is


def test_placeholders_read_in_any_order_see_their_own_values(make_engine: Any) -> None:
    # A read continues from the previous one (the next bar refresh sums only the new values):
    # a snapshot older than the last read, or from before a fold, still gets its own value.
    losses = [float((5 * i) % 11) / 2.0 for i in range(150)]
    engine = make_engine(lambda engine, batch: torch.tensor(batch, dtype=torch.float32))
    metric = RunningAverage(output_transform=lambda loss: loss, alpha=0.9)
    metric.attach(engine, "loss")
    placeholders: list[Any] = []

    @engine.on(Events.ITERATION_COMPLETED)
    def keep(engine: Any) -> None:
        pending = metric._pending
        placeholders.append(DeferredValue(pending, len(pending.values)))

    engine.run(losses)
    assert_each_sees_its_own_value(placeholders, losses)


def test_snapshots_stored_at_each_iteration_read_in_any_order_see_their_own_values(
    make_engine: Any,
) -> None:
    # The stored placeholders themselves, where each iteration stores a snapshot (a transform
    # that is not skipped): one older than the last read, or from before a fold, still gets
    # its own value.
    losses = [float((5 * i) % 11) / 2.0 for i in range(150)]
    engine = tensor_loss_engine(make_engine, output_transform=_detached)
    placeholders: list[Any] = []

    @engine.on(Events.ITERATION_COMPLETED)
    def keep(engine: Any) -> None:
        placeholders.append(dict.__getitem__(engine.state.metrics, "loss"))

    engine.run(losses)
    assert_each_sees_its_own_value(placeholders, losses)


def test_outputs_that_change_type_shape_or_autograd_are_averaged_as_before(
    make_engine: Any,
) -> None:
    class Marked(torch.Tensor):
        pass

    outputs = [
        torch.tensor(1.0),
        torch.tensor(2.0, dtype=torch.float64),  # another dtype: the average follows it
        torch.tensor(3.0, requires_grad=True),
        2.0,
        torch.tensor(5.0).as_subclass(Marked),
        torch.tensor(4.0),
    ]
    engine = make_engine(lambda engine, batch: outputs[batch])
    RunningAverage(output_transform=lambda loss: loss, alpha=0.5).attach(engine, "loss")
    seen: list[Any] = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, lambda engine: seen.append(engine.state.metrics["loss"])
    )
    engine.run(range(len(outputs)))
    assert seen == pytest.approx(expected_running([1.0, 2.0, 3.0, 2.0, 5.0, 4.0], 0.5))
    # A one-element vector after 0-d values: broadcast to its shape, stored as a number.
    vectors = [torch.tensor(1.0), torch.tensor([3.0]), torch.tensor([5.0])]
    engine = make_engine(lambda engine, batch: vectors[batch])
    metric = RunningAverage(output_transform=lambda loss: loss, alpha=0.5)
    metric.attach(engine, "loss")
    assert engine.run(range(3)).metrics["loss"] == 3.5
    assert metric.compute().shape == (1,)


def test_state_metrics_replaced_during_the_run(make_engine: Any) -> None:
    class Recorded(dict[str, Any]):
        pass

    engine = tensor_loss_engine(make_engine)
    replacements = {3: dict, 5: Recorded}

    @engine.on(Events.ITERATION_STARTED)
    def replace(engine: Any) -> None:
        if engine.state.iteration in replacements:
            engine.state.metrics = replacements[engine.state.iteration]()
        if engine.state.iteration == 4:
            assert type(engine.state.metrics) is DeferredMetrics  # the plain dict replaced

    engine.run(LOSSES)
    assert type(engine.state.metrics) is Recorded
    assert type(dict.__getitem__(engine.state.metrics, "loss")) is float
    assert engine.state.metrics["loss"] == pytest.approx(expected_running(LOSSES, 0.9)[-1])


@pytest.mark.parametrize("alpha", [1e-9, 0.01, 0.98, 1.0])
@pytest.mark.parametrize("where", [0, 5, 299])
def test_an_infinite_value_stays_infinite_over_a_fold(alpha: float, where: int) -> None:
    # Folded over hundreds of steps, alpha**k rounds to 0 for a small alpha: the fold keeps it
    # positive, so that the average is inf as step by step (0 * inf would make it NaN).
    values = [1.0] * 300
    values[where] = -math.inf
    metric = RunningAverage(output_transform=lambda o: o, alpha=alpha)
    step_by_step = None
    for value in values:
        metric.update(torch.tensor(value, dtype=torch.float64))
        step_by_step = value if step_by_step is None else alpha * step_by_step + (1 - alpha) * value
    # -inf; with alpha 1, the first value, or NaN (0 * inf) when a later one is infinite
    assert metric.compute().item() == pytest.approx(step_by_step, nan_ok=True)


@pytest.mark.parametrize("odd", ["text", None, [torch.tensor(1.0)]])
def test_an_output_replaced_by_an_odd_object_is_refused(make_engine: Any, odd: Any) -> None:
    engine = make_engine(lambda engine, batch: torch.tensor(batch))

    @engine.on(Events.ITERATION_COMPLETED)
    def replace(engine: Any) -> None:
        if engine.state.iteration == 3:
            engine.state.output = odd

    RunningAverage(output_transform=lambda loss: loss).attach(engine, "loss")
    with pytest.raises(TypeError, match=r"expects a number or a torch\.Tensor"):
        engine.run(LOSSES)
    assert engine.state.iteration == 3


# ----------------------------------------- the default usage's one handler (update and store)
def test_one_handler_is_seen_as_both_methods_and_detaches(make_engine: Any) -> None:
    engine = make_engine(lambda engine, batch: torch.tensor(batch))
    metric = RunningAverage(output_transform=lambda loss: loss, alpha=0.9)
    metric.attach(engine, "loss")
    assert len(engine._event_handlers[Events.ITERATION_COMPLETED]) == 1
    for handler in (metric.iteration_completed, metric.completed):
        assert engine.has_event_handler(handler, Events.ITERATION_COMPLETED)
    assert metric.is_attached(engine)
    metric.attach(engine, "again")  # a second name: stored by a handler of its own
    state = engine.run(LOSSES)
    assert state.metrics["loss"] == state.metrics["again"]
    assert state.metrics["loss"] == pytest.approx(expected_running(LOSSES, 0.9)[-1])
    metric.detach(engine)
    assert not metric.is_attached(engine)
    for handler in (metric.started, metric.iteration_completed, metric.completed):
        assert not engine.has_event_handler(handler)


@pytest.mark.parametrize("removed", ["completed", "iteration_completed", "both"])
def test_the_user_removes_one_part_mid_run(make_engine: Any, removed: str) -> None:
    # As with two handlers (ignite's): without completed, the average goes on but is no longer
    # stored; without iteration_completed, the last value is stored again at each iteration.
    engine = make_engine(lambda engine, batch: torch.tensor(batch))
    metric = RunningAverage(output_transform=lambda loss: loss, alpha=0.9)
    metric.attach(engine, "loss")
    seen: list[float] = []

    @engine.on(Events.ITERATION_COMPLETED)
    def remove(engine: Any) -> None:
        seen.append(engine.state.metrics.get("loss"))
        if engine.state.iteration == 2:
            for name in ("completed", "iteration_completed"):
                if removed in (name, "both"):
                    engine.remove_event_handler(getattr(metric, name), Events.ITERATION_COMPLETED)
            del engine.state.metrics["loss"]  # stored again only by a store handler left

    engine.run(LOSSES)
    running = expected_running(LOSSES, 0.9)
    assert seen[:2] == pytest.approx(running[:2])
    assert metric.is_attached(engine) == (removed == "iteration_completed")
    updating = engine.has_event_handler(metric.iteration_completed, Events.ITERATION_COMPLETED)
    assert updating == (removed == "completed")
    if removed == "iteration_completed":
        assert seen[2:] == pytest.approx([running[1]] * 3)
    else:
        assert seen[2:] == [None] * 3
    assert metric.compute() == pytest.approx(running[-1 if updating else 1])
    with pytest.raises(ValueError, match="is not found"):
        engine.remove_event_handler(metric.started, Events.ITERATION_COMPLETED)


def placeholders_of_iterations_2_and_3(engine: Any) -> dict[int, Any]:
    """What ``state.metrics["loss"]`` holds at iterations 2 and 3, taken unread (dict's own
    ``__getitem__``), by iteration, once the engine has run."""
    held: dict[int, Any] = {}

    @engine.on(Events.ITERATION_COMPLETED)
    def hold(engine: Any) -> None:
        if engine.state.iteration in (2, 3):
            held[engine.state.iteration] = dict.__getitem__(engine.state.metrics, "loss")

    return held


def test_a_placeholder_someone_holds_is_the_live_value(make_engine: Any) -> None:
    # The default usage stores one LiveValue per pending average: read raw (dict's own
    # functions), it shows the average through the latest value appended, not a snapshot.
    engine = tensor_loss_engine(make_engine)
    held = placeholders_of_iterations_2_and_3(engine)
    state = engine.run(LOSSES * 2)
    running = expected_running(LOSSES * 2, 0.9)
    assert state.metrics["loss"] == pytest.approx(running[-1])
    assert held[3] is held[2]
    assert held[2].get() == pytest.approx(running[-1])


def test_a_snapshot_someone_holds_keeps_its_value(make_engine: Any) -> None:
    engine = tensor_loss_engine(make_engine, output_transform=_detached)
    held = placeholders_of_iterations_2_and_3(engine)
    state = engine.run(LOSSES * 2)
    running = expected_running(LOSSES * 2, 0.9)
    assert state.metrics["loss"] == pytest.approx(running[-1])
    assert held[3].get() == pytest.approx(running[2])
    assert held[2].get() == pytest.approx(running[1])


def test_the_user_deletes_or_replaces_the_entry(make_engine: Any) -> None:
    engine = tensor_loss_engine(make_engine)

    @engine.on(Events.ITERATION_STARTED)
    def meddle(engine: Any) -> None:
        if engine.state.iteration == 3:
            del engine.state.metrics["loss"]
        if engine.state.iteration == 4:
            dict.__setitem__(engine.state.metrics, "loss", DeferredValue(torch.tensor(-1.0)))

    values = LOSSES * 60  # past a fold (256 values)
    state = engine.run(values)
    assert state.metrics["loss"] == pytest.approx(expected_running(values, 0.9)[-1], rel=1e-5)


def test_on_ignite_s_engine_the_two_handlers_stay(make_engine: Any) -> None:
    ignite_engine = pytest.importorskip("ignite.engine")
    engine = ignite_engine.Engine(lambda engine, batch: torch.tensor(batch))
    metric = RunningAverage(output_transform=lambda loss: loss, alpha=0.9)
    metric.attach(engine, "loss")
    assert engine.has_event_handler(metric.iteration_completed)
    assert engine.has_event_handler(metric.completed)
    state = engine.run(LOSSES)
    assert state.metrics["loss"] == pytest.approx(expected_running(LOSSES, 0.9)[-1])
    metric.detach(engine)
    assert not metric.is_attached(engine)


def test_only_transforms_that_return_their_argument_are_skipped() -> None:
    import functools

    from ember.metrics.aggregate import _returns_its_argument

    def plain(loss: Any) -> Any:
        return loss

    assert _returns_its_argument(lambda loss: loss) and _returns_its_argument(plain)
    for other in (
        lambda loss: loss * 1,
        lambda loss, scale=2: loss,  # two parameters: not skipped, though it would be right
        lambda *losses: losses,
        lambda loss, *, key=0: loss,
        functools.partial(plain),
        abs,
        type("Callable", (), {"__call__": lambda self, loss: loss})(),
    ):
        assert not _returns_its_argument(other)


def test_a_transform_replaced_mid_run_is_applied(make_engine: Any) -> None:
    engine = make_engine(lambda engine, batch: torch.tensor(batch))
    metric = RunningAverage(output_transform=lambda loss: loss, alpha=0.9)
    metric.attach(engine, "loss")

    @engine.on(Events.ITERATION_STARTED(once=3))
    def double(engine: Any) -> None:
        metric._output_transform = lambda loss: loss * 2

    state = engine.run(LOSSES)
    seen = LOSSES[:2] + [2 * value for value in LOSSES[2:]]
    assert state.metrics["loss"] == pytest.approx(expected_running(seen, 0.9)[-1])


def test_a_skipped_transform_given_another_body_mid_run_is_applied(make_engine: Any) -> None:
    engine = make_engine(lambda engine, batch: torch.tensor(batch))
    transform = lambda loss: loss  # noqa: E731 - a function object whose body changes
    metric = RunningAverage(output_transform=transform, alpha=0.9)
    metric.attach(engine, "loss")

    @engine.on(Events.ITERATION_STARTED(once=3))
    def double(engine: Any) -> None:
        transform.__code__ = (lambda loss: loss * 2).__code__

    state = engine.run(LOSSES)
    seen = LOSSES[:2] + [2 * value for value in LOSSES[2:]]
    assert state.metrics["loss"] == pytest.approx(expected_running(seen, 0.9)[-1])


def test_a_subclass_with_a_class_attribute_for_a_field_keeps_two_handlers(
    make_engine: Any,
) -> None:
    class AlwaysEager(RunningAverage):
        @property
        def deferred(self) -> bool:
            return False

        @deferred.setter
        def deferred(self, value: bool) -> None:
            pass

    engine = make_engine(lambda engine, batch: torch.tensor(batch))
    metric = AlwaysEager(output_transform=lambda loss: loss, alpha=0.9)
    metric.attach(engine, "loss")
    assert len(engine._event_handlers[Events.ITERATION_COMPLETED]) == 2
    state = engine.run(LOSSES)
    assert type(dict.__getitem__(state.metrics, "loss")) is float
    assert state.metrics["loss"] == pytest.approx(expected_running(LOSSES, 0.9)[-1])
