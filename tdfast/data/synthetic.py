"""Synthetic moment-retrieval data with planted moments and a controllable spurious context.

What is planted where (all vectors below are unit norm; ``docs/data.md`` has the full story):

- ``num_concepts`` concepts. Concept k has a video signature ``sig[k]``
  (Dv), a paired context pattern ``ctx[k]`` (Dv) and a text embedding
  ``word[k]`` (Dt). Filler words have text embeddings ``filler[j]``. When the
  dims allow, all video vectors are mutually orthogonal, and so are all text vectors.
- A video has L clips (``min_clips..max_clips``); every clip is
  ``scene_weight * scene + noise`` with one random scene vector per video and
  Gaussian noise of expected norm ``noise``.
- A video holds 1..``max_queries_per_video`` queries, each about a different
  concept c, with one window (a second with ``second_window_prob``). The
  clips of a window get ``+ signal * a_i * sig[c]``, with a per-clip intensity
  a_i ~ U[0.5, 1]; the 3 annotators' saliency scores (0..4) follow a_i.
- Context: the ``context_clips`` clips on each side of every window of the
  query get ``+ context_signal * ctx[k]``, where k = c with probability
  ``spurious`` (train) / ``test_spurious`` (val, test) and otherwise a
  concept drawn uniformly from the other concepts. Windows and their
  context clips never overlap other windows or their context.
- Decoys (shifted splits only): with probability ``test_decoy`` a query's own
  context pattern ``ctx[c]`` also flanks a free segment that holds no
  ``sig[c]``, so context read as "where the moment is" points elsewhere.
- Shifted splits: val and test, or test alone with ``val_like_train`` (then val
  is drawn like train: ``spurious`` rate, no decoys).
- A query's tokens are filler words and the concept word in random order:
  ``word[c] + noise_t`` and ``filler[j] + noise_t`` (``min_fillers..max_fillers`` fillers).

So text -> moment alignment always works, while "the moment sits between
the clips that carry ctx[c]" works with probability ``spurious`` on train and
``test_spurious`` at test time.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tdfast.atomic import atomic_write_bytes
from tdfast.data.annotations import Annotation, write_annotations
from tdfast.data.features import QUERY_KEY, VIDEO_KEY, FeatureStore, write_npz
from tdfast.errors import InputError
from tdfast.model.config import TDDETRConfig

if TYPE_CHECKING:
    from tdfast.data.batch import Batch

FILLER_WORDS = ("a", "the", "person", "is", "with", "near", "someone", "shows", "some", "in",
                "video", "of", "at", "then", "and", "man")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SyntheticSpec:
    """Every knob of the generator. Sizes in videos, lengths in clips, ``clip_len`` in seconds."""

    seed: int = 0
    num_train: int = 200
    num_val: int = 60
    num_test: int = 60
    video_dims: tuple[int, ...] = (64,)  # one feature dir per entry, concatenated along D
    text_dim: int = 32
    clip_len: float = 2.0
    min_clips: int = 10
    max_clips: int = 32
    num_concepts: int = 8
    max_queries_per_video: int = 2
    min_moment_clips: int = 2
    max_moment_clips: int = 8
    second_window_prob: float = 0.1
    context_clips: int = 2
    spurious: float = 0.0
    test_spurious: float = 0.0
    signal: float = 1.0
    context_signal: float = 1.0
    scene_weight: float = 1.0
    noise: float = 0.5
    text_noise: float = 0.1
    min_fillers: int = 2
    max_fillers: int = 6
    test_labels: bool = True  # False writes test.jsonl without labels, like QVHighlights
    test_decoy: float = 0.0  # shifted splits: P(query's ctx[c] also flanks a decoy segment)
    val_like_train: bool = False  # True: val drawn like train; test alone is the shifted split

    def __post_init__(self) -> None:
        for name in ("spurious", "test_spurious", "second_window_prob", "test_decoy"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"{name}: expected a probability in [0, 1], got {getattr(self, name)!r}")
        if self.num_concepts < 2:
            raise InputError(f"num_concepts: expected >= 2 (context needs another concept), "
                             f"got {self.num_concepts}")
        if not 1 <= self.min_moment_clips <= self.max_moment_clips <= self.min_clips <= self.max_clips:
            raise InputError("clip counts: expected 1 <= min_moment_clips <= max_moment_clips <= "
                             f"min_clips <= max_clips, got {self.min_moment_clips}, "
                             f"{self.max_moment_clips}, {self.min_clips}, {self.max_clips}")
        if not 0 <= self.min_fillers <= self.max_fillers:
            raise InputError(f"fillers: expected 0 <= min_fillers <= max_fillers, got "
                             f"{self.min_fillers}, {self.max_fillers}")

    @property
    def video_dim(self) -> int:
        return sum(self.video_dims)


@dataclass
class Vectors:
    """The planted vectors: sig, ctx [K, Dv]; word [K, Dt]; filler [F, Dt]."""

    sig: np.ndarray
    ctx: np.ndarray
    word: np.ndarray
    filler: np.ndarray


@dataclass
class SyntheticVideo:
    """One generated video: features [L, Dv] and its queries (annotation, tokens [M, Dt], planted info)."""

    vid: str
    features: np.ndarray
    queries: list[tuple[Annotation, np.ndarray, dict[str, Any]]] = field(default_factory=list)


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """[n, dim] unit rows, mutually orthogonal when n <= dim."""
    g = rng.standard_normal((dim, max(n, 1)))
    if n <= dim:
        return np.linalg.qr(g)[0][:, :n].T.copy()
    return (g / np.linalg.norm(g, axis=0, keepdims=True)).T[:n].copy()


def make_vectors(spec: SyntheticSpec, rng: np.random.Generator) -> Vectors:
    k, f = spec.num_concepts, len(FILLER_WORDS)
    video = unit_rows(rng, 2 * k, spec.video_dim)
    text = unit_rows(rng, k + f, spec.text_dim)
    return Vectors(sig=video[:k], ctx=video[k:], word=text[:k], filler=text[k:])


def gaussian_rows(rng: np.random.Generator, shape: tuple[int, ...], norm: float) -> np.ndarray:
    """Gaussian rows of expected norm ~``norm``."""
    return rng.standard_normal(shape) * (norm / np.sqrt(shape[-1]))


def _place(rng: np.random.Generator, spec: SyntheticSpec, num_clips: int,
           busy: np.ndarray) -> tuple[int, int] | None:
    """A free window [st, ed) in clips whose context clips are free too; marks them busy."""
    for _ in range(20):
        length = int(rng.integers(spec.min_moment_clips, spec.max_moment_clips + 1))
        st = int(rng.integers(0, num_clips - length + 1))
        lo, hi = max(st - spec.context_clips, 0), min(st + length + spec.context_clips, num_clips)
        if not busy[lo:hi].any():
            busy[lo:hi] = True
            return st, st + length
    return None


def _query_tokens(rng: np.random.Generator, spec: SyntheticSpec, vec: Vectors,
                  concept: int) -> tuple[str, np.ndarray]:
    """Query text and its tokens [M, Dt]: fillers and the concept word in random order."""
    fillers = rng.integers(0, len(FILLER_WORDS), int(rng.integers(spec.min_fillers, spec.max_fillers + 1)))
    pos = int(rng.integers(0, len(fillers) + 1))
    words = [FILLER_WORDS[j] for j in fillers]
    rows = [vec.filler[j] for j in fillers]
    words.insert(pos, f"concept{concept:02d}")
    rows.insert(pos, vec.word[concept])
    tokens = np.stack(rows) + gaussian_rows(rng, (len(rows), spec.text_dim), spec.text_noise)
    return " ".join(words), tokens.astype(np.float32)


def saliency_scores(rng: np.random.Generator, intensity: np.ndarray) -> list[list[int]]:
    """3 annotators' 0..4 scores per clip, rising with the planted intensity in [0.5, 1]."""
    mean = 1.0 + 3.0 * (intensity - 0.5) / 0.5  # [n] in [1, 4]
    raw = np.rint(mean[:, None] + rng.normal(0.0, 0.7, (len(intensity), 3)))
    return np.clip(raw, 0, 4).astype(int).tolist()


