"""Start and stop the ``tritonserver`` that the ``nvidia-pytriton`` wheel bundles (CPU, Python backend).

The wheel ships the real Triton Inference Server binary (2.51) with its Python backend,
but one stub per Python version beside it and no onnxruntime backend. tdfast never
changes those installed files: each server gets a private backend directory in its
own temporary folder (``backends/python`` = the backend library, its utils module and
the stub for the running Python), removed when the server stops.

The server listens on 127.0.0.1 only, on free ports unless given, loads only the named
models (``--model-control-mode explicit``), and runs in its own process group with its
stub processes; ``stop()`` asks it to shut down (SIGTERM), then kills the group, so no
stub outlives it. A finalizer does the same when a ``TritonServer`` is dropped or the
interpreter exits.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path

from tdfast.errors import BackendUnavailableError, InputError

INSTALL_HINT = "pip install 'tdfast[serve]' (the nvidia-pytriton wheel bundles tritonserver; Linux x86-64)"


def bundled_server() -> tuple[Path, Path, Path]:
    """(tritonserver binary, its install folder, its shared-library folder) from nvidia-pytriton;
    BackendUnavailableError saying how to install it when absent."""
    spec = importlib.util.find_spec("pytriton")  # located, not imported: its import is heavy
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(f"no Triton Inference Server found: {INSTALL_HINT}")
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    binary = root / "bin" / "tritonserver"
    if not binary.is_file():
        raise BackendUnavailableError(f"nvidia-pytriton is installed but {binary} is missing: {INSTALL_HINT}")
    return binary, root, root.parent.parent / "nvidia_pytriton.libs"


def make_backend_dir(root: Path, work: Path) -> Path:
    """``work/backends`` holding copies of the Python backend and the stub for this Python."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise BackendUnavailableError(f"the bundled Triton has no Python backend stub for Python {version} "
                                      f"({stub} is missing); use a Python it ships stubs for")
    python = work / "backends" / "python"
    python.mkdir(parents=True)
    for src in [*(root / "backends" / "python").glob("*.*"), stub]:
        shutil.copy2(src, python / src.name)
    return work / "backends"


def server_environment(libs: Path) -> dict[str, str]:
    """The server's environment: this Python's shared library first on the loader path (the stub
    embeds it), the wheel's libraries, and this environment's site-packages for the stub."""
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = [p for p in (libdir, str(libs), env.get("LD_LIBRARY_PATH")) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(paths)
    sites = [*site.getsitepackages(), site.getusersitepackages()]
    env["TDFAST_SITE_PACKAGES"] = os.pathsep.join(p for p in sites if Path(p).is_dir())
    return env


def check_ports(http_port: int | None, grpc_port: int | None) -> None:
    """InputError unless each port is None (a free one) or a TCP port number."""
    for name, port in (("http_port", http_port), ("grpc_port", grpc_port)):
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
            raise InputError(f"{name}: expected a TCP port 1..65535 or None (a free one), got {port!r}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(process: subprocess.Popen, work: Path, grace_s: float) -> None:
    """SIGTERM (Triton unloads its models, the stubs exit), then SIGKILL the whole group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:  # the group outlives its leader while a stub is alive; its id is the server's pid
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    shutil.rmtree(work, ignore_errors=True)


class TritonServer:
    """A running ``tritonserver`` (see ``start_server``): ``http_url``, ``grpc_url``
    (``host:port``), ``repository``, ``models``, ``log_path``; ``stop()`` or use it as a
    context manager."""

    def __init__(self, process: subprocess.Popen, work: Path, repository: Path, http_port: int,
                 grpc_port: int, models: list[str]) -> None:
        self.process, self.work, self.repository, self.models = process, work, repository, models
        self.http_url, self.grpc_url = f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
        self.log_path = work / "tritonserver.log"
        self._finalizer = weakref.finalize(self, _stop, process, work, 15.0)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def is_ready(self) -> bool:
        """The server and every model answer ready on the HTTP endpoint."""
        urls = ["/v2/health/ready", *(f"/v2/models/{m}/ready" for m in self.models)]
        try:
            for url in urls:
                with urllib.request.urlopen(f"http://{self.http_url}{url}", timeout=2) as r:
                    if r.status != 200:
                        return False
        except (urllib.error.URLError, OSError):
            return False
        return True

    def wait_ready(self, timeout_s: float) -> None:
        """Block until ready; RuntimeError with the log's tail if the server exits or times out."""
        deadline = time.monotonic() + timeout_s
        while not self.is_ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with code {self.process.returncode} before it "
                                   f"was ready; its log ends:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"tritonserver not ready after {timeout_s:g} s; its log ends:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Shut the server and its stubs down (idempotent); removes its temporary folder."""
        self._finalizer()

    def __enter__(self) -> "TritonServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(repository: str | Path, models: list[str], http_port: int | None = None,
                 grpc_port: int | None = None, timeout_s: float = 300.0) -> TritonServer:
    """Start the bundled ``tritonserver`` on ``repository`` serving ``models`` and wait until
    they are ready. Ports default to free ones; everything binds to 127.0.0.1."""
    binary, root, libs = bundled_server()
    repository = Path(repository)
    missing = [m for m in models if not (repository / m / "config.pbtxt").is_file()]
    if not models or missing:
        raise InputError(f"models: expected model names with a config.pbtxt under {repository}, "
                         f"got {models!r} (missing: {missing})")
    check_ports(http_port, grpc_port)
    http_port = http_port or free_port()
    grpc_port = grpc_port or free_port()
    work = Path(tempfile.mkdtemp(prefix="tdfast-triton-"))
    try:
        backends = make_backend_dir(root, work)
        cmd = [str(binary), f"--model-repository={repository.resolve()}", f"--backend-directory={backends}",
               "--model-control-mode=explicit", *(f"--load-model={m}" for m in models),
               "--http-address=127.0.0.1", f"--http-port={http_port}", "--grpc-address=127.0.0.1",
               f"--grpc-port={grpc_port}", "--allow-metrics=false", "--exit-timeout-secs=10"]
        with open(work / "tritonserver.log", "wb") as log:
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=server_environment(libs), start_new_session=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    server = TritonServer(process, work, repository, http_port, grpc_port, list(models))
    try:
        server.wait_ready(timeout_s)
    except BaseException:
        server.stop()
        raise
    return server
