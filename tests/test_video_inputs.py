"""Raw-video inputs: CLIP weight files read safely, bad files and sentences rejected with clear errors."""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("av", reason="the video extra (PyAV) is not installed")

from tdfast import InputError  # noqa: E402
from tdfast.video.clip_model import ClipText, ClipVision, build_towers  # noqa: E402
from tdfast.video.clip_weights import read_clip_state_dict  # noqa: E402
from tdfast.video.decode import iter_frames, output_size, probe, read_frames  # noqa: E402
from tdfast.video.synthetic import random_clip_state_dict, write_video  # noqa: E402

SMALL = dict(vision_width=64, vision_layers=1, text_width=64, text_layers=1, vocab_size=500, embed_dim=32)


class _OpenAINames(nn.Module):
    """Both towers under OpenAI CLIP's attribute names, to trace into a TorchScript archive."""

    def __init__(self, vision: ClipVision, text: ClipText) -> None:
        super().__init__()
        self.visual = vision
        self.token_embedding, self.positional_embedding = text.token_embedding, text.positional_embedding
        self.transformer, self.ln_final = text.transformer, text.ln_final
        self.register_buffer("input_resolution", torch.tensor(224))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)


def test_torchscript_archive_reads_without_running_it(tmp_path):
    sd = random_clip_state_dict(1, **SMALL)
    vision, text, _ = build_towers(sd, "random")
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.save(torch.jit.trace(_OpenAINames(vision, text).half(), torch.zeros(1, 3, 224, 224).half(),
                                   check_trace=False), str(path))
    read = read_clip_state_dict(path)
    for k in ("visual.conv1.weight", "visual.proj", "transformer.resblocks.0.attn.in_proj_weight",
              "token_embedding.weight", "ln_final.bias"):
        assert read[k].dtype == torch.float16 and torch.equal(read[k], sd[k]), k
    assert int(read["input_resolution"]) == 224


def test_archive_naming_other_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps(Evil(), protocol=2))
        z.writestr("evil/constants.pkl", pickle.dumps(()))
    with pytest.raises(InputError, match=r"refused: the archive names (__builtin__|builtins)\.print"):
        read_clip_state_dict(path)


def test_state_dict_and_safetensors_files(tmp_path):
    from safetensors.torch import save_file

    sd = random_clip_state_dict(2, **SMALL)
    torch.save(sd, tmp_path / "sd.pt")
    save_file(sd, tmp_path / "sd.safetensors")
    for name in ("sd.pt", "sd.safetensors"):
        read = read_clip_state_dict(tmp_path / name)
        assert torch.equal(read["visual.proj"], sd["visual.proj"])