def make_video(rng: np.random.Generator, spec: SyntheticSpec, vec: Vectors, vid: str,
               first_qid: int, spurious: float, decoy: float = 0.0) -> SyntheticVideo:
    """One video with its queries; qids count up from ``first_qid``. ``decoy``: probability
    that a query's ``ctx[c]`` also flanks a free segment without ``sig[c]``."""
    k, clip_len = spec.num_concepts, spec.clip_len
    num_clips = int(rng.integers(spec.min_clips, spec.max_clips + 1))
    scene = unit_rows(rng, 1, spec.video_dim)[0]
    feats = spec.scene_weight * scene[None, :] + gaussian_rows(rng, (num_clips, spec.video_dim), spec.noise)
    busy = np.zeros(num_clips, dtype=bool)
    concepts = rng.permutation(k)[: int(rng.integers(1, spec.max_queries_per_video + 1))]
    video = SyntheticVideo(vid=vid, features=feats)
    for c in (int(x) for x in concepts):
        num_windows = 2 if rng.random() < spec.second_window_prob else 1
        clips = [w for w in (_place(rng, spec, num_clips, busy) for _ in range(num_windows)) if w]
        if not clips:
            continue
        is_spurious = bool(rng.random() < spurious)
        context = c if is_spurious else int(rng.choice([j for j in range(k) if j != c]))
        ids, scores = [], []
        for st, ed in clips:
            intensity = rng.uniform(0.5, 1.0, ed - st)
            feats[st:ed] += spec.signal * intensity[:, None] * vec.sig[c]
            for lo, hi in ((st - spec.context_clips, st), (ed, ed + spec.context_clips)):
                feats[max(lo, 0):min(hi, num_clips)] += spec.context_signal * vec.ctx[context]
            ids += list(range(st, ed))
            scores += saliency_scores(rng, intensity)
        decoy_clips = None
        if decoy > 0 and rng.random() < decoy:  # no draw at all when off: default streams unchanged
            decoy_clips = _place(rng, spec, num_clips, busy)
            if decoy_clips is not None:
                st, ed = decoy_clips
                for lo, hi in ((st - spec.context_clips, st), (ed, ed + spec.context_clips)):
                    feats[max(lo, 0):min(hi, num_clips)] += spec.context_signal * vec.ctx[c]
        text, tokens = _query_tokens(rng, spec, vec, c)
        qid = first_qid + len(video.queries)
        ann = Annotation(qid=qid, query=text, vid=vid, duration=num_clips * clip_len,
                         windows=tuple((st * clip_len, ed * clip_len) for st, ed in clips),
                         relevant_clip_ids=tuple(ids),
                         saliency_scores=tuple(tuple(s) for s in scores))
        planted = {"concept": c, "context_concept": context, "spurious": is_spurious,
                   "window_clips": [list(w) for w in clips],
                   "decoy_clips": None if decoy_clips is None else list(decoy_clips)}
        video.queries.append((ann, tokens, planted))
    video.features = feats.astype(np.float32)
    return video


