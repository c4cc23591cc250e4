"""Benchmark records: one JSON object per run, checked by ``validate_record``, written atomically.

Envelope (every kind)::

    {"schema_version": 1, "kind": "predict" | "kernels" | "export" | "train" | "shared" | "profile" | "int8"
                                  | "model_batch" | "demo" | "serve" | "save",
     "what": "<one sentence: what was timed>",
     "machine": machine_info(...) (+ optional "loadavg_end"),
     "setup": {...how it was run...}, "rows": [{...}, ...], ...kind-specific extras}

``predict`` rows are ``tdfast.benchmarks.latency_table`` rows (plus skipped backends as
``{"backend", "dtype", "skipped": reason}``); ``kernels`` rows have ``impl``, ``B``,
``L`` and ``us`` (or ``error``). Other kinds are checked for the envelope only.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tdfast.atomic import atomic_write_bytes
from tdfast.errors import InputError

SCHEMA_VERSION = 1
KINDS = ("predict", "kernels", "export", "train", "shared", "profile", "int8", "model_batch", "demo", "serve",
         "save", "video")
MACHINE_KEYS = ("device", "device_type", "cpu_model", "cores", "versions", "git", "date", "loadavg")
LATENCY_KEYS = ("p50_ms", "p90_ms", "p99_ms")


def make_record(kind: str, what: str, machine: Mapping[str, Any], setup: Mapping[str, Any],
                rows: list[Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    """The envelope around a run's rows (``extra``: kind-specific keys, e.g. ``goals``)."""
    return {"schema_version": SCHEMA_VERSION, "kind": kind, "what": what, "machine": dict(machine),
            "setup": dict(setup), "rows": [dict(r) for r in rows], **extra}


def _need(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise InputError(f"{where}: missing key {key!r}")
    return obj[key]


def _number(value: Any, where: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < minimum:
        raise InputError(f"{where}: expected a finite number >= {minimum:g}, got {value!r}")
    return float(value)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{where}: expected an integer >= 1, got {value!r}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _predict_row(row: Mapping[str, Any], where: str) -> None:
    _text(_need(row, "backend", where), f"{where}['backend']")
    _text(_need(row, "dtype", where), f"{where}['dtype']")
    if "skipped" in row:
        _text(row["skipped"], f"{where}['skipped']")
        return
    for key in ("batch", "video_len", "query_len", "n"):
        _positive_int(_need(row, key, where), f"{where}[{key!r}]")
    p = [_number(_need(row, k, where), f"{where}[{k!r}]") for k in LATENCY_KEYS]
    if not p[0] <= p[1] <= p[2]:
        raise InputError(f"{where}: expected p50_ms <= p90_ms <= p99_ms, got {p[0]:g}, {p[1]:g}, {p[2]:g}")
    _number(_need(row, "pairs_per_s", where), f"{where}['pairs_per_s']", minimum=1e-12)
    if row.get("peak_mem_mb") is not None:
        _number(row["peak_mem_mb"], f"{where}['peak_mem_mb']")


def _kernels_row(row: Mapping[str, Any], where: str) -> None:
    _text(_need(row, "impl", where), f"{where}['impl']")
    for key in ("B", "L"):
        _positive_int(_need(row, key, where), f"{where}[{key!r}]")
    if "error" in row:
        _text(row["error"], f"{where}['error']")
    else:
        _number(_need(row, "us", where), f"{where}['us']", minimum=1e-12)


ROW_CHECKS = {"predict": _predict_row, "kernels": _kernels_row}


def validate_record(record: Any) -> dict[str, Any]:
    """Return ``record`` if it is a valid benchmark record, else raise ``InputError`` naming
    the first bad field (as ``record[...]``), what was expected and what was there."""
    if not isinstance(record, dict):
        raise InputError(f"record: expected a JSON object, got {type(record).__name__}")
    version = _need(record, "schema_version", "record")
    if version != SCHEMA_VERSION:
        raise InputError(f"record['schema_version']: expected {SCHEMA_VERSION}, got {version!r}")
    kind = _need(record, "kind", "record")
    if kind not in KINDS:
        raise InputError(f"record['kind']: expected one of {list(KINDS)}, got {kind!r}")
    _text(_need(record, "what", "record"), "record['what']")
    machine = _need(record, "machine", "record")
    if not isinstance(machine, dict):
        raise InputError(f"record['machine']: expected a JSON object, got {type(machine).__name__}")
    for key in MACHINE_KEYS:
        _need(machine, key, "record['machine']")
    _text(machine["device"], "record['machine']['device']")
    _text(_need(machine["versions"], "torch", "record['machine']['versions']"),
          "record['machine']['versions']['torch']")
    if not isinstance(_need(record, "setup", "record"), dict):
        raise InputError(f"record['setup']: expected a JSON object, got {type(record['setup']).__name__}")
    rows = _need(record, "rows", "record")
    if not isinstance(rows, list) or not rows:
        raise InputError(f"record['rows']: expected a non-empty list, got {rows!r}")
    check = ROW_CHECKS.get(kind)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InputError(f"record['rows'][{i}]: expected a JSON object, got {type(row).__name__}")
        if check is not None:
            check(row, f"record['rows'][{i}]")
    return record


def write_record(record: dict[str, Any], path: str | Path) -> Path:
    """Validate ``record`` and write it with ``write_json``."""
    validate_record(record)
    return write_json(record, path)


def write_json(data: Any, path: str | Path, allow_nan: bool = False) -> Path:
    """``data`` as indented JSON (values JSON lacks written with ``str``), atomically (temp
    file, fsync, rename): every benchmark file tdfast writes goes through here."""
    text = json.dumps(data, indent=1, allow_nan=allow_nan, default=str) + "\n"
    atomic_write_bytes(path, text.encode())
    return Path(path)


def read_record(path: str | Path) -> dict[str, Any]:
    """Load and validate one record; InputError names the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such record file")
    try:
        return validate_record(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not JSON ({e})") from None
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
