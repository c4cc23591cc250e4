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
    """InputError / OSError naming ``path`` unless the directory ``path`` (or, if it does not
    exist yet, its nearest existing parent, where it would be created) takes a new file: a
    staged file of our own is written and removed again, so a command fails in one line
    before its slow work, not after it, and creates nothing."""
    from tdfast.atomic import named_os_errors, staged_name, write_new_file

    check_out_dir(flag, path)
    target = Path(path).absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    if not target.is_dir():
        raise InputError(f"{flag} {str(path)!r}: {target} is a file, so no directory can be made there")
    probe = staged_name(target / ".probe")
    with named_os_errors(Path(path)):
        write_new_file(probe, b"")
    probe.unlink()
