"""Loop-overhead benchmark for ember's Engine.

Times the per-iteration cost of driving a step through ember's compiled loop (backend="cpp"),
its pure-Python reference loop (backend="python") and pytorch-ignite, next to plain Python
loops that set the floor, plus one real (tiny) training step. Writes benchmark.md,
benchmark.json and benchmark.png into --out-dir (default docs/).

    python benchmarks/loop_overhead.py [--quick] [--callgrind] [--out-dir DIR]

It only reports: the target checks print PASS/FAIL, the exit status is 0 either way.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import inspect
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import ember
from ember.engine import Engine as EmberEngine
from ember.engine import Events as EmberEvents
from ember.handlers import ProgressBar as EmberProgressBar

try:
    import ignite
    from ignite.engine import Engine as IgniteEngine
    from ignite.engine import Events as IgniteEvents
    from ignite.handlers import ProgressBar as IgniteProgressBar
except ImportError:
    ignite = None

REPO_ROOT = Path(__file__).resolve().parent.parent
LONG_EPOCH = 1000
SHORT_EPOCH = 10
TRAIN_BATCHES = 100
TRAIN_BATCH_SIZE = 4

PLAIN = "plain"
EMBER_CPP = "ember-cpp"
EMBER_PYTHON = "ember-python"
IGNITE = "ignite"
IMPLS = (PLAIN, EMBER_CPP, EMBER_PYTHON, IGNITE)

SCENARIO_DESCRIPTIONS = {
    "floor_for": "bare `for batch in data: step(None, batch)`, no-op step",
    "floor_while": "hand-written while loop: counter, `next()`, restart on StopIteration, step call",
    "direct_call": "`handler(engine)` called directly in a `for` loop (one no-op handler call)",
    "engine_no_handler": "`Engine(step).run(data)`, data = list of 1000 ints",
    "engine_1_handler": "+ 1 no-op handler on ITERATION_COMPLETED",
    "engine_10_handlers": "+ 10 no-op handlers on ITERATION_COMPLETED",
    "engine_every_100": "+ 1 no-op handler on `ITERATION_COMPLETED(every=100)`",
    "engine_custom_filter": "+ 1 no-op handler with `event_filter=lambda e, ev: ev % 100 == 0`",
    "short_epochs": "no handler, `epoch_length=10` (data = list of 10), many epochs",
    "unknown_length": "no handler, data without `__len__` (1000 items), restarted each epoch",
    "progress_bar": "each engine with its own `ProgressBar` (ember's for ember, ignite's for "
    "ignite), tqdm writing to os.devnull",
    "progress_bar_ember": "every engine with ember's `ProgressBar` (the same bar: compares loops)",
    "progress_bar_ignite": "every engine with ignite's `ProgressBar` (the same bar: compares loops)",
    "train_step": "Linear(10, 1), batch of 4, SGD + MSE, backward, step, `loss.item()`",
}
SCENARIOS = tuple(SCENARIO_DESCRIPTIONS)

NOTES = [
    (
        "progress_bar compares what users run (each engine with its own bar); "
        "progress_bar_ember and progress_bar_ignite put the same bar on every engine, so they "
        "compare the loops under a bar. Both bars attach to both engines."
    ),
]


# ----------------------------------------------------------------------------- workloads
def noop_step(engine: Any, batch: Any) -> None:
    return None


def noop_handler(engine: Any) -> None:
    return None


class UnsizedIterable:
    """Iterable without ``__len__``: the engine cannot know the epoch length up front."""

    def __init__(self, items: list[Any]) -> None:
        self._items = items

    def __iter__(self) -> Any:
        return iter(self._items)


def floor_for(data: list[Any], passes: int, step: Callable[[Any, Any], Any] = noop_step) -> None:
    for _ in range(passes):
        for batch in data:
            step(None, batch)


def floor_while(data: list[Any], iterations: int) -> None:
    iterator = iter(data)
    count = 0
    while count < iterations:
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(data)
            batch = next(iterator)
        noop_step(None, batch)
        count += 1


def direct_calls(handler: Callable[[Any], Any], calls: int) -> None:
    for _ in range(calls):
        handler(None)


@dataclass(frozen=True)
class TrainingStep:
    step: Callable[[Any, Any], float]
    batches: list[tuple[torch.Tensor, torch.Tensor]]


def make_training_step() -> TrainingStep:
    torch.manual_seed(0)
    model = torch.nn.Linear(10, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.MSELoss()
    batches = [
        (torch.randn(TRAIN_BATCH_SIZE, 10), torch.randn(TRAIN_BATCH_SIZE, 1))
        for _ in range(TRAIN_BATCHES)
    ]

    def train_step(engine: Any, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        x, y = batch
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return TrainingStep(train_step, batches)


@functools.cache
def devnull_stream() -> Any:
    return Path(os.devnull).open("w")


# ----------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One (scenario, implementation) cell; ``prepare(units)`` builds an untimed runner."""

    scenario: str
    impl: str
    iterations_per_unit: int
    prepare: Callable[[int], Callable[[], Any]]


