"""Which frames the sampler keeps, known before decoding, so frames nothing needs are not decoded.

One frame per 2 s clip is kept out of 50 to 60; a kept frame needs the reference frames it
is predicted from, and nothing else. Two kinds of H.264 frames are therefore left out of
decoding without changing any kept frame:

- frames no other frame refers to (``nal_ref_idc == 0`` in each slice NAL header: usually
  half of the B-frames), as FFmpeg's ``skip_frame=nonref`` does;
- every frame decoded after the last kept frame of its GOP and before the next IDR frame.
  A frame only refers to frames decoded before it, and nothing after an IDR frame refers
  to anything before it, so no kept frame can need them. A GOP without a kept frame
  (shorter than a clip) is left out whole.

Which frames the ``fps`` filter keeps depends only on the timestamps, which the container
gives without decoding: ``kept_timestamps`` runs the very same filter on one tiny
stand-in frame per packet, each carrying its index, and reads back which ones it kept.
The decoder then skips the packets ``unused_packets`` names, and the real filter gets a
stand-in with the same timestamp in their place (never kept), so it sees exactly the
timestamps it would have seen.

Only H.264 in length-prefixed form (MP4, MOV, MKV: ``avcC`` extradata) is planned; other
codecs decode every frame.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

H264_SLICE_TYPES = (1, 5)  # coded slice of a non-IDR / IDR picture
H264_IDR = 5


def nal_length_size(codec_name: str, extradata: bytes | None) -> int | None:
    """Bytes of each NAL's length prefix for avcC H.264, else None (not planned)."""
    if codec_name != "h264" or not extradata or len(extradata) < 7 or extradata[0] != 1:
        return None
    return (extradata[4] & 3) + 1


def slice_headers(data: bytes, length_size: int) -> list[int]:
    """The header byte (``nal_ref_idc << 5 | nal_unit_type``) of each slice NAL of an access unit."""
    i, headers = 0, []
    while i + length_size < len(data):
        n = int.from_bytes(data[i: i + length_size], "big")
        header = data[i + length_size]
        if header & 0x1F in H264_SLICE_TYPES:
            headers.append(header)
        i += length_size + n
    return headers


def is_reference(data: bytes, length_size: int) -> bool:
    """True unless every slice NAL of this H.264 access unit has ``nal_ref_idc == 0``."""
    headers = slice_headers(data, length_size)
    return not headers or any(h >> 5 for h in headers)  # no slice found: don't guess, decode it


def is_idr(data: bytes, length_size: int) -> bool:
    """True for an IDR picture: no frame decoded after it refers to a frame before it."""
    return any(h & 0x1F == H264_IDR for h in slice_headers(data, length_size))


def unused_packets(packets: list[tuple[int, bool, bool]], kept: set[int]) -> set[int]:
    """pts of the packets no kept frame needs, from ``(pts, reference, idr)`` in decode order.

    Walking backwards: a packet is needed if it is kept, or if it is a reference frame and a
    kept frame follows it before the next IDR frame (see the module docstring)."""
    unused: set[int] = set()
    kept_later = False  # a kept frame follows in this GOP
    for pts, reference, idr in reversed(packets):
        if pts in kept:
            kept_later = True
        elif not (reference and kept_later):
            unused.add(pts)
        if idr:
            kept_later = False
    return unused


def kept_timestamps(av, timestamps: list[tuple[int, int]], time_base: Fraction, fps: float) -> set[int]:  # noqa: ANN001
    """The pts (of ``timestamps``: (pts, duration) in presentation order) that ``fps=<fps>``
    passes on, found by running that filter on 16x16 stand-in frames that carry their index."""
    graph = av.filter.Graph()
    nodes = [graph.add_buffer(width=16, height=16, format="gray", time_base=time_base),
             graph.add("fps", f"fps={fps!r}"), graph.add("buffersink")]
    for a, b in zip(nodes, nodes[1:]):
        a.link_to(b)
    graph.configure()
    kept: set[int] = set()

    def drain() -> None:
        while True:
            try:
                frame = graph.vpull()
            except (av.BlockingIOError, av.EOFError):
                return
            kept.add(int(frame.to_ndarray()[0, :4].astype(np.uint32) @ (256 ** np.arange(4, dtype=np.uint32))))

    for i, (pts, duration) in enumerate(timestamps):
        img = np.zeros((16, 16), np.uint8)
        img[0, :4] = np.frombuffer(np.uint32(i).tobytes(), np.uint8)  # little-endian index
        frame = av.VideoFrame.from_ndarray(img, format="gray")
        frame.pts, frame.time_base, frame.duration = pts, time_base, duration
        graph.vpush(frame)
        drain()
    graph.vpush(None)
    drain()
    return {timestamps[i][0] for i in kept}
