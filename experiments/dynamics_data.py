"""The dynamics-shift benchmark's data: real QVHighlights structure, synthetic features, and a
trap the official network falls into (docs/fidelity.md, section 5).

Each query of the real QVHighlights annotation files (read at run time from
``../shared/qvhighlights``, never copied) becomes one synthetic video with the query's real
duration (2-s clips, at most ``max_clips``), real relevant windows, and as many text tokens
as the query has words (at most ``max_tokens``). What is planted (vectors as in
``tdfast.data.synthetic``: concept k has a look ``sig[k]`` that the text word ``word[k]``
aligns with, and a dynamics direction ``dyn[k]``, all orthogonal):

- every clip: ``scene + noise + dynamics * (s_t dyn[c] + r_t dyn[j])`` (one scene per video,
  j != c another concept), with signs s_t, r_t in {-1, +1} that flip from one clip to the
  next with probability ``slow_flip``: every clip looks the same whatever its position;
- the moment of concept c: ``s_t`` flips on every clip (its dynamics: a query-specific
  temporal pattern that no single clip shows, only differences between clips) and a weak
  look ``look * a_i * sig[c]`` (a_i ~ U[0.5, 1], also the saliency labels);
- train and in-distribution val: a scene that looks like the query (text-aligned),
  ``context * sig[c]``, surrounds every window: it covers the window and ``context_clips``
  clips on each side, so "where the video looks like the query" is a near-perfect cue in
  training (window IoU of the scene w / (w + 2 context_clips));
- shifted test: the moment's surrounding scene is another concept's, ``sig[k]``, k != c,
  and ``context * sig[c]`` surrounds a decoy segment as long as the first window, with no
  target content. Only queries where such a decoy fits are used.

So the look of the context points to the decoy at test time, while the moment's dynamics
(and, weakly, its own look) mark it everywhere.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tdfast.atomic import atomic_write_bytes
from tdfast.data.annotations import Annotation, load_annotations, write_annotations
from tdfast.data.features import QUERY_KEY, VIDEO_KEY, write_npz
from tdfast.data.synthetic import gaussian_rows, saliency_scores, unit_rows
from tdfast.errors import InputError

QVH_DIR = Path("../shared/qvhighlights")  # relative to the repository root
QVH_FILES = {"train": "annotations/highlight_train_release.jsonl",
             "heldout": "annotations/highlight_val_release.jsonl"}


@dataclass(frozen=True)
class DynamicsSpec:
    """Every knob. Sizes in queries (one video each); amplitudes relative to a unit scene."""

    seed: int = 0
    num_train: int = 400
    num_val: int = 100  # held-out QVHighlights val queries, drawn like train (in distribution)
    num_test: int = 200  # other held-out queries, shifted (decoy), all with room for a decoy
    video_dim: int = 64
    text_dim: int = 32
    clip_len: float = 2.0
    max_clips: int = 75
    max_tokens: int = 32
    num_concepts: int = 8
    context_clips: int = 2
    look: float = 0.2
    dynamics: float = 0.5
    slow_flip: float = 0.1  # outside moments: P(a dynamics sign flips from one clip to the next)
    context: float = 1.5
    noise: float = 0.5
    text_noise: float = 0.1

    def __post_init__(self) -> None:
        if 2 * self.num_concepts > self.video_dim:
            raise InputError(f"num_concepts: expected 2 * num_concepts <= video_dim={self.video_dim} "
                             f"(orthogonal looks and dynamics), got {self.num_concepts}")
        if self.num_concepts + 16 > self.text_dim:
            raise InputError(f"num_concepts: expected num_concepts + 16 fillers <= text_dim="
                             f"{self.text_dim}, got {self.num_concepts}")


def qvh_clip_windows(ann: Annotation, clip_len: float, max_clips: int) -> tuple[int, list[tuple[int, int]]]:
    """The query's video length in clips (at most ``max_clips``) and its windows as merged,
    sorted ``[st, ed)`` clip ranges inside it (a window past ``max_clips`` is cut or dropped)."""
    num_clips = min(max(int(round(ann.duration / clip_len)), 1), max_clips)
    spans = sorted((int(np.floor(s / clip_len)), min(int(np.ceil(e / clip_len)), num_clips))
                   for s, e in ann.windows or ())
    merged: list[tuple[int, int]] = []
    for st, ed in spans:
        if ed <= st:
            continue
        if merged and st <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], ed))
        else:
            merged.append((st, ed))
    return num_clips, merged


def _surround(st: int, ed: int, n: int, num_clips: int) -> slice:
    """The clips of [st, ed) and ``n`` on each side, inside the video."""
    return slice(max(st - n, 0), min(ed + n, num_clips))


def find_decoy(rng: np.random.Generator, windows: list[tuple[int, int]], num_clips: int,
               context_clips: int) -> tuple[int, int] | None:
    """A random ``[st, ed)`` as long as the first window whose span with ``context_clips`` on each
    side touches no window or the clips around one; None when none fits."""
    busy = np.zeros(num_clips, dtype=bool)
    for st, ed in windows:
        busy[max(st - context_clips, 0):min(ed + context_clips, num_clips)] = True
    length = windows[0][1] - windows[0][0]
    starts = [s for s in range(0, num_clips - length + 1)
              if not busy[max(s - context_clips, 0):min(s + length + context_clips, num_clips)].any()]
    if not starts:
        return None
    st = int(starts[int(rng.integers(len(starts)))])
    return st, st + length


def make_query(rng: np.random.Generator, spec: DynamicsSpec, vec: dict[str, np.ndarray], ann: Annotation,
               shifted: bool) -> tuple[Annotation, np.ndarray, np.ndarray, dict[str, Any]] | None:
    """One query's (annotation on the clip grid, video [L, Dv], tokens [M, Dt], planted info),
    or None when it has no window, or (shifted) no room for a decoy."""
    num_clips, windows = qvh_clip_windows(ann, spec.clip_len, spec.max_clips)
    if not windows:
        return None
    decoy = find_decoy(rng, windows, num_clips, spec.context_clips) if shifted else None
    if shifted and decoy is None:
        return None
    k = spec.num_concepts
    c = int(rng.integers(k))
    other = int(rng.choice([j for j in range(k) if j != c]))
    scene = unit_rows(rng, 1, spec.video_dim)[0]
    feats = scene[None, :] + gaussian_rows(rng, (num_clips, spec.video_dim), spec.noise)
    flips = rng.random((2, num_clips)) < spec.slow_flip  # [2, L]: dyn[c], dyn[other]
    for st, ed in windows:
        flips[0, st + 1:ed] = True  # the moment's dynamics: a flip on every clip inside it
    signs = np.cumprod(np.where(flips, -1.0, 1.0), axis=1) * rng.choice([-1.0, 1.0], (2, 1))  # [2, L]
    feats += spec.dynamics * (signs[0][:, None] * vec["dyn"][c] + signs[1][:, None] * vec["dyn"][other])
    ids, scores = [], []
    for st, ed in windows:
        a = rng.uniform(0.5, 1.0, ed - st)
        feats[st:ed] += spec.look * a[:, None] * vec["sig"][c]
        feats[_surround(st, ed, spec.context_clips, num_clips)] += spec.context * vec["sig"][other if shifted else c]
        ids += list(range(st, ed))
        scores += saliency_scores(rng, a)
    if decoy is not None:
        feats[_surround(*decoy, spec.context_clips, num_clips)] += spec.context * vec["sig"][c]
    num_tokens = min(max(len(ann.query.split()), 1), spec.max_tokens)
    fillers = rng.integers(0, vec["filler"].shape[0], num_tokens - 1)
    rows = [vec["filler"][j] for j in fillers]
    rows.insert(int(rng.integers(num_tokens)), vec["word"][c])
    tokens = np.stack(rows) + gaussian_rows(rng, (num_tokens, spec.text_dim), spec.text_noise)
    out = Annotation(qid=ann.qid, query=ann.query, vid=f"q{ann.qid}", duration=num_clips * spec.clip_len,
                     windows=tuple((st * spec.clip_len, ed * spec.clip_len) for st, ed in windows),
                     relevant_clip_ids=tuple(ids), saliency_scores=tuple(tuple(s) for s in scores))
    info = {"concept": c, "scene_concept": other if shifted else c, "window_clips": [list(w) for w in windows],
            "decoy_clips": None if decoy is None else list(decoy)}
    return out, feats.astype(np.float32), tokens.astype(np.float32), info


def _vectors(spec: DynamicsSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    k = spec.num_concepts
    video, text = unit_rows(rng, 2 * k, spec.video_dim), unit_rows(rng, k + 16, spec.text_dim)
    return {"sig": video[:k], "dyn": video[k:], "word": text[:k], "filler": text[k:]}


def make_dynamics_dataset(out_dir: str | os.PathLike, qvh_dir: str | os.PathLike = QVH_DIR,
                          spec: DynamicsSpec | None = None, **overrides: Any) -> dict[str, Path]:
    """Write train / val / test jsonl, ``video_feats/``, ``text_feats/``, ``dynamics_meta.json``
    and ``vectors.npz`` under ``out_dir``; returns their paths. Train queries are a seeded
    sample of the QVHighlights train file, val and test disjoint samples of its val file.
    InputError when ``qvh_dir`` lacks the annotation files."""
    spec = replace(spec or DynamicsSpec(), **overrides)
    paths = {}
    for part, rel in QVH_FILES.items():
        paths[part] = Path(qvh_dir) / rel
        if not paths[part].is_file():
            raise InputError(f"qvh_dir: expected the QVHighlights annotations at {paths[part]}, not found")
    root = Path(out_dir)
    seeds = np.random.SeedSequence(spec.seed).spawn(5)
    vec = _vectors(spec, np.random.default_rng(seeds[0]))
    pools = {"train": load_annotations(paths["train"]), "heldout": load_annotations(paths["heldout"])}
    order = {p: np.random.default_rng(seeds[1]).permutation(len(a)) for p, a in pools.items()}
    # val takes the first usable held-out queries in a seeded order, test the ones after them.
    plan = [("train", "train", spec.num_train, False), ("val", "heldout", spec.num_val, False),
            ("test", "heldout", spec.num_test, True)]
    planted: dict[str, Any] = {}
    out = {"root": root, "video_dir": root / "video_feats", "text_dir": root / "text_feats"}
    cursor = {"train": 0, "heldout": 0}
    for (split, pool, count, shifted), seed in zip(plan, seeds[2:]):
        rng = np.random.default_rng(seed)
        records = []
        while len(records) < count and cursor[pool] < len(order[pool]):
            idx = int(order[pool][cursor[pool]])
            cursor[pool] += 1
            made = make_query(rng, spec, vec, pools[pool][idx], shifted)
            if made is None:
                continue
            ann, video, tokens, info = made
            write_npz(out["video_dir"] / f"{ann.vid}.npz", **{VIDEO_KEY: video})
            write_npz(out["text_dir"] / f"qid{ann.qid}.npz", **{QUERY_KEY: tokens})
            records.append(ann)
            planted[str(ann.qid)] = {"split": split, **info}
        if len(records) < count:
            raise InputError(f"num_{split}: expected at most {len(records)} usable queries in "
                             f"{paths[pool]}, got {count}")
        out[split] = write_annotations(records, root / f"{split}.jsonl")
    out["meta"] = root / "dynamics_meta.json"
    atomic_write_bytes(out["meta"], json.dumps({"spec": asdict(spec), "planted": planted}, indent=1,
                                               sort_keys=True).encode("utf-8"))
    out["vectors"] = write_npz(root / "vectors.npz", **vec)
    return out

