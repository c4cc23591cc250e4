"""``run_bench``: the ``tdfast bench`` matrix (backends x dtypes x video lengths x batch sizes).

Per dtype: build every backend's Retriever (build seconds recorded; a backend that can't
run here becomes a skipped row with the reason), wait for a quiet machine, then per video
length ``latency_table`` (interleaved rounds, warm-up and compile excluded and reported).
In the same run: the GEMM peak per dtype (start and end), FLOPs per pair per length,
% of peak per row, the int8 variant's top-1 agreement, and the issues' goals.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdfast.benchmarks.goals import INT8, add_roofline, evaluate_goals
from tdfast.benchmarks.latency import latency_table
from tdfast.benchmarks.machine import load_average, machine_info, wait_for_quiet
from tdfast.benchmarks.record import make_record
from tdfast.benchmarks.roofline import flops_per_pair, gemm_peak
from tdfast.benchmarks.timing import rounds_for
from tdfast.errors import BackendUnavailableError, InputError
from tdfast.model.checkpoint import WEIGHTS_NAME

WHAT = ("Retriever.predict(videos, queries, top_k=5) wall-clock on host numpy inputs (validation, "
        "bucketing, padding, backend call, copy back, postprocess); model_* = the backend call alone")
CPU_TRITON = ("the Triton kernels need a CUDA GPU; on CPU they only run in Triton's interpreter "
              "(TRITON_INTERPRET=1), a correctness tool, not a timing target")


# The brief training behind --int8 without --ckpt: the preset's network, loss and optimiser,
# but batch 16, lr 2e-4, QD-DETR's span weights (L1 10, gIoU 1) and no VSDC or negative pairs
# (each doubles a step's cost). On the synthetic data this is what taught the qvhighlights
# network's decoder within an hour on one core; the preset's loss weights (L1 1, gIoU 10) with
# VSDC and negative pairs at batch 8, lr 3e-4 or 1e-3 did not learn the moments in 156-312
# steps, and lr 4e-4 or more here lost the saliency (docs/benchmarks.md, "CPU results").
BENCH_TRAINING = dict(batch_size=16, lr=2e-4, w_span_l1=10.0, w_span_giou=1.0, use_vsdc=False,
                      use_negative_pair=False)


@dataclasses.dataclass
class BenchSpec:
    """What ``run_bench`` measures. ``repeats`` None: rounds per cell from ``budget_s``
    (seconds of timed calls per dtype x length x batch cell, estimated from the GEMM peak)."""

    backends: list[str] = dataclasses.field(
        default_factory=lambda: ["eager", "compile", "triton", "onnxruntime", "tensorrt"])
    batch_sizes: list[int] = dataclasses.field(default_factory=lambda: [1, 8, 32, 256])
    model_batch: int | None = None  # pairs per model call (Retriever batch_size; None: its default)
    video_lens: list[int] = dataclasses.field(default_factory=lambda: [75])
    query_len: int = 32
    dtypes: list[str] = dataclasses.field(default_factory=lambda: ["float32"])
    preset: str = "qvhighlights"
    device: str = "cpu"
    ckpt: Path | None = None
    repeats: int | None = None
    budget_s: float = 20.0
    warmup: int = 3
    int8: bool = False
    train_epochs: int = 3
    train_lr: float | None = None
    train_videos: int = 200
    val_videos: int = 60
    threads: int | None = None
    max_load: float | None = None
    wait_s: float = 600.0
    gemm_sizes: tuple[int, ...] = (1024, 2048, 4096)


def synthetic_dataset(config: Any, root: Path, num_train: int, num_val: int) -> Any:
    """A synthetic dataset in the model's dims (SlowFast + CLIP split when video_dim > 1024)."""
    from tdfast.data import make_synthetic_dataset

    dims = (config.video_dim - 512, 512) if config.video_dim > 1024 else (config.video_dim,)
    return make_synthetic_dataset(root, seed=0, num_train=max(num_train, 1), num_val=num_val, num_test=1,
                                  video_dims=dims, text_dim=config.text_dim, clip_len=config.clip_len,
                                  min_clips=min(20, config.max_video_len),
                                  max_clips=config.max_video_len)


