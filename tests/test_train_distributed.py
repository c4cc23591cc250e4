"""torchrun --nproc_per_node=2 (gloo, CPU) == one process with the same global batch.

Both runs use VSDC and negative pairs (partners are searched over the global batch)
and dropout 0 (each rank draws its own dropout masks, see ``training/distributed.py``).
The two-process run goes through the real launcher and the ``tdfast train`` CLI.
"""
from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from tdfast.data.synthetic import make_synthetic_dataset
from tdfast.training import RunConfig, TrainData, TrainOptions, train
from train_support import finish, start

OVERRIDES = ["batch_size=8", "dropout=0", "input_dropout=0", "max_video_len=20"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    ds = make_synthetic_dataset(root, seed=8, num_train=26, num_val=4, num_test=0, max_clips=20)
    # a multiple of the number of processes: DistributedSampler pads odd sizes with repeats
    rows = ds.train.read_text().splitlines()[:28]
    assert len(rows) == 28
    (root / "train28.jsonl").write_text("".join(r + "\n" for r in rows))
    return ds, root / "train28.jsonl"


def torchrun_train(data, out, epochs: int, resume=None) -> str:
    """``tdfast train`` under torchrun; returns its stdout. ``resume``: a run to continue (its
    config is reused, so no preset or --set)."""
    ds, train_ann = data
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tdfast", "train", "--train", str(train_ann), "--val", str(ds.val),
           "--video-feats", *map(str, ds.video_dirs), "--text-feats", str(ds.text_dir), "--out", str(out),
           "--epochs", str(epochs), "--seed", "5", "--no-progress"]
    if resume is None:
        cmd += ["--preset", "tiny", *(a for o in OVERRIDES for a in ("--set", o))]
    else:
        cmd += ["--resume", str(resume)]
    return finish(start(cmd))


def one_process_train(data, out, epochs: int):
    ds, train_ann = data
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = RunConfig.from_name("tiny").override(OVERRIDES)
        return train(config,
                     TrainData(train_ann, ds.val, ds.video_dirs, ds.text_dir),
                     TrainOptions(out, epochs=epochs, seed=5, progress=False))
    finally:
        torch.set_num_threads(n)


def log_records(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def assert_same_run(a, b):
    train_a = [r for r in log_records(a) if r["kind"] == "train"]
    train_b = [r for r in log_records(b) if r["kind"] == "train"]
    assert [r["step"] for r in train_a] == [r["step"] for r in train_b]
    for ra, rb in zip(train_a, train_b):
        assert set(ra) == set(rb)
        for k in ra:  # every loss term of every step, not only the total
            if k != "kind":
                assert ra[k] == pytest.approx(rb[k], abs=1e-4, rel=0), (ra["step"], k)
    wa, wb = load_file(str(a / "last" / "model.safetensors")), load_file(str(b / "last" / "model.safetensors"))
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-4


def test_two_processes_equal_one_process(data, tmp_path):
    stdout = torchrun_train(data, tmp_path / "ddp", epochs=1)
    single = one_process_train(data, tmp_path / "one", epochs=1)
    assert single.steps == 4  # 28 rows, global batch 8: 8, 8, 8, 4 (the last split 2 + 2)
    assert_same_run(tmp_path / "ddp", tmp_path / "one")
    summary = json.loads(stdout[stdout.index("{"):])  # printed once, by rank 0
    assert summary["steps"] == single.steps
    assert summary["best"] == pytest.approx(single.best_metrics, abs=0.02)  # metrics in %, 2 decimals


@pytest.mark.slow
def test_two_processes_equal_one_process_over_epochs_and_resume(data, tmp_path):
    """Three epochs, the two-process run cut after one and resumed (with two processes)."""
    torchrun_train(data, tmp_path / "ddp", epochs=1)
    torchrun_train(data, tmp_path / "ddp2", epochs=3, resume=tmp_path / "ddp")
    one_process_train(data, tmp_path / "one", epochs=3)
    assert_same_run(tmp_path / "ddp2", tmp_path / "one")
