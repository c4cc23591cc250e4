"""The 16-bit tile budget for a Triton version nobody measured: the probe takes the largest
budget whose every rows-kernel configuration compiles clean, caches the verdict per Triton
version and arch, and the launcher's default then uses it.

Here ptxas is replaced by a stand-in that spills exactly where Triton 3.8 spilled on sm_90
(64-row tiles; 32 rows with 64 keys in pipelined 64-column chunks), so these tests take
seconds; ``test_kernels_aot.py`` compiles for real."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from tdfast.kernels import tile_probe  # noqa: E402
from tdfast.kernels.launch_config import (FIT16_CANDIDATES, MEASURED_FIT16, SAFEST_FIT16,  # noqa: E402
                                          default_config, fit_16bit)
from tdfast.kernels.tile_cache import cached_fit16  # noqa: E402

UNMEASURED = "3.77.0"  # a Triton version no table knows


def _fake_ptxas(jobs, workers=None):
    """What ptxas said under Triton 3.8 for sm_90, by tile: spills above 32 rows, and at 32 rows
    with 64 keys unless the weight chunks are 32 columns."""
    reports = []
    for _, _, _, meta, _, _, _ in jobs:
        spill = meta["BLOCK_L"] >= 64 or (meta["BLOCK_L"] == 32 and meta["BLOCK_M"] >= 64
                                          and meta["BLOCK_K"] == 64)
        reports.append({"registers": 255 if spill else 200, "spill_bytes": 140 if spill else 0,
                        "shared_bytes": 80_000, "wgmma_serialized": False})
    return reports


@pytest.fixture
def unmeasured_triton(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(tile_probe, "installed_triton", lambda: UNMEASURED)
    monkeypatch.setattr(tile_probe, "compile_jobs", _fake_ptxas)


def test_probe_picks_the_largest_clean_budget_and_caches_it(unmeasured_triton):
    # Before any probe the launcher falls back to the safest budget: 16 rows at most.
    assert fit_16bit(90, UNMEASURED) == SAFEST_FIT16
    assert default_config(torch.bfloat16, 256, 75, 32, 256, 8, arch=90,
                          triton_version=UNMEASURED).block_l == 16
    fit = tile_probe.ensure_fit16(90, log=lambda s: None)
    # Budget 0 (64 rows) and 1 (32 rows, pipelined 64-column chunks at 64 keys) spill; budget 2
    # (32 rows, 32-column chunks at 64 keys) is clean everywhere.
    assert fit == FIT16_CANDIDATES[2] == ((16, 32), 4, 32, 1)
    assert cached_fit16(UNMEASURED, 90) == 2 and cached_fit16(UNMEASURED, 80) is None
    assert fit_16bit(90, UNMEASURED) == FIT16_CANDIDATES[2]
    big = default_config(torch.bfloat16, 256, 75, 32, 256, 8, arch=90, triton_version=UNMEASURED)
    keys64 = default_config(torch.bfloat16, 256, 75, 64, 256, 8, arch=90, triton_version=UNMEASURED)
    assert (big.block_l, big.block_k) == (32, 64)
    assert (keys64.block_l, keys64.block_k, keys64.num_stages) == (32, 32, 1)


def test_probe_evidence_shows_why_larger_budgets_lost(unmeasured_triton):
    index, evidence = tile_probe.probe_fit16(90)
    assert index == 2
    by_budget = {i: [row for row in evidence if row["candidate"] == i] for i in range(index + 1)}
    # A losing budget stops at its first unclean configuration, which is the last one it tried.
    for lost in range(index):
        assert [row["clean"] for row in by_budget[lost]][-1] is False
        assert by_budget[lost][-1]["spill_bytes"] == 140
    # The winner compiled every configuration the launcher can pick under it, all clean.
    assert all(row["clean"] for row in by_budget[index])
    assert {row["name"] for row in by_budget[index]} == {name for name, _, _ in
                                                        tile_probe.rows_jobs(FIT16_CANDIDATES[2], 90)}
    assert any(row["name"].startswith("bl32") and row["name"].endswith("M=64") for row in by_budget[index])


def test_measured_versions_are_never_probed(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def refuse(*_):
        raise AssertionError("a measured Triton version was probed")

    monkeypatch.setattr(tile_probe, "compile_jobs", refuse)
    for (minor, sm90), index in MEASURED_FIT16.items():
        monkeypatch.setattr(tile_probe, "installed_triton", lambda minor=minor: f"{minor[0]}.{minor[1]}.0")
        assert tile_probe.ensure_fit16(90 if sm90 else 80) == FIT16_CANDIDATES[index]


def test_an_unreadable_cache_is_probed_again(unmeasured_triton, tmp_path):
    (tmp_path / "tdfast").mkdir()
    (tmp_path / "tdfast" / "kernel_tiles.json").write_text("{not json")
    assert cached_fit16(UNMEASURED, 90) is None
    assert tile_probe.ensure_fit16(90, log=lambda s: None) == FIT16_CANDIDATES[2]
    assert cached_fit16(UNMEASURED, 90) == 2
