"""
ember's compiled run loop
"""
from __future__ import annotations
import types
import typing
__all__: list = ['configure', 'run_loop', 'stream_copy']
def configure(events: tuple[typing.Any, ...], engine_cls: typing.Any, state_cls: typing.Any, registry_cls: typing.Any, filtered_handler_cls: typing.Any, count_filter_cls: typing.Any, plan_cls: typing.Any, support: types.ModuleType, call_handlers: typing.Any, python_loop: typing.Any) -> None:
    """
    Hand the compiled loop the Python classes and helpers it works with; called once when ember.engine is imported.
    """
def run_loop(engine: typing.Any, plan: typing.Any) -> None:
    """
    Run, or resume, the loop of engine.run() as `plan` (a RunPlan) says, once the Python side has validated the arguments and prepared engine.state.
    """
def stream_copy(destination: typing.Any, source: typing.Any) -> None:
    """
    Copy the bytes of buffer ``source`` into the writable buffer ``destination`` of the same size, with streaming stores (a snapshot's copy, not read back soon).
    """
__version__: str = '0.1.0'
