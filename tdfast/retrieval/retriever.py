"""``Retriever``: batched moment retrieval + highlight detection from Python.

    from tdfast import Retriever
    r = Retriever.from_pretrained("ckpt_dir", backend="eager", device="cpu")
    preds = r.predict(videos, queries, top_k=5)     # one Prediction per (videos[i], queries[i])

Inputs are *prepared* features, as ``tdfast.data`` prepares them from the
npz files: each video source L2-normalised per clip on its own (when the
config's ``normalize_video``) and concatenated, query tokens L2-normalised
(``normalize_text``). ``Retriever.prepare_video`` / ``prepare_query`` do
that for raw extractor outputs.

Thread safety: one ``Retriever`` may be shared by threads. Validation,
padding and postprocessing run concurrently; the backend call itself is
serialised by one lock per Retriever (CUDA graphs and compiled graphs reuse
buffers, and on CPU the intra-op thread pool already uses every core).
"""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from tdfast.defaults import MAX_BATCH, TOP_K
from tdfast.devices import parse_device, parse_dtype
from tdfast.errors import InputError
from tdfast.model.config import TDDETRConfig
from tdfast.model.tddetr import OUTPUT_NAMES, TDDETR
from tdfast.retrieval.backends import make_runner
from tdfast.retrieval.batching import Chunk, length_buckets, pad_items, plan_chunks
from tdfast.retrieval.inputs import (as_feature_array, as_feature_list, check_counts, check_durations, check_flag,
                                     check_iou, check_length, check_top_k)
from tdfast.retrieval.postprocess import Prediction, moments_in_seconds, select_moments
from tdfast.retrieval.windows import merge_windows, plan_windows

VIDEO_BUCKET_STEP = 16  # clips; buckets 16, 32, 48, 64, 75 for the QVHighlights preset
QUERY_BUCKET_STEP = 8  # tokens; buckets 8, 16, 24, 32
# On CPU, a model call's widest activation (the FFN's hidden layer over the video and query
# tokens) is kept within this many bytes: past it, activations no longer stay in cache between
# ops and every pair costs more (docs/benchmarks.md, "Pairs per model call on CPU").
CPU_ACTIVATION_BUDGET = 4 << 20


