"""The dynamics-shift benchmark's data (real QVHighlights structure, planted trap) and the
per-clip temporal-difference learner that shows the task is solvable."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tdfast.data.annotations import load_annotations
from tdfast.errors import InputError
from tdfast.experiments.dynamics_data import DynamicsSpec, make_dynamics_dataset, qvh_clip_windows
from tdfast.experiments.dynamics_probe import best_run, clip_features, fit_probe

from conftest import SHARED_QVH as QVH
needs_qvh = pytest.mark.skipif(not (QVH / "annotations" / "highlight_val_release.jsonl").is_file(),
                               reason="QVHighlights annotations not at ../shared/qvhighlights")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    if not (QVH / "annotations" / "highlight_val_release.jsonl").is_file():
        pytest.skip("QVHighlights annotations not at ../shared/qvhighlights")
    out = tmp_path_factory.mktemp("dyn")
    return make_dynamics_dataset(out, QVH, num_train=150, num_val=20, num_test=20)


def _video(paths, ann) -> np.ndarray:
    return np.load(paths["video_dir"] / f"{ann.vid}.npz")["features"]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@needs_qvh
def test_queries_keep_their_real_duration_windows_and_length(small):
    real = {a.qid: a for f in ("highlight_train_release", "highlight_val_release")
            for a in load_annotations(QVH / "annotations" / f"{f}.jsonl")}
    spec = DynamicsSpec()
    for split in ("train", "val", "test"):
        for ann in load_annotations(small[split]):
            src = real[ann.qid]
            num_clips, windows = qvh_clip_windows(src, 2.0, 75)
            assert ann.query == src.query and ann.duration == num_clips * 2.0
            assert ann.windows == tuple((2.0 * s, 2.0 * e) for s, e in windows)
            assert _video(small, ann).shape == (num_clips, spec.video_dim)
            tokens = np.load(small["text_dir"] / f"qid{ann.qid}.npz")["last_hidden_state"]
            assert tokens.shape == (min(len(src.query.split()), 32), spec.text_dim)
    val = {a.qid for a in load_annotations(small["val"])}
    assert not val & {a.qid for a in load_annotations(small["test"])}


@needs_qvh
def test_a_scene_like_the_query_surrounds_the_moment_in_training_and_a_decoy_at_test(small):
    meta = json.loads(small["meta"].read_text())["planted"]
    vec = np.load(small["vectors"])
    for split in ("train", "test"):
        for ann in load_annotations(small[split]):
            info = meta[str(ann.qid)]
            x = _unit(_video(small, ann))
            look = x @ vec["sig"][info["concept"]]  # [L] how much each clip looks like the query
            st, ed = info["window_clips"][0]
            around = slice(max(st - 2, 0), min(ed + 2, len(x)))
            if split == "train":
                assert look[around].min() > 0.5 and info["decoy_clips"] is None
            else:
                ds, de = info["decoy_clips"]
                assert look[max(ds - 2, 0):de + 2].min() > 0.5  # the decoy looks like the query
                assert look[around].max() < 0.3  # the moment only weakly
                assert info["scene_concept"] != info["concept"]


@needs_qvh
def test_the_moment_is_marked_by_its_dynamics_not_by_each_clip(small):
    """Every clip carries +-dyn[c] equally; inside the moment the sign flips on every clip,
    outside with probability slow_flip."""
    meta = json.loads(small["meta"].read_text())["planted"]
    dyn = np.load(small["vectors"])["dyn"]
    inside_abs, outside_abs, inside_flip, outside_flip = [], [], [], []
    for ann in load_annotations(small["train"]):
        info = meta[str(ann.qid)]
        proj = _video(small, ann) @ dyn[info["concept"]]  # [L] signed dynamics component
        inside = np.zeros(len(proj), dtype=bool)
        for st, ed in info["window_clips"]:
            inside[st:ed] = True
        flip = np.sign(proj[1:]) != np.sign(proj[:-1])  # [L - 1] flip into clip t + 1
        both = inside[1:] & inside[:-1]
        inside_abs += list(abs(proj[inside]))
        outside_abs += list(abs(proj[~inside]))
        inside_flip += list(flip[both])
        outside_flip += list(flip[~inside[1:] & ~inside[:-1]])
    assert abs(np.mean(inside_abs) - np.mean(outside_abs)) < 0.1  # same size everywhere (~1)
    assert np.mean(inside_flip) > 0.95 and np.mean(outside_flip) < 0.25


def test_missing_annotations_name_the_path(tmp_path):
    with pytest.raises(InputError, match=r"qvh_dir: expected the QVHighlights annotations at .*"
                                         r"highlight_train_release\.jsonl, not found"):
        make_dynamics_dataset(tmp_path / "out", tmp_path)
    assert not (tmp_path / "out").exists()


def test_best_run_and_features_on_known_input():
    assert best_run(np.array([0.1, 0.9, 0.8, 0.2, 0.7, 0.1])) == (1, 3)
    assert best_run(np.array([0.1, 0.9, 0.8, 0.45, 0.7, 0.1])) == (1, 5)
    assert best_run(np.array([0.1, 0.3, 0.2])) == (1, 2)  # nothing passes 1/2: the best clip
    x = np.array([[3.0, 0.0], [0.0, 2.0], [0.0, 5.0]])  # rows normalised: e1, e2, e2
    f = clip_features(x)
    assert np.allclose(f, [[0, 0, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    z = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # changed on both sides of clip 1
    assert np.allclose(clip_features(z)[1], [1, 1, 1, 1, 1, 1])


@needs_qvh
def test_difference_learner_finds_the_moment_on_both_splits(small):
    from tdfast.eval import eval_submission, load_jsonl

    def split(name):
        anns = load_annotations(small[name])
        return (anns, [_video(small, a) for a in anns],
                [np.load(small["text_dir"] / f"qid{a.qid}.npz")["last_hidden_state"] for a in anns])

    anns, videos, queries = split("train")
    probe = fit_probe(videos, queries, anns, 2.0)
    r1 = {}
    for name in ("val", "test"):
        anns, videos, queries = split(name)
        sub = [{"qid": a.qid, "query": a.query, "vid": a.vid, "pred_relevant_windows": [probe.predict(v, q, 2.0)]}
               for a, v, q in zip(anns, videos, queries)]
        r1[name] = eval_submission(sub, load_jsonl(small[name]))["brief"]["MR-full-R1@0.5"]
    # 150 training queries: well above chance (an untrained network: ~5-10) on both splits.
    assert r1["val"] >= 50 and r1["test"] >= 50, r1


def test_bench_command_refuses_an_unknown_spec_field_before_writing(tmp_path):
    from tdfast.experiments.dynamics_bench import main

    with pytest.raises(InputError, match=r"--spec: expected KEY=VALUE with KEY in \[.*'dynamics'.*\], got 'bogus=1'"):
        main(["--out", str(tmp_path / "b"), "--spec", "bogus=1"])
    assert not (tmp_path / "b").exists()
