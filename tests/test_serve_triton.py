"""The moments model on a real Triton Inference Server (``tritonserver`` from nvidia-pytriton).

One server per module serves the tiny preset twice (fp32 ONNX Runtime and int8) on free
127.0.0.1 ports; concurrent HTTP and gRPC requests must equal ``Retriever.predict`` (fp32
within 1e-4 of eager; int8 vs the Retriever's own int8 backend), bad requests get an error
response naming the tensor and the next good request is answered. The server and its stub
processes are stopped by the fixture's finalizer, also when a test fails. Skipped when
``tdfast[serve]`` (nvidia-pytriton, tritonclient) is not installed.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tdfast import Retriever
from tdfast.errors import BackendUnavailableError
from tdfast.export import ensure_export

from export_support import make_model

pytest.importorskip("tritonclient.http", reason="tritonclient not installed: pip install 'tdfast[serve]'")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed: pip install 'tdfast[serve]'")

from tdfast.export.triton_client import MomentsClient  # noqa: E402
from tdfast.export.triton_contract import pad_request  # noqa: E402
from tdfast.export.triton_process import bundled_server, start_server  # noqa: E402
from tdfast.export.triton_python import write_python_model  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

try:
    bundled_server()
    SERVER_MISSING = None
except BackendUnavailableError as e:
    SERVER_MISSING = str(e)
pytestmark = pytest.mark.skipif(SERVER_MISSING is not None, reason=f"no bundled tritonserver: {SERVER_MISSING}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(checkpoint dir, model, running server with models fp32 and int8)."""
    root = tmp_path_factory.mktemp("serve")
    model = make_model("tiny")
    ckpt = model.save_pretrained(root / "ckpt")
    fp32 = ensure_export(ckpt, "onnx", exporter="torchscript")  # cached in ckpt; 3x faster here than dynamo
    write_python_model(ckpt, root / "repo", "fp32", backend="onnxruntime", max_batch_size=8, export_file=fp32)
    write_python_model(ckpt, root / "repo", "int8", backend="onnxruntime-int8", max_batch_size=8,
                       export_file=ensure_export(ckpt, "onnx-int8"))
    server = start_server(root / "repo", ["fp32", "int8"])
    yield ckpt, model, server
    server.stop()


def _pairs(config, n: int, seed: int):
    """n random (video, query) pairs of ragged lengths, prepared-feature style (float32)."""
    rng = np.random.default_rng(seed)
    videos = [rng.standard_normal((int(rng.integers(1, config.max_video_len + 1)), config.video_dim))
              .astype(np.float32) for _ in range(n)]
    queries = [rng.standard_normal((int(rng.integers(1, config.max_query_len + 1)), config.text_dim))
               .astype(np.float32) for _ in range(n)]
    return videos, queries


def _assert_close(got, want, atol: float, what: str) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g.spans, w.spans, atol=atol * 100, err_msg=f"{what} pair {i} spans (s)")
        np.testing.assert_allclose(g.scores, w.scores, atol=atol, err_msg=f"{what} pair {i} scores")
        np.testing.assert_allclose(g.saliency, w.saliency, atol=atol, err_msg=f"{what} pair {i} saliency")
        assert g.saliency.shape == w.saliency.shape


def test_concurrent_http_and_grpc_requests_equal_the_retriever(served):
    ckpt, model, server = served
    videos, queries = _pairs(model.config, 24, seed=1)
    durations = [len(v) * 2.0 + 0.5 for v in videos]  # not L x clip_len: the spans must follow them
    want3 = Retriever(model).predict(videos, queries, top_k=3, durations=durations)
    want5 = Retriever(model).predict(videos, queries, top_k=5, durations=durations)
    # 12 requests of 1-3 pairs, half over HTTP, half over gRPC, 8 at a time, two top_k values.
    cuts = [0, 1, 3, 4, 6, 9, 10, 12, 15, 16, 19, 22, 24]
    jobs = [(cuts[j], cuts[j + 1], ("http", "grpc")[j % 2], 3 if j % 3 == 0 else 5) for j in range(12)]

    def send(job):
        start, stop, protocol, k = job
        url = server.http_url if protocol == "http" else server.grpc_url
        with MomentsClient(url, protocol, "fp32") as client:
            return client.predict(videos[start:stop], queries[start:stop], top_k=k, durations=durations[start:stop])

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, jobs))
    for (start, stop, protocol, k), got in zip(jobs, answers):
        want = (want3 if k == 3 else want5)[start:stop]
        # spans are seconds (up to ~65 s here): 1e-4 relative to the normalized span, x duration
        _assert_close(got, want, 1e-4, f"{protocol} top_k={k} pairs {start}:{stop}")
        assert all(len(g.scores) == k for g in got)


def test_padding_content_is_free_of_effect(served):
    _, model, server = served
    c = model.config
    videos, queries = _pairs(c, 2, seed=2)
    videos[0], queries[0] = videos[0][:5], queries[0][:3]  # leave room for padding
    with MomentsClient(server.http_url, "http", "fp32") as client:
        zeros = client.infer_arrays(pad_request(videos, queries, c.max_video_len, c.max_query_len))
        garbage = pad_request(videos, queries, c.max_video_len, c.max_query_len)
        garbage["video"][0, 5:] = np.nan  # never read: cut at video_lengths before the model
        garbage["query"][0, 3:] = 1e30
        other = client.infer_arrays(garbage)
    for name in ("spans", "scores", "saliency"):
        np.testing.assert_array_equal(other[name], zeros[name], err_msg=name)
    assert not np.any(zeros["saliency"][0, 5:]), "saliency past video_lengths must be 0"


