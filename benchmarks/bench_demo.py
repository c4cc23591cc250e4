"""The record behind the README's demo lines: one ``tdfast demo`` run, as a user starts it.

    python benchmarks/bench_demo.py --out benchmarks/results/demo_cpu.json [--work DIR]

Runs ``tdfast.demo.run_demo`` with its defaults (``tdfast demo``: 10 epochs of the tiny
preset on the embedded synthetic dataset, one thread) in ``--work`` (default: a temporary
directory) and writes a ``demo`` record: the val metrics before and after training, the
backends' agreement with eager, the wall time, and the machine. ``python -m
tdfast.benchmarks.readme`` turns it into the README's demo lines.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tdfast.benchmarks.machine import machine_info
from tdfast.benchmarks.record import make_record, write_record
from tdfast.demo import DemoOptions, run_demo


def demo_record(summary, options: DemoOptions, wall_s: float) -> dict:
    """A ``demo`` record from a finished run (``DemoResult``)."""
    rows = [{"metric": k, "before": summary.metrics_before[k], "after": summary.metrics_after[k]}
            for k in summary.metrics_before]
    setup = {"command": "tdfast demo", "epochs": options.epochs, "num_train": options.num_train,
             "num_val": options.num_val, "seed": options.seed, "threads": options.threads,
             "backends": list(options.backends), "data": summary.data}
    return make_record("demo", "one `tdfast demo` run with its defaults: val metrics of the tiny "
                       "preset before and after training, and each backend against eager",
                       machine_info("cpu"), setup, rows, parity=summary.parity,
                       wall_s=round(wall_s, 1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="record to write (JSON)")
    p.add_argument("--work", type=Path, help="demo output directory (default: a temporary one)")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        options = DemoOptions(out_dir=a.work or Path(tmp) / "tdfast-demo")
        start = time.perf_counter()
        summary = run_demo(options)
        write_record(demo_record(summary, options, time.perf_counter() - start), a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
