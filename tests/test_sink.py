"""``OutputSink`` (ember/engine/sink.py): what the compiled loop runs without a Python frame
behaves as its Python ``__call__``, on both loops, also when a program bends it."""

from __future__ import annotations

import traceback
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import torch

from conftest import collect_garbage
from ember.engine import Engine, Events
from ember.engine.sink import OutputSink
from ember.handlers import TerminateOnNan
from frames import python_calls
from recording import metrics_counting_state

MakeEngine = Callable[..., Engine]


class Recorder:
    """An ``on_full`` that records what the sink held, then empties it."""

    def __init__(self) -> None:
        self.sink: OutputSink | None = None
        self.seen: list[tuple[int, list[Any], list[Any]]] = []

    def __call__(self, engine: Engine) -> None:
        assert self.sink is not None
        self.seen.append((engine.state.iteration, self.sink.values, self.sink.iterations))
        self.sink.values = []
        self.sink.iterations = []


def attach(engine: Engine, sink_cls: type[OutputSink] = OutputSink, **kwargs: Any) -> Recorder:
    recorder = Recorder()
    recorder.sink = sink_cls(recorder, **kwargs)
    engine.add_event_handler(Events.ITERATION_COMPLETED, recorder.sink)
    return recorder


def test_sink_flushes_when_full_and_at_epoch_ends(make_engine: MakeEngine) -> None:
    engine = make_engine(lambda e, b: b * 10)
    recorder = attach(engine, limit=4, flush_at_epoch_end=True)
    engine.run(range(6), max_epochs=2)
    assert recorder.seen == [
        (4, [0, 10, 20, 30], [1, 2, 3, 4]),
        (6, [40, 50], [5, 6]),
        (10, [0, 10, 20, 30], [7, 8, 9, 10]),
        (12, [40, 50], [11, 12]),
    ]


def test_sink_flushes_at_max_iters_and_not_at_epoch_ends_unless_asked(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    recorder = attach(engine, limit=100)
    engine.run(range(3), max_epochs=2)
    assert recorder.seen == []
    engine = make_engine()
    recorder = attach(engine, limit=100, flush_at_epoch_end=True)
    engine.run(range(10), max_iters=4)
    assert [seen[0] for seen in recorder.seen] == [4]


def test_sink_flushes_at_once_on_an_output_it_does_not_accept(make_engine: MakeEngine) -> None:
    outputs = [torch.tensor(1.0), torch.tensor([2.0]), 3.0, torch.tensor(4.0, requires_grad=True)]
    outputs += [torch.tensor(5, dtype=torch.int64), torch.tensor(6.0)]
    engine = make_engine(lambda e, b: outputs[b])
    recorder = attach(
        engine,
        limit=100,
        accepted_type=torch.Tensor,
        accepted_attributes=(
            ("requires_grad", (False,)),
            ("ndim", (0,)),
            ("dtype", (torch.float32,)),
        ),
    )
    engine.run(range(6))
    assert [(iteration, its) for iteration, _, its in recorder.seen] == [
        (2, [1, 2]),
        (3, [3]),
        (4, [4]),
        (5, [5]),
    ]
    assert recorder.sink is not None and recorder.sink.iterations == [6]


def test_sink_runs_no_python_frame_on_the_compiled_loop(
    make_engine: MakeEngine, backend: str
) -> None:
    engine = make_engine()
    recorder = attach(engine, limit=5)
    with python_calls(OutputSink.__call__, OutputSink.accepts, Recorder.__call__) as counts:
        engine.run(range(20))
    expected_sink_calls = 0 if backend == "cpp" else 20
    assert counts == {
        "OutputSink.__call__": expected_sink_calls,
        "OutputSink.accepts": expected_sink_calls,
        "Recorder.__call__": 4,
    }
    assert len(recorder.seen) == 4


def test_terminate_on_nan_runs_no_python_frame_per_iteration(
    make_engine: MakeEngine, backend: str
) -> None:
    engine = make_engine(lambda e, b: torch.tensor(float(b)))
    engine.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan(check_every=7))
    with python_calls(OutputSink.__call__, TerminateOnNan._take_outputs) as counts:
        engine.run(range(20), max_epochs=3)
    # Checks at 7, 14, 20 in each epoch, and the first output, which tells it torch is there.
    assert counts == {
        "OutputSink.__call__": 0 if backend == "cpp" else 60,
        "TerminateOnNan._take_outputs": 10,
    }


