"""Sample one frame per clip from a video file, as QD-DETR's run_on_video ``VideoLoader`` does.

The official loader runs the ffmpeg binary with the filter chain
``fps=1/clip_len, scale=W:H, crop=S:S:x:y`` to rgb24, where the shorter side is scaled to
S = 224 (the longer one to ``int(long * S / short)``) and the crop is centred
(``x = int((W - S) / 2)``). Videos shorter than ``clip_len + 0.1`` s (by the stream's
duration) are sampled at ``fps = 2 / max(int(duration), 1)`` instead. Here the same filter
chain runs inside PyAV, whose wheel bundles FFmpeg's libraries, so no ffmpeg binary is
needed; the decoder uses frame and slice threads.

Differences from the ffmpeg command line (docs/video.md): it rotates videos that carry a
display-rotation tag, this module does not; and PyAV's bundled FFmpeg may be a different
version from the user's ffmpeg binary, whose scaler can round a pixel value differently.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tdfast.errors import BackendUnavailableError, InputError


def _av():  # noqa: ANN202
    try:
        import av
    except ImportError:
        raise BackendUnavailableError("decoding video files needs PyAV: pip install 'tdfast[video]'") from None
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What the official loader reads with ffprobe, from the first video stream."""

    width: int
    height: int
    duration: float  # seconds; -1 when the stream does not say (as the official loader)
    frames: int  # -1 when unknown


