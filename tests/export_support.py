"""Shared models and exports for tests/test_export_*.py.

An ONNX export costs seconds (the dynamo exporter of the qvhighlights-sized model ~15 s on
2 cores), so each (preset, exporter) is exported once per test session and shared by
every export test module. Tests that change a file export their own copy into tmp_path.
"""
from __future__ import annotations

from pathlib import Path

import torch

from tdfast import TDDETR, TDDETRConfig
from tdfast.export import export_onnx

_EXPORTS: dict[tuple[str, str], tuple[TDDETR, Path]] = {}


def make_model(preset: str, seed: int = 0) -> TDDETR:
    """Random init, but with a non-zero last span layer so spans depend on the input
    (the model starts it at zero: spans would equal the reference spans and parity be trivial)."""
    torch.manual_seed(seed)
    model = TDDETR(TDDETRConfig.from_name(preset)).eval()
    torch.nn.init.normal_(model.span_head.layers[-1].weight, std=0.2)
    return model


def shared_export(tmp_path_factory, preset: str = "tiny", exporter: str = "dynamo") -> tuple[TDDETR, Path]:
    """(model, verified model.onnx) for ``make_model(preset)``; read-only for callers."""
    key = (preset, exporter)
    if key not in _EXPORTS:
        model = make_model(preset)
        out = tmp_path_factory.mktemp(f"{preset}-{exporter}")
        _EXPORTS[key] = model, export_onnx(model, out, exporter=exporter, log=None)
    return _EXPORTS[key]
