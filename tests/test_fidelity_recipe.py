"""docs/recipe.md: the blocks it shows are the ones run, and they run end to end on a
stand-in with the real dims and layout, producing correctly named, consistent outputs."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tdfast.data.annotations import load_annotations
from tdfast.data.features import FeatureStore, read_npz_array
from tdfast.eval import eval_charades, eval_submission, load_jsonl
from tdfast.experiments import ablation
from tdfast.experiments.metrics import TABLE2_KEYS
from tdfast.experiments.recipe import (CHARADES_RECIPE, QVH_ABLATE_RECIPE, QVH_RECIPE, commands, run_recipe,
                                    write_standin)
from tdfast.model.config import TDDETRConfig
from tdfast.training import RunConfig

from fidelity_support import one_thread  # noqa: F401  (autouse fixture)

DOC = Path(__file__).resolve().parents[1] / "docs" / "recipe.md"
ENV = {"QVH": "/q", "CHARADES": "/c", "RUNS": "r", "EPOCHS": "220", "SEED": "2"}


def test_docs_show_exactly_the_blocks_that_run():
    text = DOC.read_text()
    assert f"```bash\n{QVH_RECIPE}```" in text
    assert f"```bash\n{CHARADES_RECIPE}```" in text
    assert f"```bash\n{QVH_ABLATE_RECIPE}```" in text


def test_commands_join_lines_and_substitute_variables():
    argvs = commands(QVH_RECIPE, ENV)
    assert [a[:2] for a in argvs] == [["tdfast", "train"], ["tdfast", "predict"], ["tdfast", "eval"],
                                      ["tdfast", "predict"], ["python", "-m"], ["tdfast", "analyze"]]
    assert argvs[0] == ["tdfast", "train", "--preset", "qvhighlights", "--set", "early_stop_patience=0",
                        "--epochs", "220", "--seed", "2",
                        "--train", "/q/data/highlight_train_release.jsonl",
                        "--val", "/q/data/highlight_val_release.jsonl",
                        "--video-feats", "/q/features/slowfast_features", "/q/features/clip_features",
                        "--text-feats", "/q/features/clip_text_features", "--out", "r/qvh_seed2"]
    assert argvs[3][-1] == "r/qvh_seed2/hl_test_submission.jsonl"
    with pytest.raises(KeyError, match="SEED"):
        commands(QVH_RECIPE, {k: v for k, v in ENV.items() if k != "SEED"})


def _run(root: Path, kind: str, block: str) -> Path:
    data = write_standin(root / kind, "qvhighlights" if kind == "qvh" else "charades", num_videos=2)
    env = {"QVH": str(data), "CHARADES": str(data), "RUNS": str(root / "runs"), "EPOCHS": "1", "SEED": "0"}
    run_recipe(block, env, log=lambda line: None)
    return root / "runs"


def test_qvh_recipe_outputs(tmp_path):
    root, runs = tmp_path, _run(tmp_path, "qvh", QVH_RECIPE)
    run, data, feats = runs / "qvh_seed0", root / "qvh" / "data", root / "qvh" / "features"
    # the stand-in has the real dims in the release layout
    vid = load_annotations(data / "highlight_val_release.jsonl")[0].vid
    assert read_npz_array(feats / "slowfast_features" / f"{vid}.npz", "features").shape[1] == 2304
    assert read_npz_array(feats / "clip_features" / f"{vid}.npz", "features").shape[1] == 512
    qid = load_annotations(data / "highlight_val_release.jsonl")[0].qid
    assert read_npz_array(feats / "clip_text_features" / f"qid{qid}.npz", "last_hidden_state").shape[1] == 512
    # the trained network takes 2816 + 2 temporal-endpoint = 2818 video and 512 text columns
    weights = load_file(str(run / "model.safetensors"))
    assert weights["video_proj.0.linear.weight"].shape == (256, 2818)
    assert weights["text_proj.0.linear.weight"].shape == (256, 512)
    # trained with the paper's preset (the recipe only turns early stopping off)
    saved = TDDETRConfig.from_json((run / "config.json").read_text())
    assert saved == TDDETRConfig.from_name("qvhighlights")
    # val metrics are the official scoring of the written val predictions
    val_gt = load_jsonl(data / "highlight_val_release.jsonl")
    val_sub = load_jsonl(run / "hl_val_submission.jsonl")
    assert json.loads((run / "hl_val_metrics.json").read_text()) == \
        json.loads(json.dumps(eval_submission(val_sub, val_gt)))
    # test predictions: one line per test query, in order, one saliency per clip, 10 windows
    test = load_annotations(data / "highlight_test_release.jsonl")
    assert all(a.windows is None for a in test)
    test_sub = load_jsonl(run / "hl_test_submission.jsonl")
    assert [s["qid"] for s in test_sub] == [a.qid for a in test]
    for a, s in zip(test, test_sub):
        clips = read_npz_array(feats / "clip_features" / f"{a.vid}.npz", "features").shape[0]
        assert len(s["pred_saliency_scores"]) == clips and len(s["pred_relevant_windows"]) == 10
        assert all(0 <= st <= ed <= a.duration + 1e-3 for st, ed, _ in s["pred_relevant_windows"])
    with zipfile.ZipFile(run / "submission.zip") as z:
        assert sorted(z.namelist()) == ["hl_test_submission.jsonl", "hl_val_submission.jsonl"]
        assert z.read("hl_test_submission.jsonl") == (run / "hl_test_submission.jsonl").read_bytes()
    report = json.loads((run / "spurious_val.json").read_text())
    assert report["normal"]["MR-full-mAP"] == json.loads((run / "hl_val_metrics.json").read_text())["brief"][
        "MR-full-mAP"]  # the analysis' unmasked run is the plain evaluation
    assert report["queries"] == len(val_gt) and report["zeroed_clips"] > 0


def test_charades_recipe_outputs(tmp_path):
    root, runs = tmp_path, _run(tmp_path, "charades", CHARADES_RECIPE)
    run, data = runs / "charades_seed0", root / "charades" / "data"
    saved = TDDETRConfig.from_json((run / "config.json").read_text())
    assert saved == TDDETRConfig.from_name("charades")
    gt = load_jsonl(data / "charades_sta_test_tvr_format.jsonl")
    assert all("saliency_scores" not in g for g in gt)  # Charades-STA: windows only
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics == json.loads(json.dumps(eval_charades(load_jsonl(run / "test_preds.jsonl"), gt)))
    report = json.loads((run / "spurious_test.json").read_text())
    assert report["normal"]["MR-full-R1@0.5"] == metrics["brief"]["MR-full-R1@0.5"]
    assert report["normal"]["HL-min-VeryGood-mAP"] is None


def test_qvh_ablate_recipe_plans_every_paper_run_on_the_standin(tmp_path, monkeypatch):
    """The doc's ``tdfast ablate`` block through the real CLI on the stand-in, each run's
    training + analysis replaced by a stub (the block is 45 runs of 220 epochs): the runs
    it plans, their configs and inputs, and the summary table's numbers."""
    data = write_standin(tmp_path / "qvh", "qvhighlights", num_videos=2)
    jobs = []
    order = ["a", "b", "c", "d", "untrained", *(f"alpha={x:g}" for x in ablation.PAPER_ALPHAS),
             *(f"beta={x:g}" for x in ablation.PAPER_BETAS)]

    def stub(job):
        jobs.append(job)
        config = RunConfig.from_dict(job.config).model
        store = FeatureStore(job.video_dirs, job.text_dir, config)
        ann = load_annotations(job.train_ann)[0]
        assert store.video(ann.vid).shape[1] == 2816 and store.query(ann.qid).shape[1] == 512
        value = 10.0 * job.seed + order.index(job.row.name)  # seeds 0, 1, 2: mean row index + 10, std 10
        metrics = dict.fromkeys(TABLE2_KEYS, value)
        return {"row": job.row.name, "seed": job.seed, "overrides": job.row.overrides, "config": job.config,
                "train": {"seconds": 1.0, "epochs": job.epochs, "steps": 0},
                "analysis": {s: {"normal": metrics, "masked": {**metrics, "MR-full-R1@0.3": value / 2}}
                             for s in job.eval_anns}}

    monkeypatch.setattr(ablation, "run_one", stub)
    env = {"QVH": str(data), "RUNS": str(tmp_path / "runs")}
    run_recipe(QVH_ABLATE_RECIPE, env, log=lambda line: None)
    # 17 rows; alpha=0.7 and beta=0.7 are row d (the preset's official 0.7), so 15 distinct x 3 seeds
    assert len(jobs) == 45 and sorted({j.seed for j in jobs}) == [0, 1, 2]
    assert {j.row.name for j in jobs} == set(order) - {"alpha=0.7", "beta=0.7"}
    preset = RunConfig.from_name("qvhighlights", early_stop_patience=0).to_dict()
    for j in jobs:
        assert j.epochs == 220 and j.config == {**preset, **j.row.overrides}, j.row.name
        assert j.train_ann == str(data / "data" / "highlight_train_release.jsonl")
        assert j.eval_anns == {"val": str(data / "data" / "highlight_val_release.jsonl")}
    assert [j for j in jobs if j.row.name == "alpha=0.1"][0].config["alpha"] == 0.1
    assert [j for j in jobs if j.row.name == "beta=0.9"][0].config["beta"] == 0.9
    assert not [j for j in jobs if j.row.name == "untrained"][0].row.train
    record = json.loads((tmp_path / "runs" / "ablation_qvh" / "ablation.json").read_text())
    table = {r["row"]: r for r in record["table"]}
    assert [r["row"] for r in record["table"]] == order
    assert table["alpha=0.7"]["same_as"] == "d" and table["beta=0.7"]["same_as"] == "d"
    val = table["beta=1"]["metrics"]["val"]
    assert val["normal"]["MR-full-mAP"] == {"mean": 26.0, "std": 10.0, "n": 3, "values": [16.0, 26.0, 36.0]}
    assert val["masked"]["MR-full-R1@0.3"]["mean"] == 13.0
    assert table["alpha=0.7"]["metrics"] == table["d"]["metrics"]  # reuses row d's runs
    assert "| beta=1 (VSDC on, TDEM on) | 3 | 26.00 ± 10.00 |" in \
        (tmp_path / "runs" / "ablation_qvh" / "ablation.md").read_text()