def test_int8_served_matches_the_int8_retriever(served):
    ckpt, model, server = served
    videos, queries = _pairs(model.config, 6, seed=3)
    ref = Retriever.from_pretrained(ckpt, backend="onnxruntime-int8")
    with MomentsClient(server.grpc_url, "grpc", "int8") as client:
        for i in range(6):  # one pair per request: the same batch the Retriever runs
            got = client.predict(videos[i:i + 1], queries[i:i + 1], top_k=5)[0]
            want = ref.predict(videos[i:i + 1], queries[i:i + 1], top_k=5)[0]
            np.testing.assert_allclose(got.spans[0], want.spans[0], atol=1e-2, err_msg=f"pair {i} top-1 span")
            np.testing.assert_allclose(got.scores, want.scores, atol=1e-3, err_msg=f"pair {i} scores")
            np.testing.assert_allclose(got.saliency, want.saliency, atol=1e-3, err_msg=f"pair {i} saliency")


def _bad(c):
    """name -> (request arrays, text the error must contain)."""
    rng = np.random.default_rng(4)
    v = [rng.standard_normal((6, c.video_dim)).astype(np.float32)]
    q = [rng.standard_normal((4, c.text_dim)).astype(np.float32)]
    good = lambda: pad_request(v, q, c.max_video_len, c.max_query_len)  # noqa: E731
    cases = {}
    r = good(); r["video"] = np.zeros((1, c.max_video_len, c.video_dim + 1), np.float32)  # noqa: E702
    cases["wrong feature dim"] = r, "video"
    r = good(); r["query"] = r["query"].astype(np.float64)  # noqa: E702
    cases["wrong dtype"] = r, "query"
    r = pad_request(v, q, c.max_video_len + 4, c.max_query_len); r["video_lengths"][:] = c.max_video_len + 4  # noqa: E702
    cases["too long"] = r, f"video_lengths[0]: expected at most {c.max_video_len} clips"
    r = good(); r["video"][0, 2, 7] = np.nan  # noqa: E702
    cases["NaN in a real clip"] = r, "NaN"
    r = good(); del r["query_lengths"]  # noqa: E702
    cases["missing lengths"] = r, "query_lengths"
    r = good(); r["video_lengths"][:] = c.max_video_len + 1  # noqa: E702
    cases["length beyond the padding"] = r, f"video_lengths[0]: expected 1..{c.max_video_len}"
    r = good(); r["query_lengths"][:] = 0  # noqa: E702
    cases["zero length"] = r, "query_lengths[0]"
    r = good(); r["top_k"] = np.zeros((1, 1), np.int32)  # noqa: E702
    cases["top_k 0"] = r, "top_k"
    return cases, v, q


def test_bad_requests_get_an_error_and_the_server_keeps_serving(served):
    _, model, server = served
    cases, v, q = _bad(model.config)
    want = Retriever(model).predict(v, q, top_k=5)
    for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
        with MomentsClient(url, protocol, "fp32") as client:
            for name, (arrays, text) in cases.items():
                with pytest.raises(InferenceServerException) as err:
                    client.infer_arrays(arrays)
                assert text in str(err.value), f"{protocol} {name}: {err.value}"
                _assert_close(client.predict(v, q, top_k=5), want, 1e-4, f"{protocol} after {name}")


def _pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (the server and its stubs)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                state = next(l for l in (d / "status").read_text().splitlines() if l.startswith("State:"))
                if "Z" not in state.split()[1]:
                    pids.append(int(d.name))
        except (OSError, StopIteration):
            pass
    return pids


def test_cli_serves_then_ctrl_c_stops_server_and_stubs(tmp_path):
    model = make_model("tiny")
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    repo = tmp_path / "repo"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = subprocess.Popen([sys.executable, "-m", "tdfast", "serve", str(ckpt), "--repo", str(repo),
                            "--backend", "eager"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 300
        while not any(line.startswith("Ctrl-C") for line in lines):
            line = cli.stdout.readline()
            assert line or cli.poll() is None, "tdfast serve exited early:\n" + "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        grpc = next(line.split()[1] for line in lines if line.strip().startswith("gRPC"))
        assert grpc.startswith("127.0.0.1:")
        videos, queries = _pairs(model.config, 2, seed=5)
        with MomentsClient(grpc, "grpc") as client:
            _assert_close(client.predict(videos, queries), Retriever(model).predict(videos, queries), 1e-4, "cli")
        running = _pids_mentioning(str(repo))
        assert len(running) >= 2, running  # tritonserver and its stub
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=60) == 0, cli.stdout.read()
        time.sleep(0.5)
        assert _pids_mentioning(str(repo)) == []
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        for pid in _pids_mentioning(str(repo)):  # never leave a server behind a failed test
            os.kill(pid, signal.SIGKILL)
