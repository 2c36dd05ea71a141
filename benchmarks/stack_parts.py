"""Where ember's training stack spends its extra instructions: each part against its hand-written
equivalent, counted by callgrind.

benchmarks/stack.py times the whole stack against the hand-written loop; on a shared machine its
ratio moves by several percent from run to run. This script counts instructions instead
(``valgrind --tool=callgrind``, repeatable to about 0.1%), for the hand-written loop, ember's
whole stack, and ember's stack with one part replaced by what the hand-written loop does in its
place:

* ``RunningAverage``: a float running average of ``loss.item()``;
* ``TerminateOnNan``: ``math.isfinite`` of that float;
* ``LRScheduler``: ``scheduler.step()`` in a plain handler, after the optimizer's step;
* ``ProgressBar``: none (the hand-written loop has no bar);
* the evaluator and its metrics: the hand-written evaluation;
* ``ModelCheckpoint``: ``torch.save`` and the removal of the previous file (no ``fsync``);
* ``create_supervised_trainer``: an ``Engine`` running the hand-written step.

A part's cost is the whole stack's count minus the count without it. Each count covers two
epochs (200 training iterations, 40 evaluation batches, 2 checkpoints) after a warm-up epoch;
the bar's redraw interval is set beyond the run, since under callgrind a run is ~50x slower and
a bar redrawn by the clock would redraw ~50x more often than in a real run. Kernel time (the
checkpoint's ``fsync``s, file creation) is not counted: stack.py's times include it.

Instructions are not the whole cost: the same count runs slower when its data and code no
longer fit the cache. Where sysfs gives this machine's L2, every run also simulates the cache
(callgrind's ``--cache-sim``), its last level a cache of that L2's geometry, the addresses
fixed with ``setarch -R`` where it exists so that two runs compare. Each part's row then also
gives the L1 and last-level misses it adds, and the page lists the functions where the whole
stack misses the last level more than the hand-written loop (``callgrind_annotate``).

    python benchmarks/stack_parts.py [--jobs N] [--out-dir DIR]

Needs valgrind; about 4 minutes per run with the cache simulated, 12 runs, ``--jobs``
at a time (default: one per core). Writes benchmark-stack-parts.md into --out-dir (default
docs/).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import functools
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from loop_overhead import REPO_ROOT, count_reduce_events, devnull_stream, git_commit
from stack import FULL, HandWrittenStack, make_work
from stack_floor import hand_step

import ember.engine
import ember.handlers
import ember.metrics

EPOCHS = 2
PARTS = {
    "ra": "RunningAverage of the loss",
    "ton": "TerminateOnNan",
    "lrs": "LRScheduler",
    "bar": "ProgressBar",
    "ev": "evaluator with Accuracy and Loss",
    "ckpt": "ModelCheckpoint (sync)",
}
TRAINER = "create_supervised_trainer's step"
AGAIN = "-again"  # the label of a variant's second run


def hand_written_save(work: Any) -> Callable[[Any], None]:
    previous: list[Path] = []

    def save(engine: Any) -> None:
        path = work.checkpoint_dir / f"model_{engine.state.epoch}.pt"
        torch.save({"model": work.model.state_dict()}, path)
        if previous:
            previous.pop().unlink()
        previous.append(path)

    return save


def build_ember(work: Any, replaced: set[str]) -> Callable[[int], None]:
    """ember's stack with the parts in ``replaced`` done the hand-written way; ``train(epochs)``."""
    engine, handlers, metrics = ember.engine, ember.handlers, ember.metrics
    events = engine.Events
    hand = HandWrittenStack(work)
    trainer = engine.create_supervised_trainer(
        work.model, work.optimizer, work.loss_fn, device=work.device
    )
    if "ra" in replaced or "ton" in replaced:

        def read_loss(trainer: Any) -> None:
            value = float(trainer.state.output)
            if "ton" in replaced and not math.isfinite(value):
                trainer.terminate()
            if "ra" in replaced:
                previous = hand.running_loss
                hand.running_loss = value if previous is None else 0.98 * previous + 0.02 * value

        trainer.add_event_handler(events.ITERATION_COMPLETED, read_loss)
    if "ra" not in replaced:
        metrics.RunningAverage(output_transform=lambda loss: loss, device=work.device).attach(
            trainer, "loss"
        )
    if "bar" not in replaced:
        bar = handlers.ProgressBar(file=devnull_stream(), mininterval=1e9)
        bar.attach(trainer, metric_names=None if "ra" in replaced else ["loss"])
    if "ton" not in replaced:
        trainer.add_event_handler(events.ITERATION_COMPLETED, handlers.TerminateOnNan())
    if "lrs" in replaced:
        trainer.add_event_handler(events.ITERATION_COMPLETED, lambda _: work.scheduler.step())
    else:
        trainer.add_event_handler(events.ITERATION_STARTED, handlers.LRScheduler(work.scheduler))
    if "ev" in replaced:
        trainer.add_event_handler(events.EPOCH_COMPLETED, lambda _: hand.evaluate())
    else:
        evaluator = engine.create_supervised_evaluator(
            work.model,
            metrics={
                "accuracy": metrics.Accuracy(device=work.device),
                "loss": metrics.Loss(work.loss_fn, device=work.device),
            },
            device=work.device,
        )
        trainer.add_event_handler(events.EPOCH_COMPLETED, lambda _: evaluator.run(work.eval_data))
    if "ckpt" in replaced:
        trainer.add_event_handler(events.EPOCH_COMPLETED, hand_written_save(work))
    else:
        checkpoint = handlers.ModelCheckpoint(
            str(work.checkpoint_dir), "stack", n_saved=1, require_empty=False
        )
        trainer.add_event_handler(events.EPOCH_COMPLETED, checkpoint, {"model": work.model})
    epochs_done = SimpleNamespace(count=0)

    def train(epochs: int) -> None:
        epochs_done.count += epochs
        trainer.run(work.train_data, max_epochs=epochs_done.count)

    return train


