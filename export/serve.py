"""``serve``: write a checkpoint's moments model and start the bundled Triton server on it."""
from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

from tdfast.export.triton_process import TritonServer, bundled_server, check_ports, start_server
from tdfast.export.formats import ensure_export
from tdfast.export.triton_python import EXPORT_FORMATS, MOMENTS_MODEL_NAME, write_python_model


def serve(ckpt_dir: str | Path, repository: str | Path | None = None, backend: str = "onnxruntime",
          http_port: int | None = None, grpc_port: int | None = None, threads: int = 1,
          instance_count: int = 1, max_batch_size: int = 32, dynamic_batching: bool = True,
          max_queue_delay_us: int = 0, top_k: int = 5, timeout_s: float = 300.0) -> TritonServer:
    """Serve checkpoint ``ckpt_dir`` as the ``tdfast_moments`` model on 127.0.0.1 and return
    the ready server (``.http_url``, ``.grpc_url``, ``.stop()``).

    ``repository``: where the model repository is written (None: a temporary folder,
    removed when the server stops). The other arguments are ``write_python_model``'s and
    ``start_server``'s. Without the server installed: ``BackendUnavailableError`` before any work.
    """
    bundled_server()  # fail fast: a missing server or a bad port is reported before the export
    check_ports(http_port, grpc_port)
    owned = repository is None
    repo = Path(tempfile.mkdtemp(prefix="tdfast-repo-")) if owned else Path(repository)
    try:
        export = ensure_export(ckpt_dir, EXPORT_FORMATS[backend]) if backend in EXPORT_FORMATS else None
        write_python_model(ckpt_dir, repo, backend=backend, export_file=export, max_batch_size=max_batch_size,
                           dynamic_batching=dynamic_batching, max_queue_delay_us=max_queue_delay_us,
                           instance_count=instance_count, threads=threads, top_k=top_k)
        server = start_server(repo, [MOMENTS_MODEL_NAME], http_port, grpc_port, timeout_s)
    except BaseException:
        if owned:
            shutil.rmtree(repo, ignore_errors=True)
        raise
    if owned:
        weakref.finalize(server, shutil.rmtree, repo, True)
    return server
