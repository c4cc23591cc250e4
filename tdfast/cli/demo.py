"""``tdfast demo``: synthetic data -> train -> export -> batched retrieval -> latency table."""
from __future__ import annotations

import argparse

from tdfast.threads import add_threads_argument


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="make a synthetic dataset, train, export, retrieve, time (1-2.5 minutes on 2 CPU cores)",
        description="The main job end to end on an embedded synthetic dataset: train the tiny preset, "
                    "show val metrics before/after, export to ONNX (verified), retrieve a batch of "
                    "test queries on each backend, score val predictions, print a latency table.")
    p.add_argument("--out", default="tdfast-demo", metavar="DIR",
                   help="working directory (default ./tdfast-demo; replaced if an earlier demo made it)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--num-train", type=int, default=400, help="synthetic training videos (default 400)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the training run")
    p.add_argument("--backends", default="eager,onnxruntime",
                   help="comma-separated Retriever backends to compare (default eager,onnxruntime; "
                        "also compile, triton, tensorrt)")
    p.add_argument("--batch-sizes", "--batch", type=_ints, default=(1, 8, 32), metavar="B,B,...",
                   help="batch sizes of the latency table (default 1,8,32; --batch is the old spelling)")
    p.add_argument("--quick", action="store_true",
                   help="tiny everything: a smoke run of every step, to check an install; its model "
                        "does not learn (2 epochs on 48 videos), and the output says so")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_threads_argument(p, help="CPU threads for PyTorch and ONNX Runtime (default 1, unlike the other "
                         "commands: the tiny model's ops are too small to split, and extra threads made "
                         "training 10-100x slower on a busy 2-core machine; docs/benchmarks.md)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tdfast.cli.paths import check_out_dir
    from tdfast.demo import DemoOptions, run_demo

    check_out_dir("--out", args.out)
    given = dict(out_dir=Path(args.out), seed=args.seed, progress=not args.no_progress,
                 threads=1 if args.threads is None else args.threads,
                 backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()))
    if args.quick:
        options = DemoOptions.quick(**given)
    else:
        options = DemoOptions(epochs=args.epochs, num_train=args.num_train, batch_sizes=args.batch_sizes, **given)
    run_demo(options)
    return 0
