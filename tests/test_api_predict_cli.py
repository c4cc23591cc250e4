"""``tdfast predict``: synthetic dataset on disk -> prediction jsonl equal to the training
pipeline's own path (MomentDataset -> collate -> model -> postprocess), windows for long
videos, errors as exit code 2."""
import json

import numpy as np
import pytest
import torch

from tdfast import TDDETR, TDDETRConfig
from tdfast.cli import main
from tdfast.data import MomentDataset, collate, make_synthetic_dataset
from tdfast.eval import eval_submission, load_jsonl
from tdfast.retrieval.postprocess import postprocess

C = TDDETRConfig.from_name("tiny")  # video_dim 64 = 48 + 16 (two feature dirs), text_dim 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    ds = make_synthetic_dataset(root / "data", seed=3, num_train=4, num_val=10, num_test=2,
                                video_dims=(48, 16), text_dim=32, min_clips=12, max_clips=60)
    torch.manual_seed(0)
    model = TDDETR(C).eval()
    torch.nn.init.normal_(model.span_head.layers[-1].weight, std=0.5)
    torch.nn.init.normal_(model.class_head.weight, std=1.0)
    model.save_pretrained(root / "ckpt")
    return ds, model, root


def read_jsonl(path):
    return [json.loads(line) for line in open(path)]


