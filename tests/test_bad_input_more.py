"""Invalid input that tests/test_bad_input.py, test_events.py, test_state_dict.py and
test_registry.py do not cover; docs/bad-input.md lists every check and the test of each."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from ember.engine import Engine, Events


def interrupted(make_engine: Any, data: Any, **kwargs: Any) -> Engine:
    engine = make_engine()
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), lambda e: e.interrupt())
    engine.run(data, **kwargs)
    assert engine._resume_point is not None
    return engine


# ---------------------------------------------------------------------------------- run()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_iters": "3"}, "Argument max_iters should be an integer, got str"),
        ({"max_iters": 2.0}, "Argument max_iters should be an integer, got float"),
        ({"max_epochs": True}, "Argument max_epochs should be an integer, got bool"),
        ({"epoch_length": False}, "Argument epoch_length should be an integer, got bool"),
    ],
)
def test_run_counters_must_be_integers(make_engine: Any, kwargs: dict, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        make_engine().run([1, 2], **kwargs)


def test_numpy_integers_are_accepted_as_in_ignite(make_engine: Any) -> None:
    """ignite 0.5.5 runs ``run(data, max_epochs=np.int64(2), epoch_length=np.int64(2))``;
    events.py accepts any numbers.Integral for filters, engine.py only ``int``."""
    np = pytest.importorskip("numpy")
    state = make_engine().run([1, 2, 3], max_epochs=np.int64(2), epoch_length=np.int64(2))
    assert (state.epoch, state.iteration) == (2, 4)


def test_max_epochs_below_the_finished_epoch_is_refused(make_engine: Any) -> None:
    engine = make_engine()
    engine.run([1, 2], max_epochs=3)
    with pytest.raises(
        ValueError,
        match=r"Argument max_epochs should be greater than or equal to the start epoch defined "
        r"in the state: 2 vs 3\. Please, set engine\.state\.max_epochs = None",
    ):
        engine.run([1, 2], max_epochs=2)


def test_max_iters_below_the_finished_iteration_is_refused(make_engine: Any) -> None:
    engine = make_engine()
    engine.run([1, 2], max_iters=5)
    with pytest.raises(
        ValueError,
        match=r"Argument max_iters should be greater than or equal to the start iteration "
        r"defined in the state: 3 vs 5",
    ):
        engine.run([1, 2], max_iters=3)


def test_switching_from_max_iters_to_max_epochs_on_resume_needs_a_reset(make_engine: Any) -> None:
    engine = interrupted(make_engine, [1, 2], max_iters=3)
    with pytest.raises(ValueError, match="To switch from max_iters to max_epochs mode"):
        engine.run([1, 2], max_epochs=2)


def test_resuming_with_empty_data_of_a_still_unknown_length_is_refused(make_engine: Any) -> None:
    engine = interrupted(make_engine, iter(range(5)), max_epochs=2)
    assert engine.state.epoch_length is None
    with pytest.raises(
        ValueError, match=r"Input data has zero size\. Please provide non-empty data"
    ):
        engine.run([], max_epochs=2)


def test_resuming_without_data_nor_a_known_length_is_refused(make_engine: Any) -> None:
    engine = make_engine()

    def fail(e: Engine) -> None:
        raise OSError("stop")

    engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), fail)
    with pytest.raises(OSError, match="stop"):
        engine.run(iter(range(5)), max_epochs=2)
    assert engine.state.epoch_length is None
    assert engine._dataloader_iter is None
    with pytest.raises(ValueError, match="epoch_length should be provided if data is None"):
        engine.run(None)


def test_empty_data_of_unknown_length_is_found_empty_in_the_loop(make_engine: Any) -> None:
    names: list[str] = []
    engine = make_engine()
    engine.add_event_handler(Events.EPOCH_STARTED, lambda: names.append("EPOCH_STARTED"))
    with pytest.raises(
        ValueError, match=r"Input data has zero size\. Please provide non-empty data"
    ):
        engine.run(iter([]), max_epochs=2)
    assert names == ["EPOCH_STARTED"]


# ---------------------------------------------------------------------------------- set_data()


def test_set_data_needs_an_iterable(make_engine: Any) -> None:
    engine = make_engine()
    with pytest.raises(TypeError, match="Argument data should be iterable"):
        engine.set_data(3)


# ---------------------------------------------------------------------------------- load_state_dict()


@pytest.mark.parametrize(
    ("state_dict", "message"),
    [
        (
            {"epoch_length": 2, "iteration": 0, "max_epochs": "3"},
            "Argument max_epochs should be an integer, got str",
        ),
        (
            {"epoch_length": 2, "iteration": 0, "max_iters": 2.5},
            "Argument max_iters should be an integer, got float",
        ),
    ],
)
def test_state_dict_limits_must_be_integers(
    make_engine: Any, state_dict: dict, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        make_engine().load_state_dict(state_dict)


def test_state_dict_max_iters_below_the_iteration_is_refused(make_engine: Any) -> None:
    with pytest.raises(ValueError, match="greater than or equal to the start iteration"):
        make_engine().load_state_dict({"epoch_length": 2, "iteration": 6, "max_iters": 4})


# ---------------------------------------------------------------------------------- events


def test_default_event_filter_is_deprecated() -> None:
    with pytest.warns(UserWarning, match="Events.default_event_filter is deprecated") as caught:
        assert Events.default_event_filter(None, 1) is True  # type: ignore[arg-type]
    # ignite's category: a UserWarning, which Python shows by default (a DeprecationWarning is not)
    assert [warning.category for warning in caught] == [UserWarning]


# ---------------------------------------------------------------------------------- during the run


def test_a_non_iterator_from_iter_is_a_type_error_with_cpythons_message(make_engine: Any) -> None:
    class BrokenIterable:
        def __iter__(self) -> Any:
            return 5

    with pytest.raises(TypeError, match="iter\\(\\) returned non-iterator of type 'int'"):
        make_engine().run(BrokenIterable(), max_epochs=1, epoch_length=1)


def test_a_data_iterator_replaced_by_a_non_iterator(make_engine: Any) -> None:
    engine = make_engine()
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: setattr(e, "_dataloader_iter", [1, 2])
    )
    with pytest.raises(TypeError, match="'list' object is not an iterator"):
        engine.run([1, 2, 3])


def test_a_data_iterator_removed_mid_run(make_engine: Any) -> None:
    engine = make_engine()
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: setattr(e, "_dataloader_iter", None)
    )
    with pytest.raises(
        RuntimeError, match="The data iterator was removed while the engine was running"
    ):
        engine.run([1, 2, 3])
    assert engine.state.iteration == 1


def test_a_process_function_replaced_by_a_non_callable(make_engine: Any) -> None:
    engine = make_engine()
    engine.add_event_handler(Events.STARTED, lambda e: setattr(e, "_process_function", 5))
    with pytest.raises(TypeError, match="'int' object is not callable"):
        engine.run([1, 2, 3])


def test_a_flag_whose_truth_value_raises(make_engine: Any) -> None:
    class NoTruth:
        def __bool__(self) -> bool:
            raise ValueError("no truth value")

    engine = make_engine()
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: setattr(e, "should_terminate", NoTruth())
    )
    with pytest.raises(ValueError, match="no truth value"):
        engine.run([1, 2, 3])


def test_state_times_replaced_by_a_non_mapping(make_engine: Any) -> None:
    engine = make_engine()
    engine.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "times", None))
    with pytest.raises(TypeError, match="'NoneType' object does not support item assignment"):
        engine.run([1, 2, 3])


@pytest.mark.parametrize(
    ("field", "value"), [("iteration", "3"), ("max_epochs", "3"), ("epoch_length", "2")]
)
def test_a_counter_replaced_by_a_string_is_a_type_error(
    make_engine: Any, field: str, value: str
) -> None:
    engine = make_engine()
    engine.add_event_handler(Events.STARTED, lambda e: setattr(e.state, field, value))
    with pytest.raises(TypeError):
        engine.run([1, 2, 3])


def test_a_registry_that_is_not_a_handler_registry(make_engine: Any) -> None:
    # the compiled loop names the fix; the Python loop fails on the missing `version`
    engine = make_engine()
    engine._event_handlers_registry = {}
    with pytest.raises(
        (TypeError, AttributeError),
        match=r"engine\._event_handlers should be a HandlerRegistry|has no attribute 'version'",
    ):
        engine.run([1])


def test_a_registry_entry_of_the_wrong_size(make_engine: Any) -> None:
    engine = make_engine()
    engine._event_handlers[Events.STARTED].append((print, (), {}, "extra"))
    with pytest.raises(
        (TypeError, ValueError),
        match=r"should be \(handler, args, kwargs\) tuples|too many values to unpack",
    ):
        engine.run([1])


def test_a_malformed_resume_point(make_engine: Any) -> None:
    engine = interrupted(make_engine, [1, 2, 3])
    engine._resume_point = (1, 2)
    with pytest.raises(ValueError, match=r"_resume_point is malformed|not enough values to unpack"):
        engine.run([1, 2, 3])


# ---------------------------------------------------------------------------------- divergences
# Values a handler may write that ignite 0.5.5 and ember's Python loop accept and the compiled
# loop refuses. Both loops must agree.


def _outcome(backend: str, setup: Any) -> Any:
    engine = Engine(lambda e, b: b, backend=backend)
    setup(engine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            state = engine.run([1, 2, 3], max_epochs=2)
        except Exception as exc:  # noqa: BLE001 - the outcome is compared
            return ("raised", type(exc).__name__)
    return ("returned", state.epoch, state.iteration)


def _float_epoch_length(engine: Engine) -> None:
    engine.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "epoch_length", 2.0))


def _tuple_handler_list(engine: Engine) -> None:
    engine._event_handlers[Events.EPOCH_COMPLETED] = ((lambda: None, (), {}),)


@pytest.mark.parametrize(
    "setup",
    [_float_epoch_length, _tuple_handler_list],
    ids=["float epoch_length", "tuple of handlers"],
)
def test_both_loops_accept_what_ignite_accepts(backend: str, setup: Any) -> None:
    got = _outcome(backend, setup)
    assert got == _outcome("python", setup)
    assert got[0] == "returned"


def test_a_filter_on_an_event_without_a_counter_fails_when_it_fires(make_engine: Any) -> None:
    # State.event_to_attr has no counter for TERMINATE: ignite's wrapper raises when it fires
    engine = make_engine()
    engine.add_event_handler(Events.TERMINATE(once=1), lambda e: None)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), lambda e: e.terminate())
    with pytest.raises(RuntimeError, match=r"Unknown event name 'Events\.TERMINATE"):
        engine.run([1, 2, 3])
