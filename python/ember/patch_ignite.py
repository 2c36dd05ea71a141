"""Run a program with :func:`ember.patch_ignite` switched on, without editing it.

    python -m ember.patch_ignite script.py args...
    python -m ember.patch_ignite -m package.module args...
    torchrun --nproc-per-node 2 -m ember.patch_ignite script.py args...

The script runs as ``__main__`` with ``sys.argv`` set to ``[script.py, args...]`` and its own
folder first on ``sys.path``, as ``python script.py`` would.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import io
import runpy
import sys
import types
import zipfile
from pathlib import Path

from ember._ignite_patch import patch_ignite

USAGE = "usage: python -m ember.patch_ignite (script.py | -m module) [args...]"
HELP = f"""{USAGE}

Run a script, or a module with -m, as python would, with ember.patch_ignite() switched on
first: ignite's engine names are ember's. The arguments after the script or the module are
its own (its sys.argv[1:]).

options:
  -h, --help  show this message and exit
  -m module   run a module as a script (python -m module)
"""


def main(argv: list[str]) -> None:
    """Patch ignite, then run ``argv``: ``[script, args...]`` or ``["-m", module, args...]``.

    ``-h``/``--help`` prints the help and returns (exit status 0); bad arguments exit with a
    message and the usage on stderr (exit status 1)."""
    if argv and argv[0] in {"-h", "--help"}:
        sys.stdout.write(HELP)
        return
    if not argv:
        raise SystemExit(f"ember.patch_ignite: expected a script or -m module\n{USAGE}")
    if argv[0] == "-m" and len(argv) < 2:
        raise SystemExit(f"ember.patch_ignite: -m expects a module name\n{USAGE}")
    if argv[0].startswith("-") and argv[0] != "-m":
        raise SystemExit(f"ember.patch_ignite: unknown option {argv[0]!r}\n{USAGE}")
    patch_ignite()
    if argv[0] == "-m":
        sys.argv = argv[1:]
        # What `python -m` itself calls (runpy's private function, the same since Python 2.5):
        # the module runs in sys.modules["__main__"] and stays there, where
        # runpy.run_module(alter_sys=True) would put this runner back once the module's top
        # level returned (see _new_main_module). It sets sys.argv[0] to the module's file and
        # exits with "python: No module named x" as `python -m x` does.
        _new_main_module()
        runpy._run_module_as_main(argv[1])  # type: ignore[attr-defined]
        return
    script = argv[0]
    if not Path(script).exists():
        raise SystemExit(f"ember.patch_ignite: can't open file {script!r}\n{USAGE}")
    sys.argv = list(argv)
    # -P / -I (safe_path): Python puts no script folder on sys.path, and sys.path[0] is then a
    # real entry (PYTHONPATH's first), not the current folder `python -m` put there.
    if not sys.flags.safe_path:
        sys.path[0] = str(Path(script).resolve().parent)
    path = Path(script).absolute()  # absolute, symbolic links kept: Python's __main__.__file__
    if path.is_dir() or path.suffix in {".pyc", ".pyo"} or zipfile.is_zipfile(path):
        runpy.run_path(script, run_name="__main__")  # a folder or zip with __main__.py, bytecode
        return
    _run_source_as_main(str(path))


def _new_main_module(**attributes: object) -> types.ModuleType:
    """A fresh ``__main__`` module, made ``sys.modules["__main__"]`` for good, as Python's is.

    runpy.run_path/run_module(alter_sys=True) put the previous ``__main__`` back when the code's
    top level returns, so the program's threads still running and its atexit handlers could no
    longer pickle (``torch.save``) objects of the classes it defines. ``__builtins__`` is the
    module, as in Python's ``__main__`` (exec would insert a dict)."""
    main_module = types.ModuleType("__main__")
    main_module.__dict__.update(__builtins__=builtins, **attributes)
    sys.modules["__main__"] = main_module
    return main_module


def _run_source_as_main(path: str) -> None:
    """Run a source file as ``python path`` does: in a new ``__main__`` (see above) whose
    ``__file__`` is absolute (CPython 3.9+; run_path gave the path as typed, which breaks scripts
    that chdir and then read files beside themselves)."""
    with io.open_code(path) as file:
        # dont_inherit: this module's `from __future__ import annotations` is not the script's.
        code = compile(file.read(), path, "exec", dont_inherit=True)
    main_module = _new_main_module(
        __file__=path,
        __cached__=None,
        __loader__=importlib.machinery.SourceFileLoader("__main__", path),
    )
    exec(code, main_module.__dict__)  # noqa: S102 - running the user's script is the point


class _CallableModule(types.ModuleType):
    """``import ember.patch_ignite`` rebinds ``ember.patch_ignite`` to this module: calling it
    still switches ignite over, as the function it replaced did."""

    def __call__(self) -> None:
        patch_ignite()


if __name__ == "__main__":
    main(sys.argv[1:])
else:
    sys.modules[__name__].__class__ = _CallableModule
