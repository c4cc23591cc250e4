"""Seconds per minute of 720p H.264 video: tdfast's raw-video encoding vs QD-DETR's run_on_video.

    python benchmarks/bench_video.py --official /tmp/official [--seconds 60] [--rounds 3]
        [--out benchmarks/results/video_cpu.json]

What is timed: turning a video file into its CLIP image features (the part of
``localize_moment`` that dominates: decoding plus 4.4 GFLOP per frame in ViT-B/32, against
well under a second for QD-DETR itself), on a synthetic 1280x720 30 fps H.264 file
(``tdfast.video.synthetic.write_video``, scene cuts every 3 s, pixel noise std 4, x264
veryfast at 3 Mbit/s, a typical 720p stream's rate, so decoding costs what it does there) with
random ViT-B/32-sized CLIP weights (timing does not depend on the values):

- ``official``: run_on_video's ``ClipFeatureExtractor.encode_video`` (the ffmpeg binary,
  then CLIP's PyTorch model in batches of 60), from the official code in ``--official``
  (see tests/fixtures/gen_video.py for what that folder needs);
- ``tdfast-<backend>``: ``ClipEncoder.encode_video`` with the image tower on each backend
  (PyAV decoding in a background thread, batches of 16 frames).

Also the decoding alone (official loader vs ``tdfast.video.decode.read_frames``) and how far
each backend's features are from the official ones. Calls alternate round by round so load
changes hit all; the record keeps each one's median and minimum. All threads of the machine
are used by both (torch's default, FFmpeg's auto threads, ONNX Runtime's default).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tdfast.benchmarks import machine_info, make_record, write_record
from tdfast.benchmarks.timing import interleaved_rounds
from tdfast.video import ClipEncoder
from tdfast.video.decode import read_frames
from tdfast.video.image_backends import IMAGE_BACKENDS
from tdfast.video.synthetic import random_clip_state_dict, write_video

VIT_B_32 = dict(vision_width=768, vision_layers=12, text_width=512, text_layers=12)


def official_extractor(folder: str, weights: Path):  # noqa: ANN201
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
    from gen_video import stub_unused_imports

    sys.path.insert(0, os.path.abspath(folder))
    stub_unused_imports()
    from run_on_video.data_utils import ClipFeatureExtractor

    return ClipFeatureExtractor(framerate=1 / 2, size=224, centercrop=True,
                                model_name_or_path=str(weights), device="cpu")


def decoder_versions() -> dict[str, str]:
    """PyAV, the FFmpeg it bundles, and the ffmpeg binary the official loader runs."""
    import subprocess

    import av

    try:
        binary = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        binary = "not found"
    return {"av": av.__version__, "av_ffmpeg": str(getattr(av, "ffmpeg_version_info", "?")),
            "ffmpeg_binary": binary}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", required=True, help="folder with the official QD-DETR code")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bit-rate", type=int, default=3_000_000, help="bits/s of the test video (default 3 Mbps)")
    p.add_argument("--backends", default=",".join(IMAGE_BACKENDS))
    p.add_argument("--out", default="benchmarks/results/video_cpu.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        video = write_video(Path(tmp, "720p.mp4"), args.seconds, fps=30, width=1280, height=720, noise=4.0,
                            bit_rate=args.bit_rate)
        weights = Path(tmp, "vit_b_32_random.pt")
        torch.save(random_clip_state_dict(0, **VIT_B_32), weights)
        official = official_extractor(args.official, weights)
        setup_s, encoders = {}, {}
        for b in args.backends.split(","):
            start = time.perf_counter()
            encoders[b] = ClipEncoder(weights, clip_backend=b)
            setup_s[b] = round(time.perf_counter() - start, 2)
        calls = {"official": lambda: official.encode_video(str(video)).numpy(),
                 **{f"tdfast-{b}": (lambda e=e: e.encode_video(video)) for b, e in encoders.items()}}
        feats = {name: fn() for name, fn in calls.items()}  # warm-up, and the features compared
        seconds, _ = interleaved_rounds(calls, args.rounds, lambda: None)
        decode = {"official": lambda: official.video_loader.read_video_from_file(str(video)),
                  "tdfast": lambda: read_frames(video),
                  "tdfast-no-skip": lambda: read_frames(video, skip_unused=False)}
        decode_s, _ = interleaved_rounds(decode, args.rounds, lambda: None)
        size_mb = video.stat().st_size / 2 ** 20
    per_min = 60.0 / args.seconds
    ref = feats["official"]
    rows = []
    for name, secs in seconds.items():
        f = feats[name]
        cos = (f * ref).sum(1) / (np.linalg.norm(f, axis=1) * np.linalg.norm(ref, axis=1))
        rows.append({"pipeline": name, "s_per_video_minute_median": round(float(np.median(secs)) * per_min, 3),
                     "s_per_video_minute_min": round(min(secs) * per_min, 3),
                     "speedup_vs_official_median": round(float(np.median(seconds["official"]) / np.median(secs)), 2),
                     "max_abs_diff_vs_official": float(np.abs(f - ref).max()),
                     "min_cosine_vs_official": float(cos.min()),
                     "setup_s": setup_s.get(name.removeprefix("tdfast-"))})
        print(rows[-1], flush=True)
    for name, secs in decode_s.items():
        rows.append({"pipeline": f"decode-only-{name}",
                     "s_per_video_minute_median": round(float(np.median(secs)) * per_min, 3),
                     "s_per_video_minute_min": round(min(secs) * per_min, 3)})
        print(rows[-1], flush=True)
    setup = {**vars(args), "video": f"1280x720 30 fps H.264 (libx264 veryfast, {args.bit_rate} bit/s), {args.seconds} s, "
                                    f"{size_mb:.1f} MB, {ref.shape[0]} clips",
             "clip": "random ViT-B/32-sized weights (float16 values, run in float32)",
             "command": "python " + " ".join(sys.argv), "versions": decoder_versions(),
             "note": "shared 2-core machine (other jobs ran alongside): ratios within this run"}
    record = make_record("video", "video file -> CLIP image features per 2 s clip, seconds per minute "
                         "of video, median and min of interleaved rounds", machine_info("cpu"), setup, rows)
    write_record(record, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