def default_batch_size(config: TDDETRConfig, device: torch.device) -> int:
    """Pairs per model call when the caller does not say: ``MAX_BATCH`` on CUDA; on
    CPU the largest power of two whose FFN activation (fp32) fits ``CPU_ACTIVATION_BUDGET``
    (8 for the QVHighlights preset: 8 x 107 tokens x 1024 x 4 B = 3.5 MB), at most
    ``MAX_BATCH``, at least 1."""
    if device.type != "cpu":
        return MAX_BATCH
    per_pair = (config.max_video_len + config.max_query_len) * max(config.ffn_dim, config.hidden_dim) * 4
    fits = max(1, CPU_ACTIVATION_BUDGET // per_pair)
    return min(MAX_BATCH, 1 << (fits.bit_length() - 1))


@dataclasses.dataclass(frozen=True)
class _Job:
    """One model call's worth of input: a whole video or one window of it."""

    pair: int  # index into the caller's lists
    video: Tensor  # [L_w, video_dim]
    query: Tensor  # [M, text_dim]


class Retriever:
    """Runs a TDDETR on ragged (video, query) pairs with any backend of ``tdfast.retrieval.backends``.

    ``model``: a TDDETR (put in eval mode; converted copies are made when ``device`` or
    ``dtype`` differ from its own). ``backend``: a name in ``tdfast.retrieval.backends.BACKENDS``.
    ``batch_size``: most pairs per model call (larger inputs are chunked); None:
    ``default_batch_size`` (on CPU sized to stay in cache: 8 for the QVHighlights preset; 32 on CUDA).
    ``checkpoint_dir``: where exporting backends cache their artifacts.
    """

    def __init__(self, model: nn.Module, backend: str = "eager", device: Any = "cpu",
                 dtype: Any = None, batch_size: int | None = None,
                 checkpoint_dir: str | Path | None = None) -> None:
        if not isinstance(getattr(model, "config", None), TDDETRConfig):
            raise InputError(f"model: expected a TDDETR (an nn.Module with a TDDETRConfig .config), "
                             f"got {type(model).__name__}")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size <= 0):
            raise InputError(f"batch_size: expected None or a positive integer, got {batch_size!r}")
        self.config: TDDETRConfig = model.config
        self.device = parse_device(device)
        self.dtype = parse_dtype(dtype)
        self.backend = backend
        self.batch_size: int = batch_size or default_batch_size(self.config, self.device)
        self.runner = make_runner(backend, model, self.device, self.dtype, checkpoint_dir)
        self.video_buckets = length_buckets(self.config.max_video_len, VIDEO_BUCKET_STEP)
        self.query_buckets = length_buckets(self.config.max_query_len, QUERY_BUCKET_STEP)
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | Path, backend: str = "eager", device: Any = "cpu",
                        dtype: Any = None, batch_size: int | None = None) -> "Retriever":
        """Load ``checkpoint_dir`` (config.json + model.safetensors) and build the backend."""
        return cls(TDDETR.from_pretrained(checkpoint_dir), backend, device, dtype, batch_size, checkpoint_dir)

    def __repr__(self) -> str:
        return (f"Retriever(backend={self.backend!r}, device={str(self.device)!r}, dtype={self.dtype}, "
                f"batch_size={self.batch_size})")

    # ------------------------------------------------------------------ feature preparation
    def prepare_video(self, parts: np.ndarray | Sequence[np.ndarray], truncate: bool = False) -> np.ndarray:
        """Raw clip features -> what ``predict`` expects, exactly as ``tdfast.data`` prepares the
        npz files: ``parts`` is one [L, D_k] array per feature source (e.g. SlowFast, CLIP),
        each L2-normalised per clip on its own if the config says so, cut to the shortest
        and concatenated -> [L, video_dim] float32. ``truncate``: cut to max_video_len (as
        training did) instead of keeping the whole video for sliding windows."""
        from tdfast.data.features import prepare_video

        if isinstance(parts, (np.ndarray, Tensor)):
            parts = [parts]
        if not isinstance(parts, (list, tuple)) or not parts:
            raise InputError(f"parts: expected an array or a non-empty list of arrays, got {parts!r:.80}")
        arrays = [as_feature_array(f"parts[{k}]", p) for k, p in enumerate(parts)]
        return prepare_video(arrays, self.config, "parts", truncate)

    def prepare_query(self, tokens: np.ndarray) -> np.ndarray:
        """Raw token features [M, text_dim] -> [min(M, max_query_len), text_dim] float32,
        L2-normalised per token if the config says so (as ``tdfast.data`` does)."""
        from tdfast.data.features import prepare_query

        return prepare_query(as_feature_array("tokens", tokens), self.config, "tokens")

    # ------------------------------------------------------------------ public inference
    def predict(self, videos: Any, queries: Any, top_k: int = TOP_K, nms_iou: float | None = None,
                durations: Sequence[float] | None = None, sliding_window: bool = False,
                window_stride: int | None = None) -> list[Prediction]:
        """Ranked moments and clip saliency for each pair (videos[i], queries[i]).

        videos: list of [L_i, video_dim] arrays/tensors (numpy and torch may be mixed) or
        one [B, L, video_dim] tensor; queries: likewise [M_i, text_dim]. ``durations``:
        seconds per video (default L_i * clip_len); spans are scaled to it. ``nms_iou``:
        temporal NMS threshold (None: no NMS; with windows 0.5 is used to merge).
        ``sliding_window``: process videos longer than max_video_len in overlapping windows
        of max_video_len clips every ``window_stride`` clips (default half a window);
        without it such a video is an InputError.

        Returns one ``Prediction`` per pair: spans [k, 2] seconds, scores [k], saliency [L_i].
        """
        top_k = check_top_k(top_k)
        nms_iou = check_iou("nms_iou", nms_iou)
        sliding_window = check_flag("sliding_window", sliding_window)
        v = as_feature_list("videos", videos, self.config.video_dim)
        q = self._queries("queries", queries)
        check_counts(v, q)
        return self._predict(v, q, top_k, nms_iou, durations, sliding_window, window_stride)

    def predict_queries(self, video: Any, queries: Any, top_k: int = TOP_K, nms_iou: float | None = None,
                        duration: float | None = None) -> list[Prediction]:
        """Many queries against one video (encode once, retrieve many).

        video [L, video_dim] (L <= max_video_len); queries as in ``predict``. The answers are
        ``predict([video] * len(queries), queries, ...)``'s; with a PyTorch backend (eager,
        triton) the video's TEF, input projection and positions run once for all queries
        (everything after them depends on the query). Other backends run the pairs as given.
        """
        if not isinstance(video, (np.ndarray, Tensor)) or np.ndim(video) != 2:
            raise InputError(f"video: expected one 2-D (length, {self.config.video_dim}) array or tensor, "
                             f"got {type(video).__name__} of shape {tuple(np.shape(video))}")
        v = as_feature_list("video", [video], self.config.video_dim)[0]
        self._check_video_length("video", v)
        q = self._queries("queries", queries)
        n = len(q)
        return self._predict([v] * n, q, check_top_k(top_k), check_iou("nms_iou", nms_iou),
                             None if duration is None else [duration] * n, shared="video")

    def predict_videos(self, videos: Any, query: Any, top_k: int = TOP_K, nms_iou: float | None = None,
                       durations: Sequence[float] | None = None) -> list[Prediction]:
        """One query against many videos (the corpus case): ``predict(videos, [query] * n)``'s
        answers, with the query's input projection run once on a PyTorch backend."""
        q = self._queries("query", [query])[0]
        v = as_feature_list("videos", videos, self.config.video_dim)
        for i, t in enumerate(v):
            self._check_video_length(f"videos[{i}]", t)
        return self._predict(v, [q] * len(v), check_top_k(top_k), check_iou("nms_iou", nms_iou),
                             durations, shared="query")

    def predict_video_files(self, paths: Sequence[str | Path], queries: Sequence[str], clip: Any,
                            top_k: int = 5, nms_iou: float | None = None,
                            sliding_window: bool = False) -> list[Prediction]:
        """Video files and sentences in, moments out, as QD-DETR's run_on_video: one pair per
        (paths[i], queries[i]). ``clip``: a ``tdfast.video.ClipEncoder`` or the path of a local
        CLIP weights file (e.g. OpenAI's ViT-B-32.pt). Needs a CLIP-only checkpoint; see
        ``tdfast.video.predict``."""
        from tdfast.video import ClipEncoder, predict_video_files

        encoder = clip if isinstance(clip, ClipEncoder) else ClipEncoder(clip)
        return predict_video_files(self, encoder, paths, queries, top_k, nms_iou, sliding_window)

    def raw_outputs(self, videos: Any, queries: Any) -> list[dict[str, np.ndarray]]:
        """The model's raw outputs per pair, unpadded, float32 numpy: ``pred_spans`` [Q, 2]
        (normalized cxw), ``pred_logits`` [Q, 2], ``saliency_scores`` [L_i]. No windows."""
        v = as_feature_list("videos", videos, self.config.video_dim)
        q = self._queries("queries", queries)
        check_counts(v, q)
        jobs, _, _ = self._jobs(v, q, sliding_window=False, window_stride=None)
        results: list[dict[str, np.ndarray]] = [{} for _ in jobs]
        for chunk, out, lengths in self._run(jobs):
            for row, (j, n) in enumerate(zip(chunk.indices, lengths)):
                results[j] = {k: out[k][row, :n].numpy() if k == "saliency_scores" else out[k][row].numpy()
                              for k in OUTPUT_NAMES}
        return results

    def warmup(self, batch_sizes: Sequence[int] = (1,), video_len: int | None = None,
               query_len: int | None = None, calls: int = 3) -> dict:
        """Run ``calls`` dummy batches per batch size (default shapes: the largest buckets) so
        compiled graphs / CUDA graphs / sessions exist before the first real request.
        Returns the runner's per-shape compile and warm-up seconds (empty for eager)."""
        video_len = video_len or self.config.max_video_len
        query_len = query_len or self.config.max_query_len
        g = torch.Generator().manual_seed(0)
        for b in batch_sizes:
            v = [torch.randn(video_len, self.config.video_dim, generator=g) for _ in range(b)]
            q = [torch.randn(query_len, self.config.text_dim, generator=g) for _ in range(b)]
            for _ in range(calls):
                self.raw_outputs(v, q)
        return dict(getattr(self.runner, "timings", {}))

    # ------------------------------------------------------------------ internals
    def _queries(self, name: str, queries: Any) -> list[Tensor]:
        q = as_feature_list(name, queries, self.config.text_dim)
        for i, t in enumerate(q):
            check_length(f"{name}[{i}]", t, "max_query_len", self.config.max_query_len, "tokens",
                         "truncate it, e.g. with Retriever.prepare_query")
        return q

    def _check_video_length(self, name: str, video: Tensor) -> None:
        check_length(name, video, "max_video_len", self.config.max_video_len, "clips",
                     "pass sliding_window=True to predict() to process long videos in overlapping windows")

    def _predict(self, videos: list[Tensor], queries: list[Tensor], top_k: int, nms_iou: float | None,
                 durations: Sequence[float] | None, sliding_window: bool = False,
                 window_stride: int | None = None, shared: str | None = None) -> list[Prediction]:
        """``predict`` on checked items [L_i, Dv] / [M_i, Dt]; ``shared`` ("video" / "query"):
        every pair holds the same video / query, which ``_run`` then projects once."""
        lengths = [t.shape[0] for t in videos]
        durations = check_durations(durations, lengths, self.config.clip_len)
        jobs, firsts, windows = self._jobs(videos, queries, sliding_window, window_stride)
        per_clip = [d / n for d, n in zip(durations, lengths)]  # seconds per clip
        job_preds: list[Prediction] = [None] * len(jobs)  # type: ignore[list-item]
        for chunk, out, clips in self._run(jobs, shared):
            secs = torch.tensor([jobs[j].video.shape[0] * per_clip[jobs[j].pair] for j in chunk.indices])
            spans, scores = moments_in_seconds(out["pred_spans"], out["pred_logits"], secs)
            saliency = out["saliency_scores"].numpy()
            for row, (j, n) in enumerate(zip(chunk.indices, clips)):
                s, p = spans[row], scores[row]
                if len(windows[jobs[j].pair]) == 1:  # a windowed pair is ranked once, after merging
                    s, p = select_moments(s, p, top_k, nms_iou)
                job_preds[j] = Prediction(spans=s, scores=p, saliency=saliency[row, :n])
        return [job_preds[first] if len(win) == 1 else
                merge_windows(win, job_preds[first: first + len(win)], per_clip[i], durations[i], top_k, nms_iou)
                for i, (first, win) in enumerate(zip(firsts, windows))]

    def _jobs(self, videos: list[Tensor], queries: list[Tensor], sliding_window: bool,
              window_stride: int | None
              ) -> tuple[list[_Job], list[int], list[list[tuple[int, int]]]]:
        """One job per pair, or one per window for long videos when ``sliding_window``.
        Returns the jobs (a pair's jobs are consecutive), each pair's first job index and
        each pair's windows as clip ranges [start, end)."""
        w = self.config.max_video_len
        stride = w // 2 if window_stride is None else window_stride
        if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= w:
            raise InputError(f"window_stride: expected None or an integer in [1, max_video_len={w}] "
                             f"clips, got {window_stride!r}")
        jobs: list[_Job] = []
        firsts, windows = [], []
        for i, (v, q) in enumerate(zip(videos, queries)):
            if not sliding_window:
                self._check_video_length(f"videos[{i}]", v)
            win = plan_windows(v.shape[0], w, stride)
            firsts.append(len(jobs))
            jobs.extend(_Job(i, v[s:e], q) for s, e in win)
            windows.append(win)
        return jobs, firsts, windows

    def _run(self, jobs: Sequence[_Job], shared: str | None = None
             ) -> Iterator[tuple[Chunk, dict[str, Tensor], list[int]]]:
        """Pad jobs chunk by chunk, call the backend, yield (chunk, outputs on CPU float32
        cut to the chunk's real rows, each row's real clips). Every model call of the
        Retriever passes here, and so through its NaN/inf guard.

        ``shared`` ("video" / "query"): all jobs hold the same video / query; when the backend
        runs a TDDETR module (eager, triton) that input keeps its own length and is projected
        once for all chunks (``_forward_shared``). Other backends take the pairs as they are."""
        runner = self.runner
        model = getattr(runner, "fn", None)
        if shared is None or not isinstance(model, TDDETR):
            model = None
        video_buckets, query_buckets = self.video_buckets, self.query_buckets
        if model is not None and shared == "video":
            video_buckets = [jobs[0].video.shape[0]]
        elif model is not None:
            query_buckets = [jobs[0].query.shape[0]]
        max_batch = min(self.batch_size, getattr(runner, "max_batch", None) or self.batch_size)
        chunks = plan_chunks([j.video.shape[0] for j in jobs], [j.query.shape[0] for j in jobs],
                             video_buckets, query_buckets, max_batch, runner.static_shapes)
        gpu = self.device.type == "cuda"
        projected: dict[str, tuple[Tensor, ...]] = {}
        for chunk in chunks:
            items = [jobs[j] for j in chunk.indices]
            n = len(items)
            src = items[0].video.device if all(it.video.device == self.device for it in items) else "cpu"
            args = (*pad_items([it.video for it in items], chunk.video_len, chunk.batch,
                               runner.input_dtype, torch.device(src), pin=gpu),
                    *pad_items([it.query for it in items], chunk.query_len, chunk.batch,
                               runner.input_dtype, torch.device(src), pin=gpu))
            args = tuple(a.to(self.device, non_blocking=True) for a in args)
            with self._lock:  # the copy to CPU stays inside: graph outputs are reused buffers
                if model is None:
                    out = runner(*args)
                else:
                    with torch.inference_mode():
                        out = _forward_shared(model, shared, projected, *args)
                out = {k: out[k][:n].float().cpu() for k in OUTPUT_NAMES}
            bad = [k for k, x in out.items() if not bool(torch.isfinite(x).all())]
            if bad:
                raise FloatingPointError(f"backend {self.backend!r} returned NaN/inf in {bad} for finite "
                                         f"inputs (dtype {self.dtype}); try dtype=torch.float32")
            yield chunk, out, [it.video.shape[0] for it in items]


def _forward_shared(model: TDDETR, shared: str, projected: dict[str, tuple[Tensor, ...]], video: Tensor,
                    video_mask: Tensor, query: Tensor, query_mask: Tensor) -> dict[str, Tensor]:
    """``model(video, video_mask, query, query_mask)`` for a batch whose rows all hold the same
    video (``shared`` "video") or the same query: that input is projected from row 0 the first
    time (kept in ``projected`` for the next chunks) and expanded over the batch."""
    n = video.shape[0]
    if shared == "video":
        if "video" not in projected:
            projected["video"] = model.project_video(video[:1], video_mask[:1])  # ([1, L, D], [1, L, D])
        v, pos = (p.expand(n, -1, -1) for p in projected["video"])  # [B, L, D] each
        return model.forward_projected(v, pos, video_mask, model.project_query(query), query_mask)
    if "query" not in projected:
        projected["query"] = (model.project_query(query[:1]),)  # ([1, M, D],)
    t = projected["query"][0].expand(n, -1, -1)  # [B, M, D]
    return model.forward_projected(*model.project_video(video, video_mask), video_mask, t, query_mask)