class SameSink(OutputSink):
    """A subclass that keeps the sink's behaviour: run by the compiled loop too."""


class OwnCall(OutputSink):
    __slots__ = ()

    def __call__(self, engine: Engine) -> None:
        self.values.append(("own", engine.state.iteration))
        super().__call__(engine)


def test_sink_subclasses(make_engine: MakeEngine) -> None:
    engine = make_engine()
    recorder = attach(engine, SameSink, limit=2)
    engine.run(range(4))
    assert recorder.seen == [(2, [0, 1], [1, 2]), (4, [2, 3], [3, 4])]
    engine = make_engine()
    recorder = attach(engine, OwnCall, limit=3)
    engine.run(range(2))
    assert recorder.seen == [(2, [("own", 1), 0, ("own", 2), 1], [1, 2])]


def test_sink_with_a_filter_records_the_iterations_it_saw(make_engine: MakeEngine) -> None:
    engine = make_engine()
    recorder = Recorder()
    recorder.sink = OutputSink(recorder, limit=2)
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=3), recorder.sink)
    engine.run(range(12))
    assert recorder.seen == [(6, [2, 5], [3, 6]), (12, [8, 11], [9, 12])]


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("values", (), AttributeError),
        ("iterations", None, AttributeError),
        ("limit", "3", TypeError),
        ("accepted_attributes", 5, TypeError),
    ],
)
def test_sink_fields_replaced_raise_as_python_does(
    make_engine: MakeEngine, field: str, value: Any, error: type[Exception]
) -> None:
    engine = make_engine()
    recorder = attach(engine, limit=2, accepted_type=int)
    assert recorder.sink is not None
    setattr(recorder.sink, field, value)
    with pytest.raises(error):
        engine.run(range(3))


@pytest.mark.parametrize("field", ["values", "limit", "on_full", "accepted_type"])
def test_sink_fields_deleted_raise_attribute_error(make_engine: MakeEngine, field: str) -> None:
    engine = make_engine()
    recorder = attach(engine, limit=1)
    assert recorder.sink is not None
    delattr(recorder.sink, field)
    with pytest.raises(AttributeError, match=field):
        engine.run(range(3))


@pytest.mark.parametrize(("limit", "flushes"), [(0, 3), (-1, 3), (2.0, 1), (True, 3)])
def test_sink_limits_python_compares(make_engine: MakeEngine, limit: Any, flushes: int) -> None:
    engine = make_engine()
    recorder = attach(engine, limit=limit)
    engine.run(range(3))
    assert len(recorder.seen) == flushes


def test_sink_accepted_attributes_of_another_shape_work_as_in_python(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(lambda e, b: torch.tensor(float(b)))
    recorder = attach(
        engine, limit=10, accepted_type=torch.Tensor, accepted_attributes=[["ndim", [0]]]
    )
    engine.run(range(3))
    assert recorder.seen == []


def test_sink_on_full_raising_propagates_with_its_traceback(make_engine: MakeEngine) -> None:
    def on_full(engine: Engine) -> None:
        raise ValueError("full")

    engine = make_engine()
    engine.add_event_handler(Events.ITERATION_COMPLETED, OutputSink(on_full, limit=2))
    with pytest.raises(ValueError, match="full") as info:
        engine.run(range(5))
    assert engine.state.iteration == 2
    assert "on_full" in "".join(traceback.format_tb(info.value.__traceback__))


def test_sink_on_full_removing_the_sink_or_terminating(make_engine: MakeEngine) -> None:
    engine = make_engine()
    seen: list[int] = []

    def remove(engine: Engine) -> None:
        seen.append(engine.state.iteration)
        engine.remove_event_handler(sink, Events.ITERATION_COMPLETED)

    sink = OutputSink(remove, limit=2)
    engine.add_event_handler(Events.ITERATION_COMPLETED, sink)
    engine.run(range(6))
    assert seen == [2] and sink.values == [0, 1]

    engine = make_engine()
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, OutputSink(lambda engine: engine.terminate(), limit=3)
    )
    engine.run(range(6), max_epochs=2)
    assert engine.state.iteration == 3


