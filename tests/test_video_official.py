"""Raw video -> moments equals QD-DETR's official run_on_video pipeline.

The fixtures in ``tests/fixtures/video`` were made by ``tests/fixtures/gen_video.py``
(run by hand with the official code in a folder outside this repository): synthetic
H.264 videos, a random CLIP-only QD-DETR in the official checkpoint format, and what the
official ``ClipFeatureExtractor`` and ``localize_moment`` computed on them with random
CLIP weights that the test rebuilds from their seed.

Tolerances: the frames tdfast decodes are the official ones bit for bit (the same FFmpeg
filter chain; checked here through the features), so features can differ only by float32
summation order in the towers (PyTorch's fused attention vs nn.MultiheadAttention, and
batches of 8 frames vs the official 60). On the 2-core box they differ by <= 7.2e-7;
1e-4 absolute (features of norm ~20) leaves room for other BLAS builds. Model outputs then follow the converted checkpoint's
tolerance (1e-4; measured <= 7.2e-7), and the top-1 span must match.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av", reason="the video extra (PyAV) is not installed")
pytest.importorskip("instant_clip_tokenizer", reason="the video extra (instant-clip-tokenizer) is not installed")
pytest.importorskip("ftfy", reason="the video extra (ftfy) is not installed")

from safetensors.torch import load_file  # noqa: E402

from tdfast import InputError, Retriever, convert_official  # noqa: E402
from tdfast.cli import main as cli_main  # noqa: E402
from tdfast.video import ClipEncoder  # noqa: E402
from tdfast.video.synthetic import random_clip_state_dict  # noqa: E402
from tdfast.video.tokenize import tokenize  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "video"
FEATURE_TOL = 1e-4
OUTPUT_TOL = 1e-4


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((FIXTURES / "video_preds.json").read_text())


@pytest.fixture(scope="module")
def official() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "video_io.safetensors")


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory, meta) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip_random.pt"
    torch.save(random_clip_state_dict(meta["clip_seed"]), path)
    return path


@pytest.fixture(scope="module")
def encoder(clip_file) -> ClipEncoder:
    torch.set_num_threads(1)
    return ClipEncoder(clip_file, threads=1)


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    return convert_official(FIXTURES / "qd_detr_clip.ckpt", tmp_path_factory.mktemp("ckpt") / "ckpt")


def test_tokens_equal_official(meta, official):
    ids, lengths = tokenize(meta["queries"])
    ref = official["tokens"]
    assert torch.equal(ids, ref[:, : ids.shape[1]]) and not ref[:, ids.shape[1]:].any()
    assert lengths[3] == 32  # the long query is cut to run_on_video's 32 tokens


def test_text_features_equal_official(meta, official, encoder):
    ours = encoder.encode_text(meta["queries"])
    for j, t in enumerate(ours):
        ref = official[f"text_{j}"].numpy()
        assert t.shape == ref.shape  # "Wow! Fireworks!!" keeps the official (short) valid length
        assert np.abs(t - ref).max() <= FEATURE_TOL


def test_video_features_equal_official(meta, official, encoder):
    for i, v in enumerate(meta["videos"]):
        ours = encoder.encode_video(FIXTURES / v["file"])
        ref = official[f"feat_{i}"].numpy()
        assert ours.shape == ref.shape == (v["clips"], 512), v["file"]
        assert np.abs(ours - ref).max() <= FEATURE_TOL, v["file"]


def clipped_windows(ref: dict, clips: int) -> np.ndarray:
    """The official ranked windows [Q, 3] with spans clipped to [0, clips * 2 s]: run_on_video
    leaves them unclipped, tdfast clips as the official evaluation's postprocessor does."""
    windows = np.array(ref["pred_relevant_windows"])
    windows[:, :2] = np.clip(windows[:, :2], 0.0, clips * 2.0)
    return windows


def test_raw_outputs_equal_official(meta, official, encoder, ckpt_dir):
    retriever = Retriever.from_pretrained(ckpt_dir)
    queries = [retriever.prepare_query(t) for t in encoder.encode_text(meta["queries"])]
    for i, v in enumerate(meta["videos"]):
        video = retriever.prepare_video(encoder.encode_video(FIXTURES / v["file"]))
        for j, out in enumerate(retriever.raw_outputs([video] * len(queries), queries)):
            for ours, key in (("pred_spans", "spans"), ("pred_logits", "logits"), ("saliency_scores", "saliency")):
                diff = np.abs(out[ours] - official[f"{key}_{i}"][j].numpy()).max()
                assert diff <= OUTPUT_TOL, (v["file"], j, key, diff)


def test_predictions_equal_official(meta, encoder, ckpt_dir):
    retriever = Retriever.from_pretrained(ckpt_dir)
    queries = meta["queries"]
    for v in meta["videos"]:
        paths = [FIXTURES / v["file"]] * len(queries)
        preds = retriever.predict_video_files(paths, queries, encoder, top_k=100)
        for j, (p, ref) in enumerate(zip(preds, v["predictions"])):
            windows = clipped_windows(ref, v["clips"])  # [Q, 3] best first, 4 decimals
            assert np.abs(p.spans[0] - windows[0, :2]).max() <= 1e-3, (v["file"], j)  # same top-1
            assert np.abs(p.spans - windows[:, :2]).max() <= 1e-3
            assert np.abs(p.scores - windows[:, 2]).max() <= 1e-3
            assert np.abs(p.saliency - ref["pred_saliency_scores"]).max() <= 1e-3  # official: fp16, 4 decimals


