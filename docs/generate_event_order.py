"""Regenerate the traces of docs/event-order.md by running ember, and ignite 0.5.5 when installed.

    python docs/generate_event_order.py          # rewrite the generated part of the page
    python docs/generate_event_order.py --check  # exit 1 if the page is out of date

Every program below runs on:

* ember's compiled loop and its Python loop, recorded by a subclass that overrides ``_fire_event``
  (appending ``(event.name, state.epoch, state.iteration)`` before calling ``super()``);
* both loops again, recorded by handlers attached to every event of a plain ``Engine``: an
  overridden ``_fire_event`` sends the compiled loop through Python, so this second recording is
  what exercises its native dispatcher;
* ``ignite.engine.Engine``, with the same ``_fire_event`` override.

The page shows ember's trace and, where ignite's differs, ignite's rows beside it. The script
exits with status 1 when the loops disagree with each other, when ignite differs where no
documented fix explains it, or when a documented difference no longer shows.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ember
from ember.engine import Engine as EmberEngine
from ember.engine import Events as EmberEvents

try:
    import ignite
    import ignite.engine as ignite_engine
except ImportError:  # the page then says that ignite was not compared
    ignite = None
    ignite_engine = None

PAGE = Path(__file__).with_name("event-order.md")
BEGIN = "<!-- BEGIN GENERATED: traces (docs/generate_event_order.py) -->"
END = "<!-- END GENERATED: traces -->"
IGNITE_VERSION = "0.5.5"
EVENT_CAP = 45  # ignite loops forever in the H1 program; stop recording after this many events

Row = tuple[str, Any, Any]  # (event or note, epoch, iteration); notes are in italics


class TraceCap(BaseException):
    """Stops a program that would loop forever (raised from the recorder)."""


# ----------------------------------------------------------------------------- recorders
def overriding_recorder(base: type) -> type:
    """A subclass of ``base`` that records every event passed to ``_fire_event``."""

    class Recording(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.trace: list[Row] = []
            self.batches: list[Any] = []
            super().__init__(*args, **kwargs)

        def _fire_event(self, event_name: Any, *args: Any, **kwargs: Any) -> None:
            record(self, event_name.name)
            super()._fire_event(event_name, *args, **kwargs)

    return Recording


def record(engine: Any, name: str) -> None:
    engine.trace.append((name, engine.state.epoch, engine.state.iteration))
    if sum(1 for row in engine.trace if not row[0].startswith("_")) > EVENT_CAP:
        raise TraceCap


def note(engine: Any, text: str) -> None:
    engine.trace.append((f"_{text}_", engine.state.epoch, engine.state.iteration))


class HandlerRecorded(EmberEngine):
    """A plain engine (``_fire_event`` not overridden) that records through handlers.

    EXCEPTION_RAISED gets no recorder: a handler there would change how exceptions are routed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.trace: list[Row] = []
        self.batches: list[Any] = []
        super().__init__(*args, **kwargs)
        for event in EmberEvents:
            if event is not EmberEvents.EXCEPTION_RAISED:
                self.add_event_handler(event, self._record, event.name)

    @staticmethod
    def _record(engine: Any, *args: Any, **kwargs: Any) -> None:
        record(engine, args[-1])


@dataclass(frozen=True)
class Flavour:
    label: str
    engine_cls: type
    events: Any
    kwargs: dict[str, Any]


def flavours() -> dict[str, Flavour]:
    recorded = overriding_recorder(EmberEngine)
    found = {
        "cpp": Flavour("cpp", recorded, EmberEvents, {"backend": "cpp"}),
        "python": Flavour("python", recorded, EmberEvents, {"backend": "python"}),
        "cpp, handlers": Flavour("cpp, handlers", HandlerRecorded, EmberEvents, {"backend": "cpp"}),
        "python, handlers": Flavour(
            "python, handlers", HandlerRecorded, EmberEvents, {"backend": "python"}
        ),
    }
    if ignite_engine is not None and ignite.__version__ == IGNITE_VERSION:
        found["ignite"] = Flavour(
            "ignite", overriding_recorder(ignite_engine.Engine), ignite_engine.Events, {}
        )
    return found


