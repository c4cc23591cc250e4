"""A small valid ``predict`` record for the tdfast.benchmarks tests (numbers chosen by hand)."""
from __future__ import annotations

import copy

MACHINE = {"device": "Test CPU", "device_type": "cpu", "cpu_model": "Test CPU", "cores": 2,
           "versions": {"torch": "2.0.0", "triton": None, "onnxruntime": "1.18.0"},
           "git": {"commit": "abcdef1234567890", "dirty": False}, "date": "2026-01-02T03:04:05+00:00",
           "loadavg": [0.5, 0.4, 0.3], "loadavg_at_timing": [0.25]}


def row(backend: str, batch: int, p50: float, video_len: int = 75, dtype: str = "float32") -> dict:
    return {"backend": backend, "dtype": dtype, "device": "cpu", "batch": batch, "video_len": video_len,
            "query_len": 32, "n": 10, "p50_ms": p50, "p90_ms": p50 * 1.1, "p99_ms": p50 * 1.2,
            "min_ms": p50 * 0.9, "mean_ms": p50, "model_p50_ms": p50 * 0.8, "model_p90_ms": p50,
            "model_p99_ms": p50, "pairs_per_s": batch / (p50 / 1e3), "peak_mem_mb": 900.0,
            "mem_kind": "cpu_peak_rss", "first_call_s": 0.5, "warmup_s": 0.1}


def predict_record() -> dict:
    rows = [row("eager", 1, 20.0), row("eager", 32, 400.0), row("onnxruntime", 1, 12.0),
            row("onnxruntime", 32, 320.0),
            {"backend": "tensorrt", "dtype": "float32", "skipped": "needs a CUDA GPU"}]
    for r in rows[:4]:  # 1 GFLOP per pair on a 100 GFLOP/s machine: GFLOP/s achieved = % of peak
        r["pct_of_peak"] = r["batch"] / (r["p50_ms"] / 1e3)
    return copy.deepcopy({"schema_version": 1, "kind": "predict", "what": "predict latency", "machine": MACHINE,
                          "setup": {"dtypes": ["float32"], "model": "qvhighlights preset, random init (seed 0)"}, "rows": rows, "goals": [
                              {"goal": "best fp32 backend at B=32: % of the measured fp32 GEMM peak",
                               "backend": "onnxruntime", "value": 100.0, "target": 80.0, "op": ">=",
                               "unit": "%", "met": True}]})
