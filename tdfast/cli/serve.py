"""``tdfast serve CKPT``: serve a checkpoint on the Triton Inference Server bundled with ``tdfast[serve]``.

Writes the moments model (Python backend; ``docs/export.md``, "Serving"), starts
``tritonserver`` on 127.0.0.1, prints the HTTP and gRPC endpoints and serves until
Ctrl-C (or SIGTERM), then stops the server and its stub processes. Exit codes: 0
stopped by the user; 1 the server died; 2 bad arguments or no server installed.
"""
from __future__ import annotations

import argparse

from tdfast.cli.choices import TableKeys


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve a checkpoint on a local Triton Inference Server",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--repo", default=None, help="write the model repository here and keep it "
                   "(default: a temporary folder, removed on exit)")
    p.add_argument("--backend", default="onnxruntime", choices=TableKeys("tdfast.export.triton_python",
                   "SERVED_BACKENDS"), metavar="NAME", help="what runs the model: %(choices)s (default: onnxruntime)")
    p.add_argument("--http-port", type=int, default=None, help="HTTP port (default: a free one)")
    p.add_argument("--grpc-port", type=int, default=None, help="gRPC port (default: a free one)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per model instance (default: 1)")
    p.add_argument("--instances", type=int, default=1, help="model instances, one process each (default: 1)")
    p.add_argument("--max-batch", type=int, default=32, help="most pairs per batch (default: 32)")
    p.add_argument("--no-dynamic-batching", dest="dynamic_batching", action="store_false",
                   help="run each request alone instead of merging concurrent ones")
    p.add_argument("--max-queue-delay-us", type=int, default=0,
                   help="how long the batcher waits for more requests, microseconds (default: 0: a batch "
                   "is what queued while the instance was busy, no wait when idle)")
    p.add_argument("--top-k", type=int, default=5, help="moments per pair when a request sends no top_k")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import signal
    import sys
    import time

    from tdfast.cli.paths import check_out_dir
    from tdfast.export.serve import serve
    from tdfast.export.triton_python import MOMENTS_MODEL_NAME

    check_out_dir("--repo", args.repo)

    def interrupt(signum, frame):  # SIGTERM stops as Ctrl-C does, through the finally below
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    server = serve(args.ckpt, args.repo, args.backend, args.http_port, args.grpc_port, args.threads,
                   args.instances, args.max_batch, args.dynamic_batching, args.max_queue_delay_us, args.top_k)
    try:
        print(f"serving {args.ckpt} as model '{MOMENTS_MODEL_NAME}' ({args.backend}, {args.instances} x "
              f"{args.threads} thread(s), dynamic batching {'on' if args.dynamic_batching else 'off'})\n"
              f"  HTTP  http://{server.http_url}/v2/models/{MOMENTS_MODEL_NAME}/infer\n"
              f"  gRPC  {server.grpc_url}\n"
              f"  repository {server.repository}\n"
              f"Ctrl-C stops the server.", flush=True)
        while server.process.poll() is None:
            time.sleep(0.5)
        print(f"tdfast serve: tritonserver exited with code {server.process.returncode}; its log ends:\n"
              f"{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping tritonserver ...", flush=True)
        return 0
    finally:
        server.stop()
