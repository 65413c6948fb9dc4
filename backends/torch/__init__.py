"""The PyTorch backend: each training step is one graph traced by ``make_fx`` and compiled by inductor."""

from __future__ import annotations

from gradpath.backends.compile_cache import enable_inductor_cache
from gradpath.backends.torch.trainer import TorchBackend


def backend() -> TorchBackend:
    """The entry point the backend registry calls; turns on the persistent compilation cache
    (gradpath.backends.compile_cache) before anything compiles."""
    enable_inductor_cache()
    return TorchBackend()
