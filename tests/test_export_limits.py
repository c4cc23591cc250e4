"""``tdfast export`` to an --out it cannot write: one line naming the file, no partial files.

Both tracebacked before (PermissionError; OSError errno 27 under a file-size limit)."""
from __future__ import annotations

import pytest

from tdfast import TDDETR, TDDETRConfig

from limits_support import one_line_error, run_tdfast

pytest.importorskip("onnx")


def test_unwritable_out_fails_before_exporting(tmp_path):
    ckpt = TDDETR(TDDETRConfig.from_name("tiny")).save_pretrained(tmp_path / "ckpt")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    proc = run_tdfast(["export", str(ckpt), "--out", str(ro), "--no-verify"], unprivileged=True)
    one_line_error(proc, "export", str(ro), "Permission denied")
    assert list(ro.iterdir()) == []
    proc = run_tdfast(["export", str(ckpt), "--out", str(ro / "sub"), "--no-verify"], unprivileged=True)
    one_line_error(proc, "export", str(ro / "sub"), "Permission denied")


@pytest.mark.slow  # an ONNX export in a fresh process: about a minute on 2 shared cores
def test_file_size_limit(tmp_path):
    ckpt = TDDETR(TDDETRConfig.from_name("tiny")).save_pretrained(tmp_path / "ckpt")
    small = tmp_path / "small"
    proc = run_tdfast(["export", str(ckpt), "--out", str(small), "--no-verify"], fsize_bytes=20 * 1024)
    one_line_error(proc, "export", str(small / "model.onnx"), "File too large")
    assert sorted(p.name for p in small.iterdir()) == []
