"""RunningAverage's default usage on an ``OutputSink``: the compiled loop appends the loss to
the pending average without a Python call, and every value a program reads is the one
``_UpdateAndStore`` (one Python handler per iteration) and ignite's RunningAverage give."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ember.engine import Engine, Events
from ember.engine.sink import OutputSink
from ember.metrics import RunningAverage
from ember.metrics._deferred import DeferredMetrics, DeferredValue, LiveValue
from ember.metrics.aggregate import _FOLD_EVERY, _SinkUpdateAndStore, _UpdateAndStore
from frames import python_calls
from recording import metrics_counting_state
from syncs import HostSyncCounter

MakeEngine = Callable[..., Engine]
ALPHA = 0.9


def losses(count: int, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    return [torch.tensor(float((7 * i) % 13) / 3.0, dtype=dtype) for i in range(count)]


def expected_running(values: list[float], alpha: float = ALPHA) -> list[float]:
    running: list[float] = []
    for value in values:
        running.append(value if not running else alpha * running[-1] + (1 - alpha) * value)
    return running


def sink_engine(make_engine: MakeEngine, outputs: list[Any], **kwargs: Any) -> Any:
    """An engine whose output at batch ``i`` is ``outputs[i]``, with RunningAverage ``"loss"``
    attached the default way (on the sink)."""
    engine = make_engine(lambda engine, batch: outputs[batch])
    metric = RunningAverage(output_transform=lambda loss: loss, alpha=ALPHA, **kwargs)
    metric.attach(engine, "loss")
    return engine, metric


def reference_engine(make_engine: MakeEngine, outputs: list[Any]) -> Any:
    """The same, with the handler the default usage had before the sink: ``_UpdateAndStore``."""
    engine = make_engine(lambda engine, batch: outputs[batch])
    metric = RunningAverage(output_transform=lambda loss: loss, alpha=ALPHA)
    engine.add_event_handler(Events.STARTED, metric.started)
    engine.add_event_handler(Events.ITERATION_COMPLETED, _UpdateAndStore(metric, "loss"))
    return engine, metric


def record_after(engine: Engine) -> list[Any]:
    seen: list[Any] = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, lambda engine: seen.append(engine.state.metrics.get("loss"))
    )
    return seen


def run_both(make_engine: MakeEngine, outputs: list[Any], **run: Any) -> tuple[Any, Any]:
    """What a handler after the store reads at every iteration, on the sink and on the
    reference; the runs' errors, if any, as their types."""
    results = []
    for build in (sink_engine, reference_engine):
        engine, _ = build(make_engine, outputs)
        seen = record_after(engine)
        try:
            engine.run(range(len(outputs)), **run)
        except Exception as error:  # noqa: BLE001 - compared below: the same error at the same iteration
            seen.append((type(error), engine.state.iteration))
        results.append(seen)
    return results[0], results[1]


def test_the_default_usage_attaches_the_sink(make_engine: MakeEngine) -> None:
    engine, _ = sink_engine(make_engine, losses(3))
    ((handler, _, _),) = engine._event_handlers[Events.ITERATION_COMPLETED]
    assert type(handler) is _SinkUpdateAndStore
    assert isinstance(handler, OutputSink)
    assert repr(handler) == "RunningAverage update and store of 'loss'"
    for other in (
        RunningAverage(output_transform=lambda loss: loss * 1),  # a transform that is called
        RunningAverage(output_transform=lambda loss: loss, deferred=False),
    ):
        engine = make_engine()
        other.attach(engine, "loss")
        ((handler, _, _),) = engine._event_handlers[Events.ITERATION_COMPLETED]
        assert type(handler) is _UpdateAndStore


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("count", [1, 255, 256, 257, 600])
def test_values_equal_the_handler_s_and_the_step_by_step_average(
    make_engine: MakeEngine, dtype: torch.dtype, count: int
) -> None:
    outputs = losses(count, dtype)
    on_sink, reference = run_both(make_engine, outputs)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    assert on_sink == pytest.approx(reference, rel=tolerance)
    assert on_sink == pytest.approx(expected_running([float(x) for x in outputs]), rel=tolerance)
    assert all(type(value) is float for value in on_sink)


