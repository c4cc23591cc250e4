"""A thin ``tritonclient`` client of the served moments model (HTTP or gRPC).

    from tdfast.export.triton_client import MomentsClient
    client = MomentsClient("127.0.0.1:8000")            # or protocol="grpc", "127.0.0.1:8001"
    preds = client.predict(videos, queries, top_k=5)   # one Prediction per pair, as Retriever.predict

Pairs are sent in one request, padded to the model's maxima (read from the served
``config.pbtxt``), so concurrent requests are merged by Triton's dynamic batcher. A
client object is not thread-safe: use one per thread.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tdfast.errors import BackendUnavailableError, InputError
from tdfast.export.triton_contract import OUTPUTS, pad_request
from tdfast.export.triton_python import MOMENTS_MODEL_NAME
from tdfast.retrieval.postprocess import Prediction

PROTOCOLS = ("http", "grpc")


def _client_module(protocol: str):
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
    try:
        if protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
    except ImportError:
        raise BackendUnavailableError(f"tritonclient[{protocol}] is not installed: pip install "
                                      f"'tritonclient[http,grpc]' or pip install 'tdfast[serve]'") from None
    return module


class MomentsClient:
    """Client of the moments model at ``url`` (``host:port``; HTTP 8000 / gRPC 8001 by default
    in Triton, the ports ``tdfast serve`` prints here)."""

    def __init__(self, url: str, protocol: str = "http", model_name: str = MOMENTS_MODEL_NAME) -> None:
        self.module = _client_module(protocol)
        self.protocol, self.model_name = protocol, model_name
        self.client = self.module.InferenceServerClient(url)
        config = self.client.get_model_config(model_name)
        if protocol == "grpc":  # a ModelConfigResponse protobuf; HTTP returns the JSON dict
            from google.protobuf.json_format import MessageToDict

            config = MessageToDict(config.config, preserving_proto_field_name=True)
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.max_video_len, self.max_query_len = int(params["max_video_len"]), int(params["max_query_len"])

    def infer_arrays(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request of raw contract arrays (``triton_contract``) -> the output arrays.
        A refused request raises ``tritonclient.utils.InferenceServerException`` with the
        server's message."""
        from tritonclient.utils import np_to_triton_dtype

        inputs = []
        for name, array in arrays.items():  # sent as they are: the server judges names, types, shapes
            x = self.module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            x.set_data_from_numpy(array)
            inputs.append(x)
        outputs = [self.module.InferRequestedOutput(name) for name in OUTPUTS]
        result = self.client.infer(self.model_name, inputs, outputs=outputs)
        return {name: result.as_numpy(name) for name in OUTPUTS}

    def predict(self, videos: Sequence[np.ndarray], queries: Sequence[np.ndarray], top_k: int | None = None,
                durations: Sequence[float] | None = None) -> list[Prediction]:
        """``Retriever.predict``'s answers from the server: videos [L_i, Dv], queries [M_i, Dt]
        (prepared features, float32), ``top_k`` (None: the server's default), ``durations``
        in seconds (None: L_i x clip_len)."""
        videos = [np.asarray(v, np.float32) for v in videos]
        queries = [np.asarray(q, np.float32) for q in queries]
        arrays = pad_request(videos, queries, self.max_video_len, self.max_query_len, top_k,
                             None if durations is None else list(durations))
        out = self.infer_arrays(arrays)
        return [Prediction(spans=out["spans"][i], scores=out["scores"][i], saliency=out["saliency"][i, :len(v)])
                for i, v in enumerate(videos)]

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "MomentsClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
