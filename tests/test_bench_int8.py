"""int8 agreement arithmetic on hand-made outputs (no model, no ONNX)."""
from __future__ import annotations

import numpy as np
import pytest

from tdfast.benchmarks.int8 import int8_agreement


class _Fixed:
    """A Retriever stand-in whose raw_outputs are given: logits [N, Q, 2], spans [N, Q, 2] cxw."""

    def __init__(self, logits, spans):
        self.out = [{"pred_logits": np.asarray(lg, np.float32), "pred_spans": np.asarray(sp, np.float32)}
                    for lg, sp in zip(logits, spans)]

    def raw_outputs(self, videos, queries):
        assert len(videos) == len(queries) == len(self.out)
        return self.out


def test_agreement_iou_and_margins_on_known_outputs():
    # 4 pairs, 3 moments each; foreground prob = sigmoid(fg - bg), bg logit 0.
    fp32_logits = [[[2.0, 0], [0.0, 0], [-1.0, 0]],   # top-1 = 0, clear margin
                   [[0.0, 0], [0.01, 0], [-3.0, 0]],  # top-1 = 1 by a hair
                   [[-2.0, 0], [3.0, 0], [0.0, 0]],   # top-1 = 1
                   [[1.0, 0], [0.0, 0], [0.5, 0]]]    # top-1 = 0
    int8_logits = [[[1.9, 0], [0.1, 0], [-1.0, 0]],   # same
                   [[0.02, 0], [0.0, 0], [-3.0, 0]],  # flipped to 0
                   [[-2.0, 0], [2.9, 0], [0.0, 0]],   # same
                   [[0.9, 0], [0.0, 0], [0.5, 0]]]    # same
    spans = [[[0.5, 0.2], [0.2, 0.1], [0.8, 0.1]]] * 4
    int8_spans = [[[0.5, 0.2], [0.2, 0.1], [0.8, 0.1]], [[0.25, 0.1], [0.2, 0.1], [0.8, 0.1]],
                  [[0.5, 0.2], [0.2, 0.05], [0.8, 0.1]], [[0.5, 0.2], [0.2, 0.1], [0.8, 0.1]]]
    got = int8_agreement(_Fixed(fp32_logits, spans), _Fixed(int8_logits, int8_spans), [0] * 4, [0] * 4)
    # pair 1: fp32 top-1 [0.15, 0.25] vs int8 top-1 [0.2, 0.3]: IoU 0.05 / 0.15 = 1/3;
    # pair 2: [0.15, 0.25] vs [0.175, 0.225]: IoU 0.05 / 0.1 = 0.5; pairs 0 and 3: 1.
    assert got["pairs"] == 4
    assert got["top1_agreement"] == 0.75
    assert got["top1_span_iou_mean"] == pytest.approx((1 + 1 / 3 + 0.5 + 1) / 4, abs=1e-4)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    margins = [sig(2) - sig(0), sig(0.01) - sig(0), sig(3) - sig(0), sig(1) - sig(0.5)]
    assert got["fp32_top1_margin_median"] == pytest.approx(np.median(margins))
    assert got["decisive_pairs"] == 3  # pair 1's margin is 0.0025 < 0.01
    assert got["top1_agreement_decisive"] == 1.0


@pytest.mark.parametrize("train_lr", [None, 5e-4])
def test_bench_trains_with_its_recipe_and_train_lr_wins(tmp_path, monkeypatch, train_lr):
    """--int8 without --ckpt trains the preset with BENCH_TRAINING (batch 16, lr 2e-4, QD-DETR's
    span weights, no VSDC or negative pairs) over the preset's other settings; --train-lr
    replaces only the learning rate."""
    import tdfast.training as training_api
    from tdfast import TDDETR
    from tdfast.benchmarks.matrix import BenchSpec, prepare_checkpoint
    from tdfast.training import TrainConfig

    seen = {}

    def fake_train(run, data, options):
        seen.update(training=run.training, epochs=options.epochs)
        TDDETR(run.model).save_pretrained(options.out_dir)

    monkeypatch.setattr(training_api, "train", fake_train)
    spec = BenchSpec(preset="tiny", int8=True, train_epochs=2, train_lr=train_lr, train_videos=4, val_videos=2)
    _, source, _ = prepare_checkpoint(spec, tmp_path, lambda msg: None)
    got, preset = seen["training"], TrainConfig.from_name("tiny")
    assert seen["epochs"] == 2
    assert (got.batch_size, got.w_span_l1, got.w_span_giou, got.use_vsdc, got.use_negative_pair) == \
        (16, 10.0, 1.0, False, False)
    assert got.lr == (2e-4 if train_lr is None else train_lr)
    assert (got.alpha, got.weight_decay, got.w_class, got.epochs) == \
        (preset.alpha, preset.weight_decay, preset.w_class, preset.epochs)
    assert f"batch 16, lr {got.lr:g}, without VSDC and negative pairs" in source