def build_engine_with_hand_written_step(work: Any) -> Callable[[int], None]:
    """The hand-written loop's work on an ember ``Engine``: what the trainer factory adds."""
    hand = HandWrittenStack(work)
    model, step = work.model, hand_step(work)

    trainer = ember.engine.Engine(step)
    events = ember.engine.Events
    trainer.add_event_handler(events.EPOCH_STARTED, lambda _: model.train())  # as the loop does
    trainer.add_event_handler(events.EPOCH_COMPLETED, lambda _: hand.evaluate())
    trainer.add_event_handler(events.EPOCH_COMPLETED, hand_written_save(work))
    epochs_done = SimpleNamespace(count=0)

    def train(epochs: int) -> None:
        epochs_done.count += epochs
        trainer.run(work.train_data, max_epochs=epochs_done.count)

    return train


def run_variant(variant: str) -> None:
    """Build ``variant``, train one epoch, then ``EPOCHS`` epochs inside ``functools.reduce``: the
    one call callgrind is told to count (``--toggle-collect=functools_reduce``)."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as directory:
        work = make_work(FULL, torch.device("cpu"), Path(directory))
        if variant == "hand":
            train = HandWrittenStack(work).train
        elif variant == "engine":
            train = build_engine_with_hand_written_step(work)
        else:
            train = build_ember(work, {part for part in variant.split("-")[1:] if part})
        train(1)
        functools.reduce(lambda _, __: train(EPOCHS), [None, None])


def l2_cache() -> tuple[int, int, int] | None:
    """This machine's L2 cache as (size in bytes, ways, line size), from Linux's sysfs."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() != "2":
                continue
            size = (index / "size").read_text().strip()
            multiplier = {"K": 1 << 10, "M": 1 << 20}.get(size[-1], 1)
            return (
                int(size.rstrip("KM")) * multiplier,
                int((index / "ways_of_associativity").read_text()),
                int((index / "coherency_line_size").read_text()),
            )
        except (OSError, ValueError):
            return None
    return None


