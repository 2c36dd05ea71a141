"""The check every ``load_state_dict`` of ember starts with (engine, handlers, schedulers)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def check_state_dict(state_dict: Any, required: Iterable[str] = ()) -> None:
    """Raise ``TypeError`` unless ``state_dict`` is a mapping, ``ValueError`` if a required key
    is missing (ignite's messages)."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"Argument state_dict should be a dictionary, but given {type(state_dict)}")
    for key in required:
        if key not in state_dict:
            raise ValueError(
                f"Required state attribute '{key}' is absent in provided state_dict "
                f"'{state_dict.keys()}'"
            )