# ----------------------------------------------------------------------------- programs
class Api:
    """What a program sees: a factory for its engine and the matching ``Events``."""

    def __init__(self, flavour: Flavour) -> None:
        self.flavour = flavour
        self.Events = flavour.events
        self.engine: Any = None

    def make(self, step: Callable[[Any, Any], Any] | None = None) -> Any:
        def process_function(engine: Any, batch: Any) -> Any:
            engine.batches.append(batch)
            return batch if step is None else step(engine, batch)

        self.engine = self.flavour.engine_cls(process_function, **self.flavour.kwargs)
        return self.engine

    def run(self, data: Any, **kwargs: Any) -> None:
        """``engine.run(data, **kwargs)``, noting its outcome and any warning in the trace."""
        engine = self.engine

        def show(message: Any, *args: Any, **kwargs: Any) -> None:
            note(engine, f"{type(message).__name__}: {str(message).split(' but ')[0]} …")

        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            try:
                engine.run(data, **kwargs)
            except TraceCap:
                note(engine, f"… still looping after {EVENT_CAP} events: stopped here")
            except BaseException as exc:  # noqa: BLE001 - the outcome is what we record
                note(engine, f"run() raises {type(exc).__name__}")
            else:
                note(engine, "run() returns")


def at(condition: Callable[[Any], bool], action: Callable[[Any], None]) -> Callable[[Any], None]:
    """A handler that performs ``action`` the first time ``condition(engine)`` holds."""
    done: list[bool] = []

    def handler(engine: Any) -> None:
        if not done and condition(engine):
            done.append(True)
            action(engine)

    return handler


def iteration_is(n: int) -> Callable[[Any], bool]:
    return lambda engine: engine.state.iteration == n


def epoch_is(n: int) -> Callable[[Any], bool]:
    return lambda engine: engine.state.epoch == n


def terminate(engine: Any) -> None:
    engine.terminate()


def raise_once_at(iteration: int, exc_type: type[BaseException]) -> Callable[[Any, Any], Any]:
    def step(engine: Any, batch: Any) -> Any:
        if engine.state.iteration == iteration:
            raise exc_type(f"failed at iteration {iteration}")
        return batch

    return step


class Unsized:
    """Re-iterable data without ``__len__``: the engine learns the epoch length at exhaustion."""

    def __iter__(self) -> Any:
        return iter([0, 1, 2])


def plain(api: Api) -> None:
    api.make()
    api.run([0, 1, 2], max_epochs=2)


def terminate_on(
    event: str, condition: Callable[[Any], bool], **kwargs: Any
) -> Callable[[Api], None]:
    def program(api: Api) -> None:
        engine = api.make()
        action = (lambda e: e.terminate(**kwargs)) if kwargs else terminate
        engine.add_event_handler(getattr(api.Events, event), at(condition, action))
        api.run([0, 1, 2], max_epochs=2)

    return program


def terminate_in_step(api: Api) -> None:
    def step(engine: Any, batch: Any) -> Any:
        if engine.state.iteration == 2:
            engine.terminate()
        return batch

    api.make(step)
    api.run([0, 1, 2], max_epochs=2)


def terminate_epoch(skip: bool) -> Callable[[Api], None]:
    def program(api: Api) -> None:
        engine = api.make()
        action = (
            (lambda e: e.terminate_epoch(skip_epoch_completed=True))
            if skip
            else (lambda e: e.terminate_epoch())
        )
        engine.add_event_handler(api.Events.ITERATION_COMPLETED, at(iteration_is(2), action))
        api.run([0, 1, 2], max_epochs=2)

    return program


def interrupt_then_run(api: Api) -> None:
    engine = api.make()
    engine.add_event_handler(
        api.Events.ITERATION_COMPLETED, at(iteration_is(2), lambda e: e.interrupt())
    )
    api.run([0, 1, 2], max_epochs=2)
    api.run([0, 1, 2], max_epochs=2)


def max_iters(n: int) -> Callable[[Api], None]:
    def program(api: Api) -> None:
        api.make()
        api.run([0, 1, 2], max_iters=n)

    return program


def unknown_length(api: Api) -> None:
    api.make()
    api.run(Unsized(), max_epochs=2)


def short_epochs(api: Api) -> None:
    api.make()
    api.run([0, 1, 2], max_epochs=3, epoch_length=2)


def failing_step(
    handler: str | None, exc_type: type[BaseException] = ValueError
) -> Callable[[Api], None]:
    def program(api: Api) -> None:
        engine = api.make(raise_once_at(2, exc_type))
        if handler is not None:
            engine.add_event_handler(api.Events.EXCEPTION_RAISED, EXCEPTION_HANDLERS[handler])
        api.run([0, 1, 2], max_epochs=2)

    return program


