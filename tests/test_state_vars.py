"""``vars(engine.state)`` and ``engine.state.__dict__`` show every field, as on ignite's State,
and writes through them reach the loop."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

from ember.engine import Events, State

# Spelled out, not taken from State: these are the fields issue #11 and ignite's State name.
FIELDS = [
    "iteration",
    "epoch",
    "epoch_length",
    "max_epochs",
    "max_iters",
    "output",
    "batch",
    "dataloader",
    "times",
    "metrics",
    "seed",
]


def test_vars_and_dunder_dict_list_every_field_during_and_after_a_run(make_engine: Any) -> None:
    engine = make_engine()
    engine.state.tag = "mine"
    seen: list[list[str]] = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=2), lambda e: seen.append(list(vars(e.state)))
    )
    engine.run([1, 2, 3], max_epochs=2)
    after = list(vars(engine.state))
    assert list(engine.state.__dict__) == after == seen[0]
    # The fields, then the attributes added since; State.event_to_attr is process-wide (B8),
    # so other tests' custom counters may be there too.
    assert after[: len(FIELDS)] == FIELDS and after[-1] == "tag"
    assert vars(engine.state)["iteration"] == 6 and vars(engine.state)["tag"] == "mine"


def test_format_with_vars_of_the_state(make_engine: Any) -> None:
    engine = make_engine()
    lines: list[str] = []
    fmt = "Epoch {epoch}/{max_epochs}, iteration {iteration}: output {output}"
    engine.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: lines.append(fmt.format(**vars(e.state)))
    )
    engine.run([1, 2, 3], max_epochs=2)
    assert lines == ["Epoch 1/2, iteration 3: output 3", "Epoch 2/2, iteration 6: output 3"]


@pytest.mark.parametrize("through", ["vars", "__dict__"])
def test_a_snapshot_set_back_at_started_resumes_the_run(make_engine: Any, through: str) -> None:
    first = make_engine()
    snapshots: list[dict[str, Any]] = []
    first.add_event_handler(
        Events.EPOCH_COMPLETED(once=1), lambda e: snapshots.append(copy.copy(vars(e.state)))
    )
    first.run([1, 2, 3], max_epochs=2)
    snapshot = snapshots[0]
    assert type(snapshot) is dict and snapshot["iteration"] == 3  # a copy, not a live view

    steps: list[int] = []
    resumed = make_engine(lambda e, batch: steps.append(e.state.iteration))

    def restore(engine: Any) -> None:
        fields = vars(engine.state) if through == "vars" else engine.state.__dict__
        fields.update({name: snapshot[name] for name in ("iteration", "epoch")})

    resumed.add_event_handler(Events.STARTED, restore)
    resumed.run([1, 2, 3], max_epochs=2)
    # The loop sees the restored counters: only the second epoch runs.
    assert steps == [4, 5, 6]
    assert (resumed.state.epoch, resumed.state.iteration) == (2, 6)


def test_an_item_write_reaches_the_loop(make_engine: Any) -> None:
    steps: list[int] = []
    engine = make_engine(lambda e, batch: steps.append(e.state.iteration))
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=1),
        lambda e: e.state.__dict__.__setitem__("iteration", 5),
    )
    engine.run([1, 2, 3], max_iters=7)
    assert steps == [1, 6, 7]
    assert (engine.state.epoch, engine.state.iteration) == (1, 7)


def test_copies_of_vars_are_plain_dicts() -> None:
    state = State(alpha=1)
    fields = vars(state)
    copies = (
        dict,
        lambda f: f.copy(),
        copy.copy,
        copy.deepcopy,
        lambda f: pickle.loads(pickle.dumps(f)),
    )
    for make_copy in copies:
        snapshot = make_copy(fields)
        assert type(snapshot) is dict and snapshot == fields
        state.iteration += 1
        assert snapshot["iteration"] == state.iteration - 1  # not a view of the state


def test_delete_and_replace_through_dunder_dict() -> None:
    state = State(alpha=1)
    del state.__dict__["alpha"]
    del state.__dict__["iteration"]
    assert not hasattr(state, "alpha") and not hasattr(state, "iteration")
    with pytest.raises(KeyError):
        vars(state)["iteration"]
    with pytest.raises(KeyError):
        del vars(state)["iteration"]
    state.__dict__ = {"epoch": 4, "beta": 2}
    assert dict(vars(state)) == {"epoch": 4, "beta": 2}
    with pytest.raises(TypeError, match="mapping"):
        state.__dict__ = [("epoch", 1)]  # type: ignore[assignment]
