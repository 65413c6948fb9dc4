"""Compiled torch steps kept on disk as AOTInductor packages, so that a repeated run skips tracing too.

inductor's own caches skip code generation on a repeated compile, but not the tracing around it
(make_fx, then dynamo again): about 8 s for Helmholtz M4 on the development machine. An
AOTInductor package is the compiled graph with its C++ runner, loaded in about a second with no
tracing at all. Each package is keyed by the configuration (:func:`compile_choice.configuration_key`:
gradpath's source, torch's version, the problem and every setting that enters the graph) plus the
graph's role and the shapes and dtypes of its inputs, and lives in
``<user cache>/compile/torch/packages/``; a package that cannot be loaded is built again.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import uuid
from collections.abc import Callable, Hashable
from pathlib import Path

import torch
import torch.utils._pytree as pytree
from torch.fx.experimental.proxy_tensor import make_fx

from gradpath.backends.compile_cache import compile_cache_dir, enabled


def available() -> bool:
    """Whether compiled steps are kept as packages: this torch can load them (2.6 and later) and the
    compilation caches are not turned off (``GRADPATH_COMPILE_CACHE=0``: then torch.compile as is)."""
    # the loader only: building one imports torch._inductor, which imports dynamo (a second of a
    # warm start), and a torch without aoti_compile_and_package fails there and compiles otherwise
    return enabled() and hasattr(torch._C, "_aoti") and hasattr(torch._C._aoti, "AOTIModelPackageLoader")


def package_path(configuration: str, key: Hashable, args: tuple) -> Path:
    """Where the package of graph ``key`` of ``configuration`` for inputs like ``args`` lives."""
    leaves, spec = pytree.tree_flatten(args)
    described = json.dumps([repr(key), str(spec),
                            [(tuple(t.shape), str(t.dtype), str(t.device)) for t in leaves]])
    digest = hashlib.sha256(described.encode()).hexdigest()[:16]
    return compile_cache_dir("torch") / "packages" / f"{configuration}-{key[0]}-{digest}.pt2"


def _runner(path: Path) -> Callable:
    """The loaded package at ``path`` as a function of the graph's (nested) inputs."""
    out_spec = pytree.treespec_loads(path.with_suffix(".spec").read_text())
    # the loader itself, as torch._inductor.aoti_load_package makes it, without importing dynamo;
    # the graph's inputs and outputs are flat tuples of tensors (see compiled)
    loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)

    def run(*args):
        # contiguous: the compiled code assumes the memory layout it was built for, and a batch
        # sliced out of a chunk (lanes x steps x ...) is strided otherwise (it would read other data)
        leaves = [t.contiguous() for t in pytree.tree_leaves(args)]
        return pytree.tree_unflatten(list(loader.boxed_run(leaves)), out_spec)

    return run


def compiled(path: Path, fn: Callable, args: tuple) -> tuple[Callable, bool]:
    """``fn`` compiled for inputs like ``args``: loaded from ``path`` if it is there, else traced,
    compiled and saved there. Returns the function and whether it was loaded."""
    if path.exists() and path.with_suffix(".spec").exists():
        try:
            return _runner(path), True
        except Exception:  # noqa: BLE001 - a damaged or foreign package is built again
            pass
    args = pytree.tree_map(lambda t: t.contiguous(), args)  # the layout every call will pass (see _runner)
    graph = make_fx(lambda *a: fn(*a))(*args)
    leaves, in_spec = pytree.tree_flatten(args)
    _, out_spec = pytree.tree_flatten(graph(*args))

    class Flat(torch.nn.Module):  # export takes tensors in and out, not dicts of them
        def forward(self, *flat):
            return tuple(pytree.tree_leaves(graph(*pytree.tree_unflatten(list(flat), in_spec))))

    program = torch.export.export(Flat(), tuple(leaves), strict=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.pt2")  # unique across processes and hosts
    spec_tmp = tmp.with_suffix(".spec")
    try:
        inductor = importlib.import_module("torch._inductor")  # only where a package is built
        inductor.aoti_compile_and_package(program, package_path=str(tmp))
        spec_tmp.write_text(pytree.treespec_dumps(out_spec))
        os.replace(spec_tmp, path.with_suffix(".spec"))
        os.replace(tmp, path)  # last: a package on disk always has its spec beside it
    finally:
        tmp.unlink(missing_ok=True)
        spec_tmp.unlink(missing_ok=True)
    return _runner(path), False


def holds(configuration: str) -> bool:
    """Whether any package of ``configuration`` is on disk (its graphs compiled before)."""
    folder = compile_cache_dir("torch") / "packages"
    return folder.is_dir() and any(folder.glob(f"{configuration}-*.pt2"))