def failing_epoch_completed(api: Api) -> None:
    engine = api.make()

    def fail(engine: Any) -> None:
        raise ValueError("EPOCH_COMPLETED handler failed")

    engine.add_event_handler(api.Events.EPOCH_COMPLETED, fail)
    engine.add_event_handler(api.Events.EXCEPTION_RAISED, swallow)
    api.run([0, 1, 2], max_epochs=2)


def swallow(engine: Any, exc: BaseException) -> None:
    if isinstance(exc, TraceCap):
        raise exc


def swallow_and_terminate(engine: Any, exc: BaseException) -> None:
    swallow(engine, exc)
    engine.terminate()


def reraise(engine: Any, exc: BaseException) -> None:
    raise exc


EXCEPTION_HANDLERS = {
    "swallow": swallow,
    "terminate": swallow_and_terminate,
    "reraise": reraise,
}


def one_shot_generator_max_iters(api: Api) -> None:
    api.make()
    api.run((i for i in range(3)), max_iters=5, epoch_length=3)


def first_fetch_of_epochs(epochs: tuple[int, ...], action: Callable[[Any], None]) -> Any:
    """A GET_BATCH_STARTED handler that performs ``action`` at the first fetch of each epoch
    in ``epochs``."""
    done: set[int] = set()

    def handler(engine: Any) -> None:
        epoch = engine.state.epoch
        if epoch in epochs and epoch not in done:
            done.add(epoch)
            action(engine)

    return handler


def fail_transiently(engine: Any) -> None:
    raise OSError("transient")


def error_before_first_batch(*epochs: int) -> Callable[[Api], None]:
    def program(api: Api) -> None:
        engine = api.make()
        engine.add_event_handler(
            api.Events.GET_BATCH_STARTED, first_fetch_of_epochs(epochs, fail_transiently)
        )
        engine.add_event_handler(api.Events.EXCEPTION_RAISED, swallow)
        api.run([0, 1, 2], max_iters=6)

    return program


def terminate_epoch_before_first_batch(*epochs: int) -> Callable[[Api], None]:
    def program(api: Api) -> None:
        engine = api.make()
        engine.add_event_handler(
            api.Events.GET_BATCH_STARTED,
            first_fetch_of_epochs(epochs, lambda e: e.terminate_epoch()),
        )
        api.run([0, 1, 2], max_iters=6)

    return program


@dataclass(frozen=True)
class Case:
    title: str
    code: str
    program: Callable[[Api], None]
    ignite_differs: str | None = None  # why ember differs from ignite here, if it does


