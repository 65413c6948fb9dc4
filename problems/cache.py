"""gradpath's user cache folder, shared by everything it keeps between processes.

``$GRADPATH_CACHE``, else ``~/.cache/gradpath``. It holds the cavity's reference solutions
(``cavity_*.npz``) and the frameworks' compilation caches (``compile/jax``, ``compile/torch``);
``gradpath cache`` lists what is there and ``gradpath cache clear`` empties it. Nothing in it is
a result: every file can be recomputed, so clearing it only costs time.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """``$GRADPATH_CACHE`` if set (and not empty), else ``~/.cache/gradpath``."""
    return Path(os.environ.get("GRADPATH_CACHE") or Path.home() / ".cache" / "gradpath")
