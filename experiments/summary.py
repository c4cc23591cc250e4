"""Ablation results -> mean and standard deviation over seeds, as JSON and markdown tables."""
from __future__ import annotations

from typing import Any

import numpy as np

from tdfast.experiments.metrics import GIOU_KEY, TABLE2_KEYS
from tdfast.experiments.spurious import CONDITIONS, SHORT_NAMES

# Columns of the two markdown tables per split: the paper's Table 4 (unmasked) and Table 2
# (GT clips zeroed, plus the gIoU loss without masks).
TABLE4_COLUMNS = [("normal", k) for k in ("MR-full-R1@0.5", "MR-full-R1@0.7", "MR-full-mAP@0.5",
                                          "MR-full-mAP@0.75", "MR-full-mAP", "HL-min-VeryGood-mAP",
                                          "HL-min-VeryGood-Hit1")]
TABLE2_COLUMNS = [("masked", k) for k in ("MR-full-R1@0.3", "MR-full-R1@0.5", "MR-full-R1@0.7",
                                          "MR-full-mIoU", "MR-full-mAP@0.5", "MR-full-mAP@0.75",
                                          "MR-full-mAP")] + [("normal", GIOU_KEY)]


def mean_std(values: list[float]) -> dict[str, Any]:
    """``{"mean", "std", "n", "values"}``; std is the sample std (ddof 1), 0 for one value."""
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": round(float(arr.mean()), 4), "std": round(std, 4), "n": len(arr), "values": values}


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row (in first-seen order): overrides, seeds, mean train seconds, and
    ``metrics[split][condition][key] = mean_std(values over seeds)`` (None-valued metrics left out)."""
    order: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        order.setdefault(r["row"], []).append(r)
    table = []
    for name, runs in order.items():
        metrics: dict[str, Any] = {}
        for split in runs[0]["analysis"]:
            metrics[split] = {}
            for cond in CONDITIONS:
                metrics[split][cond] = {k: mean_std([run["analysis"][split][cond][k] for run in runs])
                                        for k in TABLE2_KEYS if runs[0]["analysis"][split][cond][k] is not None}
        table.append({"row": name, "same_as": runs[0].get("same_as"), "overrides": runs[0]["overrides"],
                      "seeds": [r["seed"] for r in runs],
                      "train_seconds": mean_std([r["train"]["seconds"] for r in runs])["mean"],
                      "epochs": runs[0]["train"]["epochs"], "metrics": metrics})
    return table


def _cell(stats: dict[str, Any] | None, key: str) -> str:
    if stats is None:
        return "-"
    digits = 3 if key == GIOU_KEY else 2
    if stats["n"] == 1:
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def _row_label(row: dict[str, Any]) -> str:
    o = row["overrides"]
    label = f"{row['row']} (VSDC {'on' if o.get('use_vsdc') else 'off'}, TDEM {'on' if o.get('use_tdem') else 'off'})"
    return label + (f" = {row['same_as']}" if row.get("same_as") else "")


def markdown(table: list[dict[str, Any]]) -> str:
    """Two markdown tables per analyzed split: unmasked (Table 4 columns) and GT zeroed
    (Table 2 columns). Cells are ``mean ± std`` over seeds."""
    out = []
    splits = list(table[0]["metrics"]) if table else []
    for split in splits:
        for title, columns in ((f"{split}: unmasked (paper Table 4 columns)", TABLE4_COLUMNS),
                               (f"{split}: GT clips zeroed (paper Table 2 columns; gIoU loss unmasked)",
                                TABLE2_COLUMNS)):
            cols = [(c, k) for c, k in columns
                    if any(k in row["metrics"][split][c] for row in table)]
            out.append(f"**{title}**\n")
            out.append("| row | seeds | " + " | ".join(SHORT_NAMES[k] for _, k in cols) + " |")
            out.append("|---|---|" + "---|" * len(cols))
            for row in table:
                cells = [_cell(row["metrics"][split][c].get(k), k) for c, k in cols]
                out.append(f"| {_row_label(row)} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
            out.append("")
    return "\n".join(out)


def make_record(base: dict[str, Any], rows: list[Any], seeds: list[int], epochs: int | None,
                inputs: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """The ablation's JSON record: base config, rows, seeds, inputs, per-run results, the
    summary table and the machine (``tdfast.benchmarks.machine_info``)."""
    from dataclasses import asdict

    from tdfast.benchmarks.machine import machine_info

    return {"base_config": base, "rows": [asdict(r) for r in rows], "seeds": list(seeds), "epochs": epochs,
            "inputs": inputs, "table": summarize(results), "results": results,
            "machine": machine_info("cpu")}


def write_record(out_dir, record: dict[str, Any], name: str = "ablation") -> tuple[Any, Any]:
    """Write ``<name>.json`` and ``<name>.md`` (the markdown tables) into ``out_dir``, atomically."""
    import json
    from pathlib import Path

    from tdfast.atomic import atomic_write_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / f"{name}.json", json.dumps(record, indent=1).encode("utf-8"))
    atomic_write_bytes(out / f"{name}.md", markdown(record["table"]).encode("utf-8"))
    return out / f"{name}.json", out / f"{name}.md"
