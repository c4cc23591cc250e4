"""Training on a CUDA GPU: fp32, and bf16 / fp16 autocast (fp16 with the gradient scaler).

Skipped without CUDA. Each precision trains the tiny preset on synthetic data; its first
step must match the CPU fp32 step (autocast changes rounding, not the math), the loss
must fall and stay finite, and a GPU run cut mid-epoch and resumed must equal the
uninterrupted GPU run (the CUDA RNG state is part of ``train_state.pt``).
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tdfast.data.synthetic import make_synthetic_dataset
from tdfast.training import RunConfig, TrainData, TrainOptions, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

# relative tolerance of the first step's loss against CPU fp32 (the bf16/fp16 tolerance of the backends)
FIRST_STEP_RTOL = {"fp32": 1e-4, "bf16": 1e-2, "fp16": 1e-2}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), seed=6, num_train=48, num_val=12, num_test=0,
                                  max_clips=24)


def config() -> RunConfig:
    # dropout 0: CPU and CUDA draw different dropout masks, which the first-step comparison can't have
    return RunConfig.from_name("tiny", batch_size=8, max_video_len=24, lr=3e-3, early_stop_patience=0,
                                  dropout=0.0, input_dropout=0.0)


def run(data, out, device="cuda", autocast="fp32", epochs=4, **kw):
    losses: list[float] = []
    result = train(config(),
                   TrainData(data.train, data.val, data.video_dirs, data.text_dir, cache_size=512),
                   TrainOptions(out, epochs=epochs, seed=2, progress=False, device=device, autocast=autocast,
                                on_step=lambda step, terms: losses.append(terms['loss']), **kw))
    return result, losses


@pytest.fixture(scope="module")
def cpu_first_loss(data, tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(data, tmp_path_factory.mktemp("cpu"), device="cpu", epochs=1)[1][0]
    finally:
        torch.set_num_threads(n)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_gpu_training_learns_in_every_precision(data, tmp_path, cpu_first_loss, precision):
    result, losses = run(data, tmp_path / precision, autocast=precision)
    assert all(math.isfinite(x) for x in losses)
    assert losses[0] == pytest.approx(cpu_first_loss, rel=FIRST_STEP_RTOL[precision])
    quarter = len(losses) // 4
    assert sum(losses[-quarter:]) < 0.8 * sum(losses[:quarter]), losses


def test_gpu_crash_and_resume_matches_uninterrupted(data, tmp_path):
    full, _ = run(data, tmp_path / "full", autocast="bf16", epochs=2, save_every_steps=3, eval_before=False)

    class Crash(RuntimeError):
        pass

    def crash(step, _):
        if step == 5:
            raise Crash

    with pytest.raises(Crash):
        train(config(),
              TrainData(data.train, data.val, data.video_dirs, data.text_dir, cache_size=512),
              TrainOptions(tmp_path / "cut", epochs=2, seed=2, progress=False, device='cuda', autocast='bf16',
                           save_every_steps=3, eval_before=False, on_step=crash))
    resumed, _ = run(data, tmp_path / "cut", autocast="bf16", epochs=2, save_every_steps=3, eval_before=False,
                     resume=tmp_path / "cut")
    assert resumed.steps == full.steps
    a = load_file(str(tmp_path / "full" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "last" / "model.safetensors"))
    # GPU kernels may pick other reduction orders between runs: equal up to float rounding
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-4
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == list(range(1, full.steps + 1))
