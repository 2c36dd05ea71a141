"""``ember.patch_ignite()``: ignite's engine names are ember's everywhere, in a process of its own.

The switch is process-wide and cannot be undone, so every test runs its program in a subprocess.
The end-to-end tests run the same program on ignite and under ``python -m ember.patch_ignite``
and compare what it reports: losses, metrics, checkpoints and where the run stopped.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.ignite
pytest.importorskip("ignite")
ISOLATED = Path(__file__).resolve().parent / "isolated"
SEVEN = (
    "Engine",
    "Events",
    "State",
    "EventEnum",
    "CallableEventWithFilter",
    "EventsList",
    "RemovableEventHandle",
)


def python(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    """Run ``python args...``; return its stdout (stderr too when it fails)."""
    result = subprocess.run(
        [sys.executable, *args], check=False, capture_output=True, text=True, timeout=240, cwd=cwd
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout
    return result.stdout + result.stderr


def run_code(code: str, *, check: bool = True) -> str:
    return python("-c", textwrap.dedent(code), check=check)


def test_switch_rebinds_the_engine_names_in_every_module() -> None:
    out = run_code(
        f"""
        import sys
        import ember
        assert "torch" not in sys.modules, "import ember imported torch"
        assert not ember.ignite_patched()
        import ember.patch_ignite  # the runner module takes the function's name; still callable
        ember.patch_ignite()
        ember.patch_ignite()  # idempotent
        assert ember.ignite_patched()
        import ignite, ignite.engine, ignite.engine.engine, ignite.engine.events
        import ignite.handlers.early_stopping, ignite.handlers.time_profilers
        import ignite.handlers.base_logger, ignite.metrics.metric, ignite.handlers.checkpoint
        from ember import engine as ours
        for name in {SEVEN!r}:
            assert getattr(ignite.engine, name) is getattr(ours, name), name
            assert getattr(ignite.engine.engine, name) is getattr(ours, name), name
            if name != "Engine":
                assert getattr(ignite.engine.events, name) is getattr(ours, name), name
        assert ignite.handlers.early_stopping.Engine is ours.Engine
        assert ignite.handlers.time_profilers.Engine is ours.Engine
        assert ignite.handlers.base_logger.EventsList is ours.EventsList
        assert ignite.metrics.metric.Engine is ours.Engine
        import ignite.contrib.engines.common
        assert ignite.contrib.engines.common.Events is ours.Events
        assert ignite.handlers.base_logger.State is ours.State
        assert issubclass(ignite.handlers.checkpoint.CheckpointEvents, ours.EventEnum)
        assert issubclass(ignite.engine.DeterministicEngine, ours.Engine)
        engine = ignite.engine.Engine(lambda engine, batch: batch)
        print(engine.logger.name, type(engine).__module__)
        """
    )
    assert out.split() == ["ignite.engine.engine.Engine", "ember.engine.engine"]


@pytest.mark.skipif(importlib.util.find_spec("monai") is None, reason="needs MONAI")
def test_the_migration_page_snippet_runs() -> None:
    # The page's doc snippet test skips it: the switch would change the test process itself.
    page = (Path(__file__).resolve().parent.parent / "docs" / "migration.md").read_text()
    section = page.split("## Libraries built on ignite", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "ember.patch_ignite()" in snippet
    run_code(snippet)


def test_switch_refuses_once_ignite_is_imported_and_changes_nothing() -> None:
    out = run_code(
        """
        import sys
        import ignite.engine
        import ember
        finders = list(sys.meta_path)
        try:
            ember.patch_ignite()
        except RuntimeError as exc:
            print(exc)
        assert sys.meta_path == finders
        assert not ember.ignite_patched()
        assert ignite.engine.Engine.__module__ == "ignite.engine.engine"
        """
    )
    assert "must run before ignite's engine is imported" in out
    assert "ignite.engine, ignite.engine.engine, ignite.engine.events are imported" in out
    assert "nothing was patched" in out


def test_ignite_deterministic_engine_resumes_as_on_ignite() -> None:
    program = """
        import torch
        from ignite.engine import DeterministicEngine, Events
        torch.manual_seed(3)
        seen = []
        engine = DeterministicEngine(lambda engine, batch: seen.append(batch.tolist()))
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=5), lambda e: e.interrupt())
        data = torch.utils.data.DataLoader(range(8), batch_size=2, shuffle=True)
        engine.run(data, max_epochs=3)
        engine.run(data)
        print(type(engine).__mro__[1].__module__, seen, engine.state.epoch, engine.state.iteration)
        """
    on_ignite = run_code(program).split(" ", 1)
    patched = run_code("import ember; ember.patch_ignite()\n" + textwrap.dedent(program))
    patched_parts = patched.split(" ", 1)
    assert (on_ignite[0], patched_parts[0]) == ("ignite.engine.engine", "ember.engine.engine")
    assert patched_parts[1] == on_ignite[1]
    assert patched_parts[1].strip().endswith("3 12")


def test_module_form_runs_a_script_as_main(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    (tmp_path / "helper.py").write_text("VALUE = 'helper found'\n")
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import ember
            import helper  # beside the script: its folder is first on sys.path
            import ignite.engine
            print(__name__, sys.argv[1:], ember.ignite_patched(), helper.VALUE)
            print(ignite.engine.Engine.__module__)
            """
        )
    )
    out = python("-m", "ember.patch_ignite", str(script), "--flag", "x", cwd=tmp_path.parent)
    assert out.splitlines() == [
        "__main__ ['--flag', 'x'] True helper found",
        "ember.engine.engine",
    ]
    module_out = python(
        "-m",
        "ember.patch_ignite",
        "-m",
        "json.tool",
        "--compact",
        str(tmp_path / "data.json"),
        check=False,
    )
    assert "data.json" in module_out  # json.tool ran, with the arguments after the module
    usage = python("-m", "ember.patch_ignite", check=False)
    assert "usage: python -m ember.patch_ignite" in usage