def test_sink_on_full_running_the_engine_again(make_engine: MakeEngine) -> None:
    inner = make_engine()
    inner_recorder = attach(inner, limit=2)
    outer = make_engine()
    runs: list[int] = []

    def rerun(engine: Engine) -> None:
        runs.append(engine.state.iteration)
        inner.run(range(4))

    outer.add_event_handler(Events.ITERATION_COMPLETED, OutputSink(rerun, limit=2))
    outer.run(range(4))
    assert runs == [2, 3, 4]  # values are not emptied: every later call is full
    assert [seen[0] for seen in inner_recorder.seen] == [2, 4] * 3


def test_sink_does_not_keep_the_engine_alive(make_engine: MakeEngine) -> None:
    engine = make_engine()
    sink = OutputSink(lambda engine: None, limit=2)
    engine.add_event_handler(Events.ITERATION_COMPLETED, sink)
    engine.run(range(3))
    alive = weakref.ref(engine)
    del engine
    collect_garbage()
    assert alive() is None
    assert sink.iterations == [1, 2, 3]


class CheckRecorder(TerminateOnNan):
    """A subclass that keeps the sink's fast path and records where checks happen."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checks: list[int] = []

    def check(self, engine: Engine) -> None:
        self.checks.append(engine.state.iteration)
        super().check(engine)


def test_terminate_on_nan_checks_where_the_per_call_handler_did(make_engine: MakeEngine) -> None:
    # Every check_every calls counted from the last check or from a new run's first call, at
    # the last iteration of each epoch, and of the run.
    handler = CheckRecorder(check_every=4)
    first = make_engine(lambda e, b: torch.tensor(float(b)))
    first.add_event_handler(Events.ITERATION_COMPLETED, handler)

    @first.on(Events.ITERATION_COMPLETED(once=3))
    def stop(engine: Engine) -> None:
        engine.terminate()

    first.run(range(10))
    # The first output was taken at once: it tells the handler that torch is there. The
    # outputs of iterations 2 and 3, kept by the sink, are read when the run ends (not a check
    # that could terminate: the run is over).
    assert handler.checks == [] and handler.iterations == [] and handler.values == []
    first.remove_event_handler(stop, Events.ITERATION_COMPLETED(once=3))
    first.state.max_epochs = None  # the next run() starts a new run
    first.run(range(6), max_epochs=2)
    assert handler.checks == [4, 6, 10, 12]
    first.state.max_epochs = None
    handler.checks.clear()
    first.run(range(10), max_iters=7)
    assert handler.checks == [4, 7]


def test_terminate_on_nan_losses_then_a_number_stop_at_the_number(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    outputs = [torch.tensor(1.0), torch.tensor(2.0), float("nan"), torch.tensor(3.0)]
    engine = make_engine(lambda e, b: outputs[b])
    handler = CheckRecorder()
    engine.add_event_handler(Events.ITERATION_COMPLETED, handler)
    engine.run(range(4))
    assert engine.state.iteration == 3 and handler.checks == []
    assert "Output 'nan' of iteration 3 contains NaN or Inf. Stop training" in caplog.text


class OwnAccepts(OutputSink):
    __slots__ = ()

    def accepts(self, output: Any) -> bool:
        return output % 2 == 0


def test_sink_subclass_with_its_own_accepts(make_engine: MakeEngine) -> None:
    engine = make_engine()
    recorder = attach(engine, OwnAccepts, limit=10)
    engine.run(range(5))
    assert [seen[0] for seen in recorder.seen] == [2, 4]


def test_sink_on_a_state_without_output_raises_as_python_does(make_engine: MakeEngine) -> None:
    engine = make_engine()

    @engine.on(Events.ITERATION_COMPLETED)
    def drop_output(engine: Engine) -> None:
        del engine.state.output

    attach(engine, limit=2)
    with pytest.raises(AttributeError, match="output"):
        engine.run(range(3))


# ------------------------------------------ kept_attributes and kept_entry (still_kept)
class Owner:
    def __init__(self) -> None:
        self.field: Any = "kept"


def attach_keeping(engine: Engine, **kwargs: Any) -> Recorder:
    """A sink that holds up to 100 outputs and flushes when what it keeps no longer holds."""
    return attach(engine, limit=100, **kwargs)


def flushed_at(recorder: Recorder) -> list[int]:
    return [seen[0] for seen in recorder.seen]


def test_sink_flushes_when_a_kept_attribute_changes(make_engine: MakeEngine) -> None:
    owner = Owner()
    value = owner.field
    engine = make_engine()
    recorder = attach_keeping(engine, kept_attributes=((owner, "field", value),))
    engine.add_event_handler(
        Events.ITERATION_STARTED(once=3), lambda e: setattr(owner, "field", "other")
    )
    engine.add_event_handler(
        Events.ITERATION_STARTED(once=5), lambda e: setattr(owner, "field", value)
    )
    engine.run(range(6))
    assert flushed_at(recorder) == [3, 4]


def metrics_keeping_engine(
    make_engine: MakeEngine, meddle: Callable[[Engine], None]
) -> tuple[Engine, Recorder]:
    """A sink keeping ``state.metrics["kept"]``, which ``meddle`` may change before
    iterations 3 and 4 (from ITERATION_STARTED)."""
    engine = make_engine()
    kept = object()
    engine.state.metrics = {"kept": kept}
    recorder = attach_keeping(engine, kept_entry=(dict, "kept", kept))

    @engine.on(Events.ITERATION_STARTED)
    def at_3_and_4(engine: Engine) -> None:
        if engine.state.iteration in (3, 4):
            meddle(engine)

    return engine, recorder


class LookAlike:
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__


class RaisingKey(str):
    """A key equal in hash to "kept" whose comparison raises."""

    def __hash__(self) -> int:
        return hash("kept")

    def __eq__(self, other: object) -> bool:
        raise ValueError("no comparing")


class ClearingKey(str):
    """A key equal in hash to "kept" whose comparison empties the dict holding it."""

    holder: ClassVar[dict[Any, Any]] = {}

    def __hash__(self) -> int:
        return hash("kept")

    def __eq__(self, other: object) -> bool:
        ClearingKey.holder.clear()
        return False


METRICS_MEDDLING: dict[str, tuple[Callable[[Engine], None], list[int]]] = {
    "replaced by a list": (lambda e: setattr(e.state, "metrics", ["kept"]), [3, 4, 5, 6]),
    "replaced by None": (lambda e: setattr(e.state, "metrics", None), [3, 4, 5, 6]),
    "a dict subclass": (
        lambda e: setattr(e.state, "metrics", type("Sub", (dict,), {})(e.state.metrics)),
        [3, 4, 5, 6],
    ),
    "a look-alike value": (
        lambda e: e.state.metrics.__setitem__("kept", LookAlike()),
        [3, 4, 5, 6],
    ),
    "the key deleted": (lambda e: e.state.metrics.pop("kept", None), [3, 4, 5, 6]),
    "a copy of the dict": (lambda e: setattr(e.state, "metrics", dict(e.state.metrics)), []),
}


@pytest.mark.parametrize(
    ("meddle", "flushes"), METRICS_MEDDLING.values(), ids=list(METRICS_MEDDLING)
)
def test_sink_kept_entry_meddled_with(
    make_engine: MakeEngine, meddle: Callable[[Engine], None], flushes: list[int]
) -> None:
    engine, recorder = metrics_keeping_engine(make_engine, meddle)
    engine.run(range(6))
    # The entry stays changed: every iteration from the 3rd flushes, none before.
    assert flushed_at(recorder) == flushes


def test_sink_kept_entry_with_a_key_whose_comparison_raises(make_engine: MakeEngine) -> None:
    def meddle(engine: Engine) -> None:
        metrics = engine.state.metrics
        kept = dict.pop(metrics, "kept")
        metrics[RaisingKey("other")] = 1  # the same hash: compared with "kept" at the lookup
        metrics["kept"] = kept

    engine, _ = metrics_keeping_engine(make_engine, meddle)
    with pytest.raises(ValueError, match="no comparing"):
        engine.run(range(6))
    assert engine.state.iteration == 3


def test_sink_kept_entry_with_a_key_whose_comparison_empties_the_dict(
    make_engine: MakeEngine,
) -> None:
    kept: list[Any] = []

    def meddle(engine: Engine) -> None:
        metrics = engine.state.metrics
        ClearingKey.holder = {}
        dict.pop(metrics, "kept", None)
        metrics[ClearingKey("other")] = 1
        metrics["kept"] = kept[0]
        ClearingKey.holder = metrics  # emptied by the sink's lookup

    engine, recorder = metrics_keeping_engine(make_engine, meddle)
    assert recorder.sink is not None and recorder.sink.kept_entry is not None
    kept.append(recorder.sink.kept_entry[2])
    engine.run(range(6))
    assert flushed_at(recorder) == [3, 4, 5, 6]
    assert engine.state.metrics == {}


def test_sink_kept_entry_on_a_state_with_a_metrics_property(make_engine: MakeEngine) -> None:
    watched = metrics_counting_state(replace_at_read=3, replacement={"kept": "something else"})
    engine = make_engine()
    engine.state = watched()
    kept = object()
    engine.state.metrics = {"kept": kept}
    recorder = attach_keeping(engine, kept_entry=(dict, "kept", kept))
    engine.run(range(5))
    assert watched.reads == 5
    assert flushed_at(recorder) == [3]


def test_sink_kept_attribute_getter_replacing_the_sink_s_fields(make_engine: MakeEngine) -> None:
    class Meddler:
        sink: OutputSink | None = None

        @property
        def field(self) -> Any:
            assert self.sink is not None
            self.sink.kept_attributes = ()
            self.sink.kept_entry = None
            self.sink.values = []
            return "kept"

    owner = Meddler()
    engine = make_engine()
    recorder = attach_keeping(engine, kept_attributes=((owner, "field", "other"),))
    owner.sink = recorder.sink
    engine.run(range(4))
    assert flushed_at(recorder) == [1]  # then nothing is kept: no flush


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("kept_attributes", [(Owner(), "field", "kept")], None),  # a list: walked by Python
        ("kept_attributes", ((Owner(), "field"),), ValueError),
        ("kept_attributes", ((Owner(), 5, "kept"),), TypeError),
        ("kept_attributes", 5, TypeError),
        ("kept_attributes", ((Owner(), "missing", None),), AttributeError),
        ("kept_entry", (dict, "kept"), ValueError),
        ("kept_entry", (list, "kept", None), None),  # state.metrics is a dict: not a list
        ("kept_entry", ("dict", "kept", None), None),
        ("kept_entry", [dict, "kept", None], None),
        ("kept_entry", (dict, ["unhashable"], None), TypeError),
    ],
)
def test_sink_kept_fields_of_other_forms_work_as_in_python(
    make_engine: MakeEngine, field: str, value: Any, error: type[Exception] | None
) -> None:
    engine = make_engine()
    recorder = attach_keeping(engine)
    assert recorder.sink is not None
    setattr(recorder.sink, field, value)
    if error is not None:
        with pytest.raises(error):
            engine.run(range(3))
        assert engine.state.iteration == 1
    else:
        engine.run(range(3))


def test_sink_kept_entry_of_a_list_type_on_a_list_raises_as_python_does(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    engine.state.metrics = ["kept"]
    recorder = attach_keeping(engine, kept_entry=(list, 0, "kept"))
    assert recorder.sink is not None
    with pytest.raises(TypeError, match="dict"):
        engine.run(range(3))


@pytest.mark.parametrize("field", ["kept_attributes", "kept_entry"])
def test_sink_kept_fields_deleted_raise_attribute_error(
    make_engine: MakeEngine, field: str
) -> None:
    engine = make_engine()
    recorder = attach_keeping(engine)
    assert recorder.sink is not None
    delattr(recorder.sink, field)
    with pytest.raises(AttributeError, match=field):
        engine.run(range(3))


def test_sink_kept_entry_on_a_state_without_metrics(make_engine: MakeEngine) -> None:
    engine = make_engine()
    del engine.state.metrics
    attach_keeping(engine, kept_entry=(dict, "kept", None))
    with pytest.raises(AttributeError, match="metrics"):
        engine.run(range(3))


def test_sink_keeping_what_holds_runs_no_python_frame(
    make_engine: MakeEngine, backend: str
) -> None:
    owner = Owner()
    engine = make_engine()
    kept = object()
    engine.state.metrics = {"kept": kept}
    recorder = attach(
        engine,
        limit=5,
        kept_attributes=((owner, "field", owner.field),),
        kept_entry=(dict, "kept", kept),
    )
    with python_calls(OutputSink.__call__, OutputSink.still_kept, Recorder.__call__) as counts:
        engine.run(range(20))
    python = 0 if backend == "cpp" else 20
    assert counts == {
        "OutputSink.__call__": python,
        "OutputSink.still_kept": python - (0 if backend == "cpp" else 4),
        "Recorder.__call__": 4,
    }
    assert len(recorder.seen) == 4


class _ShadowedLimit(OutputSink):
    __slots__ = ()
    limit = 1  # shadows the instance's limit: every call is full


class _ShadowedFlush(OutputSink):
    __slots__ = ()
    flush_at_epoch_end = True


class _ShadowedKept(OutputSink):
    __slots__ = ()
    kept_attributes = ((Owner(), "field", "not what it holds"),)


class _ShadowedOnFull(OutputSink):
    __slots__ = ()
    on_full = staticmethod(lambda engine: flushes_by_the_class.append(engine.state.iteration))


flushes_by_the_class: list[int] = []


@pytest.mark.parametrize(
    ("shadowing", "flushed", "by_the_class"),
    [
        (_ShadowedLimit, [2, 3, 4], []),
        (_ShadowedFlush, [2, 4], []),
        (_ShadowedKept, [2, 3, 4], []),
        (_ShadowedOnFull, [1], [2, 3, 4]),
    ],
)
def test_sink_class_switched_by_the_output_s_getter_is_read_as_python_reads_it(
    make_engine: MakeEngine,
    shadowing: type[OutputSink],
    flushed: list[int],
    by_the_class: list[int],
) -> None:
    """accepts() reads an attribute of the output; at iteration 2 (an epoch's end) its getter
    gives the sink a class whose class attribute shadows a field (the layout stays the same, so
    __class__ may be assigned). What the sink reads after that is what Python reads: the class
    attribute, not the slot."""
    sink_holder: list[OutputSink] = []

    class Switching:
        def __init__(self, iteration: int) -> None:
            self.iteration = iteration

        @property
        def kind(self) -> str:
            if self.iteration == 2:
                sink_holder[0].__class__ = shadowing
            return "accepted"

    flushes_by_the_class.clear()
    engine = make_engine(lambda e, b: Switching(e.state.iteration))
    recorder = attach(
        engine,
        limit=1 if shadowing is _ShadowedOnFull else 100,  # full at every call: on_full is read
        accepted_type=Switching,
        accepted_attributes=(("kind", ("accepted",)),),
    )
    assert recorder.sink is not None
    sink_holder.append(recorder.sink)
    engine.run(range(2), max_epochs=2)
    assert flushed_at(recorder) == flushed
    assert flushes_by_the_class == by_the_class


class _LimitAppending(OutputSink):
    """A limit whose getter appends to the sink's values: Python takes len(values) first."""

    __slots__ = ()

    @property  # type: ignore[override]
    def limit(self) -> int:
        self.values.append("appended by the limit")
        return 2


def test_sink_reads_the_length_before_a_limit_whose_getter_runs_code(
    make_engine: MakeEngine,
) -> None:
    sink_holder: list[OutputSink] = []

    class Switching:
        @property
        def kind(self) -> str:
            sink_holder[0].__class__ = _LimitAppending
            return "accepted"

    engine = make_engine(lambda e, b: Switching())
    recorder = attach(
        engine, limit=100, accepted_type=Switching, accepted_attributes=(("kind", ("accepted",)),)
    )
    assert recorder.sink is not None
    sink_holder.append(recorder.sink)
    engine.run(range(4))
    # iteration 1: len 1 < 2, then the getter appends; iteration 2: len 3 >= 2: flushed (3 values
    # and the one the next read of limit appends)
    assert [(iteration, len(values)) for iteration, values, _ in recorder.seen] == [(2, 4), (4, 4)]


class _EntryShadowed(OutputSink):
    __slots__ = ()
    kept_entry = (dict, "not in the metrics", object())


@pytest.mark.parametrize("how", ["assigned", "shadowed by the class"])
def test_sink_reads_kept_entry_after_the_kept_attributes_getters(
    make_engine: MakeEngine, how: str
) -> None:
    """still_kept() reads self.kept_entry after the getters of kept_attributes ran: an entry a
    getter replaced (or shadowed, by giving the sink another class) is the one checked."""
    sink_holder: list[OutputSink] = []

    class Meddler:
        @property
        def field(self) -> str:
            sink = sink_holder[0]
            if how == "assigned":
                sink.kept_entry = (dict, "not in the metrics", object())
            elif type(sink) is OutputSink:
                sink.__class__ = _EntryShadowed
            return "kept"

    engine = make_engine()
    recorder = attach_keeping(engine, kept_attributes=((Meddler(), "field", "kept"),))
    assert recorder.sink is not None
    sink_holder.append(recorder.sink)
    engine.run(range(4))
    assert flushed_at(recorder) == [1, 2, 3, 4]  # the entry is not in state.metrics


def test_sink_flushes_at_the_real_epoch_ends_after_terminate_epoch(
    make_engine: MakeEngine,
) -> None:
    # terminate_epoch() at iteration 3 ends epoch 1 early: epoch 2 runs iterations 4-9 and
    # epoch 3 runs 10-15, so the epochs no longer end at multiples of the epoch length.
    engine = make_engine(lambda e, b: b)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate_epoch())
    recorder = attach(engine, limit=100, flush_at_epoch_end=True)
    engine.run(range(6), max_epochs=3)
    assert [seen[0] for seen in recorder.seen] == [9, 15]