@dataclass(frozen=True)
class EngineImpl:
    name: str
    make_engine: Callable[[Callable[..., Any]], Any]
    events: Any


@dataclass(frozen=True)
class EngineScenario:
    name: str
    data: Any
    iterations_per_epoch: int
    attach: Callable[[Any, Any], None] = lambda engine, events: None
    epoch_length: int | None = None
    step: Callable[[Any, Any], Any] = noop_step
    impls: tuple[str, ...] = (EMBER_CPP, EMBER_PYTHON, IGNITE)


def attach_handlers(count: int) -> Callable[[Any, Any], None]:
    def attach(engine: Any, events: Any) -> None:
        for _ in range(count):
            engine.add_event_handler(events.ITERATION_COMPLETED, lambda engine: None)

    return attach


def attach_every_100(engine: Any, events: Any) -> None:
    engine.add_event_handler(events.ITERATION_COMPLETED(every=100), lambda engine: None)


def attach_custom_filter(engine: Any, events: Any) -> None:
    def every_100th(engine: Any, event: int) -> bool:
        return event % 100 == 0

    engine.add_event_handler(
        events.ITERATION_COMPLETED(event_filter=every_100th), lambda engine: None
    )


def attach_progress_bar(engine: Any, events: Any) -> None:
    """Each engine's own bar: ember's on ember's engines, ignite's on ignite's."""
    own = EmberProgressBar if isinstance(engine, EmberEngine) else IgniteProgressBar
    own(file=devnull_stream()).attach(engine)


def attach_bar(bar: type) -> Callable[[Any, Any], None]:
    """The same bar on every engine."""

    def attach(engine: Any, events: Any) -> None:
        bar(file=devnull_stream()).attach(engine)

    return attach


def engine_impls() -> list[EngineImpl]:
    impls = [
        EngineImpl(EMBER_CPP, lambda fn: EmberEngine(fn, backend="cpp"), EmberEvents),
        EngineImpl(EMBER_PYTHON, lambda fn: EmberEngine(fn, backend="python"), EmberEvents),
    ]
    if ignite is not None:
        impls.append(EngineImpl(IGNITE, IgniteEngine, IgniteEvents))
    return impls


def engine_scenarios(train: TrainingStep) -> list[EngineScenario]:
    long_data = list(range(LONG_EPOCH))
    return [
        EngineScenario("engine_no_handler", long_data, LONG_EPOCH),
        EngineScenario("engine_1_handler", long_data, LONG_EPOCH, attach_handlers(1)),
        EngineScenario("engine_10_handlers", long_data, LONG_EPOCH, attach_handlers(10)),
        EngineScenario("engine_every_100", long_data, LONG_EPOCH, attach_every_100),
        EngineScenario("engine_custom_filter", long_data, LONG_EPOCH, attach_custom_filter),
        EngineScenario(
            "short_epochs", list(range(SHORT_EPOCH)), SHORT_EPOCH, epoch_length=SHORT_EPOCH
        ),
        EngineScenario("unknown_length", UnsizedIterable(long_data), LONG_EPOCH),
        EngineScenario("progress_bar", long_data, LONG_EPOCH, attach_progress_bar),
        EngineScenario("progress_bar_ember", long_data, LONG_EPOCH, attach_bar(EmberProgressBar)),
        *(
            [
                EngineScenario(
                    "progress_bar_ignite", long_data, LONG_EPOCH, attach_bar(IgniteProgressBar)
                )
            ]
            if ignite is not None
            else []
        ),
        EngineScenario("train_step", train.batches, TRAIN_BATCHES, step=train.step),
    ]


def engine_case(scenario: EngineScenario, impl: EngineImpl) -> Case:
    def prepare(epochs: int) -> Callable[[], Any]:
        engine = impl.make_engine(scenario.step)
        scenario.attach(engine, impl.events)
        run_kwargs: dict[str, Any] = {"max_epochs": epochs}
        if scenario.epoch_length is not None:
            run_kwargs["epoch_length"] = scenario.epoch_length
        return lambda: engine.run(scenario.data, **run_kwargs)

    return Case(scenario.name, impl.name, scenario.iterations_per_epoch, prepare)


def plain_cases(train: TrainingStep) -> list[Case]:
    data = list(range(LONG_EPOCH))
    return [
        Case("floor_for", PLAIN, LONG_EPOCH, lambda units: lambda: floor_for(data, units)),
        Case(
            "floor_while",
            PLAIN,
            LONG_EPOCH,
            lambda units: lambda: floor_while(data, units * LONG_EPOCH),
        ),
        Case(
            "direct_call",
            PLAIN,
            LONG_EPOCH,
            lambda units: lambda: direct_calls(noop_handler, units * LONG_EPOCH),
        ),
        Case(
            "train_step",
            PLAIN,
            TRAIN_BATCHES,
            lambda units: lambda: floor_for(train.batches, units, train.step),
        ),
    ]


def build_cases() -> list[Case]:
    """All cases, ordered scenario first, then implementation."""
    train = make_training_step()
    cases = plain_cases(train)
    for scenario in engine_scenarios(train):
        cases += [
            engine_case(scenario, impl) for impl in engine_impls() if impl.name in scenario.impls
        ]
    return sorted(cases, key=lambda c: (SCENARIOS.index(c.scenario), IMPLS.index(c.impl)))


# ----------------------------------------------------------------------------- timing
def timed_run_seconds(case: Case, units: int) -> float:
    runner = case.prepare(units)
    gc.collect()
    start = time.perf_counter_ns()
    runner()
    return (time.perf_counter_ns() - start) / 1e9


# CPython 3.11 reaches its steady speed on a function that loops long only after several calls
# (the plain while loop runs at ~100 ns/iteration for its first 7 calls, ~60 after), so every
# case runs this many short times before it is calibrated and timed.
WARM_UP_CALLS = 12


def calibrate_units(case: Case, min_seconds: float) -> int:
    for _ in range(WARM_UP_CALLS):
        case.prepare(1)()
    units = 1
    while True:
        seconds = timed_run_seconds(case, units)
        if seconds >= min_seconds:
            return units
        # Aim 20% past the target so that a later, luckier repeat still lasts min_seconds.
        units = max(units + 1, math.ceil(units * 1.2 * min_seconds / max(seconds, 1e-6)))


def measure_all(cases: list[Case], repeats: int, min_seconds: float) -> dict[str, dict[str, Any]]:
    """ns/iteration per scenario and implementation, interleaved across repeats."""
    # torch and ignite leave ~250k tracked objects: freezing them keeps each gc.collect()
    # cheap instead of ~0.1 s.
    gc.collect()
    gc.freeze()
    units = {id(case): calibrate_units(case, min_seconds) for case in cases}
    samples: dict[int, list[float]] = {id(case): [] for case in cases}
    for repeat in range(repeats):
        print(f"  repeat {repeat + 1}/{repeats}", file=sys.stderr, flush=True)
        for case in cases:
            iterations = units[id(case)] * case.iterations_per_unit
            samples[id(case)].append(timed_run_seconds(case, units[id(case)]) * 1e9 / iterations)
    results: dict[str, dict[str, Any]] = {}
    for case in cases:
        values = samples[id(case)]
        results.setdefault(case.scenario, {})[case.impl] = {
            "min_ns": min(values),
            "median_ns": statistics.median(values),
            "samples_ns": values,
            "iterations_per_sample": units[id(case)] * case.iterations_per_unit,
        }
    return results


