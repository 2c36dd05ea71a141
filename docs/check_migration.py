"""Check the claims of docs/migration.md by running ember and ignite 0.5.5 side by side.

    python docs/check_migration.py          # rewrite the generated tables of the page
    python docs/check_migration.py --check  # exit 1 if the page is out of date

Each check runs one small program on ``ignite.engine.Engine`` and on ember's ``Engine`` with both
loops, and reduces what happened to a short, deterministic text. A check states what the page
claims: ember behaves like ignite ("same"), ember fixes an ignite bug ("fixed"), an ignite handler
works on ember's engine ("works": same result as on ignite's), or refuses it ("refuses"). Where a
claim also states ember's exact result, that must match too. The script exits with status 1 when
a claim does not hold or the two loops disagree. It needs ignite 0.5.5 and torch.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import logging
import sys
import tempfile
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ignite
import ignite.engine as ignite_engine
import torch
from generate_event_order import (  # docs/, beside this
    TraceCap,
    fail_transiently,
    first_fetch_of_epochs,
    swallow,
)

import ember
import ember.engine as ember_engine

PAGE = Path(__file__).with_name("migration.md")
EVENT_CAP = 300  # events before a program counts as looping forever


@dataclass(frozen=True)
class Kind:
    """An engine to test: ignite's, or ember's with one loop."""

    label: str
    module: Any
    kwargs: dict[str, Any]

    def engine(self, step: Callable[[Any, Any], Any] | None = None, cap: bool = False) -> Any:
        base = self.module.Engine
        if cap:
            base = capped(base)
        return base(step or (lambda engine, batch: batch), **self.kwargs)

    @property
    def Events(self) -> Any:  # noqa: N802 - reads like the module attribute it stands for
        return self.module.Events


def capped(base: type) -> type:
    class Capped(base):  # type: ignore[misc, valid-type]
        def _fire_event(self, event_name: Any, *args: Any, **kwargs: Any) -> None:
            self.fired = getattr(self, "fired", 0) + 1
            if self.fired > EVENT_CAP:
                raise TraceCap
            super()._fire_event(event_name, *args, **kwargs)

    return Capped


KINDS = [
    Kind("ignite", ignite_engine, {}),
    Kind("cpp", ember_engine, {"backend": "cpp"}),
    Kind("python", ember_engine, {"backend": "python"}),
]


def outcome(engine: Any, run: Callable[[], Any]) -> str:
    """Run ``run()`` and describe how it ended, with any warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            run()
        except TraceCap:
            return f"loops forever (stopped after {EVENT_CAP} events)"
        except Exception as exc:  # noqa: BLE001 - the outcome is what we report
            message = str(exc).split(". ")[0]
            short = message if len(message) <= 70 else f"{message[:70]}…"
            return f"raises {type(exc).__name__}: {short}"
    text = f"returns at iteration {engine.state.iteration}"
    if caught:
        text += f', {caught[0].category.__name__} "{str(caught[0].message)[:42]}…"'
    return text


# ----------------------------------------------------------------------------- behaviour
def b1_run_after_failure(kind: Kind) -> str:
    failing = [True]

    def step(engine: Any, batch: Any) -> Any:
        if failing[0]:
            raise ValueError("first run fails")
        return batch

    engine = kind.engine(step)
    with contextlib.suppress(ValueError):
        engine.run([0, 1])
    failing[0] = False
    result = engine.run([0, 1])
    return f"returns {type(result).__name__}, iteration {engine.state.iteration}"


def b2_removed_exception_handler(kind: Kind) -> str:
    engine = kind.engine(lambda engine, batch: 1 / 0)
    with engine.add_event_handler(kind.Events.EXCEPTION_RAISED, lambda engine, exc: None):
        pass
    return outcome(engine, lambda: engine.run([0]))


def b3_reraising_handler(kind: Kind) -> str:
    engine = kind.engine(lambda engine, batch: 1 / 0)
    calls: list[str] = []

    def first(engine: Any, exc: BaseException) -> None:
        calls.append("first")
        raise exc

    engine.add_event_handler(kind.Events.EXCEPTION_RAISED, first)
    engine.add_event_handler(kind.Events.EXCEPTION_RAISED, lambda e, exc: calls.append("second"))
    with contextlib.suppress(ZeroDivisionError):
        engine.run([0])
    return f"handlers ran: {calls}"


def b4_once_and_terminate_epoch(kind: Kind) -> str:
    engine = kind.engine()
    seen: list[int] = []

    def handler(engine: Any) -> None:
        seen.append(engine.state.iteration)
        engine.terminate_epoch()

    engine.add_event_handler(kind.Events.GET_BATCH_STARTED(once=2), handler)
    engine.run([0, 1, 2], max_epochs=2)
    return f"handler ran at iterations {seen}"


