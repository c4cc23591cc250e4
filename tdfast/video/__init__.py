"""Raw video in: decode video files, CLIP-encode frames and sentences (QD-DETR's run_on_video).

Needs the ``video`` extra (PyAV, instant-clip-tokenizer, ftfy): ``pip install 'tdfast[video]'``.
Modules: ``decode`` (frames per clip), ``clip_weights`` (safe reading of CLIP files),
``clip_model`` (the towers), ``tokenize``, ``image_backends``, ``encode`` (``ClipEncoder``),
``predict`` (files + sentences -> moments), ``synthetic`` (test videos and random weights).
"""
from __future__ import annotations

from tdfast.video.encode import ClipEncoder
from tdfast.video.predict import predict_video_files

__all__ = ["ClipEncoder", "predict_video_files"]