def test_sink_flushes_at_the_epoch_end_of_a_run_resumed_mid_epoch(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(lambda e, b: b)
    engine.load_state_dict({"iteration": 8, "epoch_length": 6, "max_epochs": 3})
    recorder = attach(engine, limit=100, flush_at_epoch_end=True)
    engine.run(range(6))
    assert [seen[0] for seen in recorder.seen] == [12, 18]


def test_terminate_on_nan_stops_within_the_epoch_after_terminate_epoch(
    make_engine: MakeEngine,
) -> None:
    # Epoch 2 runs iterations 4-9 and its output at 7 is NaN: the run must stop by 9, the
    # epoch's last iteration, before its EPOCH_COMPLETED handlers (a checkpoint) run.
    engine = make_engine(lambda e, b: torch.tensor(float("nan") if e.state.iteration == 7 else 1.0))
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate_epoch())
    engine.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
    completed: list[int] = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: completed.append(e.state.epoch))
    engine.run(range(6), max_epochs=3)
    assert engine.state.iteration == 9
    assert completed == [1]


def test_terminate_on_nan_with_a_transform_stops_within_the_epoch_after_terminate_epoch(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(
        lambda e, b: {"loss": torch.tensor(float("nan") if e.state.iteration == 7 else 1.0)}
    )
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate_epoch())
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, TerminateOnNan(output_transform=lambda out: out["loss"])
    )
    engine.run(range(6), max_epochs=3)
    assert engine.state.iteration == 9


