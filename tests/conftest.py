"""Shared fixtures: the installed backends."""

from __future__ import annotations

import importlib.util

import pytest

BACKENDS = [name for name, module in (("jax", "jax"), ("torch", "torch")) if importlib.util.find_spec(module)]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each installed backend by name."""
    return request.param
