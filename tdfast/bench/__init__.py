"""Benchmarks: machine description, timing, records, table, plot (``tdfast bench``)."""
from tdfast.bench.machine import machine_info, wait_for_quiet

__all__ = ["machine_info", "wait_for_quiet"]
