"""Several files of one directory replaced together: a kill at any point leaves all old or all new.

A checkpoint is two files (``config.json`` + ``model.safetensors``) that only load as a pair;
renaming them into place one after the other leaves, for a kill between the renames, new
weights beside the old config. ``commit_files`` makes the pair change at one instant:

1. every new file is written under a staged name beside its target (``tdfast.atomic``) and
   fsynced -- a kill here leaves the old files untouched, and the staged ones to
   ``clean_stale``;
2. a journal ``.tdfast-commit.json`` naming each staged file and its target is written
   atomically -- *the commit point*: from here on the new files are the directory's content;
3. each staged file is renamed onto its target, then the journal is removed.

A kill between 2 and 3 is finished by whoever next reads or writes the directory
(``finish_commit``: the pending renames, then the journal goes). Writers and readers take
``flock`` on the directory itself (exclusive to commit, shared to read), so a reader never
sees half a commit and two writers never interleave their renames; the kernel drops a lock
when its process dies, so a killed process never leaves one behind.

``TDFAST_TEST_KILL_AT=<point>`` (tests only) makes the process SIGKILL itself at a named point
(``staged``, ``journal``, ``renamed:<name>``) to test exactly these windows.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

from tdfast.atomic import (TMP_TAG, atomic_write_bytes, clean_stale, current_umask, fsync_file, named_os_errors,
                           staged_name)
from tdfast.errors import InputError

JOURNAL = ".tdfast-commit.json"
KILL_ENV = "TDFAST_TEST_KILL_AT"


def kill_point(name: str) -> None:
    """Test hook: SIGKILL this process at the named point when ``TDFAST_TEST_KILL_AT`` names it."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable (a no-op where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(directory: Path, exclusive: bool) -> Iterator[None]:
    """``flock`` on ``directory`` itself (no lock file to leave behind), blocking."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _journal_entries(directory: Path) -> list[tuple[Path, Path]]:
    """(staged, target) pairs of the journal; only staged names of their own target are honoured,
    so a journal can never rename anything but tdfast's own staged files."""
    path = directory / JOURNAL
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        pairs = [(str(s), str(t)) for s, t in data["renames"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: unreadable commit journal ({type(e).__name__}); it is tdfast's record "
                         f"of an interrupted save: remove it to keep the files as they are") from None
    out = []
    for staged, target in pairs:
        ok = ("/" not in target and not target.startswith(".")
              and re.fullmatch(rf"\.{re.escape(target)}\.{TMP_TAG}-\d+-[0-9a-f]+", staged))
        if not ok:
            raise InputError(f"{path}: entry {staged!r} -> {target!r} is not a tdfast staged file of its "
                             f"target; remove the journal to keep the files as they are")
        out.append((directory / staged, directory / target))
    return out


def _roll_forward(directory: Path) -> None:
    """Finish the renames a journal lists, then remove it (caller holds the exclusive lock)."""
    for staged, target in _journal_entries(directory):
        if staged.exists():
            os.replace(staged, target)
    fsync_dir(directory)
    (directory / JOURNAL).unlink(missing_ok=True)
    fsync_dir(directory)


def finish_commit(directory: str | Path) -> None:
    """Complete a commit a kill interrupted after its commit point (a no-op when there is none)."""
    directory = Path(directory)
    if not (directory / JOURNAL).is_file():
        return
    try:
        with locked(directory, exclusive=True):
            if (directory / JOURNAL).is_file():
                _roll_forward(directory)
    except OSError as e:
        raise InputError(f"{directory}: a save interrupted after its commit point can't be finished here "
                         f"({e.strerror}); open the directory where it is writable") from None


@contextlib.contextmanager
def reading(directory: str | Path) -> Iterator[None]:
    """Read a directory's committed files consistently: an interrupted commit is finished first,
    and no commit runs while the caller reads."""
    directory = Path(directory)
    finish_commit(directory)
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # absent / not a directory: the caller's own checks name the problem
        fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def commit_files(directory: str | Path, writers: dict[str, Callable[[Path], None]]) -> Path:
    """Replace the files ``writers`` names in ``directory`` all at once (see the module docstring).

    ``writers[name](tmp)`` writes the new content of ``name`` to the path ``tmp``. Other files of
    the directory are left alone. OSErrors (disk full, file-size limit, permissions) name the file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # a killed commit's staged files are the directory's content once its journal exists:
    # finish it before clean_stale could take them for a dead writer's leftovers
    finish_commit(directory)
    staged: dict[str, Path] = {}
    try:
        for name, write in writers.items():
            clean_stale(directory / name)
            tmp = staged[name] = staged_name(directory / name)
            with named_os_errors(directory / name):
                write(tmp)
                os.chmod(tmp, 0o666 & ~current_umask())
                fsync_file(tmp)
        fsync_dir(directory)
        kill_point("staged")
        with locked(directory, exclusive=True):
            if (directory / JOURNAL).is_file():  # an older commit a kill interrupted comes first
                _roll_forward(directory)
            journal = {"renames": [[tmp.name, name] for name, tmp in staged.items()]}
            with named_os_errors(directory / JOURNAL):
                atomic_write_bytes(directory / JOURNAL, json.dumps(journal).encode("utf-8"))
            fsync_dir(directory)
            kill_point("journal")
            for name, tmp in staged.items():
                os.replace(tmp, directory / name)
                kill_point(f"renamed:{name}")
            fsync_dir(directory)
            (directory / JOURNAL).unlink()
    except BaseException:
        if not (directory / JOURNAL).is_file():  # before the commit point: the old files stay
            for tmp in staged.values():
                tmp.unlink(missing_ok=True)
        raise
    return directory