# ----------------------------------------------------------------------------- import time
IMPORT_PROBE = (
    "import sys, time; start = time.perf_counter(); import ember.engine; "
    "print(time.perf_counter() - start, 'torch' in sys.modules)"
)


def measure_import(runs: int = 5) -> dict[str, Any]:
    seconds, torch_loaded = [], False
    for _ in range(runs):
        output = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True
        ).stdout.split()
        seconds.append(float(output[0]))
        torch_loaded |= output[1] == "True"
    return {
        "min_ms": min(seconds) * 1e3,
        "median_ms": statistics.median(seconds) * 1e3,
        "runs": runs,
        "imports_torch": torch_loaded,
    }


# ----------------------------------------------------------------------------- callgrind
CALLGRIND_MAIN = """
import sys
from ember.engine import Engine

mode, iterations = sys.argv[1], int(sys.argv[2])
data = list(range(1000))
if mode == "engine_cpp":
    Engine(noop_step, backend="cpp").run(data, max_epochs=iterations // 1000)
else:
    floor_while(data, iterations)
"""


def callgrind_probe() -> str:
    """The script run under valgrind. It carries this module's ``noop_step`` and ``floor_while``
    by their source rather than importing this module, which would import torch and ignite."""
    parts = [
        "from __future__ import annotations",
        inspect.getsource(noop_step),
        inspect.getsource(floor_while),
        CALLGRIND_MAIN,
    ]
    return "\n\n".join(part.strip() for part in parts) + "\n"


CALLGRIND_ITERATIONS = (20_000, 40_000)


def callgrind_total_instructions(mode: str, iterations: int, workdir: Path) -> int:
    probe = workdir / "probe.py"
    probe.write_text(callgrind_probe())
    out_file = workdir / f"callgrind.{mode}.{iterations}.out"
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out_file}",
            sys.executable,
            str(probe),
            mode,
            str(iterations),
        ],
        capture_output=True,
        check=True,
    )
    return parse_callgrind_events(out_file.read_text())["Ir"]