def generate(spec: SyntheticSpec) -> tuple[Vectors, dict[str, list[SyntheticVideo]]]:
    """All splits in memory. Each split has its own random stream, so changing one
    split's size leaves the others unchanged; qids are unique across splits."""
    seeds = np.random.SeedSequence(spec.seed).spawn(1 + len(SPLITS))
    vec = make_vectors(spec, np.random.default_rng(seeds[0]))
    splits: dict[str, list[SyntheticVideo]] = {}
    qid = 0
    for split, seed in zip(SPLITS, seeds[1:]):
        rng = np.random.default_rng(seed)
        shifted = split == "test" or (split == "val" and not spec.val_like_train)
        spurious = spec.test_spurious if shifted else spec.spurious
        decoy = spec.test_decoy if shifted else 0.0
        videos = []
        for i in range(getattr(spec, f"num_{split}")):
            v = make_video(rng, spec, vec, f"{split}_v{i:04d}", qid, spurious, decoy)
            qid += len(v.queries)
            videos.append(v)
        splits[split] = videos
    return vec, splits


@dataclass(frozen=True)
class SyntheticDataset:
    """Paths of a written synthetic dataset."""

    root: Path
    train: Path
    val: Path
    test: Path
    video_dirs: tuple[Path, ...]
    text_dir: Path
    meta: Path  # synthetic_meta.json: spec and the planted concept/context of every qid
    vectors: Path  # vectors.npz: sig, ctx, word, filler