def prepare_checkpoint(spec: BenchSpec, work: Path, log: Callable[[str], None]) -> tuple[Path, str, Any]:
    """The checkpoint the backends load, in ``work``: ``--ckpt`` if given; else, when int8
    agreement is asked for, a model trained briefly on synthetic data (agreement on a model
    whose moment scores are all tied measures rounding, not quantization); else random
    weights (latency does not depend on them). ``max_video_len`` is raised to the longest
    benchmarked length (weights do not depend on it). Returns (dir, source, dataset or None)."""
    from tdfast import TDDETR, TDDETRConfig

    dataset = None
    if spec.ckpt is not None:
        # Named by its weights, not its path: the path is a scratch directory of the machine that ran.
        digest = hashlib.sha256((Path(spec.ckpt) / WEIGHTS_NAME).read_bytes()).hexdigest()[:16]
        model, source = TDDETR.from_pretrained(spec.ckpt), f"checkpoint with {WEIGHTS_NAME} sha256 {digest}..."
    else:
        config = TDDETRConfig.from_name(spec.preset)
        torch.manual_seed(0)
        model, source = TDDETR(config), f"{spec.preset} preset, random init (seed 0)"
    if spec.int8:
        dataset = synthetic_dataset(model.config, work / "data", spec.train_videos, spec.val_videos)
    if spec.int8 and spec.ckpt is None and spec.train_epochs > 0:
        try:
            from tdfast.training import RunConfig, TrainConfig, TrainData, TrainOptions, train
        except ImportError as e:
            log(f"tdfast.training unavailable ({e}): int8 agreement on random weights")
        else:
            start = time.perf_counter()
            training = dataclasses.replace(TrainConfig.from_name(spec.preset), **BENCH_TRAINING)
            if spec.train_lr is not None:
                training = dataclasses.replace(training, lr=spec.train_lr)
            train(RunConfig(model.config, training),
                  TrainData(dataset.train, dataset.val, dataset.video_dirs, dataset.text_dir),
                  TrainOptions(work / "trained", epochs=spec.train_epochs, progress=False, eval_before=False,
                               device=torch.device(spec.device).type))
            model = TDDETR.from_pretrained(work / "trained")
            source = (f"{spec.preset} preset trained {spec.train_epochs} epochs at batch {training.batch_size}, "
                      f"lr {training.lr:g}, without VSDC and negative pairs, on {spec.train_videos} synthetic "
                      f"videos ({time.perf_counter() - start:.0f} s)")
    longest = max(spec.video_lens)
    if longest > model.config.max_video_len:
        model.config = dataclasses.replace(model.config, max_video_len=longest)
        source += f"; max_video_len raised to {longest}"
    log(f"model: {source}")
    return model.save_pretrained(work / "ckpt"), source, dataset


def check_spec(spec: BenchSpec) -> None:
    """Fail before any timing on what the model cannot take (InputError naming the flag)."""
    from tdfast import TDDETRConfig
    from tdfast.model.checkpoint import load_config

    config = load_config(spec.ckpt) if spec.ckpt is not None else TDDETRConfig.from_name(spec.preset)
    if spec.query_len > config.max_query_len:
        raise InputError(f"--query-len: expected at most the model's max_query_len="
                         f"{config.max_query_len}, got {spec.query_len}")