def test_missing_weights_say_where_they_come_from(tmp_path):
    with pytest.raises(InputError, match=r"no such file .*ViT-B-32\.pt"):
        read_clip_state_dict(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt: not a CLIP weights file"):
        read_clip_state_dict(tmp_path / "junk.pt")


def test_wrong_shapes_and_resnet_are_named():
    sd = random_clip_state_dict(3, **SMALL)
    sd["visual.ln_post.weight"] = torch.zeros(7)
    with pytest.raises(InputError, match=r"visual\.ln_post\.weight has shape \(7,\), expected \(64,\)"):
        build_towers(sd, "f.pt")
    del sd["visual.proj"]
    with pytest.raises(InputError, match="ResNet CLIPs are not supported"):
        build_towers(sd, "f.pt")


def test_bad_video_files(tmp_path):
    with pytest.raises(InputError, match="video: no such file"):
        probe(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="the file is empty"):
        read_frames(tmp_path / "empty.mp4")
    (tmp_path / "text.mp4").write_bytes(b"hello, I am not a video" * 100)
    with pytest.raises(InputError, match="not a readable video file"):
        read_frames(tmp_path / "text.mp4")


def test_sampling_follows_the_official_loader(tmp_path):
    path = write_video(tmp_path / "v.mp4", 9.0, fps=25, width=96, height=160, seed=4)
    info = probe(path)
    assert (info.width, info.height, info.frames) == (96, 160, 225) and abs(info.duration - 9.0) < 0.05
    assert output_size(160, 96, 224) == (373, 224)  # portrait: width to 224, height int(160 * 224 / 96)
    frames = read_frames(path)
    assert frames.shape == (5, 224, 224, 3) and frames.dtype == np.uint8  # t = 0, 2, 4, 6, 8 s
    short = write_video(tmp_path / "s.mp4", 1.5, fps=24, width=64, height=64)
    assert len(list(iter_frames(short))) == 3  # < 2.1 s: fps = 2 / max(int(1.5), 1) = 2 -> 3 frames


def test_skipping_unused_h264_frames_changes_no_frame(tmp_path):
    """The fixture videos (x264, B-frames) and one with a GOP every second (whole GOPs and
    GOP tails left out) give the same frames with and without skipping."""
    import av

    from tdfast.video.decode import _unused_packets

    fixtures = Path(__file__).parent / "fixtures" / "video"
    short_gops = write_video(tmp_path / "g.mp4", 12.0, fps=30, width=96, height=64, scene_seconds=1.0, seed=2)
    skipped = {}
    for path in (fixtures / "video_1.mp4", fixtures / "video_2.mp4", fixtures / "video_5.mp4", short_gops):
        skipped[path.name] = len(_unused_packets(av, path, 0.5))
        assert np.array_equal(read_frames(path), read_frames(path, skip_unused=False)), path.name
    assert sum(skipped.values()) > 100  # the plan does leave frames out
    # beyond the non-reference frames, reference frames in GOP tails are left out too
    # (this file: 256 of 360 frames skipped, 152 of them non-reference)
    from tdfast.video.frame_plan import is_reference, nal_length_size

    with av.open(str(short_gops)) as c:
        s = c.streams.video[0]
        size = nal_length_size(s.codec_context.name, s.codec_context.extradata)
        non_reference = sum(not is_reference(bytes(p), size) for p in c.demux(s) if p.size)
    assert skipped["g.mp4"] > non_reference + 50


def test_gop_plan_keeps_exactly_what_kept_frames_need():
    """Decode order I0 P3 B1 B2 | IDR6 P9 b7 b8 | IDR12 P15: 1 is kept, 7 is kept."""
    from tdfast.video.frame_plan import unused_packets

    ref, nonref = True, False
    packets = [(0, ref, True), (3, ref, False), (1, ref, False), (2, nonref, False),  # B1 a reference B
               (6, ref, True), (9, ref, False), (7, nonref, False), (8, nonref, False),
               (12, ref, True), (15, ref, False)]
    # GOP 1: 0 and 3 are decoded before the kept 1 (references it may use); the non-reference 2
    # follows it. GOP 2: 6, 9 precede the kept 7; 8 is after it. GOP 3 has no kept frame.
    assert unused_packets(packets, {1, 7}) == {2, 8, 12, 15}
    assert unused_packets(packets, {2}) == {6, 9, 7, 8, 12, 15}  # the kept non-reference 2 is decoded
    assert unused_packets(packets, set()) == {pts for pts, _, _ in packets}


def test_h264_reference_flags():
    from tdfast.video.frame_plan import is_idr, is_reference, nal_length_size

    def nal(header: int, body: bytes = b"\x88\x84") -> bytes:
        return (1 + len(body)).to_bytes(4, "big") + bytes([header]) + body

    assert nal_length_size("h264", bytes([1, 100, 0, 31, 0xFF, 0xE1, 0])) == 4
    assert nal_length_size("hevc", bytes([1, 100, 0, 31, 0xFF, 0xE1, 0])) is None
    assert nal_length_size("h264", bytes([0, 0, 0, 1, 0x67])) is None  # Annex B: not planned
    assert is_reference(nal(0x65), 4)  # IDR slice, nal_ref_idc 3
    assert not is_reference(nal(0x09) + nal(0x01), 4)  # access unit delimiter + non-ref slice
    assert is_reference(nal(0x01) + nal(0x21), 4)  # a second slice is a reference
    assert is_reference(nal(0x06), 4)  # no slice at all: decoded, not guessed
    assert is_idr(nal(0x67) + nal(0x68) + nal(0x65), 4)  # SPS, PPS, IDR slice
    assert not is_idr(nal(0x41), 4) and not is_idr(nal(0x09) + nal(0x01), 4)  # P slice, non-ref slice


def test_decoding_thread_stops_when_encoding_fails(tmp_path):
    """An error in the image tower ends the background decoder (no thread left blocked)."""
    import threading

    from tdfast.video.encode import _batches

    path = write_video(tmp_path / "v.mp4", 20.0, fps=10, width=64, height=48)
    before = threading.active_count()
    batches = _batches(iter_frames(path), 2)
    assert next(batches).shape == (2, 224, 224, 3)
    batches.close()  # what an exception in the consumer does to the generator
    for _ in range(50):
        if threading.active_count() <= before:
            break
        threading.Event().wait(0.1)
    assert threading.active_count() <= before
