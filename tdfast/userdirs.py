"""Per-user directories tdfast writes outside a checkpoint."""
from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/tdfast`` (default ``~/.cache/tdfast``): exports of read-only checkpoints
    (one subdirectory per weights hash) and the kernel tile probe's verdicts."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tdfast"
