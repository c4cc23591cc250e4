"""``postprocess="official"`` writes what the official inference.py writes.

``tests/fixtures/official/postprocess.json`` was made by ``gen_official_postprocess.py``
running the official QD-DETR ``PostProcessorDETR`` (and ``span_cxw_to_xx``) on drawn model
outputs: spans past either end of a 150 s video and ends on exact half-clips included.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tdfast import InputError, Retriever, TDDETR, TDDETRConfig
from tdfast.retrieval.postprocess import official_postprocess, postprocess

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "postprocess.json"


def test_official_postprocess_equals_the_official_code_number_for_number():
    doc = json.loads(FIXTURE.read_text())
    spans, logits, sal = (torch.tensor(doc[k]) for k in ("pred_spans", "pred_logits", "saliency_scores"))
    B, Q, L = spans.shape[0], spans.shape[1], sal.shape[1]
    preds = postprocess(spans, logits, sal, [L] * B, torch.full((B,), doc["duration"]), top_k=Q)
    lines = [official_postprocess(p).to_submission(i, "q", f"v{i}", decimals=None) for i, p in enumerate(preds)]
    for got, want in zip(lines, doc["official"]):
        assert got["pred_relevant_windows"] == want["pred_relevant_windows"]
        assert got["pred_saliency_scores"] == want["pred_saliency_scores"]
    first = [w[:2] for w in lines[0]["pred_relevant_windows"]]
    # the drawn half-clip cases: 1-3 s -> [0, 4], 3-5 s -> [4, 4], 145-147 s -> [144, 148], 147-149 s -> [148, 148]
    for window in ([0.0, 4.0], [4.0, 4.0], [144.0, 148.0], [148.0, 148.0]):
        assert window in first
    # and the plain path differs from the official file (unrounded spans)
    plain = preds[0].to_submission(0, "q", "v0")["pred_relevant_windows"]
    assert plain != doc["official"][0]["pred_relevant_windows"]


def test_retriever_predict_official_is_the_plain_prediction_post_processed():
    torch.manual_seed(0)
    config = TDDETRConfig.from_name("tiny")
    r = Retriever(TDDETR(config).eval())
    g = np.random.default_rng(0)
    videos = [g.standard_normal((n, config.video_dim)).astype(np.float32) for n in (9, 16)]
    queries = [g.standard_normal((m, config.text_dim)).astype(np.float32) for m in (4, 7)]
    durations = [150.0, 37.0]
    plain = r.predict(videos, queries, top_k=4, durations=durations)
    official = r.predict(videos, queries, top_k=4, durations=durations, postprocess="official")
    for p, o in zip(plain, official):
        assert np.all(o.spans % 2 == 0) and o.spans.min() >= 0 and o.spans.max() <= 150
        assert np.abs(o.spans - p.spans).max() <= 1.0 + 1e-4  # at most half a clip moved
        np.testing.assert_array_equal(o.spans, np.round(np.round(p.spans, 4) / 2) * 2)
        np.testing.assert_allclose(o.scores, p.scores, atol=5e-5)
        np.testing.assert_array_equal(o.saliency, p.saliency.astype(np.float16).astype(np.float32))
    with pytest.raises(InputError, match=r"postprocess: expected one of none, official, got 'offical'"):
        r.predict(videos, queries, postprocess="offical")