GROUPS: list[tuple[str, list[Case]]] = [
    (
        "No termination",
        [Case("No call", "run([0, 1, 2], max_epochs=2)", plain)],
    ),
    (
        "terminate()",
        [
            Case(
                "`terminate()` from STARTED",
                "STARTED handler: engine.terminate()",
                terminate_on("STARTED", lambda e: True),
            ),
            Case(
                "`terminate()` from EPOCH_STARTED",
                "EPOCH_STARTED handler, epoch 2: engine.terminate()",
                terminate_on("EPOCH_STARTED", epoch_is(2)),
            ),
            Case(
                "`terminate()` from GET_BATCH_STARTED",
                "GET_BATCH_STARTED handler, before the 2nd batch (iteration 1): engine.terminate()",
                terminate_on("GET_BATCH_STARTED", iteration_is(1)),
            ),
            Case(
                "`terminate()` from ITERATION_COMPLETED",
                "ITERATION_COMPLETED handler, iteration 2: engine.terminate()",
                terminate_on("ITERATION_COMPLETED", iteration_is(2)),
            ),
            Case(
                "`terminate()` from EPOCH_COMPLETED",
                "EPOCH_COMPLETED handler, epoch 1: engine.terminate()",
                terminate_on("EPOCH_COMPLETED", epoch_is(1)),
            ),
            Case(
                "`terminate()` from the process function",
                "process function, iteration 2: engine.terminate()",
                terminate_in_step,
            ),
            Case(
                "`terminate(skip_completed=True)`",
                "ITERATION_COMPLETED handler, iteration 2: engine.terminate(skip_completed=True)",
                terminate_on("ITERATION_COMPLETED", iteration_is(2), skip_completed=True),
            ),
        ],
    ),
    (
        "terminate_epoch()",
        [
            Case(
                "`terminate_epoch()` from ITERATION_COMPLETED",
                "ITERATION_COMPLETED handler, iteration 2: engine.terminate_epoch()",
                terminate_epoch(skip=False),
            ),
            Case(
                "`terminate_epoch(skip_epoch_completed=True)` from ITERATION_COMPLETED",
                "ITERATION_COMPLETED handler, iteration 2: "
                "engine.terminate_epoch(skip_epoch_completed=True)",
                terminate_epoch(skip=True),
            ),
            Case(
                "`terminate_epoch()` before the first batch of an epoch, `max_iters` run",
                "GET_BATCH_STARTED handler, first fetch of epoch 2: engine.terminate_epoch(); "
                "run([0, 1, 2], max_iters=6)",
                terminate_epoch_before_first_batch(2),
            ),
        ],
    ),
    (
        "interrupt()",
        [
            Case(
                "`interrupt()`, then `run()` again",
                "ITERATION_COMPLETED handler, iteration 2: engine.interrupt(); "
                "then run([0, 1, 2], max_epochs=2) again",
                interrupt_then_run,
            ),
        ],
    ),
    (
        "max_iters, unknown length, short epochs",
        [
            Case("`max_iters` reached mid-epoch", "run([0, 1, 2], max_iters=4)", max_iters(4)),
            Case(
                "`max_iters` reached at an epoch end", "run([0, 1, 2], max_iters=3)", max_iters(3)
            ),
            Case(
                "Data of unknown length",
                "run(Unsized(), max_epochs=2), where iter(Unsized()) gives 0, 1, 2 and "
                "Unsized has no __len__",
                unknown_length,
            ),
            Case(
                "`epoch_length` shorter than the data (epochs straddle passes)",
                "run([0, 1, 2], max_epochs=3, epoch_length=2)",
                short_epochs,
            ),
        ],
    ),
    (
        "Exceptions",
        [
            Case(
                "Process function raises, no EXCEPTION_RAISED handler",
                "process function raises ValueError at iteration 2",
                failing_step(None),
            ),
            Case(
                "Process function raises, EXCEPTION_RAISED handler swallows",
                "process function raises ValueError at iteration 2; "
                "EXCEPTION_RAISED handler returns normally",
                failing_step("swallow"),
            ),
            Case(
                "Process function raises, EXCEPTION_RAISED handler calls `terminate()`",
                "process function raises ValueError at iteration 2; "
                "EXCEPTION_RAISED handler calls engine.terminate()",
                failing_step("terminate"),
            ),
            Case(
                "Process function raises, EXCEPTION_RAISED handler re-raises (B3)",
                "process function raises ValueError at iteration 2; "
                "EXCEPTION_RAISED handler re-raises it",
                failing_step("reraise"),
            ),
            Case(
                "EPOCH_COMPLETED handler raises (run level)",
                "EPOCH_COMPLETED handler raises ValueError; EXCEPTION_RAISED handler swallows",
                failing_epoch_completed,
            ),
            Case(
                "KeyboardInterrupt in the process function",
                "process function raises KeyboardInterrupt at iteration 2; "
                "EXCEPTION_RAISED handler swallows",
                failing_step("swallow", KeyboardInterrupt),
            ),
            Case(
                "Exception swallowed before the first batch of an epoch, `max_iters` run",
                "GET_BATCH_STARTED handler raises OSError once, at the first fetch of epoch 2; "
                "EXCEPTION_RAISED handler swallows; run([0, 1, 2], max_iters=6)",
                error_before_first_batch(2),
            ),
        ],
    ),
    (
        "Where ember differs from ignite",
        [
            Case(
                "One-shot generator that runs dry before `max_iters` (H1)",
                "run((i for i in range(3)), max_iters=5, epoch_length=3)",
                one_shot_generator_max_iters,
                ignite_differs="fix H1: ignite repeats empty epochs forever; ember ends the run "
                "after two epochs in a row without an iteration",
            ),
            Case(
                "Exception swallowed before the first batch of two epochs in a row, "
                "`max_iters` run",
                "GET_BATCH_STARTED handler raises OSError at the first fetch of epochs 2 and 3; "
                "EXCEPTION_RAISED handler swallows; run([0, 1, 2], max_iters=6)",
                error_before_first_batch(2, 3),
                ignite_differs="side effect of the H1/H3 fix: epochs 2 and 3 end without an "
                "iteration, so ember ends the run at iteration 3 (COMPLETED fires, no warning); "
                "ignite goes on with epoch 4 and reaches max_iters",
            ),
            Case(
                "`terminate_epoch()` before the first batch of two epochs in a row, "
                "`max_iters` run",
                "GET_BATCH_STARTED handler, first fetch of epochs 2 and 3: "
                "engine.terminate_epoch(); run([0, 1, 2], max_iters=6)",
                terminate_epoch_before_first_batch(2, 3),
                ignite_differs="side effect of the H1/H3 fix: an epoch cut by "
                "terminate_epoch() before its first batch counts as an epoch without an "
                "iteration, so ember ends the run at iteration 3; ignite goes on with epoch 4 "
                "and reaches max_iters",
            ),
        ],
    ),
]


