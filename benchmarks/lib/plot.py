"""The latency plot: p50 latency vs batch size, one line per backend (x dtype x video length).

    python -m tdfast.benchmarks.plot RECORD.json [OUT.png]     # e.g. for a record made on a GPU box
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tdfast.atomic import atomic_write_bytes
from tdfast.errors import BackendUnavailableError

STYLES = ["-", "--", ":", "-."]


def plot_latency(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Write a PNG of ``p50_ms`` (p90 as the upper error bar) vs ``batch``, both axes log
    scale, one line per (backend, dtype, video_len); skipped rows are left out. Needs
    matplotlib (imported here; BackendUnavailableError with the install hint otherwise)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        raise BackendUnavailableError("plot: matplotlib is not installed; pip install matplotlib "
                                      "(or leave out --plot)") from None
    lines: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if not r.get("skipped"):
            lines.setdefault(f"{r['backend']} {r['dtype']} L={r['video_len']}", []).append(r)
    if not lines:
        raise ValueError("plot_latency: no measured rows to plot")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    backends = sorted({r["backend"] for pts in lines.values() for r in pts})
    variants = sorted({(r["dtype"], r["video_len"]) for pts in lines.values() for r in pts})
    batches = sorted({r["batch"] for pts in lines.values() for r in pts})
    for label, pts in sorted(lines.items()):
        pts = sorted(pts, key=lambda r: r["batch"])
        up = [r["p90_ms"] - r["p50_ms"] for r in pts]
        # colour = backend, line style = (dtype, video length)
        ax.errorbar([r["batch"] for r in pts], [r["p50_ms"] for r in pts], yerr=[[0] * len(up), up],
                    marker="o", capsize=3, label=label, color=f"C{backends.index(pts[0]['backend']) % 10}",
                    linestyle=STYLES[variants.index((pts[0]["dtype"], pts[0]["video_len"])) % len(STYLES)])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size (pairs per predict call)")
    ax.set_ylabel("predict latency, ms (p50; bar to p90)")
    ax.set_title(title or "tdfast Retriever.predict latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)



def plot_title(record: dict[str, Any]) -> str:
    """"<device>, L=<lengths>, M=<query length>" for a ``predict`` record."""
    rows = [r for r in record["rows"] if not r.get("skipped")]
    lens = ",".join(str(n) for n in sorted({r["video_len"] for r in rows}))
    query = ",".join(str(n) for n in sorted({r["query_len"] for r in rows}))
    return f"{record['machine']['device']}, L={lens}, M={query}"


def main(argv: list[str] | None = None) -> int:
    """Plot a saved ``predict`` record (default output: the record's path with .png)."""
    import argparse
    import sys

    from tdfast.benchmarks.record import read_record
    from tdfast.errors import InputError

    p = argparse.ArgumentParser(prog="python -m tdfast.benchmarks.plot", description=main.__doc__)
    p.add_argument("record", type=Path, help="a tdfast bench JSON record")
    p.add_argument("out", type=Path, nargs="?", help="PNG path (default: RECORD with .png)")
    args = p.parse_args(argv)
    try:
        record = read_record(args.record)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or args.record.with_suffix(".png")
    print(f"wrote {plot_latency(record['rows'], out, plot_title(record))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