def b5_resume_after_terminate(kind: Kind) -> str:
    engine = kind.engine()
    engine.add_event_handler(kind.Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate())
    engine.run(range(5), max_epochs=2)
    before = (engine.state.epoch, engine.state.iteration)
    engine.run(range(5), max_epochs=2)
    after = (engine.state.epoch, engine.state.iteration)
    return f"(epoch, iteration) {before} → {after}"


def b6_event_kwargs(kind: Kind) -> str:
    engine = kind.engine()

    def handler(engine: Any, iter_counter: int, tag: str = "") -> None:
        pass

    engine.add_event_handler(kind.Events.TERMINATE_SINGLE_EPOCH, handler, tag="mine")
    engine.add_event_handler(kind.Events.ITERATION_COMPLETED(once=1), lambda e: e.terminate_epoch())
    engine.run([0, 1])
    return f"stored kwargs {engine._event_handlers[kind.Events.TERMINATE_SINGLE_EPOCH][0][2]}"


def b7_empty_keys(kind: Kind) -> str:
    engine = kind.engine()
    engine.run([0, 1])
    return f"{len(engine._event_handlers)} keys"


def b8_global_event_to_attr(kind: Kind) -> str:
    class Custom(kind.module.EventEnum):  # type: ignore[misc, name-defined]
        PING = f"ping_{kind.label}"

    kind.engine().register_events(*Custom, event_to_attr={Custom.PING: f"pings_{kind.label}"})
    fresh = kind.module.State()  # built without any engine
    return f"a new State has the mapped attribute: {hasattr(fresh, f'pings_{kind.label}')}"


def h1_one_shot_generator(kind: Kind) -> str:
    engine = kind.engine(cap=True)
    return outcome(engine, lambda: engine.run((i for i in range(3)), max_iters=5, epoch_length=3))


def h2_empty_sized_data(kind: Kind) -> str:
    engine = kind.engine(cap=True)
    return outcome(engine, lambda: engine.run([], epoch_length=2, max_iters=4))


def h2_empty_sized_data_epochs(kind: Kind) -> str:
    engine = kind.engine(cap=True)
    return outcome(engine, lambda: engine.run([], epoch_length=2, max_epochs=2))


def empty_unsized_data(kind: Kind) -> str:
    engine = kind.engine(cap=True)
    return outcome(engine, lambda: engine.run(iter([])))


def empty_unsized_data_iters(kind: Kind) -> str:
    engine = kind.engine(cap=True)
    return outcome(engine, lambda: engine.run(iter([]), max_iters=3))


