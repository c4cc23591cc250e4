"""Encode once, retrieve many: ``Retriever.predict_queries`` / ``predict_videos`` vs ``predict``.

    python benchmarks/bench_shared.py [--preset qvhighlights] [--n 1,8,32] [--threads 1]
        [--rounds 10] [--out benchmarks/results/shared_cpu.json]

What is timed: the whole call on host tensors (validation, padding, the model, postprocess),
for one video of ``--video-len`` clips with n queries of ``--query-len`` tokens
(``predict_queries``) and one query with n such videos (``predict_videos``), against
``predict`` on the same n pairs; eager backend, untrained weights of the preset (timing does
not depend on them). The two calls of each case alternate round by round, so load changes
hit both; the record keeps the medians and their ratio.
"""
from __future__ import annotations

import argparse

import torch

from tdfast import Retriever, TDDETR, TDDETRConfig
from tdfast.benchmarks import machine_info, make_record, summarize_ms, write_record
from tdfast.benchmarks.timing import interleaved_rounds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="qvhighlights")
    p.add_argument("--n", default="1,8,32", help="pairs per call (comma list)")
    p.add_argument("--video-len", type=int, default=75)
    p.add_argument("--query-len", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results/shared_cpu.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = TDDETRConfig.from_name(args.preset)
    r = Retriever(TDDETR(config).eval(), batch_size=32)
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in (int(x) for x in args.n.split(",")):
        videos = [torch.randn(args.video_len, config.video_dim, generator=g) for _ in range(n)]
        queries = [torch.randn(args.query_len, config.text_dim, generator=g) for _ in range(n)]
        cases = {
            "one video, n queries": {
                "pairwise": lambda: r.predict([videos[0]] * n, queries),
                "shared": lambda: r.predict_queries(videos[0], queries)},
            "one query, n videos": {
                "pairwise": lambda: r.predict(videos, [queries[0]] * n),
                "shared": lambda: r.predict_videos(videos, queries[0])},
        }
        for case, calls in cases.items():
            for fn in calls.values():
                fn()  # warm-up
            seconds, _ = interleaved_rounds(calls, args.rounds, lambda: None)
            pair, shared = (summarize_ms(seconds[k])["p50_ms"] for k in ("pairwise", "shared"))
            rows.append({"case": case, "n": n, "L": args.video_len, "M": args.query_len,
                         "predict_p50_ms": round(pair, 2), "shared_p50_ms": round(shared, 2),
                         "speedup": round(pair / shared, 3)})
            print(rows[-1], flush=True)
    setup = {**vars(args), "backend": "eager", "model": f"{args.preset} preset, untrained weights"}
    record = make_record("shared", "Retriever.predict_queries / predict_videos vs predict on the same "
                         "pairs, whole call, median of interleaved rounds", machine_info("cpu"), setup, rows)
    write_record(record, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
