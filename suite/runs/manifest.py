"""Where and how a run ran: software versions, device, source commit, host, time and command line."""

from __future__ import annotations

import platform
import socket
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

SOURCE = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) holding suite/


def git_output(*args: str) -> str | None:
    """Output of ``git args`` in the source checkout, or None where git or the checkout is missing."""
    if not (SOURCE / ".git").exists():  # an installed copy, perhaps inside some other repository
        return None
    try:
        out = subprocess.run(["git", *args], cwd=SOURCE, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _gradpath_version() -> str | None:
    try:
        return version("gradpath")
    except PackageNotFoundError:
        return None


def manifest(backend: Any, device: str, seed: int, argv: Sequence[str]) -> dict[str, Any]:
    """The manifest of a run about to start on ``backend`` (a registered Backend) and resolved ``device``."""
    commit = git_output("rev-parse", "HEAD")
    status = git_output("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "gradpath": _gradpath_version(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "backend": backend.name,
        "versions": backend.versions(),
        "device": device,
        "device_name": backend.device_name(device),
        "git_commit": commit,
        "git_dirty": bool(status) if status is not None else None,
        "seed": seed,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "command": ["gradpath", *argv],
    }
