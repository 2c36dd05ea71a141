"""The ``backend`` fixture every behavioural test takes, and the report header."""

from __future__ import annotations

import gc
import os
import platform
from collections.abc import Callable
from importlib import metadata
from typing import Any

import pytest

from ember.engine import Engine

CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"} or bool(
    os.environ.get("EMBER_REQUIRE_CORE")
)


def _core_import_error() -> str | None:
    try:
        import ember.engine._compiled  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


CORE_ERROR = _core_import_error()


def pytest_report_header(config: pytest.Config) -> list[str]:
    versions = [f"python {platform.python_version()}"]
    for distribution in ("torch", "pytorch-ignite", "pybind11"):
        try:
            versions.append(f"{distribution} {metadata.version(distribution)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{distribution} absent")
    core = "compiled" if CORE_ERROR is None else f"MISSING ({CORE_ERROR})"
    return [", ".join(versions), f"ember._core: {core}"]


def pytest_configure(config: pytest.Config) -> None:
    if CI and CORE_ERROR is not None:
        raise pytest.UsageError(f"ember._core must be built under CI: {CORE_ERROR}")


@pytest.fixture(
    params=[pytest.param("cpp", marks=pytest.mark.cpp), "python"], ids=["cpp", "python"]
)
def backend(request: pytest.FixtureRequest) -> str:
    """The loop under test: the compiled one or the pure-Python specification."""
    if request.param == "cpp" and CORE_ERROR is not None:
        pytest.skip(f"ember._core is not built: {CORE_ERROR}")
    return str(request.param)


@pytest.fixture
def make_engine(backend: str) -> Callable[..., Engine]:
    """``make_engine(process_function, cls=Engine)`` on the backend under test."""

    def make(process_function: Callable[..., Any] = lambda e, b: b, cls: type = Engine) -> Any:
        return cls(process_function, backend=backend)

    return make


def collect_garbage() -> None:
    for _ in range(3):
        gc.collect()