def count_reduce_events(
    out_file: Path,
    script: str,
    *args: str,
    last_level: tuple[int, int, int] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, int]:
    """Callgrind's event totals (``Ir``: instructions) of what ``python script args...`` runs
    inside ``functools.reduce`` (the one call such a script makes around what it wants
    counted). With ``last_level`` (size in bytes, ways, line size) the caches are simulated too,
    the last level of that geometry, the addresses fixed with ``setarch -R`` where it exists so
    that two runs' misses compare."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--collect-atstart=no",
        "--toggle-collect=functools_reduce",
        f"--callgrind-out-file={out_file}",
        sys.executable,
        script,
        *args,
    ]
    if last_level is not None:
        command[2:2] = ["--cache-sim=yes", "--LL={},{},{}".format(*last_level)]
        if shutil.which("setarch"):
            command = ["setarch", "-R", *command]
    subprocess.run(command, check=True, capture_output=True, env=env)
    return parse_callgrind_events(out_file.read_text())


def count_reduce_instructions(out_file: Path, script: str, *args: str) -> int:
    """Instructions that ``python script args...`` runs inside ``functools.reduce``."""
    return count_reduce_events(out_file, script, *args)["Ir"]


def parse_callgrind_events(text: str) -> dict[str, int]:
    """The event totals of a callgrind output file, by event name."""
    names: list[str] = []
    for line in text.splitlines():
        if line.startswith("events:"):
            names = line.split()[1:]
        elif line.startswith(("summary:", "totals:")):
            return dict(zip(names, map(int, line.split()[1:]), strict=True))
    raise ValueError("no summary:/totals: line in callgrind output")


def measure_callgrind() -> dict[str, Any]:
    """Instructions per iteration: the difference of two run lengths cancels start-up and import."""
    small, large = CALLGRIND_ITERATIONS
    per_iteration = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("engine_cpp", "floor_while"):
            totals = [callgrind_total_instructions(mode, n, Path(tmp)) for n in (small, large)]
            per_iteration[mode] = (totals[1] - totals[0]) / (large - small)
    return {
        "iterations": list(CALLGRIND_ITERATIONS),
        "ir_per_iteration_engine_no_handler_cpp": per_iteration["engine_cpp"],
        "ir_per_iteration_floor_while": per_iteration["floor_while"],
    }


# ----------------------------------------------------------------------------- targets
@dataclass
class Target:
    description: str
    value: str
    passed: bool | None  # None: skipped, a figure it needs is missing

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]


def statistic(
    results: dict[str, dict[str, Any]], scenario: str, impl: str, key: str
) -> float | None:
    return results.get(scenario, {}).get(impl, {}).get(key)


def median(results: dict[str, dict[str, Any]], scenario: str, impl: str) -> float | None:
    return statistic(results, scenario, impl, "median_ns")


def ratio_target(
    description: str, numerator: float | None, denominator: float | None, limit: float
) -> Target:
    if numerator is None or denominator is None:
        return Target(description, "n/a", None)
    ratio = numerator / denominator
    return Target(
        description, f"{ratio:.2f}x ({numerator:,.1f} / {denominator:,.1f} ns)", ratio <= limit
    )


def evaluate_targets(
    results: dict[str, dict[str, Any]], import_time: dict[str, Any], key: str = "median_ns"
) -> list[Target]:
    """The target checks on one statistic of the samples: ``median_ns`` or ``min_ns``."""

    def stat(scenario: str, impl: str) -> float | None:
        return statistic(results, scenario, impl, key)

    floor = stat("floor_while", PLAIN)
    cpp = stat("engine_no_handler", EMBER_CPP)
    python = stat("engine_no_handler", EMBER_PYTHON)
    ignite_no_handler = stat("engine_no_handler", IGNITE)
    cpp_10 = stat("engine_10_handlers", EMBER_CPP)
    direct = stat("direct_call", PLAIN)
    return [
        ratio_target("compiled no-handler <= 2.0x floor_while", cpp, floor, 2.0),
        overhead_ratio_target(cpp, ignite_no_handler, floor),
        ratio_target(
            "compiled per extra no-op handler <= 1.5x direct_call", (cpp_10 - cpp) / 10, direct, 1.5
        ),
        ratio_target(
            "compiled every_100 <= 1.05x compiled no-handler",
            stat("engine_every_100", EMBER_CPP),
            cpp,
            1.05,
        ),
        ratio_target(
            "compiled short_epochs <= 1.25x compiled no-handler",
            stat("short_epochs", EMBER_CPP),
            cpp,
            1.25,
        ),
        ratio_target(
            "compiled unknown_length <= 1.25x compiled no-handler",
            stat("unknown_length", EMBER_CPP),
            cpp,
            1.25,
        ),
        python_overhead_target(python, ignite_no_handler, floor),
        difference_target(
            "compiled + ember ProgressBar adds < 1000 ns/iteration",
            stat("progress_bar", EMBER_CPP),
            cpp,
            1000.0,
        ),
        Target(
            "import ember.engine < 30 ms",
            f"{import_time['min_ms']:.1f} ms (min of {import_time['runs']})",
            import_time["min_ms"] < 30,
        ),
        Target(
            "import ember.engine does not import torch",
            f"torch imported: {import_time['imports_torch']}",
            not import_time["imports_torch"],
        ),
    ]


def difference_target(
    description: str, with_it: float | None, without: float | None, limit_ns: float
) -> Target:
    if with_it is None or without is None:
        return Target(description, "n/a", None)
    added = with_it - without
    return Target(
        description, f"{added:,.1f} ns ({with_it:,.1f} - {without:,.1f} ns)", added < limit_ns
    )


def overhead_ratio_target(cpp: float, ignite_no_handler: float | None, floor: float) -> Target:
    description = "ignite overhead / compiled overhead >= 40 (overhead = engine - floor_while)"
    if ignite_no_handler is None:
        return Target(description, "ignite not installed", None)
    ignite_overhead, cpp_overhead = ignite_no_handler - floor, cpp - floor
    if cpp_overhead <= 0:
        return Target(description, f"compiled overhead {cpp_overhead:.1f} ns <= 0", True)
    ratio = ignite_overhead / cpp_overhead
    return Target(
        description, f"{ratio:.1f} ({ignite_overhead:,.1f} / {cpp_overhead:,.1f} ns)", ratio >= 40
    )


def python_overhead_target(python: float, ignite_no_handler: float | None, floor: float) -> Target:
    description = "python-loop overhead <= 1/3 of ignite's overhead"
    if ignite_no_handler is None:
        return Target(description, "ignite not installed", None)
    python_overhead, ignite_overhead = python - floor, ignite_no_handler - floor
    ratio = python_overhead / ignite_overhead
    return Target(
        description,
        f"{ratio:.2f} ({python_overhead:,.1f} / {ignite_overhead:,.1f} ns)",
        ratio <= 1 / 3,
    )


def derived_figures(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per-implementation overheads (medians) that the table only shows implicitly."""
    floor = median(results, "floor_while", PLAIN)
    plain_train = median(results, "train_step", PLAIN)
    figures: dict[str, dict[str, float]] = {}
    for impl in (EMBER_CPP, EMBER_PYTHON, IGNITE):
        no_handler = median(results, "engine_no_handler", impl)
        if no_handler is None:
            continue
        figures[impl] = {
            "loop_overhead_ns": no_handler - floor,
            "per_handler_ns": (median(results, "engine_10_handlers", impl) - no_handler) / 10,
            "train_step_overhead_fraction": (median(results, "train_step", impl) - plain_train)
            / plain_train,
        }
    return figures


