"""The compiled module's own surface and the import-time promises of ember.engine."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import ember
from ember.engine import Engine


def test_core_version_matches_the_package() -> None:
    core = pytest.importorskip("ember._core")
    assert core.__version__ == ember.__version__


def test_core_exposes_the_loop() -> None:
    core = pytest.importorskip("ember._core")
    assert callable(core.run_loop) and callable(core.configure)
    plan = Engine(lambda e, b: b)._plan()
    with pytest.raises(TypeError, match=r"needs an ember\.engine\.Engine"):
        core.run_loop(object(), plan)
    with pytest.raises(TypeError, match=r"needs a RunPlan"):
        core.run_loop(Engine(lambda e, b: b), object())


def test_engine_import_does_not_import_torch() -> None:
    code = "import sys, ember.engine; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_python_backend_runs_without_the_compiled_module() -> None:
    code = (
        "import sys; sys.modules['ember._core'] = None\n"
        "from ember.engine import Engine\n"
        "print(Engine(lambda e, b: b, backend='python').run([1, 2]).iteration)\n"
        "try:\n"
        "    Engine(lambda e, b: b, backend='cpp')\n"
        "except ImportError as exc:\n"
        "    print('did you forget to build' in ''.join(getattr(exc, '__notes__', [])))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["2", "True"]


def test_the_loop_refuses_a_resume_phase_it_cannot_start_from() -> None:
    """The plan's builder checks the resume point; the loop checks its phase again (a phase
    none of its branches takes would spin without a Python call, deaf to Ctrl-C)."""
    core = pytest.importorskip("ember._core")
    from ember.engine import Events

    engine = Engine(lambda e, b: b, backend="cpp")
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), lambda e: e.interrupt())
    engine.run([1, 2])
    plan = engine._plan()
    assert plan.resume is not None
    # the end of an epoch's iterations: not a resume point
    plan = dataclasses.replace(plan, resume=(8, *plan.resume[1:]))
    with pytest.raises(ValueError, match="_resume_point is malformed: not a resume phase"):
        core.run_loop(engine, plan)


DAEMON_LOOP_AT_EXIT = """
import itertools, operator, sys, threading, time
from ember.engine import Engine

class RunsBytecodeWhenDeleted:
    def __del__(self):
        deadline = time.perf_counter() + 0.05
        while time.perf_counter() < deadline:
            pass

engine = Engine(operator.is_, backend=sys.argv[1])  # a step that runs no bytecode
thread = threading.Thread(
    target=engine.run, args=(itertools.repeat(0),), kwargs={"epoch_length": 10**15}, daemon=True
)
thread.start()
while engine.state.iteration < 1000:
    time.sleep(0.001)
deleted_at_exit = RunsBytecodeWhenDeleted()
print("exits")
"""


@pytest.mark.parametrize("backend", ["python", "cpp"])
def test_a_loop_running_in_a_daemon_thread_lets_the_interpreter_exit(backend: str) -> None:
    """The interpreter finalizes while a daemon thread runs the loop; bytecode run during the
    finalization (a __del__) hands the GIL to that thread, which CPython < 3.14 then ends with
    pthread_exit. Where that happened as the compiled loop took the GIL back, in a destructor,
    the process aborted ("terminate called without an active exception") every time."""
    if backend == "cpp":
        pytest.importorskip("ember._core")
    result = subprocess.run(
        [sys.executable, "-c", DAEMON_LOOP_AT_EXIT, backend],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "exits"), result.stderr
