"""Parity of an exported model with eager PyTorch on shapes it was not traced with.

Per shape: max |onnx - eager| over every output (fp32 tolerance 1e-4 from the
design's Tolerances; fp16 1e-2), the top-1 moment (argmax of the foreground
probability) must match on every row, and no output may hold NaN. Saliency is
compared on real clips only: padding positions are documented as meaningless.

"Same top-1" allows exact ties at the tolerance: if the export picks moment j
and eager picks i, it still counts when eager scores j within ``atol`` of i.
Randomly initialised models score their moments within ~1e-4 of each other, so
fp32 rounding alone flips a strict argmax on a few rows in a hundred; a real
export bug moves the scores themselves, which the max-diff check catches.

A trained model can amplify fp32 rounding past the tolerance on its own: eager fp32
itself is then more than ``atol`` from the exact (float64) answer, and no fp32
export can be within ``atol`` of eager. A shape that fails against eager is
therefore judged again against the float64 model (the design's other reference):
it passes when every output is within ``max(atol, 2 x eager's own error)`` of
float64 and the top-1 is float64's, i.e. when the export is about as accurate as
eager fp32. An export bug is far outside that bound either way.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tdfast.export.wrapper import OUTPUT_NAMES, random_inputs

FP32_ATOL = 1e-4
FP16_ATOL = 1e-2


class ExportVerificationError(RuntimeError):
    """An exported artifact disagrees with eager PyTorch (or lost its dynamic axes)."""


@dataclass(frozen=True)
class Shape:
    """One verification case: batch B, video length L, query length M, ragged padding or not."""

    batch: int
    video_len: int
    query_len: int
    padded: bool


@dataclass
class ParityRow:
    shape: Shape
    max_abs: dict[str, float] = field(default_factory=dict)
    top1_same: int = 0  # rows whose top-1 moment matches the reference (ties within atol allowed)
    has_nan: bool = False
    atol: float = FP32_ATOL
    reference: str = "eager"  # or "float64": judged against the float64 model (module docstring)
    bounds: dict[str, float] = field(default_factory=dict)  # per-output bound when above atol

    @property
    def ok(self) -> bool:
        return (not self.has_nan and self.top1_same == self.shape.batch
                and all(v <= self.bounds.get(n, self.atol) for n, v in self.max_abs.items()))


def default_shapes(config) -> list[Shape]:
    """The three cases of the issue, with L/M capped at the config's max lengths.

    B=1 L=5 M=1 unpadded; B=3 L=37 M=11 ragged; B=8 L=75 M=32 ragged (tiny preset:
    L<=32, M<=16, so its middle case becomes L=29 M=11 and its last L=32 M=16).
    """
    lmax, mmax = config.max_video_len, config.max_query_len
    mid_l = 37 if lmax >= 75 else max(1, lmax - 3)
    return [Shape(1, min(5, lmax), 1, False),
            Shape(3, min(mid_l, lmax), min(11, mmax), True),
            Shape(8, min(75, lmax), min(32, mmax), True)]


def foreground_prob(pred_logits: np.ndarray) -> np.ndarray:
    """[B, Q, 2] (fg, bg) logits -> [B, Q] foreground probability (the moment score)."""
    z = pred_logits.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z)
    return p[..., 0] / p.sum(-1)


def top1(pred_logits: np.ndarray) -> np.ndarray:
    """[B, Q, 2] logits -> [B] index of the moment with the highest foreground probability."""
    return foreground_prob(pred_logits).argmax(-1)


def same_top1(ref_logits: np.ndarray, got_logits: np.ndarray, tie: float) -> np.ndarray:
    """[B] bool: the candidate's top-1 moment is the reference's, or scores within ``tie`` of it
    in the reference (a tie at that precision, where either choice is right)."""
    ref_p = foreground_prob(ref_logits)  # [B, Q]
    pick = top1(got_logits)  # [B]
    best = ref_p.max(-1)
    return (pick == ref_p.argmax(-1)) | (best - ref_p[np.arange(len(pick)), pick] <= tie)


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], video_mask: np.ndarray,
            shape: Shape, atol: float) -> ParityRow:
    """One row of the parity table from two output dicts (numpy, model key names)."""
    row = ParityRow(shape=shape, atol=atol)
    real = video_mask.astype(bool)
    for name in OUTPUT_NAMES:
        a, b = ref[name].astype(np.float64), got[name].astype(np.float64)
        row.has_nan |= bool(np.isnan(b).any())
        if name == "saliency_scores":
            a, b = a[real], b[real]  # [n_real]
        row.max_abs[name] = float(np.abs(a - b).max()) if a.size else 0.0
    row.top1_same = int(same_top1(ref["pred_logits"], got["pred_logits"], tie=atol).sum())
    return row


def eager_outputs(model: nn.Module, inputs: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    """Run the eager model in eval mode, float32 on CPU -> numpy dict with the model's keys."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(*inputs)
    finally:
        model.train(was_training)
    return {k: out[k].float().cpu().numpy() for k in OUTPUT_NAMES}