@pytest.mark.ignite
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_equal_ignite_s(make_engine: MakeEngine, dtype: torch.dtype) -> None:
    from ignite.engine import Engine as IgniteEngine
    from ignite.metrics import RunningAverage as IgniteRunningAverage

    outputs = losses(300, dtype)
    ignite_engine = IgniteEngine(lambda engine, batch: outputs[batch])
    IgniteRunningAverage(output_transform=lambda loss: loss, alpha=ALPHA).attach(
        ignite_engine, "loss"
    )
    from_ignite = record_after(ignite_engine)
    ignite_engine.run(range(len(outputs)), max_epochs=2)
    engine, _ = sink_engine(make_engine, outputs)
    on_sink = record_after(engine)
    engine.run(range(len(outputs)), max_epochs=2)
    assert on_sink == pytest.approx(from_ignite, rel=1e-5 if dtype == torch.float32 else 1e-12)


def test_outputs_of_other_kinds_mid_run_are_taken_as_by_the_handler(
    make_engine: MakeEngine,
) -> None:
    outputs: list[Any] = losses(300)
    outputs[3] = 2.5  # a number: the average goes on in floats
    outputs[5] = torch.tensor(1.5, dtype=torch.float64)  # another dtype: followed
    outputs[6] = torch.tensor(4.0, requires_grad=True)  # autograd history: detached
    outputs[7] = torch.tensor([2.0])  # a one-element vector after 0-d values: broadcast
    outputs[260] = torch.tensor(9.0, dtype=torch.float16)
    on_sink, reference = run_both(make_engine, outputs)
    assert on_sink == pytest.approx(reference, rel=1e-6)
    assert len(on_sink) == len(outputs)


@pytest.mark.parametrize("odd", ["text", None, [torch.tensor(1.0)]])
def test_a_non_value_raises_type_error_at_the_same_iteration(
    make_engine: MakeEngine, odd: Any
) -> None:
    outputs: list[Any] = losses(10)
    outputs[6] = odd
    on_sink, reference = run_both(make_engine, outputs)
    assert on_sink[-1] == reference[-1] == (TypeError, 7)
    assert on_sink[:-1] == pytest.approx(reference[:-1], rel=1e-6)


def meddling_runs(make_engine: MakeEngine, meddle: Callable[[Engine], None]) -> tuple[Any, Any]:
    outputs = losses(300)
    results = []
    for build in (sink_engine, reference_engine):
        engine, _ = build(make_engine, outputs)
        before: list[Any] = []
        engine.add_event_handler(Events.ITERATION_STARTED, meddle)
        engine.add_event_handler(
            Events.ITERATION_COMPLETED,
            lambda engine, before=before: before.append(engine.state.metrics.get("loss")),
        )
        results.append((before, engine.run(range(len(outputs))).metrics))
    return results[0], results[1]


MEDDLING: dict[str, Callable[[Engine], None]] = {
    "dict replaced": lambda e: (
        setattr(e.state, "metrics", {}) if e.state.iteration % 7 == 3 else None
    ),
    "DeferredMetrics replaced": lambda e: (
        setattr(e.state, "metrics", DeferredMetrics()) if e.state.iteration % 11 == 2 else None
    ),
    "key deleted": lambda e: (
        e.state.metrics.pop("loss", None) if e.state.iteration % 5 == 0 else None
    ),
    "overwritten": lambda e: (
        e.state.metrics.__setitem__("loss", -1.0) if e.state.iteration % 9 == 4 else None
    ),
    "placeholder overwritten": lambda e: (
        dict.__setitem__(e.state.metrics, "loss", DeferredValue(torch.tensor(-1.0)))
        if e.state.iteration % 13 == 1
        else None
    ),
}


@pytest.mark.parametrize("meddle", MEDDLING.values(), ids=list(MEDDLING))
def test_the_entry_is_stored_again_after_a_program_changes_it(
    make_engine: MakeEngine, meddle: Callable[[Engine], None]
) -> None:
    (on_sink, sink_metrics), (reference, reference_metrics) = meddling_runs(make_engine, meddle)
    assert on_sink == pytest.approx(reference, rel=1e-5)
    assert sink_metrics["loss"] == pytest.approx(reference_metrics["loss"], rel=1e-5)
    assert type(sink_metrics) is type(reference_metrics)


def test_another_mapping_type_is_filled_eagerly_at_each_iteration(
    make_engine: MakeEngine,
) -> None:
    class Recorded(dict[str, Any]):
        pass

    engine, _ = sink_engine(make_engine, losses(20))
    engine.add_event_handler(
        Events.ITERATION_STARTED(once=4), lambda e: setattr(e.state, "metrics", Recorded())
    )
    seen = record_after(engine)
    state = engine.run(range(20))
    assert type(state.metrics) is Recorded
    assert type(dict.__getitem__(state.metrics, "loss")) is float
    assert seen == pytest.approx(expected_running([float(x) for x in losses(20)]), rel=1e-6)


