"""Where the seconds of one ONNX export go, phase by phase, in one process.

    python benchmarks/bench_export_time.py [--preset qvhighlights] [--out benchmarks/results/export_time_cpu.json]

Phases, for a checkpoint of ``--preset`` (random init, seed 0) on the CPU, one PyTorch
thread unless ``--threads``:

* ``import``: ``import torch`` and ``tdfast.export`` (a fresh ``tdfast export`` pays it);
* ``load``: the checkpoint from disk;
* ``dynamo_capture``: ``torch.export.export`` with the dynamic B/L/M dims;
* ``dynamo_translate``: that program -> ONNX (``torch.onnx.export(program, optimize=False)``);
* ``dynamo_optimize``: the onnxscript optimizer pass of ``torch.onnx.export`` (constant
  folding, dead code; on by default);
* ``torchscript``: the TorchScript exporter, tracing and constant folding together;
* ``checker``: ``onnx.checker.check_model``;
* ``verify``: ``verify_onnx``: an ONNX Runtime session and eager PyTorch on the three unseen
  shapes (the step ``tdfast export`` runs unless ``--no-verify``);
* then ``export_onnx`` end to end per exporter, its parity with eager (the verification's
  worst |diff|), ONNX Runtime's latency on each graph (B=8 L=75 M=32, one thread), and
  ``tdfast export`` as a user runs it (fresh processes, ``cli_runs``).

The record holds every phase's seconds, the graph sizes and the machine's load: the box is
shared, so compare phases within one record, not across records.
"""
from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import tdfast.export  # noqa: E402,F401

IMPORT_S = {"wall_s": round(time.perf_counter() - START, 2), "cpu_s": round(time.process_time(), 2)}


def timed(fn, *args, **kwargs):
    """(fn's result, {"wall_s", "cpu_s"}): CPU seconds of this process too, since on a shared
    box the wall clock mostly measures the other jobs."""
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    took = {"wall_s": round(time.perf_counter() - t, 2), "cpu_s": round(time.process_time() - c, 2)}
    print(f"{getattr(fn, '__qualname__', fn)}: {took}", file=sys.stderr, flush=True)
    return out, took


def phases(ckpt: Path, work: Path) -> dict:
    import onnx

    from tdfast.export.onnx_export import (DEFAULT_OPSET, EXPORTERS, _export_dynamo, _export_torchscript, _trace_inputs,
                                           build_metadata, export_onnx, load_model, read_metadata)
    from tdfast.export.verify import verify_onnx
    from tdfast.export.wrapper import INPUT_NAMES, OUTPUT_NAMES, ExportWrapper

    (model, _), load_s = timed(load_model, ckpt)
    model.eval()
    wrapper = ExportWrapper(model).eval()
    args = _trace_inputs(model.config)
    c = model.config
    from torch.export import Dim

    b, n_video, n_query = Dim("B", min=1), Dim("L", min=1, max=c.max_video_len), Dim("M", min=1, max=c.max_query_len)
    shapes = {"video": {0: b, 1: n_video}, "video_mask": {0: b, 1: n_video},
              "query": {0: b, 1: n_query}, "query_mask": {0: b, 1: n_query}}
    rec: dict = {"load": load_s}  # phase -> {"wall_s", "cpu_s"}; *_nodes: graph sizes
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program, rec["dynamo_capture"] = timed(torch.export.export, wrapper, args, dynamic_shapes=shapes)
        onnx_program, rec["dynamo_translate"] = timed(torch.onnx.export, program, dynamo=True, optimize=False,
                                                      input_names=list(INPUT_NAMES),
                                                      output_names=list(OUTPUT_NAMES),
                                                      opset_version=DEFAULT_OPSET, verbose=False)
        rec["dynamo_nodes_unoptimized"] = len(onnx_program.model_proto.graph.node)
        _, rec["dynamo_optimize"] = timed(onnx_program.optimize)
        rec["dynamo_nodes"] = len(onnx_program.model_proto.graph.node)
        proto_ts, rec["torchscript"] = timed(_export_torchscript, wrapper, args, DEFAULT_OPSET)
        rec["torchscript_nodes"] = len(proto_ts.graph.node)
        _, rec["dynamo_total_in_process"] = timed(_export_dynamo, wrapper, args, DEFAULT_OPSET)
    proto = onnx_program.model_proto
    for k, v in build_metadata(model, "dynamo", DEFAULT_OPSET, None).items():
        proto.metadata_props.add(key=k, value=v)
    _, rec["checker"] = timed(onnx.checker.check_model, proto)
    path = work / "phase.onnx"
    path.write_bytes(proto.SerializeToString())
    _, rec["verify"] = timed(verify_onnx, path, model)
    for exporter in EXPORTERS:
        path, rec[f"export_onnx_{exporter}"] = timed(export_onnx, ckpt, work / exporter, exporter=exporter, log=None)
        verification = json.loads(read_metadata(path)["verification"])
        rec[f"parity_{exporter}"] = verification["max_abs"]  # worst |ORT - eager| per output, 3 unseen shapes
    rec.update(ort_latency({e: work / e / "model.onnx" for e in EXPORTERS}, model.config))
    return rec