def count_events(
    variant: str, workdir: Path, l2: tuple[int, int, int] | None, label: str | None = None
) -> dict[str, int]:
    """Callgrind's event totals of ``variant``'s counted epochs: ``Ir`` (instructions), and with
    ``l2`` the simulated caches' misses, the last level a cache of ``l2``'s geometry. ``label``
    names the output (default: the variant); a label ending in ``AGAIN`` runs the variant with
    another string hash seed."""
    label = label or variant
    # A fixed string hash: dicts and sets of str lay out alike in every run of a variant, which
    # then repeats exactly; the second run of a variant takes another seed, another layout.
    seed = "1" if label.endswith(AGAIN) else "0"
    return count_reduce_events(
        workdir / f"{label}.callgrind",
        __file__,
        "--variant",
        variant,
        last_level=l2,
        env={**os.environ, "PYTHONHASHSEED": seed},
    )


# Callgrind's miss events of the simulated caches: the L1s' and the last level's (code, data
# read, data write).
FIRST_LEVEL = ("I1mr", "D1mr", "D1mw")
LAST_LEVEL = ("ILmr", "DLmr", "DLmw")


def simulated_misses(events: dict[str, int], level: tuple[str, ...]) -> int | None:
    """The misses of one ``level`` of the simulated caches, code and data (None: the caches
    were not simulated)."""
    if level[0] not in events:
        return None
    return sum(events[name] for name in level)


# A function's row in callgrind_annotate's listing of three events: each count "12,345 (1.2%)",
# "0" or ".", then "file:function [library]".
_ANNOTATED_ROW = re.compile(
    r"^\s*(?P<counts>(?:(?:[\d,]+(?: \(\s*[\d.]+%\))?|\.)\s+){3})(?P<where>\S.*)$"
)
_COUNT = re.compile(r"[\d,]+(?= \()")  # a count that is not 0 or "."


def function_label(where: str) -> str:
    """A short name for callgrind_annotate's ``file:function [library]``: a torch CPU kernel's
    loop by the kernel's name, other C++ functions without their arguments."""
    location, _, library = where.partition(" [")
    function = location.split(":", 1)[1] if ":" in location else location
    library_name = Path(library.rstrip("]")).name
    kernel = re.search(r"::(\w+_kernel\w*)\(", function)
    if "callback_fn<" in function and kernel:
        return f"`{kernel.group(1)}` (a torch CPU kernel's loop, {library_name})"
    function = function.removeprefix("void ").split("(", 1)[0]
    return f"`{function[:70]}` ({library_name})"