@pytest.mark.parametrize("before", [None, 2, 2.0, "2", -(2**70), "delete"])
def test_sink_epoch_end_with_a_program_s_iterations_before_epoch(
    make_engine: MakeEngine, before: Any
) -> None:
    # Whatever a program puts there, the compiled sink reads it as OutputSink.__call__ does
    # (the same expectations on both loops).
    def meddle(engine: Engine) -> None:
        if before == "delete":
            del engine._iterations_before_epoch
        else:
            engine._iterations_before_epoch = before

    outcomes = []
    engine = make_engine(lambda e, b: b)
    engine.add_event_handler(Events.ITERATION_STARTED(once=2), meddle)
    recorder = attach(engine, limit=100, flush_at_epoch_end=True)
    try:
        engine.run(range(4), max_epochs=2)
    except TypeError as error:
        outcomes.append(type(error))
    expected = {
        None: [4, 8],  # the remainder, as on ignite's Engine
        "delete": [4, 8],
        # Epoch 1 would end at 6, but epoch 2 (iterations 5-8) starts first and the loop
        # writes its own count again.
        2: [8],
        "2": None,
        -(2**70): [8],
    }[before]
    if expected is None:
        assert outcomes == [TypeError]
    else:
        assert [seen[0] for seen in recorder.seen] == expected


