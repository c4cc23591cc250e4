"""``tdfast bench``: end-to-end predict latency of every backend, side by side, as a record.

    tdfast bench [--backends eager,compile,triton,onnxruntime,tensorrt] [--batch-sizes 1,8,32,256]
                 [--model-batch N] [--video-lens 75,150] [--query-len 32] [--dtypes fp32,bf16]
                 [--preset qvhighlights]
                 [--ckpt DIR] [--repeats N] [--int8] [--out results.json] [--plot latency.png]
    tdfast bench --update-readme     # regenerate README.md's table from benchmarks/results/

Prints the table (skipped backends with the reason), the GEMM peak, FLOPs per pair and
the goals; writes the JSON record (``tdfast.benchmarks.record``) and optionally the PNG plot.
"""
from __future__ import annotations

import argparse
import sys

from tdfast.errors import InputError
from tdfast.threads import add_threads_argument, default_threads

BACKENDS = "eager,compile,triton,onnxruntime,tensorrt"


def _ints(flag: str, text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise InputError(f"{flag}: expected comma-separated positive integers, e.g. 1,8,32, got {text!r}")
    return values


def _names(flag: str, text: str, known: list[str]) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in known]
    if not names or bad:
        raise InputError(f"{flag}: expected comma-separated names from {known}, got {text!r}")
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="latency of every backend, side by side (record, table, plot)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default=BACKENDS, help=f"comma-separated (default {BACKENDS}; "
                   "onnxruntime-int8 is added by --int8)")
    p.add_argument("--batch-sizes", "--batch", default="1,8,32,256",
                   help="pairs per predict call, comma-separated (default 1,8,32,256; --batch: old spelling)")
    p.add_argument("--model-batch", type=int, default=None,
                   help="most pairs per model call inside one predict (the Retriever's batch_size; default "
                        "the Retriever's: sized to the CPU cache, 8 for the qvhighlights preset; 32 on CUDA)")
    p.add_argument("--video-lens", "--video-len", default="75",
                   help="clips per video, comma-separated, e.g. 75,150 (default 75; --video-len: old spelling)")
    p.add_argument("--query-len", type=int, default=32, help="tokens per query (default 32)")
    p.add_argument("--dtypes", "--dtype", default="fp32",
                   help="fp32,bf16,fp16 (comma-separated; default fp32; --dtype: old spelling)")
    p.add_argument("--preset", default="qvhighlights", help="model preset without --ckpt (default qvhighlights)")
    p.add_argument("--ckpt", help="checkpoint directory to benchmark (default: the preset, random init)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    p.add_argument("--repeats", type=int, help="timed rounds per batch size (default: fit --budget-s)")
    p.add_argument("--budget-s", type=float, default=20.0,
                   help="seconds of timed calls per dtype x length x batch cell when --repeats is not "
                        "given (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per backend and shape (default 3)")
    p.add_argument("--int8", action="store_true", help="also the int8 ONNX Runtime variant: speed-up and "
                   "top-1 agreement on a synthetic val set (trains the preset briefly unless --ckpt)")
    p.add_argument("--train-epochs", type=int, default=3,
                   help="epochs of that training (default 3; 0: random weights; 60 trains the qvhighlights "
                        "network until its moment scores are decisive, about 40 minutes on one core)")
    p.add_argument("--gemm-sizes", default="1024,2048,4096",
                   help="square matmul sizes for the GEMM peak (default 1024,2048,4096)")
    p.add_argument("--train-lr", type=float,
                   help="learning rate of that training (default 2e-4: tdfast.benchmarks.matrix.BENCH_TRAINING)")
    add_threads_argument(p)
    p.add_argument("--max-load", type=float, help="wait before timing until the 1-min load average is "
                   "below this (shared machines)")
    p.add_argument("--wait-s", type=float, default=600.0, help="longest wait for --max-load (default 600)")
    p.add_argument("--out", help="record path (default bench_<device>_<dtypes>.json)")
    p.add_argument("--plot", help="also write the latency-vs-batch PNG here (needs matplotlib)")
    p.add_argument("--update-readme", action="store_true",
                   help="only regenerate README.md's benchmark table from benchmarks/results/*.json")
    p.set_defaults(func=run)


def summary_lines(record: dict) -> str:
    """The GEMM peak, FLOPs per pair, int8 agreement and each goal of a predict record."""
    lines = [f"GEMM peak {dt}: {p['gflops']:.1f} GFLOP/s (best of start and end of the run)"
             for dt, p in record["gemm_peak"].items()]
    lines.append("GFLOP per pair: " + ", ".join(f"L={n}: {f / 1e9:.4g}" for n, f in record["flops_per_pair"].items()))
    if record["int8"]:
        lines.append(f"int8: top-1 agreement {record['int8']['top1_agreement']:.3f} on {record['int8']['pairs']} "
                     f"synthetic val pairs ({record['int8']['model']})")
    lines += [f"goal: {g['goal']} [{g['backend']}]: {g['value']:g} {g['unit']} (target {g['op']} "
              f"{g['target']:g}): {'met' if g['met'] else 'MISSED'}" + (f" ({g['note']})" if "note" in g else "")
              for g in record["goals"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from tdfast.retrieval.backends import BACKENDS as KNOWN
    from tdfast.benchmarks.latency import format_table
    from tdfast.benchmarks.matrix import BenchSpec, run_bench
    from tdfast.benchmarks.record import write_record

    if args.update_readme:
        from tdfast.benchmarks.readme import update_readme

        changed = update_readme()
        print("README.md: " + ("updated" if changed else "up to date"))
        return 0
    for flag, value in (("--query-len", args.query_len), ("--warmup", args.warmup), ("--repeats", args.repeats),
                        ("--threads", args.threads), ("--model-batch", args.model_batch)):
        if value is not None and value < 1:
            raise InputError(f"{flag}: expected a positive integer, got {value}")
    if args.train_epochs < 0:
        raise InputError(f"--train-epochs: expected an integer >= 0, got {args.train_epochs}")
    from tdfast.cli.paths import check_out_file

    check_out_file("--out", args.out)
    check_out_file("--plot", args.plot)
    from tdfast.devices import DTYPES, parse_device

    dtypes = _names("--dtypes", args.dtypes, sorted(DTYPES))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    parse_device(device)  # --device cuda without CUDA: one-line error before any work
    spec = BenchSpec(backends=_names("--backends", args.backends, sorted(KNOWN)),
                     batch_sizes=_ints("--batch-sizes", args.batch_sizes), model_batch=args.model_batch,
                     video_lens=_ints("--video-lens", args.video_lens),
                     query_len=args.query_len, dtypes=dtypes, preset=args.preset,
                     device=device, ckpt=Path(args.ckpt) if args.ckpt else None, repeats=args.repeats,
                     budget_s=args.budget_s, warmup=args.warmup, int8=args.int8,
                     train_epochs=args.train_epochs, train_lr=args.train_lr,
                     threads=args.threads or default_threads(), max_load=args.max_load,
                     wait_s=args.wait_s, gemm_sizes=tuple(_ints("--gemm-sizes", args.gemm_sizes)))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    record = run_bench(spec, log)
    out = Path(args.out or f"bench_{device.split(':')[0]}_{'_'.join(record['setup']['dtypes'])}.json")
    print(format_table(record["rows"]))
    print(summary_lines(record))
    write_record(record, out)
    print(f"wrote {out}")
    if args.plot:
        from tdfast.benchmarks.plot import plot_latency, plot_title
        from tdfast.errors import BackendUnavailableError

        try:
            print(f"wrote {plot_latency(record['rows'], args.plot, plot_title(record))}")
        except BackendUnavailableError as e:  # the record is written; the plot can be made later
            print(f"no plot: {e}; later: python -m tdfast.benchmarks.plot {out} {args.plot}", file=sys.stderr)
    return 0
