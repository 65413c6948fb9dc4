"""``gradpath cache``: what gradpath keeps in its user cache folder, and ``gradpath cache clear`` to empty it.

The folder (:func:`gradpath.problems.cache.user_cache_dir`) holds only what can be recomputed: the cavity's
reference solutions and the frameworks' compilation caches (:mod:`gradpath.backends.compile_cache`).
Clearing it costs time on the next run, never a result.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

from gradpath.backends.compile_cache import compile_cache_dir
from gradpath.problems.cache import user_cache_dir
from gradpath.problems.errors import UsageError, unknown_choice

PARTS = ("jax", "torch", "cavity")  # what ``--only`` may name


def _paths(part: str) -> list[Path]:
    """The files or folders that make up one part of the cache."""
    if part == "cavity":
        return sorted(user_cache_dir().glob("cavity_*.npz"))
    return [compile_cache_dir(part)]


def _size(path: Path) -> tuple[int, int]:
    """Bytes and files under ``path`` (a file or a folder; 0, 0 if it is not there)."""
    if path.is_file():
        return path.stat().st_size, 1
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    return sum(p.stat().st_size for p in files), len(files)


def describe() -> list[tuple[str, int, int]]:
    """``(part, bytes, files)`` for each part of the cache."""
    out = []
    for part in PARTS:
        sizes = [_size(p) for p in _paths(part)]
        out.append((part, sum(b for b, _ in sizes), sum(n for _, n in sizes)))
    return out


def clear(parts: Sequence[str]) -> None:
    """Delete those parts of the cache (the folder itself and anything else in it stay)."""
    for part in parts:
        for path in _paths(part):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def add_cache_command(commands: argparse._SubParsersAction) -> None:
    """Register ``gradpath cache [clear [--only PART]]``."""
    sub = commands.add_parser(
        "cache", help="show or clear gradpath's cache (compiled steps, cavity references)",
        description="gradpath keeps what it can recompute in $GRADPATH_CACHE (default ~/.cache/gradpath): JAX's "
                    "persistent compilation cache (compile/jax), inductor's caches and the compile ledger "
                    "that --compile auto reads (compile/torch), and the cavity's reference solutions. "
                    "GRADPATH_COMPILE_CACHE=0 leaves the frameworks' own cache settings alone.")
    sub.set_defaults(command=cmd_cache)
    sub.add_argument("action", nargs="?", default="show", choices=["show", "clear"],
                     help="show (default) lists each part's size; clear deletes it")
    sub.add_argument("--only", action="append", metavar="PART",
                     help=f"with clear: only this part, one of {', '.join(PARTS)} (repeatable; default: all)")


def cmd_cache(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.only and args.action != "clear":
        raise UsageError("--only goes with clear: gradpath cache clear --only PART")
    parts = list(dict.fromkeys(args.only or PARTS))
    for part in parts:
        if part not in PARTS:
            raise unknown_choice("cache part", part, PARTS)
    if args.action == "clear":
        clear(parts)
        print(f"cleared {', '.join(parts)} in {user_cache_dir()}")
        return 0
    print(f"gradpath cache: {user_cache_dir()}")
    for part, size, files in describe():
        print(f"  {part:7s} {size / 2**20:8.1f} MiB in {files} files")
    return 0