def test_cli_prints_official_moments(meta, clip_file, ckpt_dir, capsys):
    v = meta["videos"][0]
    query = meta["queries"][0]
    code = cli_main(["predict", str(ckpt_dir), "--video", str(FIXTURES / v["file"]), "--query", query,
                     "--clip-weights", str(clip_file), "--top-k", "1"])
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["query"] == query and len(line["pred_saliency_scores"]) == v["clips"]
    assert np.abs(np.array(line["pred_relevant_windows"][0]) - clipped_windows(v["predictions"][0], v["clips"])[0]
                  ).max() <= 2e-4
    assert np.abs(np.array(line["pred_saliency_scores"]) - v["predictions"][0]["pred_saliency_scores"]).max() <= 1e-3


def test_onnxruntime_image_tower_equals_official_and_is_cached(meta, clip_file, official, tmp_path):
    pytest.importorskip("onnxruntime")
    ort_enc = ClipEncoder(clip_file, clip_backend="onnxruntime", threads=1, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("clip-image-onnxruntime-*.onnx")
    stamp = cached.stat().st_mtime_ns
    again = ClipEncoder(clip_file, clip_backend="onnxruntime", threads=1, cache_dir=tmp_path)
    assert cached.stat().st_mtime_ns == stamp  # read back, not exported again
    for enc in (ort_enc, again):
        ours = enc.encode_video(FIXTURES / meta["videos"][3]["file"])
        assert np.abs(ours - official["feat_3"].numpy()).max() <= FEATURE_TOL


def test_int8_image_tower_keeps_the_official_moments(meta, clip_file, official, ckpt_dir):
    """int8 changes the features; its stated tolerance: cosine >= 0.999 per clip to the
    official features and every top-1 moment within 0.05 s of the official one (measured on
    these fixtures: cosine >= 0.99927, top-1 spans within 0.0164 s, 18 of 24 within 1e-3 s)."""
    pytest.importorskip("onnxruntime")
    retriever = Retriever.from_pretrained(ckpt_dir)
    int8 = ClipEncoder(clip_file, clip_backend="onnxruntime-int8", threads=1)
    queries = meta["queries"]
    for i, v in enumerate(meta["videos"]):
        feats, ref = int8.encode_video(FIXTURES / v["file"]), official[f"feat_{i}"].numpy()
        cosine = (feats * ref).sum(1) / (np.linalg.norm(feats, axis=1) * np.linalg.norm(ref, axis=1))
        assert cosine.min() >= 0.999, (v["file"], cosine.min())
        assert np.abs(feats - ref).max() > 1e-3  # it is int8: not the fp32 features
        preds = retriever.predict_video_files([FIXTURES / v["file"]] * len(queries), queries, int8, top_k=1)
        for j, (p, ref_pred) in enumerate(zip(preds, v["predictions"])):
            top1 = clipped_windows(ref_pred, v["clips"])[0, :2]
            assert np.abs(p.spans[0] - top1).max() <= 0.05, (v["file"], j, p.spans[0], top1)


def test_wrong_checkpoint_or_backend_is_named(clip_file, encoder, tmp_path):
    from tdfast import TDDETR, TDDETRConfig

    with pytest.raises(InputError, match="clip_backend: expected one of eager, onnxruntime, onnxruntime-int8"):
        ClipEncoder(clip_file, clip_backend="tensorrt")
    with pytest.raises(InputError, match="batch_size: expected a positive number of frames, got 0"):
        ClipEncoder(clip_file, batch_size=0)
    slowfast = Retriever(TDDETR(TDDETRConfig.from_name("tiny")).eval())
    with pytest.raises(InputError, match=r"expects video features of dim \d+ .* this CLIP gives 512 and 128"):
        slowfast.predict_video_files([FIXTURES / "video_0.mp4"], ["a dog"], encoder)


def test_long_video_needs_sliding_window(meta, encoder, ckpt_dir, tmp_path):
    from tdfast.video.synthetic import write_video

    retriever = Retriever.from_pretrained(ckpt_dir)
    long = write_video(tmp_path / "long.mp4", 152.0, fps=2, width=64, height=48)  # 76 clips > 75
    with pytest.raises(InputError, match="max_video_len=75"):
        retriever.predict_video_files([long], ["a dog"], encoder)  # found after sampling
    longer = write_video(tmp_path / "longer.mp4", 300.0, fps=1, width=64, height=48)
    with pytest.raises(InputError, match=r"longer.mp4': 300.0 s is about 150 clips.*max_video_len=75"):
        retriever.predict_video_files([longer], ["a dog"], encoder)  # found from the header
    (p,) = retriever.predict_video_files([long], ["a dog"], encoder, sliding_window=True)
    assert p.saliency.shape == (76,) and np.isfinite(p.spans).all()