def output_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) after scaling the shorter side to ``size`` (the official ``_get_output_dim``)."""
    if height >= width:
        return int(height * size / width), size
    return size, int(width * size / height)


def sample_rate(info: VideoInfo, clip_len: float) -> float:
    """Frames per second to sample: 1 / clip_len, or the official rule for very short videos."""
    fps = 1.0 / clip_len
    if 0 < info.duration < clip_len + 0.1:
        fps = 2 / max(int(info.duration), 1)
    return fps


def _open(path: str | Path, av):  # noqa: ANN001, ANN202
    p = Path(path)
    if not p.is_file():
        raise InputError(f"video: no such file {str(path)!r}")
    if p.stat().st_size == 0:
        raise InputError(f"video {str(path)!r}: the file is empty")
    try:
        container = av.open(str(p))
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise InputError(f"video {str(path)!r}: not a readable video file ({e})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"video {str(path)!r}: the file has no video stream")
    return container


def _info(stream) -> VideoInfo:  # noqa: ANN001
    cc = stream.codec_context
    if stream.duration is not None and stream.time_base is not None and stream.frames > 0:
        duration, frames = float(stream.duration * stream.time_base), int(stream.frames)
    else:  # the official loader falls back to -1 when ffprobe lacks nb_frames or duration
        duration, frames = -1.0, -1
    return VideoInfo(width=int(cc.width), height=int(cc.height), duration=duration, frames=frames)


def probe(path: str | Path) -> VideoInfo:
    """Size and duration of the first video stream; InputError for a missing, empty or unreadable file."""
    av = _av()
    with _open(path, av) as container:
        return _info(container.streams.video[0])


def iter_frames(path: str | Path, clip_len: float = 2.0, size: int = 224, threads: int = 0,
                skip_unused: bool = True) -> Iterator[np.ndarray]:
    """One [size, size, 3] uint8 RGB frame per clip, in time order, decoded lazily.

    ``threads``: decoder threads (0: FFmpeg picks, one per core). ``skip_unused``: leave
    the H.264 frames that no kept frame needs out of decoding (``frame_plan``: frames
    nothing refers to, and GOP tails after the last kept frame; the frames returned are
    the same). Raises InputError for a missing, empty or undecodable file, or one that
    yields no frame.
    """
    av = _av()
    container = _open(path, av)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads; the output does not depend on them
        stream.codec_context.thread_count = threads
        info = _info(stream)
        if info.width <= 0 or info.height <= 0:
            raise InputError(f"video {str(path)!r}: the video stream has no frame size")
        fps = sample_rate(info, clip_len)
        graph = _sampler(av, stream, fps, *output_size(info.height, info.width, size), size)
        skip = _unused_packets(av, path, fps) if skip_unused else set()
        count = 0
        try:
            for out in _decode(av, container, stream, graph, skip, path):
                count += 1
                yield out
        except av.FFmpegError as e:
            raise InputError(f"video {str(path)!r}: decoding failed after {count} clips ({e})") from None
        if count == 0:
            raise InputError(f"video {str(path)!r}: no frame could be decoded")
    finally:
        container.close()


def _sampler(av, stream, fps: float, height: int, width: int, size: int):  # noqa: ANN001, ANN202
    """The official filter chain: fps, scale, centre crop, rgb24."""
    graph = av.filter.Graph()
    nodes = [graph.add_buffer(template=stream),
             graph.add("fps", f"fps={fps!r}"),
             graph.add("scale", f"{width}:{height}"),
             graph.add("crop", f"{size}:{size}:{int((width - size) / 2.0)}:{int((height - size) / 2.0)}"),
             graph.add("format", "rgb24"),
             graph.add("buffersink")]
    for a, b in zip(nodes, nodes[1:]):
        a.link_to(b)
    graph.configure()
    return graph


def _unused_packets(av, path: str | Path, fps: float) -> set[int]:  # noqa: ANN001
    """pts of the H.264 packets that no kept frame needs (``frame_plan``; empty if not H.264)."""
    from tdfast.video.frame_plan import is_idr, is_reference, kept_timestamps, nal_length_size, unused_packets

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        length_size = nal_length_size(s.codec_context.name, s.codec_context.extradata)
        if length_size is None:
            return set()
        packets = [(p.pts, p.duration or 0, bytes(p)) for p in c.demux(s) if p.size]  # decode order
        if any(pts is None for pts, _, _ in packets):
            return set()
        kept = kept_timestamps(av, sorted((pts, d) for pts, d, _ in packets), s.time_base, fps)
    return unused_packets([(pts, is_reference(data, length_size), is_idr(data, length_size))
                           for pts, _, data in packets], kept)


def _decode(av, container, stream, graph, skip: set[int], path: str | Path) -> Iterator[np.ndarray]:  # noqa: ANN001
    """Decode (leaving out the ``skip`` packets), push through ``graph``, yield its frames.

    A skipped packet's timestamp still reaches the fps filter, on a blank stand-in frame
    pushed in presentation order, so the filter's choices stay the ones it makes on the
    whole stream (it never keeps a stand-in: ``frame_plan`` chose them among the dropped)."""
    pending: list[tuple[int, int]] = []  # skipped (pts, duration), a heap
    standin = av.VideoFrame(stream.codec_context.width, stream.codec_context.height,
                            stream.codec_context.format.name) if skip else None
    last_pts = -2 ** 63  # of the last decoded frame pushed (read by push_standins)

    def push_standins(before: int | None) -> Iterator[np.ndarray]:
        while pending and (before is None or pending[0][0] < before):
            if pending[0][0] < last_pts:  # the decoder gave a later frame first: the filter would differ
                raise RuntimeError(f"video {str(path)!r}: a skipped frame's timestamp comes after a later "
                                   f"decoded frame; decode it with skip_unused=False")
            standin.pts, standin.duration = heapq.heappop(pending)
            standin.time_base = stream.time_base
            graph.vpush(standin)
            yield from _drain(graph, av)

    for packet in container.demux(stream):
        if packet.pts in skip and packet.size:
            heapq.heappush(pending, (packet.pts, packet.duration or 0))
            continue
        for frame in packet.decode():
            if skip and frame.pts is None:
                raise RuntimeError(f"video {str(path)!r}: a decoded frame has no timestamp; "
                                   f"decode it with skip_unused=False")
            yield from push_standins(frame.pts)
            last_pts = frame.pts if frame.pts is not None else last_pts
            graph.vpush(frame)
            yield from _drain(graph, av)
    yield from push_standins(None)
    graph.vpush(None)  # flush: the fps filter emits its last frames at end of stream
    yield from _drain(graph, av)


def _drain(graph, av) -> Iterator[np.ndarray]:  # noqa: ANN001
    while True:
        try:
            frame = graph.vpull()
        except (av.BlockingIOError, av.EOFError):
            return
        yield frame.to_ndarray()  # [S, S, 3] uint8


def read_frames(path: str | Path, clip_len: float = 2.0, size: int = 224, threads: int = 0,
                skip_unused: bool = True) -> np.ndarray:
    """All clips' frames at once: [T, size, size, 3] uint8 (see ``iter_frames``)."""
    return np.stack(list(iter_frames(path, clip_len, size, threads, skip_unused)))