def test_sinks_of_three_classes_in_turn_and_one_class_changed_during_the_run(
    make_engine: MakeEngine,
) -> None:
    # The compiled loop remembers the sink classes it has admitted (a RunningAverage's and a
    # TerminateOnNan's alternate at every iteration). A class given a class attribute that
    # shadows a field during the run is looked at again: from then on its sinks run as Python
    # runs them (here the shadowing limit of 1 makes each call full).
    class First(OutputSink):
        pass

    class Second(OutputSink):
        pass

    engine = make_engine(lambda e, b: b)
    recorders = [attach(engine, cls, limit=3) for cls in (First, Second, OutputSink)]

    @engine.on(Events.ITERATION_COMPLETED(once=4))
    def shadow(_: Engine) -> None:
        Second.limit = 1  # type: ignore[misc]  # a class attribute over the slot

    try:
        engine.run(range(9))
    finally:
        del Second.limit
    expected_untouched = [3, 6, 9]
    assert [seen[0] for seen in recorders[0].seen] == expected_untouched
    assert [seen[0] for seen in recorders[2].seen] == expected_untouched
    # Second: full at 3, then, its class attribute read instead of the slot (as Python reads
    # it: the subclass's attribute comes first along the MRO), full at every call from 5 on.
    assert [seen[0] for seen in recorders[1].seen] == [3, 5, 6, 7, 8, 9]
