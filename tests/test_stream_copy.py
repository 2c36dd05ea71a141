"""``ember._core.stream_copy``, the byte copy of an asynchronous checkpoint's snapshot: exact
bytes for every size and alignment, and a Python exception for every hostile argument."""

from __future__ import annotations

import array
import ctypes
import random

import pytest
import torch

from ember.handlers import checkpoint

core = pytest.importorskip("ember._core")

GROUP = 4 * 4096  # csrc/bind_copy.cpp streams four pages at a time


@pytest.mark.parametrize(
    "size",
    [0, 1, 15, 63, 64, 65, 4095, 4096, GROUP - 1, GROUP, GROUP + 1, 3 * GROUP + 4097, 1 << 20],
)
@pytest.mark.parametrize("offset", [0, 1, 8, 17, 63])
def test_copies_every_byte_at_any_size_and_alignment(size: int, offset: int) -> None:
    source = bytes(random.Random(size * 64 + offset).randbytes(size + offset))
    destination = bytearray(size + 128)
    core.stream_copy(memoryview(destination)[offset : offset + size], source[offset:])
    assert destination[offset : offset + size] == source[offset:]
    assert destination[:offset] == bytearray(offset)  # nothing written outside the target
    assert destination[offset + size :] == bytearray(128 - offset)


def test_overlapping_buffers_copy_as_memmove() -> None:
    data = bytearray(range(256)) * 200
    expected = bytearray(data)
    expected[10:] = data[: len(data) - 10]
    view = memoryview(data)
    core.stream_copy(view[10:], view[: len(data) - 10])
    assert data == expected


@pytest.mark.parametrize(
    ("destination", "source", "error", "message"),
    [
        (b"abcd", b"abcd", TypeError, "destination should be a contiguous, writable buffer"),
        (bytearray(4), 1234, TypeError, "source should be a contiguous buffer, got int"),
        (None, b"abcd", TypeError, "destination should be .*got NoneType"),
        (bytearray(4), b"abc", ValueError, "destination holds 4 bytes and source 3"),
        (memoryview(bytearray(8))[::2], b"abcd", TypeError, "destination should be a contig"),
        (bytearray(8), memoryview(b"abcdefgh" * 2)[::2], TypeError, "source should be a contig"),
        (array.array("d", [0.0]), bytearray(4), ValueError, "holds 8 bytes and source 4"),
    ],
)
def test_hostile_arguments_raise(
    destination: object, source: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        core.stream_copy(destination, source)


def test_a_released_buffer_raises() -> None:
    view = memoryview(bytearray(16))
    view.release()
    with pytest.raises(TypeError, match="destination should be"):
        core.stream_copy(view, bytes(16))


def test_the_buffers_are_released_after_an_error() -> None:
    destination = bytearray(4)
    with pytest.raises(ValueError, match="should be the same size"):
        core.stream_copy(destination, b"abc")
    destination.extend(b"more")  # a bytearray with a live export refuses to resize


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.bool])
@pytest.mark.parametrize("use_core", [True, False], ids=["stream_copy", "memmove"])
def test_snapshot_copies_tensors_exactly(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, use_core: bool
) -> None:
    if not use_core:
        monkeypatch.setattr(checkpoint, "_core", None)
    generator = torch.Generator().manual_seed(0)
    tensor = (torch.randn(37, 1031, generator=generator) * 100).to(dtype)
    buffer = torch.empty_like(tensor)
    checkpoint._copy_bytes(buffer, tensor)
    assert torch.equal(buffer, tensor)
    checkpoint._copy_bytes(torch.empty(0), torch.empty(0))  # an empty tensor has no address


def test_bytes_of_covers_the_tensor() -> None:
    tensor = torch.arange(10, dtype=torch.int16)
    raw = checkpoint._bytes_of(tensor)
    assert ctypes.sizeof(raw) == 20 and bytes(raw) == tensor.numpy().tobytes()