def ort_latency(paths: dict, config, rounds: int = 30) -> dict:
    """ONNX Runtime (1 thread) ms per call of each graph at B=8 L=75 M=32, calls interleaved so
    that other jobs' load falls on both alike; the median of ``rounds``."""
    from tdfast.export.ort import OrtRunner
    from tdfast.export.wrapper import random_inputs

    runners = {e: OrtRunner(p, threads=1) for e, p in paths.items()}
    x = random_inputs(config, 8, min(75, config.max_video_len), min(32, config.max_query_len), seed=5)
    ms: dict = {e: [] for e in runners}
    for e, r in runners.items():
        r(*x)  # warm-up
    for _ in range(rounds):
        for e, r in runners.items():
            t = time.perf_counter()
            r(*x)
            ms[e].append((time.perf_counter() - t) * 1e3)
    return {f"ort_ms_B8_{e}": round(sorted(v)[len(v) // 2], 2) for e, v in ms.items()}


def cli_runs(ckpt: Path, work: Path, threads: int) -> dict:
    """``tdfast export`` in fresh processes, as a user runs it: first (a torchscript trace into
    the checkpoint), then into another --out, as onnx-int8 and as a Triton repository (all
    three reuse the cached trace), and last with ``--exporter dynamo`` (a new trace: what
    every format paid before the trace was cached and before torchscript became the default)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    runs = {}
    for name, extra in (("cli_first_default", ["--out", str(work / "cli1")]),
                        ("cli_again_other_out", ["--out", str(work / "cli2")]),
                        ("cli_onnx_int8", ["--format", "onnx-int8", "--out", str(work / "cli3")]),
                        ("cli_triton_server", ["--format", "triton-server", "--out", str(work / "cli4")]),
                        ("cli_dynamo", ["--exporter", "dynamo", "--out", str(work / "cli0")])):
        t = time.perf_counter()
        before = os.times()
        subprocess.run([sys.executable, "-m", "tdfast", "export", str(ckpt), *extra], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        after = os.times()
        runs[name] = {"wall_s": round(time.perf_counter() - t, 2),
                      "cpu_s": round(after.children_user + after.children_system
                                     - before.children_user - before.children_system, 2)}
    return runs


def main(argv=None) -> None:
    from tdfast import TDDETR, TDDETRConfig
    from tdfast.benchmarks.machine import machine_info
    from tdfast.benchmarks.record import make_record, write_record

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="qvhighlights")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/export_time_cpu.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="tdfast-export-time-") as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        ckpt = TDDETR(TDDETRConfig.from_name(args.preset)).save_pretrained(work / "ckpt")
        rec = {"import": IMPORT_S, **phases(ckpt, work)}
        rec.update(cli_runs(ckpt, work, args.threads))
    print(json.dumps(rec, indent=1))
    setup = {"preset": args.preset, "threads": args.threads, "command": " ".join([sys.executable, *sys.argv])}
    record = make_record("export", __doc__.split("\n")[0], machine_info(), setup, [rec])
    write_record(record, Path(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
