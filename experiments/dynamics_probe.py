"""A per-clip temporal-difference learner (numpy only): the control that shows the
dynamics-shift benchmark is solvable from the moment's dynamics (docs/fidelity.md, section 5).

Per clip t of a video x [L, Dv] (L2-normalised rows, as the model sees them) the features
are the absolute temporal differences on both sides and their elementwise minimum (changed on
both sides: inside a fast pattern, not at one edge), ``f_t = [|d_t|, |d_{t+1}|, min(|d_t|,
|d_{t+1}|)]`` with d_t = x_t - x_{t-1} [3 Dv] (zero past either end); the query is the mean of its tokens q [Dt]. A bilinear
logistic model ``p_t = sigmoid(q^T W f_t + b)`` is fit to "clip t is inside a window" by
full-batch Adam. The top-1 window is the run of clips that maximises ``sum(p_t - 1/2)``
(the best clip alone when no clip passes 1/2), scored by its mean p.

It sees no look, no context and no position: only how much each feature changes, and
which query asks. So it cannot take the context shortcut, and what it keeps under the
shift is what the dynamics alone give.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tdfast.data.annotations import Annotation


def clip_features(video: np.ndarray) -> np.ndarray:
    """video [L, Dv] -> [|d_t|, |d_{t+1}|, min(|d_t|, |d_{t+1}|)] per clip [L, 3 Dv], with
    d_t = x_t - x_{t-1} on L2-normalised rows (zero past either end)."""
    x = video / np.maximum(np.linalg.norm(video, axis=1, keepdims=True), 1e-12)
    diff = np.abs(np.diff(x, axis=0))  # [L - 1, Dv]
    zero = np.zeros((1, x.shape[1]), dtype=x.dtype)
    before, after = np.concatenate((zero, diff)), np.concatenate((diff, zero))  # [L, Dv] each
    return np.concatenate((before, after, np.minimum(before, after)), axis=1)


def best_run(p: np.ndarray) -> tuple[int, int]:
    """[st, ed) clips maximising sum(p - 0.5) over contiguous runs (Kadane); argmax clip if none > 0."""
    best, best_span, cur, cur_st = 0.0, None, 0.0, 0
    for t, g in enumerate(p - 0.5):
        if cur <= 0:
            cur, cur_st = 0.0, t
        cur += g
        if cur > best:
            best, best_span = cur, (cur_st, t + 1)
    if best_span is None:
        t = int(np.argmax(p))
        return t, t + 1
    return best_span


@dataclass
class DiffProbe:
    """The bilinear clip classifier: W [Dt, 3 Dv], b scalar."""

    w: np.ndarray
    b: float

    def clip_probs(self, video: np.ndarray, query: np.ndarray) -> np.ndarray:
        """video [L, Dv], query tokens [M, Dt] -> p [L] in (0, 1)."""
        z = clip_features(video) @ (query.mean(0) @ self.w) + self.b
        return 1.0 / (1.0 + np.exp(-z))

    def predict(self, video: np.ndarray, query: np.ndarray, clip_len: float) -> list[float]:
        """The top-1 window [st, ed, score] in seconds."""
        p = self.clip_probs(video, query)
        st, ed = best_run(p)
        return [st * clip_len, ed * clip_len, float(p[st:ed].mean())]


def clip_labels(ann: Annotation, num_clips: int, clip_len: float) -> np.ndarray:
    """[L] float: 1 on clips inside a window of ``ann``."""
    y = np.zeros(num_clips)
    for s, e in ann.windows or ():
        y[int(round(s / clip_len)):int(round(e / clip_len))] = 1.0
    return y


def fit_probe(videos: Sequence[np.ndarray], queries: Sequence[np.ndarray], anns: Sequence[Annotation],
              clip_len: float, steps: int = 300, lr: float = 0.05, l2: float = 1e-4, seed: int = 0) -> DiffProbe:
    """Fit W, b on every clip of the training queries (class-balanced logistic loss, Adam)."""
    feats = [clip_features(v) for v in videos]
    f = np.concatenate(feats)  # [N, 3 Dv]
    q = np.concatenate([np.repeat(t.mean(0, keepdims=True), len(x), 0) for t, x in zip(queries, feats)])  # [N, Dt]
    y = np.concatenate([clip_labels(a, len(x), clip_len) for a, x in zip(anns, feats)])  # [N]
    weight = np.where(y > 0, 0.5 / max(y.mean(), 1e-6), 0.5 / max(1 - y.mean(), 1e-6)) / len(y)
    rng = np.random.default_rng(seed)
    w, b = rng.normal(0, 0.01, (q.shape[1], f.shape[1])), 0.0
    m, v, mb, vb = np.zeros_like(w), np.zeros_like(w), 0.0, 0.0
    for step in range(1, steps + 1):
        z = ((q @ w) * f).sum(1) + b  # [N]
        g = (1.0 / (1.0 + np.exp(-z)) - y) * weight  # d loss / d z  [N]
        gw, gb = (q * g[:, None]).T @ f + l2 * w, float(g.sum())
        m, v = 0.9 * m + 0.1 * gw, 0.999 * v + 0.001 * gw**2
        mb, vb = 0.9 * mb + 0.1 * gb, 0.999 * vb + 0.001 * gb**2
        w -= lr * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
        b -= lr * (mb / (1 - 0.9**step)) / (np.sqrt(vb / (1 - 0.999**step)) + 1e-8)
    return DiffProbe(w=w, b=b)
