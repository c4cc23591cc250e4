"""Which branch of the TD layer a trained model leans on (docs/fidelity.md, section 3).

For a checkpoint and a labelled synthetic split (``tdfast.data.synthetic``, whose meta says
which clips hold the moment, its context and the decoy), with the TD layer's merge
``s = beta * V + (1 - beta) * A_t + A_v`` (``tdfast.model.td_interaction``):

- ``term_norms``: per TD layer and clip kind, the mean L2 norm of each of the three terms;
- ``term_variation``: per TD layer, how much each term changes along a video: mean over real
  clips of ||term - its mean over the video's clips|| / mean ||term|| (0 = the same vector
  on every clip, i.e. a bias that cannot tell one clip from another);
- ``concept_attention``: per TD layer and clip kind, the attention mass that the video ->
  text (A_v) and the dynamics -> text (A_t) attentions put on the query's concept word;
- ``difference_signal``: in the first TD layer, how much of the temporal difference
  T = diff(V + pos) is position (||diff pos||^2 / ||T||^2 over real clips), and, for
  diff(raw features), diff(V), T and flow_proj(T), how window edges (the difference into
  and out of a moment) stand out from calm clips (``other`` clips not at an edge): the
  "edge contrast", mean norm at edges / mean norm at calm clips (a linear probe of edge vs
  calm rows scores ~50 % at every stage, since onsets and offsets point opposite ways, so
  the norm is the measure);
- ``branch_ablation``: R1@0.5 / R1@0.7 / mAP with A_t, A_v or both set to zero at test time
  (forward hooks on the attention modules; nothing in the model changes).

Clip kinds: ``moment`` (GT clips), ``context`` (the ``context_clips`` clips flanking a GT
window), ``decoy`` (the decoy segment and its flanking context clips), ``other``.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from tdfast.data.batch import Batch

KINDS = ("moment", "context", "decoy", "other")
ABLATIONS = {"none": (), "no A_t": ("attn_dyn",), "no A_v": ("attn",), "no A_t, no A_v": ("attn", "attn_dyn")}


def clip_kinds(planted: dict[str, Any], num_clips: int, context_clips: int) -> np.ndarray:
    """[L] int index into ``KINDS`` for one query's video from its planted meta."""
    kind = np.full(num_clips, KINDS.index("other"))
    spans = [(tuple(w), "moment") for w in planted["window_clips"]]
    if planted.get("decoy_clips"):
        spans.append((tuple(planted["decoy_clips"]), "decoy"))
    for (st, ed), name in spans:
        lo, hi = max(st - context_clips, 0), min(ed + context_clips, num_clips)
        kind[lo:hi] = KINDS.index("context" if name == "moment" else "decoy")
        if name == "moment":
            kind[st:min(ed, num_clips)] = KINDS.index("moment")
    return kind