def test_handlers_before_and_after_see_the_previous_and_the_current_value(
    make_engine: MakeEngine,
) -> None:
    outputs = losses(300)
    engine = make_engine(lambda engine, batch: outputs[batch])
    before = record_after(engine)  # attached first: runs before the sink
    RunningAverage(output_transform=lambda loss: loss, alpha=ALPHA).attach(engine, "loss")
    after = record_after(engine)
    engine.run(range(len(outputs)))
    running = expected_running([float(x) for x in outputs])
    assert before[0] is None
    assert before[1:] == pytest.approx(running[:-1], rel=1e-5)
    assert after == pytest.approx(running, rel=1e-5)


def test_repeated_reads_of_one_count_sync_once(make_engine: MakeEngine) -> None:
    engine, _ = sink_engine(make_engine, losses(40))

    @engine.on(Events.ITERATION_COMPLETED(every=10))
    def read(engine: Engine) -> None:
        for _ in range(3):
            engine.state.metrics["loss"]

    with HostSyncCounter() as syncs:
        engine.run(range(40))
    assert syncs.count == 4


def test_nobody_reads_no_sync(make_engine: MakeEngine) -> None:
    engine, _ = sink_engine(make_engine, losses(600))
    with HostSyncCounter() as syncs:
        engine.run(range(600), max_epochs=2)
    assert syncs.count == 0
    assert engine.state.metrics["loss"] == pytest.approx(
        expected_running([float(x) for x in losses(600)] * 2)[-1], rel=1e-5
    )


def test_no_python_call_per_iteration_on_the_compiled_loop(
    make_engine: MakeEngine, backend: str
) -> None:
    engine, _ = sink_engine(make_engine, losses(600))
    with python_calls(
        OutputSink.__call__,
        OutputSink.still_kept,
        _SinkUpdateAndStore._process,
        _UpdateAndStore.__call__,
    ) as counts:
        engine.run(range(600), max_epochs=2)
    # The first output (no average yet), then a fold at every 256 values after it.
    processed = 1 + 1199 // _FOLD_EVERY
    assert counts == {
        "OutputSink.__call__": 0 if backend == "cpp" else 1200,
        "OutputSink.still_kept": 0 if backend == "cpp" else 1200 - processed,
        "_SinkUpdateAndStore._process": processed,
        "_UpdateAndStore.__call__": processed,
    }


def test_detach_remove_and_has_event_handler(make_engine: MakeEngine) -> None:
    engine, metric = sink_engine(make_engine, losses(10))
    for handler in (metric.iteration_completed, metric.completed):
        assert engine.has_event_handler(handler, Events.ITERATION_COMPLETED)
    assert metric.is_attached(engine)
    metric.attach(engine, "again")  # a second name: stored by a handler of its own
    state = engine.run(range(10))
    assert state.metrics["loss"] == state.metrics["again"]
    metric.detach(engine)
    assert not metric.is_attached(engine)
    for handler in (metric.started, metric.iteration_completed, metric.completed):
        assert not engine.has_event_handler(handler)


@pytest.mark.parametrize("removed", ["completed", "iteration_completed", "both"])
def test_a_part_removed_mid_run_leaves_the_other(make_engine: MakeEngine, removed: str) -> None:
    # Without completed, the stored value stays what it was (the live value is frozen) while
    # the average goes on; without iteration_completed, the last value is stored again.
    outputs = losses(300)
    engine, metric = sink_engine(make_engine, outputs)
    seen = record_after(engine)

    @engine.on(Events.ITERATION_COMPLETED(once=2))
    def remove(engine: Engine) -> None:
        for name in ("completed", "iteration_completed"):
            if removed in (name, "both"):
                engine.remove_event_handler(getattr(metric, name), Events.ITERATION_COMPLETED)

    engine.run(range(len(outputs)))
    running = expected_running([float(x) for x in outputs])
    updating = removed == "completed"
    assert seen == pytest.approx(running[:2] + [running[1]] * 298, rel=1e-6)
    assert metric.compute() == pytest.approx(running[-1 if updating else 1], rel=1e-5)
    assert metric.is_attached(engine) == (removed == "iteration_completed")


