"""Run a program with :func:`ember.patch_ignite` switched on, without editing it.

    python -m ember.patch_ignite script.py args...
    python -m ember.patch_ignite -m package.module args...
    torchrun --nproc-per-node 2 -m ember.patch_ignite script.py args...

The script runs as ``__main__`` with ``sys.argv`` set to ``[script.py, args...]`` and its own
folder first on ``sys.path``, as ``python script.py`` would.
"""

from __future__ import annotations

import runpy
import sys
import types
from pathlib import Path

from ember._ignite_patch import patch_ignite

USAGE = "usage: python -m ember.patch_ignite (script.py | -m module) [args...]"


def main(argv: list[str]) -> None:
    """Patch ignite, then run ``argv``: ``[script, args...]`` or ``["-m", module, args...]``."""
    if not argv or argv[0] in {"-h", "--help"} or (argv[0] == "-m" and len(argv) < 2):
        raise SystemExit(USAGE)
    patch_ignite()
    if argv[0] == "-m":
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        return
    script = argv[0]
    if not Path(script).exists():
        raise SystemExit(f"ember.patch_ignite: can't open file {script!r}\n{USAGE}")
    sys.argv = list(argv)
    sys.path[0] = str(Path(script).resolve().parent)
    runpy.run_path(script, run_name="__main__")


class _CallableModule(types.ModuleType):
    """``import ember.patch_ignite`` rebinds ``ember.patch_ignite`` to this module: calling it
    still switches ignite over, as the function it replaced did."""

    def __call__(self) -> None:
        patch_ignite()


if __name__ == "__main__":
    main(sys.argv[1:])
else:
    sys.modules[__name__].__class__ = _CallableModule