# ----------------------------------------------------------------------------- running
def run_case(case: Case, flavour: Flavour) -> tuple[list[Row], list[Any]]:
    api = Api(flavour)
    case.program(api)
    return api.engine.trace, api.engine.batches


def without_exception_raised(trace: list[Row]) -> list[Row]:
    return [row for row in trace if row[0] != "EXCEPTION_RAISED"]


@dataclass
class Outcome:
    case: Case
    trace: list[Row]
    batches: list[Any]
    loops_agree: bool
    disagreements: list[str]
    ignite_trace: list[Row] | None
    ignite_batches: list[Any] | None

    @property
    def ignite_same(self) -> bool:
        return self.ignite_trace == self.trace and self.ignite_batches == self.batches


def run_all() -> tuple[list[tuple[str, list[Outcome]]], list[str]]:
    available = flavours()
    results: list[tuple[str, list[Outcome]]] = []
    problems: list[str] = []
    for group, cases in GROUPS:
        outcomes = []
        for case in cases:
            runs = {label: run_case(case, flavour) for label, flavour in available.items()}
            trace, batches = runs["cpp"]
            disagreements = []
            for label, (other_trace, other_batches) in runs.items():
                if label == "ignite":
                    continue
                if label.endswith("handlers"):
                    same = other_trace == without_exception_raised(trace)
                else:
                    same = other_trace == trace
                if not same or other_batches != batches:
                    disagreements.append(label)
            ignite_trace, ignite_batches = runs.get("ignite", (None, None))
            outcome = Outcome(
                case,
                trace,
                batches,
                not disagreements,
                disagreements,
                ignite_trace,
                ignite_batches,
            )
            if disagreements:
                problems.append(f"{case.title}: loops disagree ({', '.join(disagreements)})")
            if ignite_trace is not None and not outcome.ignite_same and not case.ignite_differs:
                problems.append(f"{case.title}: ignite differs and no documented fix explains it")
            if ignite_trace is not None and outcome.ignite_same and case.ignite_differs:
                problems.append(f"{case.title}: the documented difference from ignite is gone")
            outcomes.append(outcome)
        results.append((group, outcomes))
    return results, problems


# ----------------------------------------------------------------------------- rendering
SAME = ("″", "″", "″")  # ignite's row equals ember's


def cells(row: Row | None) -> list[str]:
    return ["", "", ""] if row is None else [row[0], str(row[1]), str(row[2])]


def aligned(outcome: Outcome) -> list[tuple[Row | None, Row | None]]:
    """ember's rows paired with ignite's: SAME where they match, None where one side has none."""
    assert outcome.ignite_trace is not None
    matcher = difflib.SequenceMatcher(a=outcome.trace, b=outcome.ignite_trace, autojunk=False)
    pairs: list[tuple[Row | None, Row | None]] = []
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        left, right = outcome.trace[a0:a1], outcome.ignite_trace[b0:b1]
        if tag == "equal":
            pairs.extend((row, SAME) for row in left)
            continue
        pairs.extend(
            (
                left[index] if index < len(left) else None,
                right[index] if index < len(right) else ("_(nothing)_", "", ""),
            )
            for index in range(max(len(left), len(right)))
        )
    return pairs


