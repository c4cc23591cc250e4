"""``tdfast convert``: an official QD-DETR / TD-DETR checkpoint file -> a tdfast checkpoint directory."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a checkpoint saved by the official QD-DETR or TD-DETR code",
        description="Reads the file the official training code saves (a dict with 'model', 'opt', "
        "'epoch'; loaded without running code), tells the family from its keys, takes the config "
        "from 'opt', maps every tensor and writes a tdfast checkpoint directory (config.json + "
        "model.safetensors) that serves, exports and benchmarks like any other.",
    )
    p.add_argument("checkpoint", help="official checkpoint file, e.g. results/.../model_best.ckpt")
    p.add_argument("--out", required=True, help="new checkpoint directory (must not exist, or be empty)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tdfast.convert import check_new_dir, read_official, save_converted, summary

    check_new_dir(args.out)  # before the (possibly slow) read
    conv = read_official(args.checkpoint)
    path = save_converted(conv, args.out)
    print(summary(conv))
    print(f"wrote       {path}")
    return 0