def reference(ds, model, top_k):
    """The training pipeline's path: its dataset and collate, the model, postprocess."""
    dataset = MomentDataset(ds.val, ds.video_dirs, ds.text_dir, C)
    batch = collate([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        out = model(batch.video, batch.video_mask, batch.query, batch.query_mask)
    seconds = torch.tensor([m["num_clips"] * C.clip_len for m in batch.meta])
    preds = postprocess(out["pred_spans"], out["pred_logits"], out["saliency_scores"],
                        [m["num_clips"] for m in batch.meta], seconds, top_k=top_k)
    return [p.to_submission(m["qid"], m["query"], m["vid"]) for p, m in zip(preds, batch.meta)]


def cli(ds, root, out, *extra):
    return main(["predict", str(root / "ckpt"), "--ann", str(ds.val), "--video-feats",
                 *map(str, ds.video_dirs), "--text-feats", str(ds.text_dir), "--out", str(out), *extra])


def test_predict_writes_what_the_training_pipeline_computes(data, tmp_path):
    ds, model, root = data
    assert cli(ds, root, tmp_path / "preds.jsonl", "--top-k", "4", "--batch-size", "3") == 0
    got, want = read_jsonl(tmp_path / "preds.jsonl"), reference(ds, model, top_k=4)
    assert [g["qid"] for g in got] == [w["qid"] for w in want]
    for g, w in zip(got, want):
        assert (g["query"], g["vid"]) == (w["query"], w["vid"])
        np.testing.assert_allclose(g["pred_relevant_windows"], w["pred_relevant_windows"], atol=2e-3)
        np.testing.assert_allclose(g["pred_saliency_scores"], w["pred_saliency_scores"], atol=2e-4)
        assert len(g["pred_saliency_scores"]) == min(C.max_video_len, len(w["pred_saliency_scores"]))
    # and `tdfast eval` accepts it
    assert main(["eval", "--submission", str(tmp_path / "preds.jsonl"), "--gt", str(ds.val),
                 "--out", str(tmp_path / "m.json")]) == 0
    # ... and scores what the file holds as the evaluator scores the reference path (the file's
    # rounding to 4 decimals moves no window across an IoU threshold on this data).
    brief = json.load(open(tmp_path / "m.json"))["brief"]
    want_brief = eval_submission(want, load_jsonl(ds.val))["brief"]
    for key in ("MR-full-mAP", "MR-full-R1@0.5", "HL-min-VeryGood-mAP", "HL-min-VeryGood-Hit1"):
        assert brief[key] == pytest.approx(want_brief[key], abs=1e-6), key


def test_sliding_window_keeps_whole_long_videos(data, tmp_path):
    ds, model, root = data
    assert cli(ds, root, tmp_path / "w.jsonl", "--sliding-window") == 0
    lengths = {}
    for line in open(ds.val):
        rec = json.loads(line)
        lengths[rec["qid"]] = np.load(ds.video_dirs[0] / f"{rec['vid']}.npz")["features"].shape[0]
    got = read_jsonl(tmp_path / "w.jsonl")
    assert any(n > C.max_video_len for n in lengths.values())  # the fixture has long videos
    for g in got:
        assert len(g["pred_saliency_scores"]) == lengths[g["qid"]]
        ends = np.array(g["pred_relevant_windows"])[:, 1]
        assert ends.max() <= lengths[g["qid"]] * C.clip_len + 1e-4


def test_bad_backend_is_exit_code_2(data, tmp_path, capsys):
    ds, _, root = data
    with pytest.raises(SystemExit) as e:  # argparse: the choices are the backend table's names
        cli(ds, root, tmp_path / "x.jsonl", "--backend", "tflite")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--backend" in err and "'tflite'" in err and "onnxruntime" in err
    assert not (tmp_path / "x.jsonl").exists()


def test_threads_flag_sets_the_thread_count_and_rejects_zero(data, tmp_path, capsys, monkeypatch):
    from tdfast.threads import default_threads, physical_cores

    ds, model, root = data
    before = torch.get_num_threads()
    try:
        assert cli(ds, root, tmp_path / "a.jsonl", "--threads", "1") == 0
        assert torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert cli(ds, root, tmp_path / "b.jsonl") == 0
        assert torch.get_num_threads() == physical_cores() == default_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert default_threads() == 1
        for a, b in zip(read_jsonl(tmp_path / "a.jsonl"), read_jsonl(tmp_path / "b.jsonl"), strict=True):
            assert a["qid"] == b["qid"]  # the same answers (up to the summation order of the threads)
            np.testing.assert_allclose(a["pred_relevant_windows"], b["pred_relevant_windows"], atol=2e-4)
        capsys.readouterr()
        assert cli(ds, root, tmp_path / "c.jsonl", "--threads", "0") == 2
        err = capsys.readouterr().err.strip()
        assert err == "tdfast predict: error: --threads: expected a positive integer, got 0"
    finally:
        torch.set_num_threads(before)


def test_physical_cores_counts_cores_not_hyperthreads(monkeypatch, tmp_path):
    from tdfast import threads

    # 2 cores x 2 hyper-threads, all four CPUs usable
    blocks = [f"processor\t: {p}\nphysical id\t: 0\ncore id\t\t: {p % 2}\n" for p in range(4)]
    fake = tmp_path / "cpuinfo"
    fake.write_text("\n".join(blocks))
    real_path = threads.Path
    monkeypatch.setattr(threads, "Path", lambda p: fake if p == "/proc/cpuinfo" else real_path(p))
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda _: {0, 1, 2, 3})
    assert threads.physical_cores() == 2
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda _: {0})
    assert threads.physical_cores() == 1


def test_bench_int8_metric_change_scores_both_variants_like_tdfast_eval(data):
    """``tdfast.benchmarks.int8.int8_metric_change`` on two different models: each side's val
    metrics are the reference path's, and the loss is their difference."""
    from tdfast import Retriever
    from tdfast.benchmarks.int8 import QUALITY_METRICS, int8_metric_change

    ds, model, _ = data
    torch.manual_seed(1)
    other = TDDETR(C).eval()
    torch.nn.init.normal_(other.class_head.weight, std=1.0)
    got = int8_metric_change(Retriever(model), Retriever(other), ds, C)
    gt = load_jsonl(ds.val)
    for side, m in (("fp32_val", model), ("int8_val", other)):
        want = eval_submission(reference(ds, m, top_k=C.num_queries), gt)["brief"]
        for k in QUALITY_METRICS:
            assert got[side][k] == pytest.approx(want[k], abs=1e-6), (side, k)
    assert got["fp32_val"] != got["int8_val"]  # the two models really differ on this data
    for k in QUALITY_METRICS:
        assert got[f"{k}_loss"] == pytest.approx(got["fp32_val"][k] - got["int8_val"][k], abs=1e-4)
