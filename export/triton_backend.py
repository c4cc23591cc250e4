"""The Triton Python-backend model that serves moments: ``TritonPythonModel``.

It runs inside Triton's Python-backend stub process (the repository's ``model.py``
imports it from here). Each ``execute`` call gets the requests Triton's dynamic batcher
gathered; their pairs, cut to their true lengths (``triton_contract``), go through one
``Retriever.predict`` per distinct ``top_k``, so the answers are ``Retriever.predict``'s
with the backend named in ``config.pbtxt`` (``onnxruntime``: the verified fp32 ONNX
graph; ``onnxruntime-int8``; ``eager``). A bad request gets an error response naming
the tensor and row; the other requests of the batch are answered.

``config.pbtxt`` parameters (all strings): ``backend``, ``threads`` (intra-op threads of
PyTorch and ONNX Runtime in this instance), ``top_k`` (default when a request sends none).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tdfast.errors import InputError


def _param(config: dict, name: str, default: str) -> str:
    return config.get("parameters", {}).get(name, {}).get("string_value", default)


class TritonPythonModel:
    """Triton calls ``initialize(args)`` once per instance, ``execute(requests)`` per batch."""

    def initialize(self, args: dict[str, Any]) -> None:
        import torch

        from tdfast import Retriever

        config = json.loads(args["model_config"])
        threads = int(_param(config, "threads", "1"))
        torch.set_num_threads(threads)  # also sizes the ONNX Runtime session (tdfast.backends)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.retriever = Retriever.from_pretrained(version_dir, backend=_param(config, "backend", "onnxruntime"))
        self.top_k = int(_param(config, "top_k", "5"))

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        from tdfast.export.triton_contract import INPUTS, parse_request

        c = self.retriever.config
        responses: list = [None] * len(requests)
        parsed = {}
        for i, request in enumerate(requests):
            arrays = {}
            for name in INPUTS:
                t = pb_utils.get_input_tensor_by_name(request, name)
                arrays[name] = None if t is None else t.as_numpy()
            try:
                parsed[i] = parse_request(arrays, c.video_dim, c.text_dim, c.max_video_len, c.max_query_len,
                                          self.top_k)
            except InputError as e:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))
        for k in sorted({p.top_k for p in parsed.values()}):
            group = [i for i, p in parsed.items() if p.top_k == k]
            for i, outputs in self._answer(group, parsed, k).items():
                if isinstance(outputs, str):
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(outputs))
                else:
                    responses[i] = pb_utils.InferenceResponse(
                        [pb_utils.Tensor(name, array) for name, array in outputs.items()])
        return responses

    def _answer(self, group: list[int], parsed: dict, top_k: int) -> dict[int, Any]:
        """request index -> output arrays, or an error message. One predict call for the group;
        if it refuses the input (NaN in some request's real rows), each request alone, so only
        the bad one gets the error."""
        from tdfast.export.triton_contract import response_arrays

        videos = [v for i in group for v in parsed[i].videos]
        queries = [q for i in group for q in parsed[i].queries]
        durations = None
        if any(parsed[i].durations is not None for i in group):
            durations = [d for i in group for d in (parsed[i].durations or
                                                     [len(v) * self.retriever.config.clip_len
                                                      for v in parsed[i].videos])]
        try:
            preds = self.retriever.predict(videos, queries, top_k=top_k, durations=durations)
        except (InputError, FloatingPointError) as e:
            if len(group) == 1:
                return {group[0]: str(e)}
            out: dict[int, Any] = {}
            for i in group:
                out.update(self._answer([i], parsed, top_k))
            return out
        out, start = {}, 0
        for i in group:
            n = len(parsed[i].videos)
            mine = preds[start: start + n]
            start += n
            out[i] = response_arrays([p.spans for p in mine], [p.scores for p in mine],
                                     [p.saliency for p in mine], parsed[i].padded_video_len)
        return out