def float64_model(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` on CPU in eval mode (the caller's model is not changed)."""
    return copy.deepcopy(model).to("cpu", torch.float64).eval()


def float64_outputs(exact: nn.Module, inputs: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    """``exact`` (a ``float64_model``) on the inputs cast to float64 (no grad) -> numpy dict
    with the model's keys."""
    args = [x.to("cpu", torch.float64) if x.is_floating_point() else x.cpu() for x in inputs]
    with torch.no_grad():
        out = exact(*args)
    return {k: out[k].numpy() for k in OUTPUT_NAMES}


def judge_on_float64(exact: nn.Module, inputs: Sequence[torch.Tensor], eager: dict[str, np.ndarray],
                     got: dict[str, np.ndarray], shape: Shape, atol: float) -> ParityRow:
    """The row of ``got`` against ``exact`` (a ``float64_model``), each output bounded by
    ``max(atol, 2 x |eager fp32 - float64|)`` (see the module docstring)."""
    ref64 = float64_outputs(exact, inputs)
    own = compare(ref64, eager, inputs[1].numpy(), shape, atol).max_abs  # eager fp32's own error
    row = compare(ref64, got, inputs[1].numpy(), shape, atol)
    row.reference = "float64"
    row.bounds = {n: max(atol, 2 * own[n]) for n in OUTPUT_NAMES}
    return row


def verify_runner(run: Callable[..., dict], model: nn.Module, shapes: Sequence[Shape] | None = None,
                  atol: float = FP32_ATOL, seed: int = 0, what: str = "export",
                  strict: bool = True) -> list[ParityRow]:
    """Compare ``run(video, video_mask, query, query_mask) -> dict`` with eager ``model``.

    A shape that fails against eager, without NaN and with a finite ``atol``, is judged
    again against the float64 model (``judge_on_float64``). With ``strict`` (the default),
    raises ``ExportVerificationError`` with the whole table when any row fails; otherwise
    just returns the rows (for lossy variants such as int8).
    """
    from tdfast.retrieval.inputs import check_inputs

    rows, exact = [], None  # the float64 copy, made once when a first shape needs it
    for i, shape in enumerate(shapes or default_shapes(model.config)):
        inputs = random_inputs(model.config, shape.batch, shape.video_len, shape.query_len,
                               shape.padded, seed=seed + i)
        check_inputs(*inputs, model.config)
        ref = eager_outputs(model, inputs)
        got = run(*inputs)
        row = compare(ref, got, inputs[1].numpy(), shape, atol)
        if not row.ok and not row.has_nan and np.isfinite(atol):
            if exact is None:
                exact = float64_model(model)
            row = judge_on_float64(exact, inputs, ref, got, shape, atol)
        rows.append(row)
    if strict and not all(r.ok for r in rows):
        raise ExportVerificationError(f"{what} does not match eager PyTorch "
                                      f"(tolerance {atol:g}, same top-1, no NaN):\n{format_table(rows)}")
    return rows


def verify_onnx(path: str | Path, model: nn.Module, shapes: Sequence[Shape] | None = None,
                atol: float = FP32_ATOL, device: str = "cpu", strict: bool = True) -> list[ParityRow]:
    """ONNX Runtime on ``path`` vs eager ``model`` on unseen shapes; raises on any failure
    (unless ``strict=False``)."""
    from tdfast.export.ort import OrtRunner

    runner = OrtRunner(path, device=device)
    return verify_runner(runner, model, shapes, atol, what=f"ONNX model {path}", strict=strict)


def format_table(rows: Sequence[ParityRow]) -> str:
    """The parity table as aligned text."""
    head = f"{'B':>3} {'L':>4} {'M':>4} {'pad':>4} " + " ".join(f"{n:>16}" for n in OUTPUT_NAMES) \
        + f" {'top1':>6} {'nan':>4} {'ref':>7} {'ok':>3}"
    lines = [head]
    for r in rows:
        s = r.shape
        diffs = " ".join(f"{r.max_abs.get(n, float('nan')):>16.2e}" for n in OUTPUT_NAMES)
        lines.append(f"{s.batch:>3} {s.video_len:>4} {s.query_len:>4} {'yes' if s.padded else 'no':>4} "
                     f"{diffs} {r.top1_same:>3}/{s.batch:<2} {'yes' if r.has_nan else 'no':>4} "
                     f"{r.reference:>7} {'ok' if r.ok else 'BAD':>3}")
    return "\n".join(lines)


def verification_record(rows: Sequence[ParityRow]) -> str:
    """The parity rows as one JSON string, stored in the artifact's metadata (``verification``):
    tolerance, shapes [B, L, M, padded], worst max |diff| per output, top-1 agreement, NaN, ok."""
    return json.dumps({
        "atol": rows[0].atol if np.isfinite(rows[0].atol) else None,  # None: lossy, no tolerance
        "shapes": [[r.shape.batch, r.shape.video_len, r.shape.query_len, r.shape.padded] for r in rows],
        "max_abs": {n: max(r.max_abs[n] for r in rows) for n in OUTPUT_NAMES},
        "top1_same": [sum(r.top1_same for r in rows), sum(r.shape.batch for r in rows)],
        "nan": any(r.has_nan for r in rows),
        "reference": sorted({r.reference for r in rows}),  # "float64": a shape judged on it
        "bounds": {n: max(r.bounds.get(n, r.atol) for r in rows) for n in OUTPUT_NAMES}
        if any(r.bounds for r in rows) else None,
        "ok": all(r.ok for r in rows),
    })
