"""Output paths checked before a command does any work (loading, exporting, training):
``--out`` that must become a file can't be an existing directory, and one that must
become a directory can't be an existing file."""
from __future__ import annotations

from pathlib import Path

from tdfast.errors import InputError


def check_out_file(flag: str, path: str | Path | None) -> None:
    if path is not None and Path(path).is_dir():
        raise InputError(f"{flag} {str(path)!r}: expected a file to write, but it is a directory")


def check_out_dir(flag: str, path: str | Path | None) -> None:
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise InputError(f"{flag} {str(path)!r}: expected a directory, but it is a file")


def check_writable_dir(flag: str, path: str | Path) -> None:
    """Create directory ``path`` if needed and prove it writable with a staged file of our own
    (removed again), so a command fails in one line before its slow work, not after it.
    OSErrors (no permission, a file in the way) name the path."""
    from tdfast.atomic import named_os_errors, staged_name, write_new_file

    check_out_dir(flag, path)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    probe = staged_name(path / ".probe")
    with named_os_errors(path):
        write_new_file(probe, b"")
    probe.unlink()
