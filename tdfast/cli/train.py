"""``tdfast train``: train TD-DETR from annotation jsonl + feature dirs into a checkpoint dir."""
from __future__ import annotations

import argparse
import json
import sys

from tdfast.cli.choices import TableKeys
from tdfast.presets import PRESETS
from tdfast.threads import add_threads_argument, apply_threads


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a checkpoint (multi-process: torchrun --nproc_per_node=N -m tdfast train ...)",
        description="Train TD-DETR. --out receives the best weights (by val MR-full-mAP; Charades "
                    "protocol: R1@0.5, then mIoU), loadable by TDDETR.from_pretrained / tdfast predict, "
                    "last/ for --resume, and log.jsonl. See docs/training.md.")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="config preset (required unless --resume, which reuses the checkpoint's config)")
    p.add_argument("--train", required=True, help="training annotations (jsonl)")
    p.add_argument("--val", help="validation annotations (jsonl); without it the last epoch is kept")
    p.add_argument("--video-feats", nargs="+", required=True, metavar="DIR",
                   help="video feature dirs (<vid>.npz), concatenated along the feature axis")
    p.add_argument("--text-feats", required=True, metavar="DIR", help="query feature dir (qid<qid>.npz)")
    p.add_argument("--out", required=True, metavar="CKPT_DIR", help="run directory to create")
    p.add_argument("--epochs", type=int, help="epochs (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="the one seed of the run (default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a network or training config field, e.g. --set use_vsdc=false "
                        "(repeatable; fields in docs/training.md)")
    p.add_argument("--resume", metavar="CKPT_DIR", help="continue a run exactly (its dir or its last/)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--autocast", choices=TableKeys("tdfast.training.trainer", "AUTOCAST_DTYPES"), default="fp32",
                   metavar="DTYPE", help="autocast dtype on GPU: %(choices)s (default fp32: none)")
    p.add_argument("--save-every-steps", type=int, default=0, metavar="N",
                   help="also checkpoint every N steps (default: at the end of every epoch only)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--cache-size", type=int, default=0, help="feature arrays cached in memory per process")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_threads_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from tdfast.model.checkpoint import load_config
    from tdfast.errors import InputError
    from tdfast.training import RunConfig, TrainData, TrainOptions, train
    from tdfast.training.run_dir import check_out, load_train_state, training_config

    apply_threads(args.threads)
    ckpt = check_out(Path(args.out), Path(args.resume) if args.resume else None)  # before any work
    if ckpt is not None:
        if args.overrides:
            raise InputError("--set: not allowed with --resume (the run continues with its checkpoint's "
                             f"config); got {args.overrides}")
        run = RunConfig(load_config(ckpt), training_config(load_train_state(ckpt), ckpt))
    elif args.preset is None:
        raise InputError(f"--preset: expected one of {sorted(PRESETS)} (or --resume), got none")
    else:
        run = RunConfig.from_name(args.preset).override(args.overrides)
    try:
        result = train(run,
                       TrainData(args.train, args.val, args.video_feats, args.text_feats,
                                 cache_size=args.cache_size),
                       TrainOptions(args.out, epochs=args.epochs, seed=args.seed,
                                    progress=not args.no_progress, resume=args.resume, device=args.device,
                                    autocast=args.autocast, save_every_steps=args.save_every_steps,
                                    num_workers=args.num_workers))
    except KeyboardInterrupt:
        from tdfast.training.run_dir import last_checkpoint_note

        print(f"tdfast train: interrupted; {last_checkpoint_note(Path(args.out))}", file=sys.stderr)
        return 130
    summary = {"out": str(result.out_dir), "best_epoch": result.best_epoch, "epochs": result.epochs,
               "steps": result.steps, "stopped_early": result.stopped_early,
               "initial": result.initial_metrics, "best": result.best_metrics}
    if int(os.environ.get("RANK", "0")) == 0:  # one summary under torchrun
        print(json.dumps(summary, indent=2))
    return 0
