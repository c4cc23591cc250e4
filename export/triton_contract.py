"""The request/response contract of the served moments model, shared by server and client.

A request holds ``b`` pairs (``b`` >= 1; Triton's dynamic batcher merges requests
along this batch axis). Per pair, the client sends features padded to any length it
likes plus the true lengths; everything past a true length is cut off before the model
sees it, so padding is free of effect (its values are never read).

=============  =======  ==================  ==============================================
tensor         type     shape               what
=============  =======  ==================  ==============================================
video          FP32     [b, L_pad, Dv]      prepared clip features (``Retriever.prepare_video``)
video_lengths  INT32    [b, 1]              real clips per row, 1..min(L_pad, max_video_len)
query          FP32     [b, M_pad, Dt]      prepared token features (``Retriever.prepare_query``)
query_lengths  INT32    [b, 1]              real tokens per row, 1..min(M_pad, max_query_len)
top_k          INT32    [b, 1] (optional)   moments to return; one value per request
durations      FP32     [b, 1] (optional)   seconds per video (default: length x clip_len)
spans   (out)  FP32     [b, k, 2]           moments in seconds, best first (k = min(top_k, Q))
scores  (out)  FP32     [b, k]              their foreground probabilities
saliency (out) FP32     [b, L_pad]          per-clip saliency; 0 past each row's video_lengths
=============  =======  ==================  ==============================================

Triton only merges requests of equal shapes, so clients that pad every request to
``max_video_len`` clips and ``max_query_len`` tokens get every request batched.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tdfast.errors import InputError

# name -> (Triton data type, numpy dtype, dims without the batch axis given (Dv, Dt, ...)).
INPUTS = ("video", "video_lengths", "query", "query_lengths", "top_k", "durations")
OPTIONAL_INPUTS = ("top_k", "durations")
OUTPUTS = ("spans", "scores", "saliency")
NUMPY_DTYPES = {"video": np.float32, "query": np.float32, "video_lengths": np.int32,
                "query_lengths": np.int32, "top_k": np.int32, "durations": np.float32,
                "spans": np.float32, "scores": np.float32, "saliency": np.float32}
TRITON_DTYPES = {np.float32: "TYPE_FP32", np.int32: "TYPE_INT32"}


def tensor_dims(name: str, video_dim: int, text_dim: int) -> list[int]:
    """Dims of ``name`` without the batch axis (-1: any length)."""
    return {"video": [-1, video_dim], "query": [-1, text_dim], "spans": [-1, 2], "scores": [-1],
            "saliency": [-1]}.get(name, [1])


@dataclass(frozen=True)
class ParsedRequest:
    """One request's pairs, cut to their true lengths (views into the request's arrays)."""

    videos: list[np.ndarray]  # b x [L_i, Dv]
    queries: list[np.ndarray]  # b x [M_i, Dt]
    top_k: int
    durations: list[float] | None  # seconds, one per pair
    padded_video_len: int  # L_pad, the saliency output's width


def _lengths(name: str, x: np.ndarray | None, batch: int, padded: int, limit: int, what: str) -> list[int]:
    if x is None:
        raise InputError(f"{name}: missing; expected INT32 [{batch}, 1], the real {what} per row")
    if x.shape != (batch, 1) or x.dtype.kind not in "iu":
        raise InputError(f"{name}: expected INT32 [{batch}, 1], got {x.dtype} {list(x.shape)}")
    out = []
    for row, n in enumerate(x[:, 0].tolist()):
        if not 1 <= n <= padded:
            raise InputError(f"{name}[{row}]: expected 1..{padded} {what} (the padded length sent), got {n}")
        if n > limit:
            raise InputError(f"{name}[{row}]: expected at most {limit} {what} (the model's maximum), got {n}")
        out.append(int(n))
    return out


def _features(name: str, x: np.ndarray | None, dim: int) -> np.ndarray:
    if x is None:
        raise InputError(f"{name}: missing; expected FP32 [batch, length, {dim}]")
    if x.ndim != 3 or x.shape[2] != dim or x.dtype != np.float32:
        raise InputError(f"{name}: expected FP32 [batch, length, {dim}], got {x.dtype} {list(x.shape)}")
    return x


def parse_request(arrays: dict[str, np.ndarray | None], video_dim: int, text_dim: int,
                  max_video_len: int, max_query_len: int, default_top_k: int) -> ParsedRequest:
    """Validate one request's arrays (the names of ``INPUTS``; optional ones may be None) and
    cut each pair to its true lengths. InputError naming the tensor and row otherwise;
    finiteness of the real rows is checked by the Retriever that runs them."""
    video = _features("video", arrays.get("video"), video_dim)
    query = _features("query", arrays.get("query"), text_dim)
    b = video.shape[0]
    if query.shape[0] != b:
        raise InputError(f"query: expected {b} rows (one per video), got {query.shape[0]}")
    lv = _lengths("video_lengths", arrays.get("video_lengths"), b, video.shape[1], max_video_len, "clips")
    lq = _lengths("query_lengths", arrays.get("query_lengths"), b, query.shape[1], max_query_len, "tokens")
    top_k = default_top_k
    k = arrays.get("top_k")
    if k is not None:
        ks = set(np.asarray(k).reshape(-1).tolist())
        if k.shape != (b, 1) or len(ks) != 1 or min(ks) < 1:
            raise InputError(f"top_k: expected INT32 [{b}, 1] holding one positive value, got "
                             f"{k.dtype} {list(k.shape)} with values {sorted(ks)[:4]}")
        top_k = int(ks.pop())
    durations = None
    d = arrays.get("durations")
    if d is not None:
        if d.shape != (b, 1):
            raise InputError(f"durations: expected FP32 [{b}, 1] seconds, got {d.dtype} {list(d.shape)}")
        durations = [float(x) for x in d[:, 0]]
    return ParsedRequest([video[i, :n] for i, n in enumerate(lv)], [query[i, :n] for i, n in enumerate(lq)],
                         top_k, durations, video.shape[1])


def pad_request(videos: list[np.ndarray], queries: list[np.ndarray], video_len: int, query_len: int,
                top_k: int | None = None, durations: list[float] | None = None) -> dict[str, np.ndarray]:
    """Client side: ragged pairs -> one request's arrays, features zero-padded to
    ``video_len`` clips and ``query_len`` tokens (pad to the model's maxima to be batched)."""
    if len(videos) != len(queries) or not videos:
        raise InputError(f"queries: expected one query per video ({len(videos)}), got {len(queries)}")
    b = len(videos)
    out = {"video": np.zeros((b, video_len, videos[0].shape[1]), np.float32),
           "query": np.zeros((b, query_len, queries[0].shape[1]), np.float32),
           "video_lengths": np.array([[len(v)] for v in videos], np.int32),
           "query_lengths": np.array([[len(q)] for q in queries], np.int32)}
    for i, (v, q) in enumerate(zip(videos, queries)):
        if len(v) > video_len or len(q) > query_len:
            raise InputError(f"videos[{i}]/queries[{i}]: {len(v)} clips / {len(q)} tokens do not fit the "
                             f"padded lengths {video_len} / {query_len}")
        out["video"][i, :len(v)] = v
        out["query"][i, :len(q)] = q
    if top_k is not None:
        out["top_k"] = np.full((b, 1), top_k, np.int32)
    if durations is not None:
        out["durations"] = np.asarray(durations, np.float32).reshape(b, 1)
    return out


def response_arrays(spans: list[np.ndarray], scores: list[np.ndarray], saliency: list[np.ndarray],
                    padded_video_len: int) -> dict[str, np.ndarray]:
    """One request's predictions (per pair: spans [k, 2], scores [k], saliency [L_i]) ->
    the output arrays; saliency zero-padded to ``padded_video_len``."""
    sal = np.zeros((len(saliency), padded_video_len), np.float32)
    for i, s in enumerate(saliency):
        sal[i, :len(s)] = s
    return {"spans": np.stack(spans).astype(np.float32), "scores": np.stack(scores).astype(np.float32),
            "saliency": sal}
