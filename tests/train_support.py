"""Child ``tdfast train`` processes for the training tests: one torch thread, own session so a
timeout kills the launcher and all its workers."""
from __future__ import annotations

import os
import signal
import subprocess


def _default_sigint() -> None:
    # A shell runs a background job (`pytest ... &`) with SIGINT ignored, exec keeps it ignored, and
    # Python then installs no KeyboardInterrupt handler: the child must get Ctrl-C as a user's
    # foreground `tdfast train` does.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(cmd: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, preexec_fn=_default_sigint)


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for ``proc`` (killed with its process group after ``timeout`` s); assert it exited 0;
    returns its stdout."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    return stdout
