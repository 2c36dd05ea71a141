"""What the tests that start process groups (torchrun, spawned gloo ranks) share: the engine
loops there are, and an environment that a surrounding torchrun cannot leak into."""

from __future__ import annotations

import os

# Set by a launcher (torchrun, torch elastic): a child that inherited them would join the
# surrounding job instead of its own.
LAUNCHER_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "TORCHELASTIC_USE_AGENT_STORE",
    "TORCHELASTIC_RESTART_COUNT",
)


def engine_backends() -> list[str]:
    """The engine loops to run: the compiled one first where it is built."""
    try:
        import ember.engine._compiled  # noqa: F401
    except ImportError:
        return ["python"]
    return ["cpp", "python"]


def launch_env(**overrides: str) -> dict[str, str]:
    """This process's environment without the launcher's variables, one OpenMP thread a process
    (the ranks share 2 cores), and ``overrides``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **overrides}
    for name in LAUNCHER_VARIABLES:
        env.pop(name, None)
    return env