def misses_by_function(callgrind_out: Path) -> dict[str, int]:
    """The simulated last level's misses (code and data) of each function in a callgrind output
    file, as callgrind_annotate lists them (self cost, every function)."""
    listing = subprocess.run(
        [
            "callgrind_annotate",
            "--inclusive=no",
            f"--show={','.join(LAST_LEVEL)}",
            "--threshold=100",
            str(callgrind_out),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return misses_in_listing(listing)


def misses_in_listing(listing: str) -> dict[str, int]:
    """The sum of the three counts of each function's row in a callgrind_annotate listing, by
    ``function_label`` (functions of the same label add up)."""
    misses: dict[str, int] = {}
    for line in listing.splitlines():
        row = _ANNOTATED_ROW.match(line)
        if row is None or row["where"] == "PROGRAM TOTALS":
            continue
        counted = sum(int(number.replace(",", "")) for number in _COUNT.findall(row["counts"]))
        label = function_label(row["where"])
        misses[label] = misses.get(label, 0) + counted
    return misses


def spread(
    again: dict[str, int] | None,
    ember_again: dict[str, int] | None,
    misses: int,
    instructions: int,
) -> str:
    """What second runs (another hash seed) of the hand-written loop and of ember's whole stack
    counted: the hand-written loop's against its first run, ember's against it."""
    again_misses = None if again is None else simulated_misses(again, LAST_LEVEL)
    if again is None or again_misses is None:
        return ""
    ember_again_misses = None if ember_again is None else simulated_misses(ember_again, LAST_LEVEL)
    ember_line = (
        ""
        if ember_again_misses is None
        else f"""
With seed 1, ember's whole stack missed {ember_again_misses:,} times:
**{ember_again_misses / again_misses:.3f}x** the hand-written loop's count with that seed."""
    )
    iterations = EPOCHS * FULL.train_batches
    missed = abs(again_misses - misses)
    return f"""

Every variant runs with Python's string hash seed fixed (`PYTHONHASHSEED=0`): a variant then
repeats its counts exactly. The seed changes how dicts and sets lay out in memory, hence the
misses: the hand-written loop run with seed 1 differs by {abs(again["Ir"] - instructions):,}
instructions and by {missed:,} misses ({100 * missed / misses:.1f}%, {missed / iterations:,.0f}
per training iteration; it missed {again_misses:,} times). A part's extra misses smaller than
that are within what a different layout of the same work changes.{ember_line}"""


def extra_misses_table(
    hand: dict[str, int], ember: dict[str, int], iterations: int, rows: int = 8
) -> str:
    """The functions where ember's stack misses the last level most beyond the hand-written
    loop (``misses_by_function`` of each), per training iteration, as a Markdown table."""
    extra = sorted(
        ((ember.get(name, 0) - hand.get(name, 0), name) for name in hand.keys() | ember.keys()),
        reverse=True,
    )
    lines = ["| function | extra L2 misses per training iteration |", "|---|---:|"]
    lines += [f"| {name} | {count / iterations:,.0f} |" for count, name in extra[:rows]]
    rest = sum(count for count, _ in extra[rows:])
    lines.append(f"| every other function | {rest / iterations:,.0f} |")
    return "\n".join(lines)


def where_missed(by_function: dict[str, dict[str, int]] | None, iterations: int) -> str:
    """The paragraph on the functions that miss the L2 more in ember's stack (empty without the
    per-function counts)."""
    if by_function is None:
        return ""
    return f"""
Where ember's whole stack misses the L2 more than the hand-written loop, by function (self
cost; ember's misses minus the hand-written loop's), the largest rows:

{extra_misses_table(by_function["hand"], by_function["ember"], iterations)}

A row in torch's kernels or in the matrix library is the same work in both loops (the same
instructions) on tensors that have left the cache, or that the allocator placed elsewhere: a cost
of the memory ember's stack uses besides the step's, not of code of ember's. Which functions
miss, and how often, depends on where the heap places each tensor, as the second seed shows.
"""


def markdown(
    events: dict[str, dict[str, int]],
    commit: str,
    l2: tuple[int, int, int] | None,
    by_function: dict[str, dict[str, int]] | None = None,
) -> str:
    iterations = EPOCHS * FULL.train_batches
    again = events.pop("hand" + AGAIN, None)
    ember_again = events.pop("ember" + AGAIN, None)
    counts = {variant: counted["Ir"] for variant, counted in events.items()}
    misses = {variant: simulated_misses(counted, LAST_LEVEL) for variant, counted in events.items()}
    first_misses = {
        variant: simulated_misses(counted, FIRST_LEVEL) for variant, counted in events.items()
    }
    hand, whole = counts["hand"], counts["ember"]
    all_replaced = "ember-" + "-".join(PARTS)

    def row(label: str, variant: str, baseline: str) -> str:
        extra = counts[variant] - counts[baseline]
        cells = [label, f"{extra / iterations / 1e3:,.1f}k", f"{100 * extra / hand:.2f}%"]
        for level in (first_misses, misses):
            variant_misses, baseline_misses = level[variant], level[baseline]
            if variant_misses is not None and baseline_misses is not None:
                cells.append(f"{(variant_misses - baseline_misses) / iterations:,.0f}")
        return "| " + " | ".join(cells) + " |"

    # A part's cost: the whole stack minus the stack with that part replaced.
    rows = [row(label, "ember", f"ember-{part}") for part, label in PARTS.items()]
    rows.append(row(f"{TRAINER} (and the Engine)", all_replaced, "hand"))
    rows.append(row("of which the Engine running the hand-written step", "engine", "hand"))
    rows.append(row("**ember's whole stack**", "ember", "hand"))
    header = "| part | extra instructions per training iteration | share of the hand-written loop |"
    rule = "|---|---:|---:|"
    cache = ""
    hand_misses, whole_misses = misses["hand"], misses["ember"]
    if l2 is not None and hand_misses is not None and whole_misses is not None:
        header += (
            " extra L1 misses per training iteration | extra L2 misses per training iteration |"
        )
        rule += "---:|---:|"
        cache = f"""
The misses are callgrind's cache simulation, its last level a cache of this machine's L2
({l2[0] >> 10} KiB, {l2[1]}-way, {l2[2]}-byte lines), addresses fixed (`setarch -R`): code and
data misses of that level. The hand-written loop misses it {hand_misses:,} times
({hand_misses / iterations:,.0f} per training iteration), ember's stack {whole_misses:,} times
(**{whole_misses / hand_misses:.3f}x**). A miss of the L2 costs tens of nanoseconds, so a
part's misses can cost more time than its instructions. A simulation's misses only approximate
the machine's (no prefetcher, one thread at a time).{spread(again, ember_again, hand_misses, counts["hand"])}
{where_missed(by_function, iterations)}"""
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    all_counts = ", ".join(
        f"{variant} {counts[variant]:,}"
        + ("" if misses[variant] is None else f" ({misses[variant]:,} misses)")
        for variant in counts
    )
    return f"""# Training stack: instructions and cache misses per part

Generated by `python benchmarks/stack_parts.py` on {date} UTC (commit {commit}); the module's
docstring says what each variant replaces. Callgrind counts instructions in user space for
{EPOCHS} epochs ({iterations} training iterations, {EPOCHS * FULL.eval_batches} evaluation
batches, {EPOCHS} checkpoints).

The hand-written loop: {hand:,} instructions; ember's whole stack: {whole:,}
(**{whole / hand:.3f}x**). Each part's extra, per training iteration and as a share of the
hand-written loop's count:

{header}
{rule}
{chr(10).join(rows)}

Parts interact (the bar shows the running average), so the rows need not add up to the whole.
A part's row is its cost minus that of its hand-written replacement, run as a handler of
ember's Engine (a negative row: the replacement costs more), and the trainer's row is the
stack with every part replaced, those handlers included, minus the hand-written loop.
What the counts leave out: kernel time (the checkpoint's two `fsync`s and file creation) and
how fast the instructions run: [benchmark-stack.md](benchmark-stack.md) times the whole stack.
{cache}
All counts: {all_counts}.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "docs")
    args = parser.parse_args()
    if args.variant:
        run_variant(args.variant)
        return
    if args.jobs < 1:
        parser.error(f"--jobs should be at least 1, got {args.jobs}")
    variants = ["hand", "ember", "engine", *(f"ember-{part}" for part in PARTS)]
    variants.append("ember-" + "-".join(PARTS))
    l2 = l2_cache()
    if l2 is None:
        print("no L2 cache size in sysfs: cache misses not simulated", flush=True)
    with tempfile.TemporaryDirectory() as directory:

        def count(label: str) -> dict[str, int]:
            counted = count_events(label.removesuffix(AGAIN), Path(directory), l2, label)
            print(f"{label}: {counted}", flush=True)
            return counted

        # The hand-written loop and ember's stack twice, with two hash seeds: how far a layout
        # moves the misses, and whether ember's stack misses more with both.
        labels = [*variants, "hand" + AGAIN, "ember" + AGAIN]
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            events = dict(zip(labels, pool.map(count, labels), strict=True))
        by_function = None
        if l2 is not None and shutil.which("callgrind_annotate"):
            by_function = {
                variant: misses_by_function(Path(directory) / f"{variant}.callgrind")
                for variant in ("hand", "ember")
            }
    commit = git_commit()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "benchmark-stack-parts.md").write_text(
        markdown(events, commit or "unknown", l2, by_function)
    )
    print(f"wrote benchmark-stack-parts.md to {args.out_dir}")


if __name__ == "__main__":
    main()
