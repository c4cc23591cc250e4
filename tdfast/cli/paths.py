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
