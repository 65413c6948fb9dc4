"""``gradpath reference``: compute (or read from the cache) a problem's numerical reference solution."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence


def add_reference_command(commands: argparse._SubParsersAction, finite_float) -> None:
    """Register ``gradpath reference cavity --re X --n N``."""
    ref = commands.add_parser(
        "reference", help="compute (or load from the cache) the cavity reference solution",
        description="Solve the steady lid-driven cavity with gradpath's own finite-difference Newton solver "
                    "and cache it on disk; the cavity problem does the same on first use.")
    ref.set_defaults(command=cmd_reference)
    ref.add_argument("problem", metavar="PROBLEM", choices=["cavity"], help="cavity (the only problem without a closed form)")
    ref.add_argument("--re", type=finite_float, default=100.0, metavar="X", help="Reynolds number (default: 100)")
    ref.add_argument("--n", type=int, default=256, metavar="N", help="grid cells per side (default: 256)")


def cmd_reference(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Solve or load the reference, then print its centreline extrema and, at Re = 100, Ghia's deviation."""
    from gradpath.problems import cavity_reference as cr

    t0 = time.perf_counter()
    u, v = cr.reference_velocity(args.re, args.n)
    seconds = time.perf_counter() - t0
    print(f"cavity reference, Re={args.re:g}, {args.n}x{args.n} cells: {seconds:.1f} s "
          f"(solved, or read from the cache in {cr.cache_dir()})")
    if args.n % 2 == 0:
        mid = args.n // 2
        print(f"  centrelines: min u(0.5, y) = {u[mid].min():.5f}, max v(x, 0.5) = {v[:, mid].max():.5f}, "
              f"min v(x, 0.5) = {v[:, mid].min():.5f}")
    if args.re == 100:
        dev = cr.ghia_deviation(args.re, args.n)
        print(f"  max |deviation| from Ghia, Ghia & Shin (1982): u on x = 0.5: {dev['u_vertical']:.4f} "
              f"(y = {dev['u_vertical_at']:.3f}); v on y = 0.5: {dev['v_horizontal']:.4f} (x = {dev['v_horizontal_at']:.3f})")
    return 0
