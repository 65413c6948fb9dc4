"""Compilation caches that outlive the process: a repeated configuration skips the compiler.

JAX keeps compiled XLA executables in its persistent compilation cache and inductor keeps
generated kernels and whole compiled graphs in its FX-graph and AOT-autograd caches. Both are
turned on by default for every gradpath run, campaign job and test, in gradpath's user cache
folder (:func:`gradpath.problems.cache.user_cache_dir`): ``compile/jax`` and ``compile/torch``.
``gradpath cache`` shows them and ``gradpath cache clear`` empties them.

Compiled torch steps are also kept there as AOTInductor packages (:mod:`gradpath.backends.torch.packages`).
A cache location the user chose (``JAX_COMPILATION_CACHE_DIR``, ``TORCHINDUCTOR_CACHE_DIR``) is
kept; ``GRADPATH_COMPILE_CACHE=0`` leaves the frameworks' own defaults alone (JAX: no persistent
cache; inductor: a per-user folder in the system's temporary directory) and keeps no packages
(torch then compiles with ``torch.compile`` in every run).
"""

from __future__ import annotations

import os
from pathlib import Path

from gradpath.problems.cache import user_cache_dir

OPT_OUT = "GRADPATH_COMPILE_CACHE"  # "0" leaves the frameworks' caches as they are
FRAMEWORKS = ("jax", "torch")


def enabled() -> bool:
    """Whether gradpath places the frameworks' compilation caches (``GRADPATH_COMPILE_CACHE`` is not ``0``)."""
    return os.environ.get(OPT_OUT, "1").strip() != "0"


def compile_cache_dir(framework: str) -> Path:
    """``<user cache>/compile/<framework>``: where gradpath keeps that framework's compilation cache."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; choose one of: {', '.join(FRAMEWORKS)}")
    return user_cache_dir() / "compile" / framework


def _usable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home, say: compile as if there were no cache rather than fail the run
        return False
    return os.access(path, os.W_OK)


def enable_jax_cache() -> Path | None:
    """Point JAX's persistent compilation cache at gradpath's folder (unless the user set one).

    Every compilation is cached, however short: JAX's defaults skip compilations under one
    second, and gradpath's predict and gradient functions compile in less. Returns the folder in
    use, or None when there is none (opted out, or not writable).
    """
    import jax

    chosen = jax.config.jax_compilation_cache_dir
    if chosen:
        return Path(chosen)
    path = compile_cache_dir("jax")
    if not enabled() or not _usable(path):
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # -1: no size floor, even on a GPU
    return path


def enable_inductor_cache() -> Path | None:
    """Point inductor's on-disk caches at gradpath's folder, unless a folder is already chosen.

    Must run before the first compilation: inductor fixes ``TORCHINDUCTOR_CACHE_DIR`` when it first
    reads it, and that choice (the user's, or inductor's own once it has compiled) is kept.
    Returns the folder in use, or None when gradpath leaves inductor's default alone.
    """
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen:
        return Path(chosen)
    path = compile_cache_dir("torch")
    if not enabled() or not _usable(path):
        return None
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path
