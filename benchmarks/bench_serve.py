"""Triton serving under load vs the direct Retriever, interleaved in one run (CPU, one thread each).

    python benchmarks/bench_serve.py --out benchmarks/results/serve_cpu.json [--ckpt CKPT]

The qvhighlights preset (random init unless ``--ckpt``), ONNX Runtime fp32 on one intra-op
thread everywhere: the direct ``Retriever.predict`` on B = c pairs per call, and the
moments model on the bundled ``tritonserver`` (one instance, one thread) loaded by c
client threads (gRPC, one pair per request, padded to 75 clips / 32 tokens), with Triton's
dynamic batching on (``max_queue_delay_us`` 0, the default: a batch is what queued
while the instance was busy; max batch 64) and off. Each round times
every (variant, c) once, in turn, so load from other jobs on the machine hits all of them
alike; a row pools its rounds' latencies and takes the median round's throughput.
Where the time goes comes from the server's own statistics (queue, compute per batch,
mean batch size) and the client process's CPU time.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from tdfast import Retriever, TDDETR, TDDETRConfig
from tdfast.benchmarks.machine import machine_info
from tdfast.benchmarks.matrix import make_pairs
from tdfast.benchmarks.record import make_record, write_record
from tdfast.benchmarks.timing import percentile
from tdfast.export import ensure_export
from tdfast.export.triton_client import MomentsClient
from tdfast.export.triton_process import start_server
from tdfast.export.triton_python import write_python_model

QUEUE_DELAY_US = 0  # the served default: batches form from what queued while the instance was busy
MAX_BATCH = 64


def _pairs(config: TDDETRConfig, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """n pairs: full-length videos (QVHighlights clips are 150 s = 75 clips), queries of 8-24 tokens."""
    videos, queries = make_pairs(config, n, config.max_video_len, config.max_query_len, seed=0)
    rng = np.random.default_rng(1)
    return videos, [q[: int(rng.integers(8, 25))] for q in queries]


def time_direct(retriever: Retriever, videos, queries, c: int, min_s: float) -> dict:
    """predict() on c pairs per call, repeated for at least ``min_s`` seconds."""
    lat, start = [], time.perf_counter()
    while time.perf_counter() - start < min_s or len(lat) < 3:
        t = time.perf_counter()
        retriever.predict(videos[:c], queries[:c])
        lat.append(time.perf_counter() - t)
    return {"latencies_s": lat, "pairs_per_s": c * len(lat) / sum(lat)}


def _stats(http: MomentsClient, model: str) -> dict:
    s = http.client.get_inference_statistics(model)["model_stats"][0]
    inf = s["inference_stats"]
    return {"requests": s["inference_count"], "executions": s["execution_count"],
            **{f"{k}_ns": inf[k]["ns"] for k in ("queue", "compute_input", "compute_infer", "compute_output")}}


def time_served(url: str, http: MomentsClient, model: str, videos, queries, c: int, per_client: int) -> dict:
    """c client threads, each sending ``per_client`` one-pair requests back to back."""
    clients = [MomentsClient(url, "grpc", model) for _ in range(c)]
    for i, cl in enumerate(clients):  # warm each connection
        cl.predict(videos[i % len(videos): i % len(videos) + 1], queries[i % len(queries): i % len(queries) + 1])
    lat: list[float] = []
    lock, barrier = threading.Lock(), threading.Barrier(c + 1)

    def run(i: int) -> None:
        mine = []
        barrier.wait()
        for j in range(per_client):
            k = (i * per_client + j) % len(videos)
            t = time.perf_counter()
            clients[i].predict(videos[k:k + 1], queries[k:k + 1])
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(c)]
    for t in threads:
        t.start()
    before, cpu0 = _stats(http, model), time.process_time()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu, after = time.process_time() - cpu0, _stats(http, model)
    for cl in clients:
        cl.close()
    d = {k: after[k] - before[k] for k in after}
    ex = max(d["executions"], 1)
    return {"latencies_s": lat, "pairs_per_s": len(lat) / wall, "mean_batch": d["requests"] / ex,
            "server_queue_ms_per_request": d["queue_ns"] / 1e6 / max(d["requests"], 1),
            # Triton charges each request the whole compute of the batch it ran in
            "server_compute_ms_per_batch": (d["compute_input_ns"] + d["compute_infer_ns"] + d["compute_output_ns"])
            / 1e6 / max(d["requests"], 1), "client_cpu_ms_per_request": cpu * 1e3 / len(lat)}


def _row(variant: str, c: int, runs: list[dict]) -> dict:
    lat = [x * 1e3 for r in runs for x in r["latencies_s"]]
    row = {"variant": variant, "concurrency": c, "rounds": len(runs), "requests": len(lat),
           "pairs_per_s": statistics.median(r["pairs_per_s"] for r in runs),
           "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99)}
    for k in ("mean_batch", "server_queue_ms_per_request", "server_compute_ms_per_batch", "client_cpu_ms_per_request"):
        if k in runs[0]:
            row[k] = statistics.median(r[k] for r in runs)
    return row


def goals(rows: list[dict]) -> list[dict]:
    """The issue's two goals, met or missed and by how much."""
    get = {(r["variant"], r["concurrency"]): r for r in rows}
    out = []
    if ("direct", 16) in get and ("triton-dynamic", 16) in get:
        ratio = get[("triton-dynamic", 16)]["pairs_per_s"] / get[("direct", 16)]["pairs_per_s"]
        out.append({"goal": "c=16 served throughput >= 0.9 x direct Retriever at B=16", "value": ratio,
                    "target": 0.9, "met": ratio >= 0.9})
    if ("direct", 1) in get and ("triton-dynamic", 1) in get:
        extra = get[("triton-dynamic", 1)]["p50_ms"] - get[("direct", 1)]["p50_ms"]
        out.append({"goal": "c=1 served p50 <= direct B=1 p50 + 2 ms", "value": extra, "unit": "ms over direct",
                    "target": 2.0, "met": extra <= 2.0})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, help="checkpoint (default: random-init qvhighlights preset)")
    p.add_argument("--concurrency", default="1,4,16,64")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--min-s", type=float, default=2.0, help="seconds per direct measurement")
    p.add_argument("--requests", type=int, default=64, help="requests per served measurement (at least 2 per client)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    conc = [int(x) for x in a.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="tdfast-bench-serve-"))
    ckpt = a.ckpt
    if ckpt is None:
        torch.manual_seed(0)
        ckpt = TDDETR(TDDETRConfig.from_name("qvhighlights")).eval().save_pretrained(work / "ckpt")
    ensure_export(ckpt, "onnx", log=print)  # made (verified) once, before any timing
    direct = Retriever.from_pretrained(ckpt, backend="onnxruntime")
    config = direct.config
    videos, queries = _pairs(config, max(conc))
    for name, dyn in (("dyn", True), ("nodyn", False)):
        write_python_model(ckpt, work / "repo", name, max_batch_size=MAX_BATCH, dynamic_batching=dyn,
                           max_queue_delay_us=QUEUE_DELAY_US, threads=1, export_file=ensure_export(ckpt, "onnx"))
    runs: dict[tuple[str, int], list[dict]] = {}
    with start_server(work / "repo", ["dyn", "nodyn"]) as server, \
            MomentsClient(server.http_url, "http", "dyn") as http:
        for r in range(a.rounds):
            for c in conc:
                per_client = max(2, a.requests // c)
                for variant, fn in (
                        ("direct", lambda: time_direct(direct, videos, queries, c, a.min_s)),
                        ("triton-dynamic", lambda: time_served(server.grpc_url, http, "dyn", videos, queries, c,
                                                               per_client)),
                        ("triton-no-batching", lambda: time_served(server.grpc_url, http, "nodyn", videos,
                                                                   queries, c, per_client))):
                    runs.setdefault((variant, c), []).append(fn())
                    row = _row(variant, c, runs[(variant, c)][-1:])
                    print(f"round {r} {variant:>18} c={c:<3} {row['pairs_per_s']:7.1f} pairs/s  "
                          f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms", flush=True)
    rows = [_row(v, c, rs) for (v, c), rs in runs.items()]
    rows.sort(key=lambda r: (r["concurrency"], r["variant"]))
    setup = {"ckpt": str(a.ckpt) if a.ckpt else "random init, qvhighlights preset, seed 0",
             "backend": "onnxruntime fp32", "threads": 1, "server_instances": 1, "protocol": "grpc",
             "pairs_per_request": 1, "padded_to": [config.max_video_len, config.max_query_len],
             "video_len": config.max_video_len, "query_len": "8-24", "max_batch_size": MAX_BATCH,
             "max_queue_delay_us": QUEUE_DELAY_US, "direct_batch_size": direct.batch_size,
             "rounds": a.rounds, "concurrency": conc, "command": "python benchmarks/bench_serve.py " + " ".join(
                 argv if argv is not None else __import__("sys").argv[1:])}
    import os

    record = make_record("serve", "throughput and latency of the Triton-served moments model under load vs the "
                         "direct Retriever, interleaved rounds, one thread each", machine_info("cpu"), setup,
                         rows, goals=goals(rows))
    record["machine"]["loadavg_end"] = list(os.getloadavg())
    write_record(record, a.out)
    for g in record["goals"]:
        print(f"goal: {g['goal']}: {g['value']:.3g} ({'met' if g['met'] else 'MISSED'})")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
