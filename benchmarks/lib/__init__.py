"""Benchmarks: machine description, timing, records, table, plot (``tdfast bench``).

    from tdfast.benchmarks import latency_table, format_table
    rows = latency_table({"eager": r1, "onnxruntime": r2}, videos, queries, [1, 8, 32], repeats=20)
    print(format_table(rows))
"""
from tdfast.benchmarks.latency import format_table, latency_table
from tdfast.benchmarks.machine import machine_info, wait_for_quiet
from tdfast.benchmarks.record import SCHEMA_VERSION, make_record, read_record, validate_record, write_record
from tdfast.benchmarks.roofline import flops_per_pair, gemm_peak
from tdfast.benchmarks.timing import percentile, summarize_ms

__all__ = [
    "SCHEMA_VERSION", "flops_per_pair", "format_table", "gemm_peak", "latency_table", "machine_info",
    "make_record", "percentile", "read_record", "summarize_ms", "validate_record", "wait_for_quiet",
    "write_record",
]