# ----------------------------------------------------------------------------- reporting
def machine_info() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "ignite": ignite.__version__ if ignite is not None else None,
        "ember": ember.__version__,
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def format_cell(stats: dict[str, Any] | None) -> str:
    if stats is None:
        return "—"
    return f"{stats['median_ns']:,.0f} ({stats['min_ns']:,.0f})"


def results_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table, padded so that it also reads as plain text."""
    header = ["scenario", *IMPLS]
    rows = [
        [scenario, *(format_cell(results[scenario].get(impl)) for impl in IMPLS)]
        for scenario in SCENARIOS
        if scenario in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [cells[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=False)
        ]
        return "| " + " | ".join(padded) + " |"

    separator = (
        "|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|"
    )
    return "\n".join([line(header), separator, *(line(row) for row in rows)])


BUSY = "the machine was busy: the medians fail where the minimums pass"


def target_lines(targets: list[Target], on_minimums: list[Target]) -> list[str]:
    lines = []
    for target, on_minimum in zip(targets, on_minimums, strict=True):
        line = f"{target.verdict} {target.description}: {target.value}"
        if on_minimum.value != target.value:  # the import checks do not depend on the statistic
            line += f" [on minimums: {on_minimum.verdict} {on_minimum.value}]"
        if target.passed is False and on_minimum.passed is True:
            line += f" ({BUSY})"
        lines.append(line)
    return lines


def derived_lines(figures: dict[str, dict[str, float]]) -> list[str]:
    return [
        f"{impl}: loop overhead {f['loop_overhead_ns']:,.1f} ns/iter over floor_while, "
        f"{f['per_handler_ns']:,.1f} ns per extra no-op handler, train_step "
        f"{f['train_step_overhead_fraction']:+.2%} vs the plain loop"
        for impl, f in figures.items()
    ]


def callgrind_line(callgrind: dict[str, Any] | None) -> str:
    if callgrind is None:
        return "callgrind: not measured (run with --callgrind; needs valgrind on PATH)"
    if "error" in callgrind:
        return f"callgrind: {callgrind['error']}"
    return (
        f"callgrind: {callgrind['ir_per_iteration_engine_no_handler_cpp']:,.0f} instructions "
        f"per iteration for the compiled no-handler engine "
        f"(floor_while: {callgrind['ir_per_iteration_floor_while']:,.0f}), from "
        f"(Ir({callgrind['iterations'][1]}) - Ir({callgrind['iterations'][0]})) / "
        f"{callgrind['iterations'][1] - callgrind['iterations'][0]}"
    )


def render_markdown(report: dict[str, Any], table: str, target_text: list[str]) -> str:
    machine, settings, imp = report["machine"], report["settings"], report["import_ember_engine"]
    command = "python benchmarks/loop_overhead.py" + (" --quick" if settings["quick"] else "")
    command += " --callgrind" if settings["callgrind"] else ""
    kind = "quick smoke run, not representative" if settings["quick"] else "full run"
    scenario_list = "\n".join(f"- `{name}`: {text}" for name, text in SCENARIO_DESCRIPTIONS.items())
    return f"""# Loop-overhead benchmark