def test_restarted_and_resumed_runs(make_engine: MakeEngine) -> None:
    outputs = losses(300)
    engine, _ = sink_engine(make_engine, outputs)
    seen = record_after(engine)
    engine.run(range(300), max_epochs=1)
    first = engine.state.metrics["loss"]
    engine.run(range(300), max_epochs=2)  # resumed: reset at STARTED, as ignite's
    running = expected_running([float(x) for x in outputs])
    assert first == pytest.approx(running[-1], rel=1e-5)
    assert seen == pytest.approx(running + running, rel=1e-5)
    engine.state.max_epochs = None
    engine.run(range(300), max_epochs=1)  # a fresh run
    assert engine.state.metrics["loss"] == pytest.approx(running[-1], rel=1e-5)


def test_terminate_mid_epoch_then_resume(make_engine: MakeEngine) -> None:
    outputs = losses(300)
    engine, _ = sink_engine(make_engine, outputs)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=270), lambda e: e.terminate())
    state = engine.run(range(300))
    running = expected_running([float(x) for x in outputs])
    assert state.iteration == 270
    assert state.metrics["loss"] == pytest.approx(running[269], rel=1e-5)


def test_compute_mid_run_folds_without_losing_values(make_engine: MakeEngine) -> None:
    outputs = losses(300)
    engine, metric = sink_engine(make_engine, outputs)
    computed: list[float] = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(every=37), lambda e: computed.append(float(metric.compute()))
    )
    seen = record_after(engine)
    engine.run(range(300))
    running = expected_running([float(x) for x in outputs])
    assert seen == pytest.approx(running, rel=1e-5)
    assert computed == pytest.approx(running[36::37], rel=1e-5)


def test_a_reset_between_iterations_restarts_the_average(make_engine: MakeEngine) -> None:
    outputs = losses(20)
    engine, metric = sink_engine(make_engine, outputs)
    engine.add_event_handler(Events.ITERATION_STARTED(once=11), lambda e: metric.reset())
    seen = record_after(engine)
    engine.run(range(20))
    values = [float(x) for x in outputs]
    assert seen == pytest.approx(expected_running(values[:10]) + expected_running(values[10:]))


def test_a_transform_replaced_or_given_another_body_mid_run(make_engine: MakeEngine) -> None:
    outputs = losses(20)
    engine, metric = sink_engine(make_engine, outputs)
    transform = metric._output_transform

    @engine.on(Events.ITERATION_STARTED(once=5))
    def replace(engine: Engine) -> None:
        metric._output_transform = lambda loss: loss * 2

    @engine.on(Events.ITERATION_STARTED(once=9))
    def back(engine: Engine) -> None:
        metric._output_transform = transform

    @engine.on(Events.ITERATION_STARTED(once=13))
    def rewrite(engine: Engine) -> None:
        transform.__code__ = (lambda loss: loss * 3).__code__

    seen = record_after(engine)
    engine.run(range(20))
    values = [float(x) for x in outputs]
    scaled = values[:4] + [2 * v for v in values[4:8]] + values[8:12] + [3 * v for v in values[12:]]
    assert seen == pytest.approx(expected_running(scaled), rel=1e-6)


def test_deferred_switched_off_mid_run_stores_numbers(make_engine: MakeEngine) -> None:
    engine, metric = sink_engine(make_engine, losses(20))
    engine.add_event_handler(
        Events.ITERATION_STARTED(once=6), lambda e: setattr(metric, "deferred", False)
    )
    state = engine.run(range(20))
    assert type(dict.__getitem__(state.metrics, "loss")) is float
    assert state.metrics["loss"] == pytest.approx(
        expected_running([float(x) for x in losses(20)])[-1], rel=1e-6
    )


def test_a_held_live_value_follows_the_average_until_the_next_fold(
    make_engine: MakeEngine,
) -> None:
    engine, _ = sink_engine(make_engine, losses(300))
    held: list[Any] = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=3),
        lambda e: held.append(dict.__getitem__(e.state.metrics, "loss")),
    )
    engine.run(range(300))
    (live,) = held
    assert type(live) is LiveValue
    running = expected_running([float(x) for x in losses(300)])
    # Followed until the fold at the 256th value after the first, which starts a new pending
    # average.
    assert live.get() == pytest.approx(running[_FOLD_EVERY], rel=1e-5)
    assert type(dict.__getitem__(engine.state.metrics, "loss")) is LiveValue


@pytest.mark.ignite
def test_a_progress_bar_shows_the_running_loss(make_engine: MakeEngine) -> None:
    from ember.handlers import ProgressBar

    metric = RunningAverage(output_transform=lambda loss: loss, alpha=0.5)
    engine = make_engine(lambda e, b: torch.tensor(b))
    metric.attach(engine, "loss")
    stream = io.StringIO()
    ProgressBar(file=stream, persist=True).attach(engine, metric_names="all")
    engine.run([1.0, 3.0, 5.0, 7.0])
    assert "loss=5.25 " in stream.getvalue()  # the averages 1, 2, 3.5, 5.25: the last one


