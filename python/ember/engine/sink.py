"""``OutputSink``: a handler that keeps the outputs of the iterations, which the compiled loop
feeds without calling Python (csrc/dispatch.cpp, ``Kind::sink``).

A handler that only needs to remember each output (a running average, a NaN check) costs a
Python frame per iteration when it is a Python function. An ``OutputSink`` (or a subclass that
keeps its ``__call__`` and fields) attached without a filter is run by the compiled loop in C++:
it appends the output and its iteration to two lists and calls ``on_full(engine)`` only when
the owner has work to do. ``__call__`` below is what the compiled loop does, and what the Python
loop and ignite's Engine run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["OutputSink", "ends_epoch", "ends_epoch_or_run"]


def ends_epoch(engine: Any, iteration: Any, epoch_length: Any) -> bool:
    """Whether ``iteration`` is the last of its epoch, of ``epoch_length`` iterations: counted
    from ``engine._iterations_before_epoch``, which ember's loops set at each epoch start, so
    that it also holds after ``terminate_epoch()`` ended an epoch early and the next ones no
    longer end at multiples of the length. On an engine without it (ignite's), whether
    ``iteration`` is such a multiple, as the epochs of a run without ``terminate_epoch()``
    end."""
    before = getattr(engine, "_iterations_before_epoch", None)
    if before is None:
        return bool(iteration % epoch_length == 0)
    return bool(iteration - before == epoch_length)


def ends_epoch_or_run(engine: Any, state: Any, iteration: Any) -> Any:
    """Whether ``iteration`` is the last of an epoch of known length (:func:`ends_epoch`) or of
    the run (``state.max_iters``), read at each call: a handler may change them. Where a sink
    that flushes at epoch ends, and TerminateOnNan, read what they keep."""
    epoch_length = state.epoch_length
    return (epoch_length is not None and ends_epoch(engine, iteration, epoch_length)) or (
        iteration == state.max_iters
    )


class OutputSink:
    """Appends ``engine.state.output`` to ``values`` and ``engine.state.iteration`` to
    ``iterations`` at each call, then calls ``on_full(engine)`` when

    - the output is not an accepted value: ``accepted_type`` is not None and the output's type
      is not exactly it, or one of its ``accepted_attributes`` ``(name, allowed values)`` is not
      among the allowed values;
    - ``len(values) >= limit``;
    - something the owner keeps no longer holds (:meth:`still_kept`): one of
      ``kept_attributes`` ``(owner, name, value)`` is not ``getattr(owner, name) is value``, or
      ``kept_entry`` ``(mapping type, key, value)`` is not ``engine.state.metrics`` of exactly
      that ``dict`` subclass holding exactly ``value`` at ``key``;
    - ``flush_at_epoch_end`` and this is the last iteration of an epoch of known length
      (:func:`ends_epoch`), or of the run (``state.max_iters``).

    ``on_full`` is expected to empty ``values`` and ``iterations`` (:meth:`take`).
    """

    __slots__ = (
        "__weakref__",
        "accepted_attributes",
        "accepted_type",
        "flush_at_epoch_end",
        "iterations",
        "kept_attributes",
        "kept_entry",
        "limit",
        "on_full",
        "values",
    )

    def __init__(
        self,
        on_full: Callable[[Any], None],
        limit: int,
        flush_at_epoch_end: bool = False,
        accepted_type: type | None = None,
        accepted_attributes: tuple[tuple[str, tuple[Any, ...]], ...] = (),
        kept_attributes: tuple[tuple[Any, str, Any], ...] = (),
        kept_entry: tuple[type[dict[Any, Any]], Any, Any] | None = None,
    ) -> None:
        self.values: list[Any] = []
        self.iterations: list[Any] = []
        self.limit = limit
        self.on_full = on_full
        self.flush_at_epoch_end = flush_at_epoch_end
        self.accepted_type = accepted_type
        self.accepted_attributes = accepted_attributes
        self.kept_attributes = kept_attributes
        self.kept_entry = kept_entry

    def __call__(self, engine: Any) -> None:
        state = engine.state
        output = state.output
        iteration = state.iteration
        values = self.values
        values.append(output)
        self.iterations.append(iteration)
        if (
            not self.accepts(output)
            or len(values) >= self.limit
            or not self.still_kept(state)
            or (self.flush_at_epoch_end and ends_epoch_or_run(engine, state, iteration))
        ):
            self.on_full(engine)

    def take(self) -> tuple[list[Any], list[Any]]:
        """The kept outputs and their iterations, in order; the sink is left empty."""
        values, self.values = self.values, []
        iterations, self.iterations = self.iterations, []
        return values, iterations

    def accepts(self, output: Any) -> bool:
        """Whether ``output`` is a value that may wait in ``values``."""
        accepted_type = self.accepted_type
        if accepted_type is None:
            return True
        if type(output) is not accepted_type:
            return False
        # A loop, not all() over a generator: a frame fewer per call on the Python loop.
        for name, allowed in self.accepted_attributes:  # noqa: SIM110 - see above
            if getattr(output, name) not in allowed:
                return False
        return True

    def still_kept(self, state: Any) -> bool:
        """Whether what the owner keeps still holds: each of ``kept_attributes``
        ``(owner, name, value)`` has ``getattr(owner, name) is value``, and ``kept_entry``
        ``(mapping type, key, value)``, if any, is found in ``state.metrics``, a mapping of
        exactly that type holding exactly ``value`` at ``key`` (read as ``dict`` stores it)."""
        for owner, name, value in self.kept_attributes:
            if getattr(owner, name) is not value:
                return False
        return self.entry_holds(self.kept_entry, state)

    def entry_holds(self, kept_entry: Any, state: Any) -> bool:
        """The ``kept_entry`` part of :meth:`still_kept` (the compiled loop calls it when a
        getter of ``kept_attributes`` replaced the entry)."""
        if kept_entry is None:
            return True
        mapping_type, key, value = kept_entry
        metrics = state.metrics
        return type(metrics) is mapping_type and dict.get(metrics, key) is value