Generated by `{command}` ({kind}); every run overwrites this file,
`benchmark.json` and `benchmark.png`.

- Machine: {machine["cpu"]}, {machine["logical_cores"]} logical cores, {machine["platform"]}
- Python {machine["python"]}, torch {machine["torch"]} ({machine["torch_threads"]} thread),
  pytorch-ignite {machine["ignite"] or "not installed"}, ember {machine["ember"]}
  (commit {machine["commit"]})
- Date: {machine["date"]}

## Results

Nanoseconds per iteration, **median (minimum)** over {settings["repeats"]} repeats; each
measurement runs at least {settings["min_seconds"]} s. `plain` is a hand-written Python loop,
`ember-cpp` is `Engine(step, backend="cpp")`, `ember-python` is `backend="python"`, `ignite` is
pytorch-ignite's Engine.

{table}

![ns per iteration, median bars and minimum marks, log scale](benchmark.png)

{chr(10).join("- " + line for line in derived_lines(report["derived"]))}
- import ember.engine: {imp["min_ms"]:.1f} ms (min of {imp["runs"]} fresh interpreters,
  median {imp["median_ms"]:.1f} ms); imports torch: {imp["imports_torch"]}
- {callgrind_line(report["callgrind"])}

## Targets

Verdicts use the medians of this run; the bracket repeats each check on the minimums, the
less disturbed figure when the machine is busy. A FAIL whose minimums pass says so: the machine
was busy while those cases ran, and the medians measured the load as much as the loop.

```
{chr(10).join(target_text)}
```

## How it is measured

All cases run in one process, interleaved: `for repeat: for scenario: for implementation:
measure`, so that a slow phase of a noisy machine hits every implementation alike and ratios
stay meaningful. Each case first runs {WARM_UP_CALLS} short times: CPython's specialising
interpreter speeds up a long-looping function such as `floor_while` by ~40% only after several
calls. The number of iterations of each case is then calibrated once, so that one
measurement lasts at least {settings["min_seconds"]} s; engines and handlers are built outside
the timed region and `gc.collect()` runs before each measurement. The overhead of an engine is
its time minus `floor_while`, the loop an engine has to run anyway. `train_step` compares a plain
`for` loop over 100 prepared batches with each engine running the same step
(`torch.set_num_threads(1)`); its engine overheads are far below the step's own run-to-run
spread, so they are noise-bound. Minimums show the undisturbed cost: where a median sits well
above its minimum, the machine was busy while that case ran.

Scenarios:

{scenario_list}

Notes:

