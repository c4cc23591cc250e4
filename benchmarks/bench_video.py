"""Seconds per minute of 720p H.264 video: tdfast's raw-video encoding vs QD-DETR's run_on_video.

    python benchmarks/bench_video.py --official /tmp/official [--seconds 60] [--rounds 5]
        [--out benchmarks/results/video_cpu.json]

What is timed: turning a video file into its CLIP image features (the part of
``localize_moment`` that dominates: decoding plus 4.4 GFLOP per frame in ViT-B/32; the
``stage-`` rows show that the text tower and QD-DETR itself take well under a second), on a
synthetic 1280x720 30 fps H.264 file (``tdfast.video.synthetic.write_video``, scene cuts
every 3 s, pixel noise std 4, x264 veryfast at 3 Mbit/s, a typical 720p stream's rate, so
decoding costs what it does there) with random ViT-B/32-sized CLIP weights (timing does not
depend on the values):

- ``official``: run_on_video's ``ClipFeatureExtractor.encode_video`` (the ffmpeg binary,
  then CLIP's PyTorch model in batches of 60), from the official code in ``--official``
  (see tests/fixtures/gen_video.py for what that folder needs);
- ``tdfast-<backend>``: ``ClipEncoder.encode_video`` with the image tower on each backend
  (PyAV decoding of only the frames the kept ones need, in a background thread; the
  backend's default batch: 8 frames, 4 for int8);
- ``stage-*``: each part alone, to say where the time goes: the official loader's decoding
  and its CLIP on the decoded frames; tdfast's frame plan, its decoding with and without the
  plan, each image tower on the same frames, the text tower for one query, and a
  QD-DETR-sized CLIP-only model (random weights) on the clips and one query.

How far each backend's features are from the official ones is recorded too. Calls
alternate round by round so load changes hit all; the record keeps each one's median and
minimum, and the load average before and after. All threads of the machine are available
to both pipelines (torch's default, FFmpeg's auto threads, ONNX Runtime's default).
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
from tdfast.video.decode import _av, _unused_packets, read_frames
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


def stage_calls(official, encoders: dict[str, ClipEncoder], video: Path) -> dict:  # noqa: ANN001
    """Each part of both pipelines alone (see the module docstring)."""
    from tdfast import Retriever, TDDETR, TDDETRConfig

    frames = read_frames(video)
    pixels = official.video_preprocessor(official.video_loader.read_video_from_file(str(video)))
    first = next(iter(encoders.values()))
    model = TDDETR(TDDETRConfig.from_name("qd-detr", video_dim=first.video_dim, text_dim=first.text_dim)).eval()
    retriever = Retriever(model)
    clips = retriever.prepare_video(first.encode_frames(frames))
    query = retriever.prepare_query(first.encode_text(["a man opens the fridge"])[0])

    def official_clip() -> None:
        with torch.no_grad():
            official.clip_extractor.encode_image(pixels)  # all 30 frames: one of its batches of 60

    def tower(e: ClipEncoder) -> None:
        for i in range(0, len(frames), e.batch_size):
            e.encode_frames(frames[i: i + e.batch_size])

    return {"official-decode": lambda: official.video_loader.read_video_from_file(str(video)),
            "official-clip": official_clip,
            "tdfast-frame-plan": lambda: _unused_packets(_av(), video, 0.5),
            "tdfast-decode": lambda: read_frames(video),
            "tdfast-decode-every-frame": lambda: read_frames(video, skip_unused=False),
            **{f"tdfast-tower-{b}": (lambda e=e: tower(e)) for b, e in encoders.items()},
            "tdfast-text-1-query-per-call": lambda: first.encode_text(["a man opens the fridge"]),
            "qd-detr-1-query-per-call": lambda: retriever.predict([clips], [query])}


def frame_counts(video: Path) -> dict[str, int]:
    """Frames in the file; decoded by tdfast; decoded if only non-reference frames were left out."""
    import av

    from tdfast.video.frame_plan import is_reference, kept_timestamps, nal_length_size

    with av.open(str(video)) as c:
        s = c.streams.video[0]
        size = nal_length_size(s.codec_context.name, s.codec_context.extradata)
        packets = [(p.pts, p.duration or 0, is_reference(bytes(p), size)) for p in c.demux(s) if p.size]
        kept = kept_timestamps(av, sorted((pts, d) for pts, d, _ in packets), s.time_base, 0.5)
    return {"in_file": len(packets), "decoded_by_tdfast": len(packets) - len(_unused_packets(av, video, 0.5)),
            "decoded_skipping_only_non_reference": sum(ref or pts in kept for pts, _, ref in packets)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", required=True, help="folder with the official QD-DETR code")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--bit-rate", type=int, default=3_000_000, help="bits/s of the test video (default 3 Mbps)")
    p.add_argument("--backends", default=",".join(IMAGE_BACKENDS))
    p.add_argument("--out", default="benchmarks/results/video_cpu.json")
    args = p.parse_args(argv)
    load_before = os.getloadavg()
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
        stages = stage_calls(official, encoders, video)
        for fn in stages.values():
            fn()  # warm-up
        stage_s, _ = interleaved_rounds(stages, args.rounds, lambda: None)
        size_mb = video.stat().st_size / 2 ** 20
        frames_decoded = frame_counts(video)
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
    for name, secs in stage_s.items():
        per, unit = (1.0, "s_per_call") if name.endswith("per-call") else (per_min, "s_per_video_minute")
        rows.append({"pipeline": f"stage-{name}", f"{unit}_median": round(float(np.median(secs)) * per, 3),
                     f"{unit}_min": round(min(secs) * per, 3)})
        print(rows[-1], flush=True)
    setup = {**vars(args), "video": f"1280x720 30 fps H.264 (libx264 veryfast, {args.bit_rate} bit/s), {args.seconds} s, "
                                    f"{size_mb:.1f} MB, {ref.shape[0]} clips",
             "clip": "random ViT-B/32-sized weights (float16 values, run in float32)",
             "command": "python " + " ".join(sys.argv), "versions": decoder_versions(),
             "frames_decoded": frames_decoded, "loadavg_before": [round(x, 2) for x in load_before],
             "note": "shared 2-core machine (other jobs ran alongside): ratios within this run"}
    record = make_record("video", "video file -> CLIP image features per 2 s clip, seconds per minute "
                         "of video, median and min of interleaved rounds", machine_info("cpu"), setup, rows)
    write_record(record, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
