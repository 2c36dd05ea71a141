"""The engine calls the sampler's set_epoch at every epoch start (a DistributedSampler fix)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from ember.engine import Engine


def epoch_orders(backend: str, enabled: bool) -> list[list[int]]:
    dataset = torch.utils.data.TensorDataset(torch.arange(16))
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=2, rank=0, shuffle=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, sampler=sampler)
    orders: list[list[int]] = []
    engine = Engine(lambda e, batch: orders.append(batch[0].tolist()), backend=backend)
    engine.set_sampler_epoch = enabled
    engine.run(loader, max_epochs=3)
    return orders


def test_each_epoch_shuffles_differently(backend: str) -> None:
    orders = epoch_orders(backend, enabled=True)
    assert len(orders) == 3
    assert len({tuple(order) for order in orders}) == 3


def test_can_be_turned_off(backend: str) -> None:
    orders = epoch_orders(backend, enabled=False)
    assert len({tuple(order) for order in orders}) == 1


def test_epoch_passed_is_zero_based(backend: str) -> None:
    seen: list[int] = []

    class Sampler(torch.utils.data.Sampler):  # type: ignore[type-arg]
        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(range(2))

        def __len__(self) -> int:
            return 2

        def set_epoch(self, epoch: int) -> None:
            seen.append(epoch)

    loader = torch.utils.data.DataLoader(list(range(2)), sampler=Sampler())
    Engine(lambda e, b: b, backend=backend).run(loader, max_epochs=3)
    assert seen == [0, 1, 2]
