"""The PyTorch backend: each training step is one graph traced by ``make_fx`` and compiled by inductor."""

from __future__ import annotations

from backends.torch.trainer import TorchBackend


def backend() -> TorchBackend:
    """The entry point the backend registry calls."""
    return TorchBackend()