@contextmanager
def zero_branches(model: torch.nn.Module, names: tuple[str, ...]) -> Iterator[None]:
    """Within the block, every TD layer's ``names`` attentions (``attn`` = A_v,
    ``attn_dyn`` = A_t) output zeros."""
    handles = []
    for layer in model.td_layers:
        for name in names:
            module = getattr(layer.cross, name, None)
            if module is not None:
                handles.append(module.register_forward_hook(lambda m, i, o: torch.zeros_like(o)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def branch_ablation(model: torch.nn.Module, ann_path: str | Path, video_dirs, text_dir
                    ) -> dict[str, dict[str, float]]:
    """Per entry of ``ABLATIONS``: R1@0.5, R1@0.7 and mAP of ``model`` on ``ann_path``."""
    from tdfast.retrieval.retriever import Retriever
    from tdfast.data.annotations import load_annotations
    from tdfast.data.features import FeatureStore
    from tdfast.experiments.metrics import table2_metrics
    from tdfast.experiments.spurious import predict_split

    anns = load_annotations(ann_path)
    gt = [a.to_json_dict() for a in anns]
    retriever = Retriever(model, backend="eager")
    store = FeatureStore(video_dirs, text_dir, model.config, cache_size=256)
    out = {}
    for label, names in ABLATIONS.items():
        if "attn_dyn" in names and not model.config.use_tdem:
            continue
        with zero_branches(model, names):
            records, _ = predict_split(retriever, anns, store, zero_gt=False)
        m = table2_metrics(records, gt)
        out[label] = {k: m[f"MR-full-{k}"] for k in ("R1@0.5", "R1@0.7", "mAP")}
    return out


def _concept_position(query: str) -> int:
    """Token index of the ``conceptXX`` word in a synthetic query."""
    return next(i for i, w in enumerate(query.split()) if w.startswith("concept"))


def _attention_probs(mha, query: Tensor, text: Tensor, text_bias: Tensor) -> Tensor:
    """Head-averaged softmax weights of ``mha`` (a ``MultiHeadAttention``): [B, L, M]."""
    from tdfast.model.attention import split_heads

    q = split_heads(mha.q_proj(query), mha.num_heads)
    k = split_heads(mha.k_proj(text), mha.num_heads)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + text_bias  # [B, H, L, M]
    return scores.softmax(-1).mean(1)


TERMS = ("beta*V", "(1-beta)*A_t", "A_v")


class _LayerStats:
    """Running sums behind ``inspect_layers``: per TD layer and clip kind, the merge terms'
    norms and the attention on the concept word; per term, its spread along the video; for
    the first layer, the temporal differences at moment edges and at calm clips."""

    def __init__(self, n_layers: int) -> None:
        self.sums = {k: np.zeros((n_layers, len(KINDS))) for k in (*TERMS, "att_v", "att_t")}
        self.counts = np.zeros((n_layers, len(KINDS)))
        self.spread = {k: np.zeros((n_layers, 2)) for k in TERMS}  # [sum deviation, sum norm]
        self.pos_share: list[tuple[float, float]] = []
        self.edge = {k: ([], []) for k in ("raw", "V", "T", "F")}  # stage -> (edge rows, calm rows)

    def add_layer(self, li: int, terms: dict[str, Tensor], att: dict[str, Tensor], kinds: Tensor,
                  concept: Tensor, mask: Tensor) -> None:
        real = mask[..., None].float()  # [B, L, 1]
        for name, v in terms.items():
            centre = (v * real).sum(1, keepdim=True) / real.sum(1, keepdim=True)  # [B, 1, D]
            self.spread[name][li, 0] += float(((v - centre).norm(dim=-1) * real[..., 0]).sum())
            self.spread[name][li, 1] += float((v.norm(dim=-1) * real[..., 0]).sum())
        for ki in range(len(KINDS)):
            sel = kinds == ki
            self.counts[li, ki] += int(sel.sum())
            for name, v in terms.items():
                self.sums[name][li, ki] += float(v.norm(dim=-1)[sel].sum())
            for name, a in att.items():
                self.sums[name][li, ki] += float((a * concept[:, None, :]).sum(-1)[sel].sum())

    def add_differences(self, stages: dict[str, Tensor], edges: Tensor, calm: Tensor, mask: Tensor) -> None:
        for name, v in stages.items():
            self.edge[name][0].append(v[edges & mask])  # [n_edge, D]
            self.edge[name][1].append(v[calm & mask])

    def result(self) -> dict[str, Any]:
        safe = np.maximum(self.counts, 1)
        out: dict[str, Any] = {"clips": {k: int(self.counts[0, i]) for i, k in enumerate(KINDS)}}
        out["term_norms"] = {n: (self.sums[n] / safe).round(3).tolist() for n in TERMS if self.sums[n].any()}
        out["term_variation"] = {n: (v[:, 0] / np.maximum(v[:, 1], 1e-12)).round(3).tolist()
                                 for n, v in self.spread.items() if v[:, 1].any()}
        out["concept_attention"] = {n: (self.sums[n] / safe).round(3).tolist()
                                    for n in ("att_v", "att_t") if self.sums[n].any()}
        if self.pos_share:
            num, den = map(sum, zip(*self.pos_share))
            out["pos_share_of_T"] = round(num / den, 3)
        out["edge_contrast"] = {n: round(float(torch.cat(e).norm(dim=-1).mean()
                                             / torch.cat(o).norm(dim=-1).mean()), 3)
                                for n, (e, o) in self.edge.items() if e}
        out["kinds"] = list(KINDS)
        return out


def _labels(samples: list[dict], planted: dict, ctx_n: int, video_shape, query_shape
            ) -> tuple[Tensor, Tensor, Tensor]:
    """Per clip its kind index (-1 padding) [B, L], the concept word's token [B, M] and the
    moment edges [B, L] (the difference at j compares clip j with j - 1)."""
    kinds = torch.full(video_shape, -1, dtype=torch.long)
    concept = torch.zeros(query_shape, dtype=torch.bool)
    edges = torch.zeros(video_shape, dtype=torch.bool)
    for i, smp in enumerate(samples):
        p = planted[str(smp["meta"]["qid"])]
        n = smp["meta"]["num_clips"]
        kinds[i, :n] = torch.from_numpy(clip_kinds(p, n, ctx_n))
        concept[i, _concept_position(smp["meta"]["query"])] = True
        for st, ed in p["window_clips"]:
            edges[i, [j for j in (st, ed) if 1 <= j < n]] = True
    return kinds, concept, edges


def _layer_terms(cross, video: Tensor, pos: Tensor, start: Tensor, text: Tensor, bias: Tensor
                 ) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor | None, Tensor | None]:
    """One TD layer's merge terms, attention probabilities, differences T and flow F."""
    from tdfast.model.td_interaction import temporal_differences

    terms = {"beta*V": (cross.beta if cross.use_tdem else 1.0) * video,
             "A_v": cross.attn(video + pos, text, text, bias)}
    att = {"att_v": _attention_probs(cross.attn, video + pos, text, bias)}
    t = f = None
    if cross.use_tdem:
        t = temporal_differences(video + pos, start)
        f = cross.flow_proj(t)
        terms["(1-beta)*A_t"] = (1 - cross.beta) * cross.attn_dyn(f, text, text, bias)
        att["att_t"] = _attention_probs(cross.attn_dyn, f, text, bias)
    return terms, att, t, f


def _first_layer_differences(stats: _LayerStats, batch: Batch, video: Tensor, pos: Tensor, t, f,
                             kinds: Tensor, edges: Tensor) -> None:
    from tdfast.model.td_interaction import temporal_differences

    mask = batch.video_mask
    if t is not None:
        dpos = temporal_differences(pos, torch.zeros_like(pos[0, 0]))
        dpos[:, 0] = 0  # the first clip's difference is against the start token
        stats.pos_share.append((float((dpos ** 2).sum(-1)[mask].sum()), float((t ** 2).sum(-1)[mask].sum())))
    raw = batch.video
    stages = {"raw": temporal_differences(raw, torch.zeros_like(raw[0, 0])),
              "V": temporal_differences(video, torch.zeros_like(video[0, 0]))}
    if t is not None:
        stages.update(T=t, F=f)
    calm = (kinds == KINDS.index("other")) & ~edges
    calm[:, 0] = False
    stats.add_differences(stages, edges, calm, mask)


@torch.no_grad()
def inspect_layers(model: torch.nn.Module, ann_path: str | Path, meta_path: str | Path, video_dirs,
                   text_dir, batch_size: int = 32) -> dict[str, Any]:
    """``term_norms``, ``concept_attention`` and ``difference_signal`` (module docstring) of
    ``model`` (eval mode) on the labelled synthetic split ``ann_path``."""
    from tdfast.data.collate import collate
    from tdfast.data.dataset import MomentDataset

    model.eval()
    meta = json.loads(Path(meta_path).read_text())
    planted, ctx_n = meta["planted"], meta["spec"]["context_clips"]
    ds = MomentDataset(ann_path, video_dirs, text_dir, model.config)
    stats = _LayerStats(len(model.td_layers))
    captured: list[tuple] = []
    hooks = [layer.cross.register_forward_pre_hook(lambda m, a: captured.append((m, a)))
             for layer in model.td_layers]
    try:
        for s in range(0, len(ds), batch_size):
            samples = [ds[i] for i in range(s, min(s + batch_size, len(ds)))]
            batch = collate(samples)
            captured.clear()
            model(batch.video, batch.video_mask, batch.query, batch.query_mask)
            kinds, concept, edges = _labels(samples, planted, ctx_n, batch.video_mask.shape,
                                            batch.query_mask.shape)
            for li, (cross, (video, pos, start, text, bias)) in enumerate(captured):
                terms, att, t, f = _layer_terms(cross, video, pos, start, text, bias)
                stats.add_layer(li, terms, att, kinds, concept, batch.video_mask)
                if li == 0:
                    _first_layer_differences(stats, batch, video, pos, t, f, kinds, edges)
    finally:
        for h in hooks:
            h.remove()
    return stats.result()


def probe_ablation(out_dir: str | Path, rows: list[str], seeds: list[int]) -> dict[str, Any]:
    """``inspect_layers`` on test (the split with decoys) and ``branch_ablation`` on val and test for every
    ``out_dir/runs/<row>/seed<s>`` of a shortcut benchmark directory (data in ``out_dir/data``)."""
    from tdfast.model.tddetr import TDDETR

    out, data = Path(out_dir), Path(out_dir) / "data"
    dirs, text = [data / "video_feats"], data / "text_feats"
    runs = []
    for row in rows:
        for seed in seeds:
            run = out / "runs" / row / f"seed{seed}"
            if not (run / "model.safetensors").is_file():
                continue
            model = TDDETR.from_pretrained(run)
            runs.append({"row": row, "seed": seed,
                         "layers": {"test": inspect_layers(model, data / "test.jsonl",
                                                           data / "synthetic_meta.json", dirs, text)},
                         "ablation": {split: branch_ablation(model, data / f"{split}.jsonl", dirs, text)
                                      for split in ("val", "test")}})
    return {"runs": runs}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from tdfast.benchmarks.machine import machine_info
    from tdfast.atomic import atomic_write_bytes

    p = argparse.ArgumentParser(prog="python -m tdfast.experiments.branches",
                                description="Branch probes of every run of a shortcut benchmark directory.")
    p.add_argument("--out", required=True, help="the benchmark directory of python -m tdfast.experiments.shortcut")
    p.add_argument("--rows", default="a,b,c,d")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--record", required=True, help="JSON file to write")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    record = probe_ablation(args.out, args.rows.split(","), [int(s) for s in args.seeds.split(",")])
    record.update(command="python -m tdfast.experiments.branches " + " ".join(sys.argv[1:] if argv is None else argv),
                  machine=machine_info("cpu"))
    Path(args.record).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(args.record), json.dumps(record, indent=1).encode("utf-8"))
    for r in record["runs"]:
        print(r["row"], r["seed"], json.dumps(r["ablation"]["test"]), json.dumps(r["layers"]["test"]["term_norms"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
