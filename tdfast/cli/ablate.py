"""``tdfast ablate``: the paper's Table 4 rows and alpha / beta sweeps, trained and analyzed."""
from __future__ import annotations

import argparse

from tdfast.presets import PRESETS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ablate", help="train and analyze Table 4 rows (a)-(d), the untrained control, alpha/beta sweeps",
        description="Trains every (row, seed) under OUT/runs/<row>/seed<s>/, analyzes each with the "
                    "zero-mask protocol (tdfast analyze spurious) on --val (and --test), and writes "
                    "OUT/ablation.json and OUT/ablation.md (mean ± std over seeds). Runs with a "
                    "result are skipped and interrupted ones resumed, so rerunning continues.")
    p.add_argument("--train", required=True, help="training annotations (jsonl)")
    p.add_argument("--val", required=True, help="validation annotations: checkpoint selection and analysis")
    p.add_argument("--test", help="another labelled split to analyze (not used for selection)")
    p.add_argument("--video-feats", nargs="+", required=True, metavar="DIR", help="video feature dirs")
    p.add_argument("--text-feats", required=True, metavar="DIR", help="query feature dir")
    p.add_argument("--out", required=True, metavar="DIR", help="ablation directory (created or continued)")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS),
                   help="base config preset; every row changes only its own fields")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base config field (repeatable)")
    p.add_argument("--rows", default="a,b,c,d,untrained",
                   help="comma list of a, b, c, d (paper Table 4), untrained (Table 2 control) and the "
                        "opt-in variant's rows v, v-net, v-vsdc, v-magnitude, v-null, w, w-half, w-vsdc, x, "
                        "x-half, x-dm4, x-b03, x-then-half, x-nodrop, y, z-lock, z, z-quarter, z-f25, z-m0 "
                        "(docs/fidelity.md, section 5); "
                        "'' for none (default a,b,c,d,untrained)")
    p.add_argument("--alphas", default="", help="alpha sweep values (comma list, or 'paper' for Table S1's)")
    p.add_argument("--betas", default="", help="beta sweep values (comma list, or 'paper' for Table S2's)")
    p.add_argument("--seeds", default="0", help="comma list of seeds (default 0; the paper averages 3)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the preset's)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, in worker processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tdfast.errors import InputError
    from tdfast.experiments.ablation import (PAPER_ALPHAS, PAPER_BETAS, parse_seeds, parse_values, plan_rows,
                                          run_ablation)
    from tdfast.experiments.summary import make_record, markdown, write_record
    from tdfast.training.config import RunConfig

    base = RunConfig.from_name(args.preset).override(args.overrides)
    seeds = parse_seeds(args.seeds)
    names = [r.strip() for r in args.rows.split(",") if r.strip()]
    rows = plan_rows(names, parse_values(args.alphas, "--alphas", PAPER_ALPHAS),
                     parse_values(args.betas, "--betas", PAPER_BETAS), base=base)
    if not rows:
        raise InputError("--rows/--alphas/--betas: expected at least one row, got none")
    eval_anns = {"val": args.val, **({"test": args.test} if args.test else {})}
    results = run_ablation(base, rows, seeds, train_ann=args.train, val_ann=args.val,
                           video_dirs=args.video_feats, text_dir=args.text_feats, out_dir=args.out,
                           eval_anns=eval_anns, epochs=args.epochs, jobs=args.jobs,
                           progress=not args.no_progress)
    inputs = {"train": args.train, "val": args.val, "test": args.test, "video_feats": args.video_feats,
              "text_feats": args.text_feats, "preset": args.preset, "set": args.overrides}
    record = make_record(base.to_dict(), rows, seeds, args.epochs, inputs, results)
    json_path, md_path = write_record(args.out, record)
    print(markdown(record["table"]))
    print(f"wrote {json_path} and {md_path}")
    return 0
