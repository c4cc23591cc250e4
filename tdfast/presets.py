"""The named presets and the evaluation protocols, one table each and nothing else.

A preset names a network (``TDDETRConfig``, key ``model``) and its training settings
(``tdfast.training.TrainConfig``, key ``training``); ``TrainConfig.eval_protocol`` and
``tdfast eval --mode`` name a protocol of ``PROTOCOLS``. Plain data, without PyTorch or
NumPy, so ``tdfast train --help`` lists the names at once; a protocol's scorer (NumPy) is
imported when a split is scored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Protocol:
    """How a split is scored. ``scorer``: the function of ``tdfast.eval`` that takes
    (submission, ground truth) records and returns metrics with a ``brief`` dict; ``select``:
    the ``brief`` keys best-checkpoint selection maximizes, compared in order (later keys
    break ties); ``highlights``: whether it scores saliency predictions."""

    scorer: str
    select: tuple[str, ...]
    highlights: bool

    def evaluate(self, submission: list[dict], ground_truth: list[dict]) -> dict:
        """``scorer(submission, ground_truth)``: metrics with a ``brief`` dict."""
        import tdfast.eval

        return getattr(tdfast.eval, self.scorer)(submission, ground_truth)


PROTOCOLS = {  # the first is the default; QVHighlights selects by the paper's main number
    "qvhighlights": Protocol("eval_submission", ("MR-full-mAP",), highlights=True),
    "charades": Protocol("eval_charades", ("MR-full-R1@0.5", "MR-full-mIoU"), highlights=False),
}
DEFAULT_PROTOCOL = next(iter(PROTOCOLS))

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # Official TD-DETR QVHighlights (td_detr/scripts/train.sh + config.py defaults): 4 TD /
    # 4 encoder / 4 decoder layers (the official code builds as many T2V layers as encoder
    # layers), alpha = beta = 0.7, bs 32, lr 1e-4, wd 1e-4, 200 epochs, LR /10 at epoch 80;
    # matching costs and loss weights L1 1, gIoU 10, class 4; saliency weight 1 on all three
    # saliency terms; early stop after 200 epochs without gain (i.e. never).
    "qvhighlights": dict(
        model=dict(video_dim=2816, text_dim=512, max_video_len=75, max_query_len=32, clip_len=2.0,
                   hidden_dim=256, num_heads=8, ffn_dim=1024, num_td_layers=4, num_encoder_layers=4,
                   num_decoder_layers=4, num_queries=10, beta=0.7),
        training=dict(alpha=0.7, lr=1e-4, weight_decay=1e-4, batch_size=32, epochs=200, lr_drop=80,
                   early_stop_patience=200, w_span_l1=1.0, w_span_giou=10.0, w_class=4.0,
                   w_saliency_margin=1.0, w_saliency_contrast=1.0, w_negative=1.0),
    ),
    # Official QD-DETR QVHighlights (its opt.json): 2/2/2 layers, no TDEM, no VSDC, LR drop at
    # 400 (never within 200 epochs), L1 10, gIoU 1, class 4.
    "qd-detr": dict(
        model=dict(video_dim=2816, text_dim=512, max_video_len=75, max_query_len=32, clip_len=2.0,
                   hidden_dim=256, num_heads=8, ffn_dim=1024, num_td_layers=2, num_encoder_layers=2,
                   num_decoder_layers=2, num_queries=10, use_tdem=False),
        training=dict(use_vsdc=False, lr=1e-4, weight_decay=1e-4, batch_size=32, epochs=200, lr_drop=400,
                   early_stop_patience=200, w_span_l1=10.0, w_span_giou=1.0, w_class=4.0,
                   w_saliency_margin=1.0, w_saliency_contrast=1.0, w_negative=1.0),
    ),
    # Official TD-DETR Charades-STA (td_detr/scripts/charadesSTA/train_charades.sh): 3/3/3
    # layers, lr 2e-4, 100 epochs, 1-s clips, saliency weight 4, L1 10, gIoU 1; no LR drop
    # (the config default 400). The script's max_v_l 100000 is no bucket limit: tdfast keeps
    # 75 and slides windows over longer videos.
    "charades": dict(
        model=dict(video_dim=2816, text_dim=512, max_video_len=75, max_query_len=32, clip_len=1.0,
                   hidden_dim=256, num_heads=8, ffn_dim=1024, num_td_layers=3, num_encoder_layers=3,
                   num_decoder_layers=3, num_queries=10, beta=0.7),
        training=dict(alpha=0.7, lr=2e-4, weight_decay=1e-4, batch_size=32, epochs=100, lr_drop=400,
                   early_stop_patience=200, w_span_l1=10.0, w_span_giou=1.0, w_class=4.0,
                   w_saliency_margin=4.0, w_saliency_contrast=4.0, w_negative=4.0, eval_protocol="charades"),
    ),
    # Small and fast, for tests and the demo: same structure, small widths.
    "tiny": dict(
        model=dict(video_dim=64, text_dim=32, max_video_len=32, max_query_len=16, clip_len=2.0,
                   hidden_dim=32, num_heads=4, ffn_dim=64, num_td_layers=1, num_encoder_layers=1,
                   num_decoder_layers=2, num_queries=5, dropout=0.1, input_dropout=0.1),
        training=dict(lr=1e-3, weight_decay=1e-4, batch_size=16, epochs=30, lr_drop=1000,
                   w_span_l1=10.0, w_span_giou=1.0, w_negative=4.0),
    ),
}
