"""Atomic writes: a staged file (or directory) under a name that holds the writer's pid, fsync, rename.

Staged names look like ``.<name>.tdfast-tmp-<pid>-<random>`` (being written) and
``.<name>.tdfast-old-<pid>`` (the previous directory during a swap), so

- concurrent writers never collide (each has its own pid and random part),
- no user would pick such a name, so nothing of the user's is ever taken for ours,
- a writer killed mid-write leaves files that the next writer of the same target
  recognises and removes (``clean_stale``) -- only when their pid is gone, never
  a live process's.

Files get the permissions the user's umask gives (0o666 & ~umask; directories
``mkdir`` with 0o777), as a plain ``open()`` would, not mkstemp's 0600.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

TMP_TAG = "tdfast-tmp"
OLD_TAG = "tdfast-old"


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else set-and-restore."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def staged_name(target: Path) -> Path:
    """A fresh staging path beside ``target``, unique to this process and call."""
    return target.with_name(f".{target.name}.{TMP_TAG}-{os.getpid()}-{secrets.token_hex(4)}")


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this machine (one we may not signal counts too)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _staging_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.(?:{TMP_TAG}|{OLD_TAG})-(\d+)(?:-[0-9a-f]+)?$")


def clean_stale(target: Path) -> list[Path]:
    """Remove staging files/directories of ``target`` left by writers that no longer run.

    ``target``'s own swap is finished first: if only ``.<name>.tdfast-old-<dead pid>``
    is left (a kill between the two renames of ``atomic_write_dir``), it is put back as
    ``target``. Returns what was removed.
    """
    parent = target.parent
    if not parent.is_dir():
        return []
    pattern = _staging_pattern(target.name)
    removed = []
    for entry in sorted(parent.iterdir()):
        m = pattern.match(entry.name)
        if m is None or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
            continue
        if f".{OLD_TAG}-" in entry.name and not os.path.lexists(target) and entry.is_dir():
            os.replace(entry, target)
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def named_os_errors(path: Path) -> Iterator[None]:
    """Re-raise an OSError of writing ``path``'s staged file as one naming ``path`` (``f.write`` on
    a full disk names no file, ``open`` names the hidden staged one), so the CLI's one-line
    message names the file the user asked for."""
    try:
        yield
    except OSError as e:
        if e.filename is not None and TMP_TAG not in str(e.filename):
            raise
        raise type(e)(e.errno, e.strerror or str(e), str(path)) from None


def atomic_write_file(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to create a staged file beside ``path``, fsync it, rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = staged_name(path)
    try:
        with named_os_errors(path):
            write(tmp)
            # as open() would create it: some writers (safetensors, mkstemp) make 0600 files
            os.chmod(tmp, 0o666 & ~current_umask())
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_new_file(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist) holding ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write one file atomically with the permissions the umask gives."""
    atomic_write_file(path, lambda tmp: write_new_file(tmp, data))


def atomic_write_dir(directory: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` to fill a fresh directory, then swap it in for ``directory``.

    Files already in ``directory`` that ``write`` does not produce are kept (copied into
    the new directory first), so e.g. an ONNX export cached beside the weights survives a
    re-save. The swap is two renames (``directory`` -> ``.<name>.tdfast-old-<pid>``, new ->
    ``directory``); a kill between them is repaired by the next writer (``clean_stale``).
    """
    directory = Path(directory).resolve()
    directory.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(directory)
    tmp = staged_name(directory)
    os.mkdir(tmp, 0o777)
    old = directory.with_name(f".{directory.name}.{OLD_TAG}-{os.getpid()}")
    try:
        write(tmp)
        if directory.is_dir():
            for item in directory.iterdir():
                if not (tmp / item.name).exists() and item.is_file():
                    shutil.copy2(item, tmp / item.name)
        for f in tmp.iterdir():
            if f.is_file():
                fsync_file(f)
        if old.exists():
            shutil.rmtree(old)
        if directory.exists():
            os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory
