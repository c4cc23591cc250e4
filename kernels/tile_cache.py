"""Where the tile probe keeps its verdicts: ``$XDG_CACHE_HOME/tdfast/kernel_tiles.json``
(default ``~/.cache/tdfast``), one entry per Triton version and SM version.

Read by the launcher's tile choice (``launch_config.fit_16bit``), written by the probe
(``tile_probe.ensure_fit16``). Plain JSON, importing nothing of the kernels, so both can use it.
"""
from __future__ import annotations

import json
from pathlib import Path

from tdfast.atomic import atomic_write_bytes
from tdfast.userdirs import user_cache_dir


def cache_path() -> Path:
    return user_cache_dir() / "kernel_tiles.json"


def _key(triton_version: str, arch: int) -> str:
    return f"triton-{triton_version}/sm_{arch}"


def _entries() -> dict:
    try:
        entries = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: probe again rather than trust it
    return entries if isinstance(entries, dict) else {}


def cached_fit16(triton_version: str | None, arch: int) -> int | None:
    """The probed index into ``launch_config.FIT16_CANDIDATES`` for this Triton and arch, or None."""
    if triton_version is None:
        return None
    entry = _entries().get(_key(triton_version, arch))
    index = entry.get("candidate") if isinstance(entry, dict) else None
    return index if isinstance(index, int) and not isinstance(index, bool) and index >= 0 else None


def store_fit16(triton_version: str, arch: int, candidate: int, evidence: list[dict]) -> Path:
    """Record the probe's verdict (and the ptxas reports behind it) atomically; returns the file."""
    entries = _entries()
    entries[_key(triton_version, arch)] = {"candidate": candidate, "evidence": evidence}
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(entries, indent=1) + "\n").encode())
    return path
