"""Checkpoint directories: exact round trip, atomic replacement, clear errors."""
import json
import os
import stat
import subprocess
import sys

import pytest
import torch

from tdfast import InputError, TDDETR, TDDETRConfig
from tdfast.atomic import atomic_write_dir
from tdfast.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, save_checkpoint_dir

from conftest import random_batch


def test_round_trip_gives_identical_outputs(tmp_path):
    c = TDDETRConfig.from_name("tiny", beta=0.3)
    model = TDDETR(c).eval()
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    loaded = TDDETR.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == c
    batch = random_batch(c, 2, 9, 4)
    with torch.no_grad():
        a, b = model(*batch), loaded(*batch)
    for k in a:
        assert torch.equal(a[k], b[k])


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path):
    c = TDDETRConfig.from_name("tiny")
    first = TDDETR(c)
    first.save_pretrained(tmp_path / "ckpt")
    before = (tmp_path / "ckpt" / WEIGHTS_NAME).read_bytes()

    def crash(_tmp):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint_dir(tmp_path / "ckpt", TDDETR(c), extra=crash)
    assert (tmp_path / "ckpt" / WEIGHTS_NAME).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp dirs left behind


def test_resave_keeps_unrelated_files_and_the_writer_recovers_an_interrupted_swap(tmp_path):
    target = tmp_path / "ckpt"
    atomic_write_dir(target, lambda d: (d / "a.txt").write_text("1"))
    (target / "model.onnx").write_text("cached export")
    atomic_write_dir(target, lambda d: (d / "a.txt").write_text("2"))
    assert (target / "a.txt").read_text() == "2"
    assert (target / "model.onnx").read_text() == "cached export"
    # a kill between the two renames leaves only .ckpt.tdfast-old-<pid>: a load leaves it be and
    # says so, the next writer puts it back
    dead = dead_pid()
    target.rename(tmp_path / f".ckpt.tdfast-old-{dead}")
    with pytest.raises(InputError, match=rf"\.ckpt\.tdfast-old-{dead}"):
        TDDETR.from_pretrained(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".ckpt.tdfast-old-{dead}"]
    atomic_write_dir(target, lambda d: (d / "b.txt").write_text("3"))
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "b.txt", "model.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def dead_pid() -> int:
    """The pid of a process that has exited (a killed writer's)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_save_pretrained_keeps_everything_it_did_not_write(tmp_path):
    """Saving into a run directory (or any directory with other content) used to swap the whole
    directory and delete last/, notes.txt and the rest."""
    run = tmp_path / "run"
    (run / "last").mkdir(parents=True)
    (run / "last" / "train_state.pt").write_bytes(b"state")
    (run / "notes.txt").write_text("my notes")
    (run / "log.jsonl").write_text("{}\n")
    c = TDDETRConfig.from_name("tiny")
    TDDETR(c).save_pretrained(run)
    assert (run / "notes.txt").read_text() == "my notes"
    assert (run / "last" / "train_state.pt").read_bytes() == b"state"
    assert (run / "log.jsonl").read_text() == "{}\n"
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["last", "notes.txt", "log.jsonl", CONFIG_NAME, WEIGHTS_NAME])  # no staging files left
    assert TDDETR.from_pretrained(run).config == c


def test_save_and_load_leave_a_users_sibling_dot_old_alone(tmp_path):
    """save_pretrained("X") deleted a user's X.old/; from_pretrained("X") on a missing X renamed
    the user's X.old/ to X/."""
    old = tmp_path / "X.old"
    old.mkdir()
    (old / "keep.txt").write_text("user data")
    with pytest.raises(InputError, match="config.json does not exist"):
        TDDETR.from_pretrained(tmp_path / "X")
    assert not (tmp_path / "X").exists() and (old / "keep.txt").read_text() == "user data"
    TDDETR(TDDETRConfig.from_name("tiny")).save_pretrained(tmp_path / "X")
    TDDETR(TDDETRConfig.from_name("tiny")).save_pretrained(tmp_path / "X")
    assert (old / "keep.txt").read_text() == "user data"


def test_save_pretrained_into_a_file_is_an_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="'.*f'.*a file"):
        TDDETR(TDDETRConfig.from_name("tiny")).save_pretrained(tmp_path / "f")
    assert (tmp_path / "f").read_text() == "x"


def test_written_files_get_the_umask_permissions(tmp_path):
    """mkstemp made every atomically written file 0600 whatever the umask."""
    from tdfast.atomic import atomic_write_bytes

    old = os.umask(0o022)
    try:
        TDDETR(TDDETRConfig.from_name("tiny")).save_pretrained(tmp_path / "ckpt")
        atomic_write_bytes(tmp_path / "m.json", b"{}")
        atomic_write_dir(tmp_path / "d", lambda d: (d / "a.txt").write_text("1"))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [*(tmp_path / "ckpt").iterdir(), tmp_path / "m.json"]}
    assert modes == {CONFIG_NAME: 0o644, WEIGHTS_NAME: 0o644, "m.json": 0o644}
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_missing_or_mismatched_checkpoint_errors(tmp_path):
    with pytest.raises(InputError, match="config.json does not exist"):
        TDDETR.from_pretrained(tmp_path / "nothing")
    c = TDDETRConfig.from_name("tiny")
    TDDETR(c).save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / CONFIG_NAME).read_text())
    cfg["use_tdem"] = False
    (tmp_path / "ckpt" / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"config\.json.*does not fit the tensors of .*model\.safetensors"):
        TDDETR.from_pretrained(tmp_path / "ckpt")


def test_a_killed_writers_staging_dir_is_removed_a_live_ones_kept(tmp_path):
    """A kill mid-save left ``.last.tmp-*`` directories behind for good; now their names hold the
    writer's pid and the next save removes those whose writer is gone."""
    target = tmp_path / "last"
    atomic_write_dir(target, lambda d: (d / "a.txt").write_text("1"))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_dir = tmp_path / f".last.tdfast-tmp-{dead_pid()}-0a1b2c3d"
        live_dir = tmp_path / f".last.tdfast-tmp-{live.pid}-0a1b2c3d"
        for d in (dead_dir, live_dir):
            d.mkdir()
            (d / "model.safetensors").write_bytes(b"half")
        atomic_write_dir(target, lambda d: (d / "a.txt").write_text("2"))
        assert not dead_dir.exists() and (live_dir / "model.safetensors").read_bytes() == b"half"
        assert (target / "a.txt").read_text() == "2"
    finally:
        live.kill()
        live.wait()
