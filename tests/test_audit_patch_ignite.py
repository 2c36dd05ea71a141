"""``python -m ember.patch_ignite script.py`` runs the script as ``python script.py`` does.

Found by an audit of the switch: each test runs the same script with ``python`` and under the
runner, on the loop under test (``EMBER_BACKEND``), and compares what the script reports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.ignite
pytest.importorskip("ignite")


def run(args: list[str], backend: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMBER_BACKEND": backend}
    return subprocess.run(
        [sys.executable, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        env=env,
    )


def both(script: str, tmp_path: Path, backend: str, *flags: str) -> tuple[str, str]:
    """stdout + exit code of ``python script.py`` and of the runner, both started in tmp_path."""
    (tmp_path / "script.py").write_text(textwrap.dedent(script))
    outs = []
    for runner in ([], ["-m", "ember.patch_ignite"]):
        result = run([*flags, *runner, "script.py"], backend, tmp_path)
        outs.append(f"{result.stdout}rc={result.returncode}")
    return outs[0], outs[1]


def test_script_file_is_absolute_and_survives_chdir(tmp_path: Path, backend: str) -> None:
    # Python 3.9+ gives __main__ an absolute __file__; the runner gave "script.py", so a
    # script that changes directory and then reads a file beside itself failed.
    (tmp_path / "config.txt").write_text("lr=0.1")
    plain, patched = both(
        """
        import os, sys
        os.chdir(os.sep)
        print(os.path.isabs(__file__), sys.argv[0])
        print(open(os.path.join(os.path.dirname(__file__), "config.txt")).read())
        """,
        tmp_path,
        backend,
    )
    assert plain == "True script.py\nlr=0.1\nrc=0"
    assert patched == plain


def test_script_stays_main_for_threads_and_atexit(tmp_path: Path, backend: str) -> None:
    # runpy.run_path put the runner's module back as sys.modules["__main__"] once the script's
    # top level returned: threads still running and atexit handlers could no longer pickle
    # (torch.save) objects of classes the script defines.
    plain, patched = both(
        """
        import atexit, pickle, threading, time
        from ignite.engine import Engine

        class Net:
            pass

        def train():
            time.sleep(0.2)
            engine = Engine(lambda engine, batch: batch)
            engine.run([1, 2], max_epochs=2)
            print("thread", type(pickle.loads(pickle.dumps(Net()))).__name__, engine.state.iteration)

        threading.Thread(target=train).start()
        atexit.register(lambda: print("atexit", type(pickle.loads(pickle.dumps(Net()))).__name__))
        """,
        tmp_path,
        backend,
    )
    assert plain == "thread Net 4\natexit Net\nrc=0"
    assert patched == plain


def test_script_sees_python_main_globals(tmp_path: Path, backend: str) -> None:
    # __builtins__ is the builtins module in __main__ (runpy gave a dict), and the runner's own
    # `from __future__ import annotations` must not leak into the script.
    plain, patched = both(
        """
        import sys
        def f(x: int) -> int:
            return x
        print(__builtins__.__name__, f.__annotations__, __name__, __package__, __spec__)
        print(sys.modules["__main__"].f is f, __cached__)
        """,
        tmp_path,
        backend,
    )
    assert plain.startswith("builtins {'x': <class 'int'>, 'return': <class 'int'>} __main__")
    assert patched == plain


def test_safe_path_leaves_sys_path_alone(tmp_path: Path, backend: str) -> None:
    # With -P (or -I) Python puts neither the script's folder nor the current folder first on
    # sys.path; the runner overwrote sys.path[0], which is then a real entry (PYTHONPATH's first).
    plain, patched = both(
        """
        import sys
        print(sys.path[:3])
        """,
        tmp_path,
        backend,
        "-P",
    )
    assert str(tmp_path) not in plain
    assert patched == plain


def test_exit_codes_and_exceptions_are_the_scripts(tmp_path: Path, backend: str) -> None:
    plain, patched = both(
        """
        import sys
        from ignite.engine import Engine
        if __name__ == "__main__":
            print(Engine(lambda engine, batch: batch).run([1]).iteration)
            sys.exit(3)
        """,
        tmp_path,
        backend,
    )
    assert plain == patched == "1\nrc=3"
    (tmp_path / "boom.py").write_text("raise ValueError('boom')\n")
    result = run(["-m", "ember.patch_ignite", "boom.py"], backend, tmp_path)
    assert result.returncode == 1
    assert result.stderr.rstrip().endswith("ValueError: boom")
    assert f'File "{tmp_path / "boom.py"}", line 1' in result.stderr


def test_module_form_stays_main_for_threads_and_atexit(tmp_path: Path, backend: str) -> None:
    # The -m form had the same fault through runpy.run_module(alter_sys=True).
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "job.py").write_text(
        textwrap.dedent(
            """
            import atexit, pickle, sys
            from ignite.engine import Engine

            class Net:
                pass

            engine = Engine(lambda engine, batch: batch)
            print(__name__, __spec__.name, sys.argv, engine.run([1, 2]).iteration)
            atexit.register(lambda: print("atexit", type(pickle.loads(pickle.dumps(Net()))).__name__))
            sys.exit(4)
            """
        )
    )
    plain = run(["-m", "pkg.job", "x"], backend, tmp_path)
    patched = run(["-m", "ember.patch_ignite", "-m", "pkg.job", "x"], backend, tmp_path)
    job = package / "job.py"
    assert plain.stdout == f"__main__ pkg.job ['{job}', 'x'] 2\natexit Net\n"
    assert plain.returncode == 4
    assert (patched.stdout, patched.returncode) == (plain.stdout, plain.returncode)
    missing = run(["-m", "ember.patch_ignite", "-m", "pkg.nope"], backend, tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"{sys.executable}: No module named pkg.nope"