def render_table(outcome: Outcome) -> list[str]:
    if outcome.ignite_trace is None or outcome.ignite_trace == outcome.trace:
        header = ["| # | event | epoch | iteration |", "|--:|---|--:|--:|"]
        pairs: list[tuple[Row | None, Row | None]] = [(row, None) for row in outcome.trace]
    else:
        header = [
            "| # | event | epoch | iteration | ignite 0.5.5 | epoch | iteration |",
            "|--:|---|--:|--:|---|--:|--:|",
        ]
        pairs = aligned(outcome)
    lines, count = list(header), 0
    for left, right in pairs:
        number = ""
        if left is not None and not left[0].startswith("_"):
            count += 1
            number = str(count)
        row = [number, *cells(left)]
        if len(header[0].split("|")) > 6:
            row += cells(right)
        lines.append("| " + " | ".join(row) + " |")
    return lines


def render(results: list[tuple[str, list[Outcome]]], problems: list[str]) -> str:
    all_outcomes = [outcome for _, outcomes in results for outcome in outcomes]
    compared = all(outcome.ignite_trace is not None for outcome in all_outcomes)
    out = [
        BEGIN,
        "",
        f"Generated by `python docs/generate_event_order.py` with ember {ember.__version__}"
        + (f" and pytorch-ignite {ignite.__version__}." if compared else "."),
        "",
    ]
    agree = sum(outcome.loops_agree for outcome in all_outcomes)
    if agree == len(all_outcomes):
        out.append(
            f'**Loops:** for all {len(all_outcomes)} programs the compiled loop (`backend="cpp"`) '
            'and the Python loop (`backend="python"`) give identical traces and feed the process '
            "function the same batches, recorded both through the `_fire_event` override and "
            "through handlers on a plain `Engine` (which keeps the compiled loop on its native "
            "dispatcher; EXCEPTION_RAISED is left out of that recording, since a handler there "
            "changes exception routing)."
        )
    else:
        out.append(f"**Loops: the traces differ for {len(all_outcomes) - agree} programs:**")
        out.extend(f"- {problem}" for problem in problems if "loops disagree" in problem)
    out.append("")
    if compared:
        same = sum(outcome.ignite_same for outcome in all_outcomes)
        out.append(
            f"**ignite:** `ignite.engine.Engine` {ignite.__version__} gives the same trace for "
            f"{same} of {len(all_outcomes)} programs; the others are marked below, each with the "
            "reason."
        )
        unexplained = [p for p in problems if "ignite differs" in p]
        if unexplained:
            out.append("")
            out.append("**Unexplained differences from ignite:**")
            out.extend(f"- {problem}" for problem in unexplained)
    else:
        out.append(
            f"**ignite:** pytorch-ignite {IGNITE_VERSION} was not installed, so no comparison."
        )
    out += [
        "",
        (
            "Rows are `(event, state.epoch, state.iteration)` at the moment the event fires. "
            "Rows in italics are not events: what `run()` did, and warnings."
        ),
    ]
    for group, outcomes in results:
        out += ["", f"### {group}"]
        for outcome in outcomes:
            out += ["", f"#### {outcome.case.title}", "", f"`{outcome.case.code}`", ""]
            out += render_table(outcome)
            out += ["", f"Batches passed to the process function: `{outcome.batches}`."]
            if outcome.ignite_trace is not None:
                if outcome.ignite_same:
                    verdict = "ignite 0.5.5: identical."
                    if outcome.case.ignite_differs:
                        verdict += (
                            " (The expected difference, "
                            f'"{outcome.case.ignite_differs}", no longer shows.)'
                        )
                else:
                    reason = outcome.case.ignite_differs or "**no documented fix explains this**"
                    verdict = f"ignite 0.5.5 differs ({reason})."
                    if outcome.ignite_batches != outcome.batches:
                        verdict += f" ignite's batches: `{outcome.ignite_batches}`."
                out += ["", verdict]
    out += ["", END]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the page is out of date")
    options = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the engines log the exceptions the programs provoke

    results, problems = run_all()
    generated = render(results, problems)
    page = PAGE.read_text()
    start, stop = page.find(BEGIN), page.find(END)
    if start < 0 or stop < 0:
        print(f"{PAGE}: markers not found", file=sys.stderr)
        return 1
    updated = page[:start] + generated + page[stop + len(END) :]
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if options.check:
        if updated != page:
            print(
                f"{PAGE} is out of date: run python docs/generate_event_order.py", file=sys.stderr
            )
            return 1
        return 1 if problems else 0
    PAGE.write_text(updated)
    print(f"wrote {PAGE}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