def test_a_state_subclass_with_a_metrics_property(make_engine: MakeEngine) -> None:
    watched = metrics_counting_state()
    engine, _ = sink_engine(make_engine, losses(20))
    engine.state = watched()
    seen = record_after(engine)
    engine.run(range(20))
    assert seen == pytest.approx(expected_running([float(x) for x in losses(20)]), rel=1e-6)
    # 20 reads by record_after, and at least one at each iteration by the sink too
    assert watched.reads >= 40


def test_outputs_on_another_device_are_appended_without_a_python_call(
    make_engine: MakeEngine, backend: str
) -> None:
    # The accepted attributes of a non-CPU average compare the device (a GPU's path), exercised
    # here on the meta device, where nothing can be read: nobody reads.
    outputs = [torch.empty((), device="meta") for _ in range(600)]
    engine, metric = sink_engine(make_engine, outputs)
    with python_calls(OutputSink.__call__, _SinkUpdateAndStore._process) as counts:
        engine.run(range(600))
    assert counts == {
        "OutputSink.__call__": 0 if backend == "cpp" else 600,
        "_SinkUpdateAndStore._process": 1 + 599 // _FOLD_EVERY,
    }
    assert metric._pending is not None and len(metric._pending.values) == 599 % _FOLD_EVERY
    average = metric.compute()
    assert average.device.type == "meta" and average.shape == ()


class _TensorSubclass(torch.Tensor):
    pass


def _candidates(base: torch.Tensor) -> list[Any]:
    """Outputs that differ from ``base`` (a detached tensor) in one thing each, and one that
    does not."""
    return [
        base.clone(),
        base.double() if base.dtype != torch.float64 else base.float(),
        base.reshape(1, *base.shape),
        base.clone().requires_grad_(),
        torch.nn.Parameter(base.clone()),
        base.clone().as_subclass(_TensorSubclass),
        torch.empty(base.shape, dtype=base.dtype, device="cpu" if base.is_meta else "meta"),
        1.0,
    ]


@pytest.mark.parametrize("iterations", [1, _FOLD_EVERY + 1], ids=["first", "folded"])
@pytest.mark.parametrize(
    "base",
    [torch.tensor(0.5), torch.tensor([0.5, 1.5]), torch.empty((), device="meta")],
    ids=["cpu-0d", "cpu-1d", "meta-0d"],
)
def test_the_sink_the_handler_and_update_append_the_same_outputs(
    make_engine: MakeEngine, base: torch.Tensor, iterations: int
) -> None:
    """The rule of what joins a pending average is written three times: as data
    (_PendingAverage.accepted, the sink's accepted_attributes), in RunningAverage._appended, and
    inlined in _UpdateAndStore. They agree on every kind of output, on the first pending
    average and on one a fold made."""
    engine = make_engine(lambda engine, batch: base)
    metric = RunningAverage(output_transform=lambda loss: loss, alpha=ALPHA)
    metric.attach(engine, "loss")
    engine.run(range(iterations))  # the pending average of base's kind is set up
    (sink,) = [
        handler
        for handler, _, _ in engine._event_handlers[Events.ITERATION_COMPLETED]
        if isinstance(handler, _SinkUpdateAndStore)
    ]
    update_and_store = sink._update_and_store
    verdicts = []
    for output in _candidates(base):
        by_the_sink = sink.accepts(output)
        pending = metric._pending
        assert pending is not None
        by_update = metric._appended(output)
        if by_update:
            # Appended to a pending average of its own (the sink's live value follows
            # `pending`): back to the sink's.
            metric._pending.values.pop()
            metric._pending = pending
        engine.state.output = output
        count = len(pending.values)
        # Not appended: the checked update, which may refuse a tensor on another device.
        with contextlib.suppress(RuntimeError):
            update_and_store(engine)
        by_the_handler = metric._pending is pending and len(pending.values) == count + 1
        if by_the_handler:
            pending.values.pop()
        else:  # the checked update replaced the average: start again from base's kind
            metric.reset()
            metric.update(base)
            metric._single_process_run = True
            sink._follow(engine.state)
        verdicts.append((by_the_sink, by_update, by_the_handler))
    assert verdicts == [(True, True, True)] + [(False, False, False)] * 7