{chr(10).join("- " + note for note in report["notes"])}
"""


def plot(results: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {PLAIN: "#7f7f7f", EMBER_CPP: "#d62728", EMBER_PYTHON: "#ff9f40", IGNITE: "#1f77b4"}
    scenarios = [s for s in SCENARIOS if s in results]
    bar_width = 0.2
    fig, ax = plt.subplots(figsize=(15, 6.5))
    for x, scenario in enumerate(scenarios):
        present = [impl for impl in IMPLS if impl in results[scenario]]
        for slot, impl in enumerate(present):
            offset = (slot - (len(present) - 1) / 2) * bar_width
            stats = results[scenario][impl]
            ax.bar(x + offset, stats["median_ns"], bar_width, color=colors[impl])
            ax.plot(x + offset, stats["min_ns"], marker="_", color="black", markersize=9)
            ax.annotate(
                f"{stats['median_ns']:,.0f}",
                (x + offset, stats["median_ns"]),
                ha="center",
                va="bottom",
                fontsize=6.5,
                rotation=90,
                xytext=(0, 2),
                textcoords="offset points",
            )
    for impl in IMPLS:
        ax.bar(0, 0, color=colors[impl], label=impl)
    ax.plot([], [], marker="_", color="black", linestyle="none", markersize=9, label="minimum")
    ax.set_yscale("log")
    ax.set_ylabel("ns per iteration (median, log scale)")
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels(scenarios, rotation=25, ha="right")
    ax.set_title(title)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(ncol=5, loc="upper left")
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 3 repeats of >= 0.05 s (about 10-20 s in all)",
    )
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="also count instructions per iteration under valgrind",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=REPO_ROOT / "docs",
        help="where benchmark.{md,json,png} go (default: docs/)",
    )
    return parser.parse_args(argv)


def run_callgrind_if_asked(asked: bool) -> dict[str, Any] | None:
    if not asked:
        return None
    if shutil.which("valgrind") is None:
        return {"error": "valgrind not on PATH, skipped"}
    print("counting instructions under callgrind ...", file=sys.stderr, flush=True)
    try:
        return measure_callgrind()
    except (subprocess.CalledProcessError, ValueError) as error:
        return {"error": f"callgrind failed: {error}"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    repeats, min_seconds = (3, 0.05) if args.quick else (7, 0.3)
    notes = list(NOTES)
    if ignite is None:
        notes.append("pytorch-ignite is not importable: its cases were skipped.")

    cases = build_cases()
    print(
        f"measuring {len(cases)} cases, {repeats} repeats of >= {min_seconds} s ...",
        file=sys.stderr,
        flush=True,
    )
    results = measure_all(cases, repeats, min_seconds)
    import_time = measure_import()
    callgrind = run_callgrind_if_asked(args.callgrind)

    targets = evaluate_targets(results, import_time)
    targets_on_minimums = evaluate_targets(results, import_time, "min_ns")
    target_text = target_lines(targets, targets_on_minimums)
    report = {
        "machine": machine_info(),
        "settings": {
            "quick": args.quick,
            "repeats": repeats,
            "min_seconds": min_seconds,
            "callgrind": args.callgrind,
        },
        "results_ns_per_iteration": results,
        "derived": derived_figures(results),
        "import_ember_engine": import_time,
        "callgrind": callgrind,
        "targets": [
            {
                "description": t.description,
                "value": t.value,
                "verdict": t.verdict,
                "value_on_minimums": m.value,
                "verdict_on_minimums": m.verdict,
            }
            for t, m in zip(targets, targets_on_minimums, strict=True)
        ],
        "notes": notes,
    }
    table = results_table(results)

    print("\nns per iteration, median (min):\n" + table + "\n")
    print("\n".join(derived_lines(report["derived"])))
    print(
        f"import ember.engine: {import_time['min_ms']:.1f} ms, "
        f"imports torch: {import_time['imports_torch']}"
    )
    print(callgrind_line(callgrind))
    print("\n" + "\n".join(target_text))
    print("\n" + "\n".join("note: " + note for note in notes))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "benchmark.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out_dir / "benchmark.md").write_text(render_markdown(report, table, target_text))
    plot(
        results,
        args.out_dir / "benchmark.png",
        f"Loop overhead per iteration — {report['machine']['cpu']}, "
        f"Python {report['machine']['python']}",
    )
    print(f"\nwrote benchmark.md, benchmark.json, benchmark.png to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