def two_runs(script: str, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON line ``script`` prints on ignite, and under the switch."""
    on_ignite = python(str(ISOLATED / script), str(tmp_path / "ignite"))
    patched = python("-m", "ember.patch_ignite", str(ISOLATED / script), str(tmp_path / "ember"))
    return json.loads(on_ignite.splitlines()[-1]), json.loads(patched.splitlines()[-1])


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboardX") is None, reason="TensorboardLogger needs tensorboardX"
)
def test_ignite_handlers_attach_and_work_under_the_switch(tmp_path: Path) -> None:
    on_ignite, patched = two_runs("ignite_handlers.py", tmp_path)
    assert on_ignite.pop("engine") == "ignite.engine.engine.Engine"
    assert patched.pop("engine") == "ember.engine.engine.Engine"
    # HandlersTimeProfiler names a filtered handler after its wrapper (migration.md).
    filtered = {"ignite": "Engine._handler_wrapper.<locals>.wrapper", "ember": "FilteredHandler"}
    for result, label in ((on_ignite, "ignite"), (patched, "ember")):
        rows = result["handler_profiler_rows"]
        assert filtered[label] in rows
        rows[rows.index(filtered[label])] = "filtered handler"
    assert patched == on_ignite
    assert patched["stopped_at"] == [4, 20]  # EarlyStopping(patience=2) ended the run
    assert patched["logger"] == "ignite.engine.engine.Engine"
    assert patched["debug_enabled_by_ignite_logger_name"]
    assert patched["tensorboard_files"] == 1


@pytest.mark.skipif(importlib.util.find_spec("monai") is None, reason="needs MONAI")
def test_monai_workflow_gives_identical_results_under_the_switch(tmp_path: Path) -> None:
    on_ignite, patched = two_runs("monai_workflow.py", tmp_path)
    assert on_ignite.pop("engine") == "ignite.engine.engine.Engine"
    assert patched.pop("engine") == "ember.engine.engine.Engine"
    assert patched == on_ignite
    # The run did what the comparison relies on: it trained, validated, saved, stopped early
    # and resumed from the final checkpoint.
    assert patched["is_engine"]
    assert len(patched["losses"]) == patched["iterations"] > 4
    assert patched["epochs"] < 8  # EarlyStopHandler stopped the 8-epoch run
    assert patched["best_metric"] > 0.5
    assert any("key_metric" in name for name in patched["checkpoints"])
    assert any("final" in name for name in patched["checkpoints"])
    assert all(patched["digests"].values())
    assert patched["resumed_losses"]
    assert any("val_dice" in line for line in patched["log"])


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_runner_help_exits_0(flag: str) -> None:
    """``--help``/``-h`` print the usage on stdout and exit 0, patching nothing."""
    result = subprocess.run(
        [sys.executable, "-m", "ember.patch_ignite", flag],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m ember.patch_ignite")
    assert "-m module" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "expected a script or -m module"),
        (["-m"], "-m expects a module name"),
        (["--bogus", "x.py"], "unknown option '--bogus'"),
        (["missing.py"], "can't open file 'missing.py'"),
    ],
    ids=["nothing", "m-without-module", "unknown-option", "missing-file"],
)
def test_runner_bad_arguments_exit_1_with_a_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ember.patch_ignite", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"ember.patch_ignite: {message}",
        "usage: python -m ember.patch_ignite (script.py | -m module) [args...]",
    ]


def test_runner_passes_help_after_the_script_to_the_script(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text("import sys\nprint(sys.argv[1:])\n")
    out = python("-m", "ember.patch_ignite", "script.py", "--help", "-h", cwd=tmp_path)
    assert out == "['--help', '-h']\n"