def make_pairs(config: Any, n: int, video_len: int, query_len: int, seed: int = 0
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` prepared-looking pairs: [video_len, video_dim] and [query_len, text_dim] float32
    with L2-normalised rows, as tdfast.data prepares features."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, video_len, config.video_dim)).astype(np.float32)
    q = rng.standard_normal((n, query_len, config.text_dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return list(v), list(q)


def build_retrievers(spec: BenchSpec, ckpt: Path, dtype: str, log: Callable[[str], None]
                     ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(name -> Retriever, skipped rows, name -> {"build_s"} or {"skipped"}) for ``dtype``."""
    from tdfast import Retriever

    names = list(spec.backends)
    if spec.int8 and INT8 not in names:
        names.append(INT8)
    built, skipped, info = {}, [], {}
    for name in names:
        reason = None
        if name == "triton" and spec.device == "cpu":
            reason = CPU_TRITON
        elif name == INT8 and dtype != "float32":
            reason = f"int8 is a quantization of the fp32 graph; not run for dtype {dtype}"
        else:
            start = time.perf_counter()
            try:
                built[name] = Retriever.from_pretrained(ckpt, backend=name, device=spec.device, dtype=dtype,
                                                        batch_size=spec.model_batch)
                info[name] = {"build_s": round(time.perf_counter() - start, 3)}
            except (BackendUnavailableError, InputError) as e:
                reason = str(e)
        if reason is not None:
            skipped.append({"backend": name, "dtype": dtype, "skipped": reason})
            info[name] = {"skipped": reason}
        log(f"{name} ({dtype}): " + (f"skipped: {reason}" if reason else f"built in {info[name]['build_s']:.1f} s"))
    return built, skipped, info


def cell_repeats(spec: BenchSpec, n_backends: int, flops: float, peak_gflops: float) -> dict[int, int]:
    """Timed rounds per batch size: ``spec.repeats``, or what fits ``spec.budget_s`` if a
    call ran at half the GEMM peak plus a fixed overhead (1 ms CPU, 0.2 ms CUDA)."""
    if spec.repeats is not None:
        return {b: spec.repeats for b in spec.batch_sizes}
    overhead, hi = (2e-4, 1000) if spec.device.startswith("cuda") else (1e-3, 200)
    return {b: rounds_for(n_backends * (flops * b / (0.5 * peak_gflops * 1e9) + overhead), spec.budget_s,
                          hi=hi) for b in spec.batch_sizes}


def time_length(spec: BenchSpec, built: dict, config, n: int, dt: str, flops: float, peak_gflops: float,
                log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every batch size of ``spec`` at video length ``n`` on the ``built`` retrievers -> rows."""
    videos, queries = make_pairs(config, max(spec.batch_sizes), n, spec.query_len, seed=n)
    reps = cell_repeats(spec, len(built), flops, peak_gflops)
    limit = spec.budget_s if spec.repeats is None else None  # --repeats is exact
    log(f"timing {dt} L={n}: rounds per batch {reps}" + (f", at most {limit:g} s each" if limit is not None else ""))
    cell = latency_table(built, videos, queries, spec.batch_sizes, reps, warmup=spec.warmup, budget_s=limit,
                         progress=log)
    for r in cell:  # what the neighbours were doing while this length was timed
        r["loadavg_1m_after"] = load_average()[0]
    return cell


def run_bench(spec: BenchSpec, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the matrix and return the record (kind ``predict``; see ``tdfast.benchmarks.record``)."""
    from tdfast import TDDETR
    from tdfast.devices import parse_dtype

    check_spec(spec)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    machine = machine_info(spec.device)
    log(f"machine: {machine['device']}, {machine['cores']} cores, torch {machine['versions']['torch']}, "
        f"load {machine['loadavg']}")
    dtypes = {d: str(parse_dtype(d)).removeprefix("torch.") for d in spec.dtypes}
    peaks = {}
    for dt in dtypes.values():
        peaks[dt] = {"start": gemm_peak(spec.device, getattr(torch, dt), spec.gemm_sizes)}
        log(f"GEMM peak {dt}: {peaks[dt]['start']['gflops']:.1f} GFLOP/s (by size: "
            + ", ".join(f"{n}: {g:.1f}" for n, g in peaks[dt]["start"]["per_size"].items()) + ")")
    rows, backends, int8, loads = [], {}, None, []
    with tempfile.TemporaryDirectory(prefix="tdfast-bench-") as tmp:
        ckpt, source, dataset = prepare_checkpoint(spec, Path(tmp), log)
        model = TDDETR.from_pretrained(ckpt)
        flops = {n: flops_per_pair(model, n, spec.query_len) for n in spec.video_lens}
        log("GFLOP per pair: " + ", ".join(f"L={n}: {f / 1e9:.3f}" for n, f in flops.items()))
        for dt in dtypes.values():
            built, skipped, info = build_retrievers(spec, ckpt, dt, log)
            backends.update({f"{n}/{dt}": i for n, i in info.items()})
            for n in spec.video_lens if built else []:
                if spec.max_load is not None:
                    loads.append(wait_for_quiet(spec.max_load, spec.wait_s, log))
                rows += time_length(spec, built, model.config, n, dt, flops[n], peaks[dt]["start"]["gflops"], log)
            ref = next((built[n] for n in ("onnxruntime", "eager") if n in built), None)
            if INT8 in built and ref is not None:
                from tdfast.benchmarks.int8 import int8_agreement, int8_metric_change, val_pairs

                int8 = {"reference": ref.backend, "model": source,
                        **int8_agreement(ref, built[INT8], *val_pairs(dataset, model.config)),
                        **int8_metric_change(ref, built[INT8], dataset, model.config)}
                log(f"int8 agreement: {int8}")
            rows += skipped
            del built
    for dt in dtypes.values():
        peaks[dt]["end"] = gemm_peak(spec.device, getattr(torch, dt), spec.gemm_sizes)
        peaks[dt]["gflops"] = max(peaks[dt]["start"]["gflops"], peaks[dt]["end"]["gflops"])
    add_roofline(rows, flops, {dt: p["gflops"] for dt, p in peaks.items()})
    goals = evaluate_goals(rows, torch.device(spec.device).type, int8)
    machine.update(loadavg_at_timing=loads, loadavg_end=load_average(),
                   torch_threads=torch.get_num_threads())
    setup = {**dataclasses.asdict(spec), "ckpt": str(spec.ckpt) if spec.ckpt else None,
             "dtypes": list(dtypes.values()), "model": source, "top_k": 5,
             "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET")}
    return make_record("predict", WHAT, machine, setup, rows, gemm_peak=peaks,
                       flops_per_pair={str(n): f for n, f in flops.items()},
                       backends=backends, int8=int8, goals=goals)
