"""The optimization recipe of the loop: AdamW settings, gradient clipping, the LR drop, early stop."""
from __future__ import annotations

import json

import pytest
import torch
from fidelity_support import one_thread  # noqa: F401  (autouse fixture: one torch thread)

from tdfast.data.dataset import MomentDataset
from tdfast.data.synthetic import make_synthetic_dataset
from tdfast.training import RunConfig, TrainData, Trainer, TrainOptions, TrainSets, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), seed=4, num_train=16, num_val=6, num_test=0,
                                  max_clips=16)


def records(run_dir, kind):
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r for r in lines if r["kind"] == kind]


@pytest.mark.parametrize("preset,lr", [("qvhighlights", 1e-4), ("charades", 2e-4), ("tiny", 1e-3)])
def test_adamw_with_the_papers_lr_and_weight_decay(data, tmp_path, preset, lr):
    run = RunConfig.from_name(preset)
    trainer = Trainer(run, TrainSets(MomentDataset(data.train, data.video_dirs, data.text_dir, run.model)),
                      TrainOptions(tmp_path, progress=False))
    assert type(trainer.optimizer) is torch.optim.AdamW
    (group,) = trainer.optimizer.param_groups
    assert (group["lr"], group["weight_decay"]) == (lr, 1e-4)
    assert sum(p.numel() for p in group["params"]) == sum(p.numel() for p in trainer.model.parameters())


def grad_norm(model: torch.nn.Module) -> float:
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    return float(torch.cat(grads).norm())


def test_gradients_are_clipped_to_grad_clip(data, tmp_path):
    norms = {}
    for clip in (0.0, 0.1):
        run = RunConfig.from_name("tiny", batch_size=8, max_video_len=16, grad_clip=clip)
        trainer = Trainer(run, TrainSets(MomentDataset(data.train, data.video_dirs, data.text_dir, run.model)),
                          TrainOptions(tmp_path / str(clip), seed=3, progress=False))
        trainer.net.train()
        trainer.train_step(next(iter(trainer.loader)))
        norms[clip] = grad_norm(trainer.model)  # the gradient AdamW used (clipped in place)
    # same seed, same batch (loss 62.7): unclipped norm measured 318.8; clipped to 0.1
    assert norms[0.0] > 1.0
    assert norms[0.1] == pytest.approx(0.1, rel=1e-5)


def test_lr_drops_tenfold_every_lr_drop_epochs(data, tmp_path):
    config = RunConfig.from_name("tiny", batch_size=8, max_video_len=16, lr=1e-3, lr_drop=2)
    train(config,
          TrainData(data.train, None, data.video_dirs, data.text_dir),
          TrainOptions(tmp_path, epochs=5, progress=False))
    lr_by_epoch = {r["epoch"]: r["lr"] for r in records(tmp_path, "train")}
    assert lr_by_epoch == pytest.approx({1: 1e-3, 2: 1e-3, 3: 1e-4, 4: 1e-4, 5: 1e-5}, rel=1e-9)


def test_early_stop_after_patience_epochs_without_gain(data, tmp_path):
    # lr 0: the weights never change, so every epoch scores what epoch 1 scored: no gain after it
    config = RunConfig.from_name("tiny", batch_size=8, max_video_len=16, lr=0.0, early_stop_patience=2)
    result = train(config,
                   TrainData(data.train, data.val, data.video_dirs, data.text_dir),
                   TrainOptions(tmp_path, epochs=10, progress=False))
    assert (result.epochs, result.best_epoch, result.stopped_early) == (3, 1, True)
    epochs = records(tmp_path, "epoch")
    assert [(r["epoch"], r["best_epoch"], r["stopped_early"]) for r in epochs] == [
        (1, 1, False), (2, 1, False), (3, 1, True)]
    vals = records(tmp_path, "val")
    assert [r["epoch"] for r in vals] == [0, 1, 2, 3]
    assert len({r["MR-full-mAP"] for r in vals}) == 1  # epoch 0 (untrained) too: nothing moved
    # with patience 0 the same run trains every epoch
    config = RunConfig.from_name("tiny", batch_size=8, max_video_len=16, lr=0.0, early_stop_patience=0)
    result = train(config,
                   TrainData(data.train, data.val, data.video_dirs, data.text_dir),
                   TrainOptions(tmp_path / "all", epochs=5, progress=False, eval_before=False))
    assert (result.epochs, result.stopped_early) == (5, False)


def test_validation_set_comes_with_its_ground_truth(data):
    from tdfast.errors import InputError

    run = RunConfig.from_name("tiny")
    ds = MomentDataset(data.train, data.video_dirs, data.text_dir, run.model)
    with pytest.raises(InputError, match="val and val_gt both or neither, got val=MomentDataset, val_gt=NoneType"):
        TrainSets(ds, val=ds)
