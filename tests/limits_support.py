"""Run ``tdfast`` in a child process under the limits a user's machine may impose: a file-size
limit (``ulimit -f``; SIGXFSZ ignored, as Python does, so the write fails with EFBIG) and
permission bits that bind (as root they bind nobody: the child drops the capabilities that
override them, CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, keeping its uid, so it still reads
the interpreter and the repository)."""
from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def drop_permission_override() -> None:
    """In a child before exec: permission bits bind this process even if it is root."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_tdfast(args: list[str], *, fsize_bytes: int | None = None, unprivileged: bool = False,
               cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m tdfast ARGS`` with the given limits; returns the finished process."""
    def limits() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if fsize_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_bytes, fsize_bytes))
        if unprivileged:
            drop_permission_override()

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HOME": "/tmp"}
    return subprocess.run([sys.executable, "-m", "tdfast", *args], capture_output=True, text=True,
                          preexec_fn=limits, cwd=cwd, env=env, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess, command: str, *parts: str) -> str:
    """Assert ``proc`` failed with exit 2 and exactly one stderr line ``tdfast CMD: error: ...``
    naming each of ``parts``; returns the line."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"tdfast {command}: error: "), lines[0]
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def run_cli_forked(args: list[str], fsize_bytes: int) -> subprocess.CompletedProcess:
    """``tdfast ARGS`` in a forked child of this process under a file-size limit: the same as
    ``run_tdfast(..., fsize_bytes=...)`` without a fresh interpreter importing torch."""
    import tempfile

    from tdfast.cli import main

    with tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # child: never returns into pytest
            code = 3
            try:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_bytes, fsize_bytes))
                os.dup2(err.fileno(), 2)
                sys.stderr = os.fdopen(2, "w", buffering=1)
                code = main(args)
            except BaseException:
                import traceback

                traceback.print_exc()  # into the captured stderr: why the child failed
                sys.stderr.flush()
            finally:
                os._exit(code)
        status = os.waitpid(pid, 0)[1]
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    return subprocess.CompletedProcess(args, os.waitstatus_to_exitcode(status), "", stderr)