def make_synthetic_dataset(out_dir: str | os.PathLike, spec: SyntheticSpec | None = None,
                           **overrides: Any) -> SyntheticDataset:
    """Write a complete dataset under ``out_dir`` (deterministic by ``spec.seed``).

    Layout: ``train.jsonl``, ``val.jsonl``, ``test.jsonl``; ``video_feats/<vid>.npz``
    (or ``video_feats_0``, ``video_feats_1``, ... when ``video_dims`` has several
    entries); ``text_feats/qid<qid>.npz``; ``synthetic_meta.json``; ``vectors.npz``.
    ``overrides`` are ``SyntheticSpec`` fields, e.g. ``spurious=0.9``.
    """
    spec = replace(spec or SyntheticSpec(), **overrides)
    root = Path(out_dir)
    vec, splits = generate(spec)
    names = ["video_feats"] if len(spec.video_dims) == 1 else [
        f"video_feats_{i}" for i in range(len(spec.video_dims))]
    video_dirs = tuple(root / n for n in names)
    text_dir = root / "text_feats"
    bounds = np.cumsum((0, *spec.video_dims))
    planted: dict[str, Any] = {}
    for split, videos in splits.items():
        records = []
        for v in videos:
            for d, lo, hi in zip(video_dirs, bounds[:-1], bounds[1:]):
                write_npz(FeatureStore.video_file(d, v.vid), **{VIDEO_KEY: v.features[:, lo:hi]})
            for ann, tokens, info in v.queries:
                write_npz(FeatureStore.query_file(text_dir, ann.qid), **{QUERY_KEY: tokens})
                keep = split != "test" or spec.test_labels
                records.append(ann if keep else replace(ann, windows=None, relevant_clip_ids=None,
                                                        saliency_scores=None))
                planted[str(ann.qid)] = {"split": split, **info}
        write_annotations(records, root / f"{split}.jsonl")
    meta = root / "synthetic_meta.json"
    atomic_write_bytes(meta, json.dumps({"spec": asdict(spec), "planted": planted}, indent=1,
                                        sort_keys=True).encode("utf-8"))
    vectors = write_npz(root / "vectors.npz", sig=vec.sig, ctx=vec.ctx, word=vec.word, filler=vec.filler)
    return SyntheticDataset(root=root, train=root / "train.jsonl", val=root / "val.jsonl",
                            test=root / "test.jsonl", video_dirs=video_dirs, text_dir=text_dir,
                            meta=meta, vectors=vectors)


def synthetic_batch(config: TDDETRConfig, batch_size: int, seed: int = 0,
                    **overrides: Any) -> Batch:
    """An in-memory labelled ``Batch`` (``collate`` of generated samples), for tests.

    Uses the first query of ``batch_size`` train videos generated with the
    config's dims and clip length; video lengths stay within ``max_video_len``.
    """
    from tdfast.data.collate import collate
    from tdfast.data.dataset import make_sample
    from tdfast.data.features import prepare_query, prepare_video

    max_clips = min(32, config.max_video_len)
    base = dict(seed=seed, num_train=batch_size, num_val=0, num_test=0, video_dims=(config.video_dim,),
                text_dim=config.text_dim, clip_len=config.clip_len, max_clips=max_clips,
                min_clips=min(10, max_clips), max_moment_clips=min(8, max_clips),
                min_moment_clips=min(2, max_clips))
    _, splits = generate(SyntheticSpec(**{**base, **overrides}))
    samples = []
    for v in splits["train"]:
        ann, tokens, _ = v.queries[0]
        samples.append(make_sample(ann, prepare_video([v.features], config, v.vid),
                                   prepare_query(tokens, config, f"qid{ann.qid}"), config))
    return collate(samples)
