"""The host-sync counter the stack tests and benchmarks/stack.py rely on counts what it should."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from syncs import HostSyncCounter


def test_counts_every_kind_of_scalar_read_and_nothing_else() -> None:
    value = torch.tensor(1.5)
    with HostSyncCounter(record_sites=True) as counter:
        total = value * 2 + torch.ones(3).sum()  # device work only: no read
        _ = torch.isfinite(total).all()
        assert counter.count == 0
        value.item()
        float(value)
        int(value)
        bool(value > 0)
        if value:
            pass
        math.isfinite(value)
        format(value, ".2f")  # formatting a 0-d tensor reads it
    assert counter.count == 7
    assert sum(counter.sites.values()) == 7
    assert all("test_syncs_counter.py" in site for site in counter.sites)


def test_counts_under_inference_mode_and_autograd() -> None:
    weight = torch.ones(2, requires_grad=True)
    with HostSyncCounter() as counter:
        loss = (weight * 3).sum()
        loss.backward()
        with torch.inference_mode():
            inference = torch.zeros(2).sum()
            inference.item()
            bool(inference)
        loss.item()
        torch.equal(weight, weight)
    assert counter.count == 4


def test_counting_stops_when_the_block_ends() -> None:
    with HostSyncCounter() as counter:
        torch.tensor(1.0).item()
    torch.tensor(2.0).item()
    assert counter.count == 1


def test_counts_operations_whose_size_depends_on_the_data() -> None:
    values = torch.tensor([0.0, 1.0, 2.0])
    with HostSyncCounter() as counter:
        torch.nonzero(values)
        values[values > 0]  # indexing with a boolean mask
        torch.bincount(torch.tensor([0, 1, 1]))  # on the CPU: the metrics' own use, not counted
        values[torch.tensor([0, 2])]  # integer indices: the size is known
    assert counter.names == ["aten::nonzero", "aten::index (boolean mask)"]
