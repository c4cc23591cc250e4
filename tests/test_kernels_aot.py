"""Ahead-of-time compilation for sm_90 without a GPU (``python -m tdfast.kernels.aot``): the
launcher's default bf16 and fp32 configurations at L = 75, M = 32 compile with no register
spills, no serialized wgmma in 16-bit, and shared memory within an H100's 227 KB; the
committed records (benchmarks/results/kernels_aot_sm{90,80}.json: ``--full`` under Triton 3.9;
kernels_aot_triton36.json: the defaults for both archs under Triton 3.6) keep the schema, list
exactly what the tool compiles today with the record's Triton version, and compiled within
shared memory, with no spill and no serialized wgmma in every 16-bit configuration."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

from tdfast.kernels.aot import SHARED_LIMIT, planned_rows  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
KEYS = ["arch", "name", "dtype", "L", "M", "compiled", "error", "registers", "spill_bytes",
        "shared_bytes", "wgmma_serialized"]
SIXTEEN_BIT = ("float16", "bfloat16")  # what serving runs; fp32 / TF32 rows may spill a few bytes


def _assert_clean(configs: list[dict], spill_free: tuple[str, ...] = SIXTEEN_BIT + ("float32",)) -> None:
    """Every configuration compiled within the target's shared memory; no spills for the dtypes
    in ``spill_free``; no serialized wgmma in 16-bit."""
    assert configs
    for c in configs:
        assert list(c) == KEYS, c
        where = f"sm_{c['arch']} {c['dtype']} {c['name']} L={c['L']} M={c['M']}"
        assert c["compiled"] and c["error"] is None, f"{where}: {c['error']}"
        assert 0 < c["registers"] <= 255, where
        assert c["shared_bytes"] <= SHARED_LIMIT[c["arch"]], f"{where}: {c['shared_bytes']} B shared"
        if c["dtype"] in spill_free:
            assert c["spill_bytes"] == 0, f"{where}: {c['spill_bytes']} spill bytes"
        if c["dtype"] in SIXTEEN_BIT:
            assert not c["wgmma_serialized"], f"{where}: wgmma serialized (ptxas C7512)"


def test_default_bf16_and_fp32_compile_clean_for_sm90(tmp_path):
    out = tmp_path / "aot.json"
    proc = subprocess.run([sys.executable, "-m", "tdfast.kernels.aot", "--arch", "90",
                           "--dtype", "bfloat16", "--dtype", "float32", "--video-len", "75",
                           "--text-len", "32", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert set(record) == {"triton", "configs"}
    kinds = {(c["dtype"], c["name"].split(":")[0]) for c in record["configs"]}
    assert kinds == {(d, k) for d in ("bfloat16", "float32") for k in ("text_kv", "rows")}
    _assert_clean(record["configs"])


IDENTITY = ("arch", "name", "dtype", "L", "M")


def _assert_current(record: dict, archs: list[int], full: bool) -> None:
    """The record names its Triton version and lists exactly the kernels ``python -m
    tdfast.kernels.aot`` compiles today for these archs under that version (a record made
    before a tile change fails here, whichever Triton runs the test)."""
    assert set(record) == {"triton", "configs"}
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", record["triton"]), record["triton"]
    have = [{k: c[k] for k in IDENTITY} for c in record["configs"]]
    assert have == [row for arch in archs
                    for row in planned_rows(arch, full, triton_version=record["triton"])]


@pytest.mark.parametrize("arch", [90, 80])
def test_committed_full_records(arch):
    """``--full`` records (Triton 3.9): every configuration the launcher can pick on this arch
    is listed, compiled and fits the target's shared memory; in 16-bit it spills nothing and
    keeps wgmma asynchronous. fp32 / TF32 at 8 warps still spill 12-36 bytes in a few rows
    (docs/kernels.md)."""
    record = json.loads((RESULTS / f"kernels_aot_sm{arch}.json").read_text())
    _assert_current(record, [arch], full=True)
    assert {c["dtype"] for c in record["configs"]} == {"float32", "tf32", "float16", "bfloat16"}
    _assert_clean(record["configs"], spill_free=SIXTEEN_BIT)


@pytest.mark.parametrize("version", ["3.6", "3.8"])
def test_committed_default_records_of_older_tritons(version):
    """The default configurations compiled for sm_90 and sm_80 by Triton 3.6 (the GPU
    machine's version) and 3.8 (what a fresh install of torch 2.14 resolves), each with its
    own 16-bit tile budget (``launch_config.MEASURED_FIT16``): current, compiled, within shared
    memory, and held to the Triton 3.9 bar in 16-bit: no spill, wgmma asynchronous. TF32 on
    sm_90 still spills 8 bytes under 3.6 (docs/kernels.md)."""
    record = json.loads((RESULTS / f"kernels_aot_triton{version.replace('.', '')}.json").read_text())
    assert record["triton"].startswith(version + "."), record["triton"]
    _assert_current(record, [90, 80], full=False)
    assert {c["dtype"] for c in record["configs"]} == {"float32", "tf32", "float16", "bfloat16"}
    _assert_clean(record["configs"], spill_free=SIXTEEN_BIT)