class Unsized:
    """Restartable data without a length."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __iter__(self) -> Any:
        return iter(range(self.size))


def unsized_first_pass_cut_short(kind: Kind) -> str:
    def step(engine: Any, batch: Any) -> Any:
        if engine.state.iteration == 3:
            raise OSError("the last step of the first pass fails")
        return batch

    engine = kind.engine(step, cap=True)
    engine.add_event_handler(kind.Events.EXCEPTION_RAISED, swallow)
    return outcome(engine, lambda: engine.run(Unsized(3), max_epochs=3))


def resume_unsized_without_data(kind: Kind) -> str:
    engine = kind.engine(cap=True)
    engine.add_event_handler(kind.Events.ITERATION_COMPLETED(once=2), lambda e: e.interrupt())
    engine.run(Unsized(4), max_epochs=2)
    return outcome(engine, engine.run)


def stop_iteration_in_step(kind: Kind) -> str:
    def step(engine: Any, batch: Any) -> Any:
        raise StopIteration

    engine = kind.engine(step)
    return outcome(engine, lambda: engine.run([0, 1]))


def h3_failing_restart(kind: Kind) -> str:
    engine = kind.engine(cap=True)

    def fail() -> None:
        raise ValueError("restart failed")

    engine.add_event_handler(kind.Events.DATALOADER_STOP_ITERATION, fail)
    engine.add_event_handler(kind.Events.EXCEPTION_RAISED, swallow)
    return outcome(engine, lambda: engine.run([0, 1], max_iters=5))


def l1_filtered_handler_reference(kind: Kind) -> str:
    engine = kind.engine()
    engine.add_event_handler(kind.Events.ITERATION_COMPLETED(every=2), lambda e: None)
    ref = weakref.ref(engine)
    gc.collect()
    gc.disable()
    try:
        del engine
        alive = ref() is not None
    finally:
        gc.enable()
    gc.collect()
    return "kept alive until gc.collect()" if alive else "freed at once"


def l2_drop_interrupted(kind: Kind) -> str:
    reported: list[str] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: reported.append(
        f"{type(unraisable.exc_value).__name__}: {str(unraisable.exc_value).split('. ')[0]}"
    )
    try:
        engine = kind.engine()
        engine.add_event_handler(kind.Events.ITERATION_COMPLETED(once=1), lambda e: e.interrupt())
        engine.add_event_handler(
            kind.Events.EXCEPTION_RAISED, lambda e, exc: reported.append("handler called")
        )
        engine.run([0, 1, 2])
        del engine
        gc.collect()
    finally:
        sys.unraisablehook = previous
    return f"unraisable: {reported}" if reported else "nothing"


def vars_of_state(kind: Kind) -> str:
    engine = kind.engine()
    engine.run([0])
    return f"'iteration' in vars(state): {'iteration' in vars(engine.state)}"


def vars_of_engine(kind: Kind) -> str:
    engine = kind.engine()
    return f"'should_terminate' in vars(engine): {'should_terminate' in vars(engine)}"


def assign_plain_dict(kind: Kind) -> str:
    engine = kind.engine()
    engine._event_handlers = {}
    return type(engine._event_handlers).__name__


def internal_run_generator(kind: Kind) -> str:
    return f"has _internal_run_generator: {hasattr(kind.engine(), '_internal_run_generator')}"


# ----------------------------------------------------------------------------- handlers
def checkpoint(kind: Kind) -> str:
    from ignite.handlers import Checkpoint, DiskSaver

    folder = tempfile.mkdtemp()
    engine = kind.engine()
    model = torch.nn.Linear(2, 1)
    saver = DiskSaver(folder, require_empty=False)
    engine.add_event_handler(
        kind.Events.EPOCH_COMPLETED, Checkpoint({"model": model, "trainer": engine}, saver)
    )
    engine.run([0, 1, 2], max_epochs=3)
    files = sorted(path.name for path in Path(folder).iterdir())
    restored = kind.engine()
    Checkpoint.load_objects(
        {"model": model, "trainer": restored}, torch.load(Path(folder) / files[-1])
    )
    return f"{files}; restored iteration {restored.state.iteration}"


def model_checkpoint(kind: Kind) -> str:
    from ignite.handlers import ModelCheckpoint

    folder = tempfile.mkdtemp()
    engine = kind.engine()
    handler = ModelCheckpoint(folder, "net", n_saved=1, require_empty=False)
    engine.add_event_handler(kind.Events.EPOCH_COMPLETED, handler, {"model": torch.nn.Linear(2, 1)})
    engine.run([0, 1, 2], max_epochs=2)
    return str(sorted(path.name for path in Path(folder).iterdir()))


def timer(kind: Kind) -> str:
    from ignite.handlers import Timer

    engine = kind.engine()
    total, per_step = Timer(), Timer(average=True)
    total.attach(engine)
    per_step.attach(
        engine,
        start=kind.Events.EPOCH_STARTED,
        resume=kind.Events.ITERATION_STARTED,
        pause=kind.Events.ITERATION_COMPLETED,
        step=kind.Events.ITERATION_COMPLETED,
    )
    engine.run(range(5))
    return f"steps {per_step.step_count:g}, total ≥ 0: {total.value() >= 0}"


def terminate_on_nan(kind: Kind) -> str:
    from ignite.handlers import TerminateOnNan

    engine = kind.engine(lambda engine, batch: float("nan") if batch == 3 else float(batch))
    engine.add_event_handler(kind.Events.ITERATION_COMPLETED, TerminateOnNan())
    engine.run(range(10))
    return f"stopped at iteration {engine.state.iteration}"


def progress_bar(kind: Kind) -> str:
    from ignite.handlers import ProgressBar

    engine = kind.engine()
    stream = io.StringIO()
    ProgressBar(file=stream, persist=True).attach(engine)
    engine.run(range(5), max_epochs=2)
    return f"last bar: {stream.getvalue().strip().split(chr(13))[-1][:24]}…"


def metrics(kind: Kind) -> str:
    from ignite.metrics import Accuracy, Loss, RunningAverage

    generator = torch.Generator().manual_seed(0)
    data = [
        (torch.randn(4, 3, generator=generator), torch.randint(0, 3, (4,), generator=generator))
        for _ in range(5)
    ]
    engine = kind.engine()
    Accuracy().attach(engine, "accuracy")
    Loss(torch.nn.functional.cross_entropy).attach(engine, "loss")
    RunningAverage(output_transform=lambda output: output[0].sum().item()).attach(engine, "avg")
    engine.run(data)
    return ", ".join(f"{name} {value:.4f}" for name, value in sorted(engine.state.metrics.items()))


def lr_schedulers(kind: Kind) -> str:
    from ignite.handlers import (
        CosineAnnealingScheduler,
        LinearCyclicalScheduler,
        LRScheduler,
        PiecewiseLinear,
        create_lr_scheduler_with_warmup,
    )

    def optimizer() -> torch.optim.Optimizer:
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)

    opts = [optimizer() for _ in range(5)]
    engine = kind.engine(lambda engine, batch: opts[0].step())
    events = kind.Events
    engine.add_event_handler(
        events.ITERATION_COMPLETED, LRScheduler(torch.optim.lr_scheduler.StepLR(opts[0], 2, 0.5))
    )
    engine.add_event_handler(
        events.ITERATION_STARTED, LinearCyclicalScheduler(opts[1], "lr", 0.0, 1.0, 4)
    )
    engine.add_event_handler(
        events.ITERATION_STARTED, PiecewiseLinear(opts[2], "lr", [(0, 0.0), (5, 1.0)])
    )
    engine.add_event_handler(
        events.ITERATION_STARTED, CosineAnnealingScheduler(opts[3], "lr", 0.0, 1.0, 6)
    )
    warmup = create_lr_scheduler_with_warmup(
        torch.optim.lr_scheduler.ExponentialLR(opts[4], gamma=0.9), 0.0, warmup_duration=3
    )
    engine.add_event_handler(events.ITERATION_STARTED, warmup)
    history: list[tuple[float, ...]] = []
    engine.add_event_handler(
        events.ITERATION_COMPLETED,
        lambda e: history.append(tuple(round(o.param_groups[0]["lr"], 4) for o in opts)),
    )
    engine.run(range(8))
    return f"lr after iteration 8: {history[-1]}"


def supervised_step(kind: Kind) -> str:
    from ignite.engine import supervised_training_step

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = supervised_training_step(model, optimizer, torch.nn.functional.mse_loss)
    data = [(torch.ones(2, 3) * i, torch.ones(2, 1)) for i in range(4)]
    engine = kind.engine(step)
    engine.run(data, max_epochs=2)
    return f"last loss {engine.state.output:.4f}"


def accepted(attach: Callable[[], Any]) -> str:
    try:
        attach()
    except TypeError as exc:
        return f"raises TypeError: {exc}"
    return "accepted"


def early_stopping(kind: Kind) -> str:
    from ignite.handlers import EarlyStopping

    return accepted(lambda: EarlyStopping(2, lambda engine: 0.0, kind.engine()))


def basic_time_profiler(kind: Kind) -> str:
    from ignite.handlers import BasicTimeProfiler

    return accepted(lambda: BasicTimeProfiler().attach(kind.engine()))


def handlers_time_profiler(kind: Kind) -> str:
    from ignite.handlers import HandlersTimeProfiler

    return accepted(lambda: HandlersTimeProfiler().attach(kind.engine()))


def errors_before_first_batch(*epochs: int) -> Callable[[Kind], str]:
    def check(kind: Kind) -> str:
        engine = kind.engine(cap=True)
        engine.add_event_handler(
            kind.Events.GET_BATCH_STARTED, first_fetch_of_epochs(epochs, fail_transiently)
        )
        engine.add_event_handler(kind.Events.EXCEPTION_RAISED, swallow)
        return outcome(engine, lambda: engine.run([0, 1, 2], max_iters=6))

    return check


def terminate_epoch_before_first_batches(kind: Kind) -> str:
    engine = kind.engine(cap=True)
    engine.add_event_handler(
        kind.Events.GET_BATCH_STARTED,
        first_fetch_of_epochs((2, 3), lambda e: e.terminate_epoch()),
    )
    return outcome(engine, lambda: engine.run([0, 1, 2], max_iters=6))


# ----------------------------------------------------------------------------- overrides
def kwargs_edited_in_place(kind: Kind) -> str:
    engine = kind.engine()
    seen: list[str] = []

    def handler(engine: Any, tag: str) -> None:
        seen.append(tag)
        engine._event_handlers[kind.Events.ITERATION_COMPLETED][0][2]["tag"] = tag + "!"

    engine.add_event_handler(kind.Events.ITERATION_COMPLETED, handler, tag="a")
    engine.run([0, 1, 2])
    return f"tags seen: {seen}"


def is_done_override(kind: Kind) -> str:
    class TwoEpochs(kind.module.Engine):  # type: ignore[misc, name-defined]
        @staticmethod
        def _is_done(state: Any) -> bool:
            return bool(state.epoch >= 2)

    engine = TwoEpochs(lambda engine, batch: batch, **kind.kwargs)
    engine.run([0, 1, 2], max_epochs=5)
    return f"(epoch, iteration) ({engine.state.epoch}, {engine.state.iteration})"


def fire_event_on_instance(kind: Kind) -> str:
    engine = kind.engine()
    seen: list[str] = []
    original = engine._fire_event

    def fire(event_name: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(event_name.name + (f"{kwargs}" if kwargs else ""))
        original(event_name, *args, **kwargs)

    engine._fire_event = fire
    engine.add_event_handler(kind.Events.ITERATION_COMPLETED(once=1), lambda e: e.terminate_epoch())
    engine.run([0, 1], max_epochs=1)
    return f"{len(seen)} events: {seen[0]} … {seen[-3]}, {seen[-2]}, {seen[-1]}"


# ----------------------------------------------------------------------------- differences
def zero_epochs(kind: Kind) -> str:
    engine = kind.engine()
    return outcome(engine, lambda: engine.run([0, 1], max_epochs=0))


def evaluator_output_edited_in_place(inference_mode: bool | None) -> Callable[[Kind], str]:
    def check(kind: Kind) -> str:
        options = (
            {}
            if inference_mode is None or kind.label == "ignite"
            else {"inference_mode": inference_mode}
        )
        evaluator = kind.module.create_supervised_evaluator(
            torch.nn.Linear(2, 1), **options, **kind.kwargs
        )
        evaluator.add_event_handler(
            kind.Events.ITERATION_COMPLETED, lambda engine: engine.state.output[0].add_(1.0)
        )
        return outcome(evaluator, lambda: evaluator.run([(torch.ones(3, 2), torch.ones(3, 1))]))

    return check


def submodule_put_in_eval_mode(kind: Kind) -> str:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    seen: list[bool] = []
    model[1].register_forward_hook(lambda module, args, output: seen.append(module.training))
    trainer = kind.module.create_supervised_trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.mse_loss,
        **kind.kwargs,
    )
    trainer.add_event_handler(kind.Events.ITERATION_COMPLETED(once=1), model[1].eval)
    trainer.run([(torch.ones(1, 2), torch.ones(1, 2))] * 3)
    return f"dropout.training at iterations 1-3: {seen}"


def default_event_filter_warning(kind: Kind) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kind.Events.default_event_filter(None, 1)
    return f"{caught[0].category.__name__}"


def filter_factories(kind: Kind) -> str:
    events = kind.Events
    filters = [
        events.every_event_filter(3),
        events.once_event_filter([2, 5]),
        events.before_and_after_event_filter(7, 2),
        events.every_before_and_after_event_filter(2, 9, 1),
    ]
    return "; ".join(
        str([count for count in range(1, 11) if event_filter(None, count)])
        for event_filter in filters
    )


# ---------------------------------------------------------------- ember.metrics and ignite.metrics
def metrics_of(kind: Kind) -> Any:
    """ignite.metrics on ignite's engine, ember.metrics on ember's."""
    import ignite.metrics

    import ember.metrics

    return ignite.metrics if kind.label == "ignite" else ember.metrics


def described(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        shown = [round(v, 4) for v in value.double().flatten().tolist()[:3]]
        return f"tensor {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')} {shown}"
    return f"{type(value).__name__} {value:.4f}"


def metric_run(kind: Kind, metric: Any, data: list[Any]) -> str:
    """``compute()`` after a run of ``metric`` attached as "m", and what ``state.metrics`` holds."""
    engine = kind.engine()
    metric.attach(engine, "m")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine.run(data)
    return f"compute: {described(metric.compute())}; stored: {described(engine.state.metrics['m'])}"


def binary_batches() -> list[Any]:
    generator = torch.Generator().manual_seed(0)
    return [
        tuple(torch.randint(0, 2, (8,), generator=generator) for _ in range(2)) for _ in range(3)
    ]


def multiclass_batches() -> list[Any]:
    generator = torch.Generator().manual_seed(0)
    return [
        (torch.randn(8, 3, generator=generator), torch.randint(0, 3, (8,), generator=generator))
        for _ in range(3)
    ]


def precision_per_class_binary(kind: Kind) -> str:
    return metric_run(kind, metrics_of(kind).Precision(average=None), binary_batches())


def average_of_column_vectors(kind: Kind) -> str:
    data = [torch.full((2, 1), float(i)) for i in range(3)]
    return metric_run(kind, metrics_of(kind).Average(), data)


def fbeta_micro(kind: Kind) -> str:
    return metric_run(kind, metrics_of(kind).Fbeta(1.0, average="micro"), multiclass_batches())


def normalised_confusion_matrix(kind: Kind) -> str:
    metric = metrics_of(kind).ConfusionMatrix(3, average="recall")
    return metric_run(kind, metric, multiclass_batches()).split(";")[0]


def binary_scores_given(kind: Kind) -> str:
    engine = kind.engine()
    metrics_of(kind).Accuracy().attach(engine, "accuracy")
    scores = torch.tensor([0.2, 0.9, 0.7, 0.1])
    try:
        engine.run([(scores, torch.tensor([0, 1, 1, 0]))] * 3)
    except ValueError:
        return f"ValueError at iteration {engine.state.iteration}, {engine.last_event_name.name}"
    return "accepted"


def running_average_store(kind: Kind) -> str:
    engine = kind.engine(lambda engine, batch: torch.tensor(float(batch)))
    metrics_of(kind).RunningAverage(output_transform=lambda loss: loss).attach(engine, "loss")
    engine.run([1.0, 2.0, 3.0])
    stored = engine.state.metrics
    return f"type(state.metrics) {type(stored).__name__}, loss {described(stored['loss'])}"


# ----------------------------------------------------------------------------- claims
@dataclass(frozen=True)
class Claim:
    section: str  # which generated table
    label: str
    check: Callable[[Kind], str]
    expect: str  # same | fixed | works | refuses
    ember: str | None = None  # what ember's loops must give, when the claim pins it down


CLAIMS = [
    Claim("fixes", "B1: `run()` again after an uncaught exception", b1_run_after_failure, "fixed"),
    Claim(
        "fixes",
        "B2: exception after `with engine.add_event_handler(EXCEPTION_RAISED, h): pass`",
        b2_removed_exception_handler,
        "fixed",
    ),
    Claim(
        "fixes",
        "B6: kwargs stored with a TERMINATE_SINGLE_EPOCH handler, after it fired",
        b6_event_kwargs,
        "fixed",
    ),
    Claim(
        "fixes",
        "B7: `len(engine._event_handlers)` after `run([0, 1])`, no handlers",
        b7_empty_keys,
        "fixed",
    ),
    Claim(
        "fixes",
        "H1: `run((i for i in range(3)), max_iters=5, epoch_length=3)`",
        h1_one_shot_generator,
        "fixed",
    ),
    Claim("fixes", "H2: `run([], epoch_length=2, max_iters=4)`", h2_empty_sized_data, "fixed"),
    Claim(
        "fixes", "H2: `run([], epoch_length=2, max_epochs=2)`", h2_empty_sized_data_epochs, "fixed"
    ),
    Claim("fixes", "empty data of unknown length: `run(iter([]))`", empty_unsized_data, "fixed"),
    Claim(
        "fixes",
        "empty data of unknown length: `run(iter([]), max_iters=3)`",
        empty_unsized_data_iters,
        "fixed",
    ),
    Claim(
        "fixes",
        "data of unknown length (3 batches), the step fails at iteration 3, EXCEPTION_RAISED "
        "handler swallows, `run(data, max_epochs=3)`",
        unsized_first_pass_cut_short,
        "fixed",
        ember="returns at iteration 9",
    ),
    Claim(
        "fixes",
        "`run()` without data after `interrupt()` at iteration 2 of `run(data, max_epochs=2)`, "
        "data of unknown length (4 batches)",
        resume_unsized_without_data,
        "fixed",
        ember="returns at iteration 8",
    ),
    Claim(
        "fixes",
        "H3: DATALOADER_STOP_ITERATION handler raises, EXCEPTION_RAISED handler "
        "swallows, `run([0, 1], max_iters=5)`",
        h3_failing_restart,
        "fixed",
    ),
    Claim(
        "fixes",
        "H1/H3 rule, one epoch without an iteration: GET_BATCH_STARTED handler raises once, "
        "at the first fetch of epoch 2; EXCEPTION_RAISED handler swallows; "
        "`run([0, 1, 2], max_iters=6)`",
        errors_before_first_batch(2),
        "same",
        ember="returns at iteration 6",
    ),
    Claim(
        "fixes",
        "H1/H3 rule, two epochs in a row without an iteration: as above, at the first fetch "
        "of epochs 2 and 3",
        errors_before_first_batch(2, 3),
        "fixed",
        ember="returns at iteration 3",
    ),
    Claim(
        "fixes",
        "H1/H3 rule: GET_BATCH_STARTED handler calls `terminate_epoch()` at the first fetch "
        "of epochs 2 and 3; `run([0, 1, 2], max_iters=6)`",
        terminate_epoch_before_first_batches,
        "fixed",
        ember="returns at iteration 3",
    ),
    Claim(
        "fixes",
        "L1: `del engine` with a handler on `ITERATION_COMPLETED(every=2)`, gc disabled",
        l1_filtered_handler_reference,
        "fixed",
    ),
    Claim(
        "fixes",
        "L2: `del engine` after `interrupt()`, with an `(engine, exc)` EXCEPTION_RAISED handler",
        l2_drop_interrupted,
        "fixed",
    ),
    Claim(
        "quirks",
        "B3: two EXCEPTION_RAISED handlers, the first re-raises; step fails",
        b3_reraising_handler,
        "same",
    ),
    Claim(
        "quirks",
        "B4: `GET_BATCH_STARTED(once=2)` handler calls `terminate_epoch()`",
        b4_once_and_terminate_epoch,
        "same",
    ),
    Claim(
        "quirks",
        "B5: `terminate()` at iteration 3 of 5, `max_epochs=2`, then `run()` again",
        b5_resume_after_terminate,
        "same",
    ),
    Claim(
        "quirks",
        "PEP 479: the step raises `StopIteration`",
        stop_iteration_in_step,
        "same",
        ember="raises RuntimeError: generator raised StopIteration",
    ),
    Claim(
        "quirks",
        "B8: `register_events(..., event_to_attr=...)` on one engine",
        b8_global_event_to_attr,
        "same",
    ),
    Claim(
        "overrides",
        "handler edits its stored kwargs in place (`_event_handlers[event][0][2]['tag'] = ...`) "
        "at each firing",
        kwargs_edited_in_place,
        "same",
        ember="tags seen: ['a', 'a!', 'a!!']",
    ),
    Claim(
        "overrides",
        "subclass overrides `_is_done` (`state.epoch >= 2`), `run([0, 1, 2], max_epochs=5)`",
        is_done_override,
        "same",
        ember="(epoch, iteration) (2, 6)",
    ),
    Claim(
        "overrides",
        "`engine._fire_event = f` on the instance (`f` records, then calls the original); "
        "`terminate_epoch()` at iteration 1 of `run([0, 1], max_epochs=1)`",
        fire_event_on_instance,
        "same",
        ember="9 events: STARTED … TERMINATE_SINGLE_EPOCH{'iter_counter': 1}, "
        "EPOCH_COMPLETED, COMPLETED",
    ),
    Claim(
        "internals",
        "`vars(engine.state)` after a run",
        vars_of_state,
        "same",
        ember="'iteration' in vars(state): True",
    ),
    Claim("internals", "`vars(engine)`", vars_of_engine, "fixed"),
    Claim(
        "internals",
        "`engine._event_handlers = {}`, then `type(engine._event_handlers)`",
        assign_plain_dict,
        "fixed",
    ),
    Claim("internals", "`engine._internal_run_generator`", internal_run_generator, "fixed"),
    Claim(
        "handlers",
        "`Checkpoint` (trainer and model, every epoch) + `Checkpoint.load_objects`",
        checkpoint,
        "works",
    ),
    Claim("handlers", "`ModelCheckpoint`", model_checkpoint, "works"),
    Claim("handlers", "`Timer`: `attach(engine)` and per-iteration average", timer, "works"),
    Claim("handlers", "`TerminateOnNan`", terminate_on_nan, "works"),
    Claim("handlers", "`ProgressBar` (tqdm)", progress_bar, "works"),
    Claim("handlers", "`Accuracy`, `Loss`, `RunningAverage`", metrics, "works"),
    Claim(
        "handlers",
        "`LRScheduler`, `LinearCyclicalScheduler`, `PiecewiseLinear`, "
        "`CosineAnnealingScheduler`, `create_lr_scheduler_with_warmup`",
        lr_schedulers,
        "works",
    ),
    Claim(
        "handlers",
        "`supervised_training_step(...)` as the process function",
        supervised_step,
        "works",
    ),
    Claim("handlers", "`EarlyStopping(patience, score_fn, trainer)`", early_stopping, "refuses"),
    Claim("handlers", "`BasicTimeProfiler().attach(engine)`", basic_time_profiler, "refuses"),
    Claim("handlers", "`HandlersTimeProfiler().attach(engine)`", handlers_time_profiler, "refuses"),
    Claim(
        "differences",
        "`run([0, 1], max_epochs=0)`",
        zero_epochs,
        "fixed",
        ember="raises ValueError: Argument max_epochs is invalid",
    ),
    Claim(
        "differences",
        "`create_supervised_evaluator(model)`: an ITERATION_COMPLETED handler edits `y_pred` in "
        "place (`engine.state.output[0].add_(1.0)`)",
        evaluator_output_edited_in_place(None),
        "fixed",
    ),
    Claim(
        "differences",
        "as above, with ember's `create_supervised_evaluator(model, inference_mode=False)`",
        evaluator_output_edited_in_place(False),
        "same",
        ember="returns at iteration 1",
    ),
    Claim(
        "differences",
        "`create_supervised_trainer(...)`: a handler calls `model[1].eval()` (a Dropout) after "
        "iteration 1",
        submodule_put_in_eval_mode,
        "fixed",
        ember="dropout.training at iterations 1-3: [True, False, False]",
    ),
    Claim(
        "differences",
        "`Events.default_event_filter(engine, 1)` warns with",
        default_event_filter_warning,
        "same",
        ember="UserWarning",
    ),
    Claim(
        "differences",
        "`every_event_filter(3)`, `once_event_filter([2, 5])`, "
        "`before_and_after_event_filter(7, 2)`, `every_before_and_after_event_filter(2, 9, 1)`: "
        "counts 1-10 that pass",
        filter_factories,
        "same",
    ),
    Claim(
        "metrics",
        "`Precision(average=None)` on binary input",
        precision_per_class_binary,
        "same",
    ),
    Claim(
        "metrics",
        "`Average()` of `(N, 1)` tensors: a `(1,)` result, stored as a number",
        average_of_column_vectors,
        "fixed",
    ),
    Claim(
        "metrics",
        "`Fbeta(1.0, average='micro')` on multiclass input: the micro F (ignite: the macro mean)",
        fbeta_micro,
        "fixed",
    ),
    Claim(
        "metrics",
        "`ConfusionMatrix(3, average='recall')`: float64",
        normalised_confusion_matrix,
        "fixed",
    ),
    Claim(
        "metrics",
        "binary `Accuracy` given scores (0.7): refused at `compute()`, not at the update",
        binary_scores_given,
        "fixed",
    ),
    Claim(
        "metrics",
        "`RunningAverage` of a tensor loss: read when the entry is read",
        running_average_store,
        "fixed",
    ),
]


def holds(claim: Claim, results: dict[str, str]) -> bool:
    ignite_result, cpp, python = results["ignite"], results["cpp"], results["python"]
    if cpp != python:
        return False
    if claim.ember is not None and cpp != claim.ember:
        return False
    if claim.expect in ("same", "works"):
        return cpp == ignite_result
    if claim.expect == "fixed":
        return cpp != ignite_result
    return cpp.startswith("raises TypeError") and ignite_result == "accepted"


def table_cell(text: str) -> str:
    """``text`` as a Markdown table cell: ``|`` ends a cell, and braces outside code spans are
    escaped, since a cell that ends in ``{...}`` would be read as HTML attributes (attr_list,
    mkdocs.yml): ``stored kwargs {'tag': 'mine'}`` rendered as ``<td 'tag':=...>``."""
    parts = text.replace("|", "\\|").split("`")
    for index in range(0, len(parts), 2):  # the parts outside code spans
        parts[index] = parts[index].replace("{", "\\{").replace("}", "\\}")
    return "`".join(parts)


VERDICT = {"same": "kept", "fixed": "differs", "works": "works", "refuses": "refuses"}


def render(section: str, rows: list[tuple[Claim, dict[str, str], bool]]) -> str:
    begin, end = markers(section)
    lines = [
        begin,
        "",
        "| program | ignite 0.5.5 | ember (both loops) | |",
        "|---|---|---|---|",
    ]
    for claim, results, ok in rows:
        ember_result = results["cpp"]
        if results["cpp"] != results["python"]:
            ember_result = f"cpp: {results['cpp']}; python: {results['python']}"
        verdict = VERDICT[claim.expect] if ok else f"**claim fails ({claim.expect})**"
        cells = [claim.label, results["ignite"], ember_result, verdict]
        lines.append("| " + " | ".join(map(table_cell, cells)) + " |")
    lines += [
        "",
        (
            f"_Checked by `python docs/check_migration.py` (ember {ember.__version__}, "
            f"pytorch-ignite {ignite.__version__}, torch {torch.__version__.split('+')[0]})._"
        ),
        "",
        end,
    ]
    return "\n".join(lines)


def markers(section: str) -> tuple[str, str]:
    return (
        f"<!-- BEGIN GENERATED: {section} (docs/check_migration.py) -->",
        f"<!-- END GENERATED: {section} -->",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the page is out of date")
    options = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the engines and TerminateOnNan log what we provoke

    by_section: dict[str, list[tuple[Claim, dict[str, str], bool]]] = {}
    failures = []
    for claim in CLAIMS:
        results = {}
        for kind in KINDS:
            try:
                results[kind.label] = claim.check(kind)
            except Exception as exc:  # noqa: BLE001 - reported in the table
                results[kind.label] = f"error {type(exc).__name__}: {str(exc).split('. ')[0]}"
        ok = holds(claim, results)
        if not ok:
            failures.append(f"{claim.label}: {results}")
        by_section.setdefault(claim.section, []).append((claim, results, ok))

    page = PAGE.read_text()
    updated = page
    for section, rows in by_section.items():
        begin, end = markers(section)
        start, stop = updated.find(begin), updated.find(end)
        if start < 0 or stop < 0:
            print(f"{PAGE}: markers of {section!r} not found", file=sys.stderr)
            return 1
        updated = updated[:start] + render(section, rows) + updated[stop + len(end) :]
    for failure in failures:
        print(f"claim fails: {failure}", file=sys.stderr)
    if options.check:
        if updated != page:
            print(f"{PAGE} is out of date: run python docs/check_migration.py", file=sys.stderr)
            return 1
    else:
        PAGE.write_text(updated)
        print(f"wrote {PAGE}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
