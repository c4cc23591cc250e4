"""Official QD-DETR / TD-DETR checkpoints -> tdfast checkpoint directories.

An official checkpoint is the file the official training code writes with ``torch.save``:
a dict with ``model`` (the state dict), ``opt`` (the ``argparse.Namespace`` of its options),
``epoch`` and optimizer state. It is read with ``torch.load(weights_only=True)``, allowing
only ``argparse.Namespace`` beyond the default safe types, so a checkpoint never runs code.

The family is told by the keys (TD-DETR has a dynamics attention ``self_attn_flow`` and a
start token ``video_embed``), the config comes from ``opt``, and every official tensor is
either mapped to exactly one tdfast tensor (the fused ``in_proj`` of
``nn.MultiheadAttention`` splits into q/k/v) or is one of the few the official forward never
reads (``UNUSED``). Anything else, a missing tensor, or a shape that disagrees is an
``InputError`` naming it.
"""
from __future__ import annotations

import argparse
import math
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tdfast.atomic import clean_stale
from tdfast.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from tdfast.commit import finish_commit
from tdfast.errors import InputError
from tdfast.model.config import TDDETRConfig
from tdfast.model.tddetr import TDDETR
from tdfast.training.config import RunConfig, TrainConfig

# (official key pattern, tdfast key template); the first full match wins.
RENAMES: list[tuple[str, str]] = [
    (r"input_vid_proj\.(\d+)\.LayerNorm\.(weight|bias)", r"video_proj.\1.norm.\2"),
    (r"input_vid_proj\.(\d+)\.net\.1\.(weight|bias)", r"video_proj.\1.linear.\2"),
    (r"input_txt_proj\.(\d+)\.LayerNorm\.(weight|bias)", r"text_proj.\1.norm.\2"),
    (r"input_txt_proj\.(\d+)\.net\.1\.(weight|bias)", r"text_proj.\1.linear.\2"),
    (r"global_rep_token", "saliency_token"),
    (r"global_rep_pos", "saliency_pos"),
    (r"saliency_proj1\.(weight|bias)", r"saliency_proj_clip.\1"),
    (r"saliency_proj2\.(weight|bias)", r"saliency_proj_token.\1"),
    (r"query_embed\.weight", "anchors"),
    (r"video_embed\.weight", "start_token"),
    (r"span_embed\.layers\.(\d+)\.(weight|bias)", r"span_head.layers.\1.\2"),
    (r"class_embed\.(weight|bias)", r"class_head.\1"),
    # T2V / TD layers
    (r"transformer\.t2v_encoder\.layers\.(\d+)\.self_attn\.(in_proj_\w+|out_proj\.\w+)",
     r"td_layers.\1.cross.attn.\2"),
    (r"transformer\.t2v_encoder\.layers\.(\d+)\.self_attn_flow\.(in_proj_\w+|out_proj\.\w+)",
     r"td_layers.\1.cross.attn_dyn.\2"),
    (r"transformer\.t2v_encoder\.layers\.(\d+)\.flow_proj\.(\d+)\.LayerNorm\.(weight|bias)",
     r"td_layers.\1.cross.flow_proj.\2.norm.\3"),
    (r"transformer\.t2v_encoder\.layers\.(\d+)\.flow_proj\.(\d+)\.net\.1\.(weight|bias)",
     r"td_layers.\1.cross.flow_proj.\2.linear.\3"),
    (r"transformer\.t2v_encoder\.layers\.(\d+)\.(linear1|linear2|activation)\.(weight|bias)",
     r"td_layers.\1.ffn.\2.\3"),
    (r"transformer\.t2v_encoder\.layers\.(\d+)\.(norm1|norm2)\.(weight|bias)", r"td_layers.\1.\2.\3"),
    # encoder
    (r"transformer\.encoder\.layers\.(\d+)\.self_attn\.(in_proj_\w+|out_proj\.\w+)",
     r"encoder_layers.\1.attn.\2"),
    (r"transformer\.encoder\.layers\.(\d+)\.(linear1|linear2|activation)\.(weight|bias)",
     r"encoder_layers.\1.ffn.\2.\3"),
    (r"transformer\.encoder\.layers\.(\d+)\.(norm1|norm2)\.(weight|bias)", r"encoder_layers.\1.\2.\3"),
    # decoder
    (r"transformer\.decoder\.layers\.(\d+)\.(sa|ca)_(q|k)(content|pos)_proj\.(weight|bias)",
     r"decoder.layers.\1.\2_\3_\4.\5"),
    (r"transformer\.decoder\.layers\.(\d+)\.(sa|ca)_v_proj\.(weight|bias)", r"decoder.layers.\1.\2_v.\3"),
    (r"transformer\.decoder\.layers\.(\d+)\.ca_qpos_sine_proj\.(weight|bias)",
     r"decoder.layers.\1.ca_q_sine.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"decoder.layers.\1.sa_out.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.cross_attn\.out_proj\.(weight|bias)", r"decoder.layers.\1.ca_out.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.(linear1|linear2|activation)\.(weight|bias)",
     r"decoder.layers.\1.ffn.\2.\3"),
    (r"transformer\.decoder\.layers\.(\d+)\.(norm1|norm2|norm3)\.(weight|bias)", r"decoder.layers.\1.\2.\3"),
    (r"transformer\.decoder\.(norm|query_scale|ref_point_head|ref_anchor_head|bbox_embed)\.(.+)",
     r"decoder.\1.\2"),
]

# Official tensors that the official forward never reads (with use_txt_pos and
# contrastive_align_loss off, which the config checks enforce): nothing to map.
UNUSED = (r"txt_position_embed\..+", r"contrastive_align_projection_(query|txt|vid)\.(weight|bias)")

KIND_WORDS = {int: "a whole number", float: "a finite number", bool: "true or false"}
MAX_BUCKET_LEN = 256  # clips: official max_v_l beyond this (Charades' 100000) is no bucket limit


@dataclass
class Converted:
    """A checkpoint read and mapped: the tdfast config, the state dict, and what was done."""

    family: str  # "td_detr" or "qd_detr"
    config: TDDETRConfig
    training: TrainConfig  # the run's official training settings (not part of the checkpoint)
    state_dict: dict[str, Tensor]
    epoch: Any
    unused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load_official(path: str | Path) -> dict[str, Any]:
    """Read an official checkpoint file without running any code it may contain."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- the weights-only unpickler raises KeyError, EOFError, ...
        raise InputError(f"{path}: {describe_unreadable(path, e)}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise InputError(f"{path}: expected the official format, a dict with a 'model' state dict")
    if not isinstance(ckpt.get("opt"), argparse.Namespace):
        raise InputError(f"{path}: expected the official format, with 'opt' an argparse.Namespace "
                         f"(got {type(ckpt.get('opt')).__name__})")
    return ckpt


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
PICKLE_PROTO = 0x80  # the first byte of a legacy torch.save / pickle file


def describe_unreadable(path: Path, error: Exception) -> str:
    """What ``path`` is, in words, when ``torch.load(weights_only=True)`` failed on it with ``error``.

    Never passes PyTorch's advice to load with ``weights_only=False`` on (that runs the file's
    code), nor its terminal escape codes: it says what the file is, and for pickled objects
    which globals it would need.
    """
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "an empty file (0 bytes), not a checkpoint"
    if isinstance(error, pickle.UnpicklingError):
        globals_ = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(error))))
        if globals_:
            return (f"refused as unsafe: loading it needs the Python globals {', '.join(globals_)}; tdfast "
                    f"reads only tensors, plain data and argparse.Namespace, so no code in a checkpoint runs")
    if not head.startswith(ZIP_MAGIC) and head[0] != PICKLE_PROTO:
        return f"not a PyTorch checkpoint (it starts with {head!r})"
    if isinstance(error, pickle.UnpicklingError):
        return "not a checkpoint tdfast can read: pickled data beyond tensors and plain Python values"
    return f"a truncated or damaged PyTorch checkpoint ({type(error).__name__})"


def detect_family(keys: set[str], source: str) -> str:
    """``td_detr`` / ``qd_detr`` from the state-dict keys; InputError for anything else."""
    if "transformer.t2v_encoder.layers.0.self_attn.in_proj_weight" not in keys:
        raise InputError(f"{source}: not an official QD-DETR or TD-DETR checkpoint (no "
                         f"'transformer.t2v_encoder.layers.0.self_attn.in_proj_weight')")
    if "video_embed.weight" in keys or any(".self_attn_flow." in k for k in keys):
        return "td_detr"
    return "qd_detr"


def config_from_opt(opt: argparse.Namespace, family: str, source: str) -> tuple[RunConfig, list[str]]:
    """The network and training settings an official ``opt`` describes, and notes on what was
    adapted."""
    o, notes = vars(opt), []
    missing = object()

    def get(name: str, kind: type | None = None, default: Any = missing) -> Any:
        """``opt.<name>`` as ``kind`` (int: a whole number); InputError naming it if absent or not one."""
        if name not in o and default is missing:
            raise InputError(f"{source}: opt has no '{name}', which the official code always saves")
        value = o.get(name, default)
        if kind is None:
            return value
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = ok and float(value).is_integer()
        if not ok:
            raise InputError(f"{source}: opt.{name} = {value!r}: expected {KIND_WORDS[kind]}")
        return kind(value)

    unsupported = {
        "pre_norm": (get("pre_norm"), False), "use_txt_pos": (o.get("use_txt_pos", False), False),
        "span_loss_type": (o.get("span_loss_type", "l1"), "l1"),
        "position_embedding": (o.get("position_embedding", "sine"), "sine"),
        "a_feat_dir": (o.get("a_feat_dir"), None),
    }
    for name, (value, supported) in unsupported.items():
        if value != supported:
            raise InputError(f"{source}: opt.{name} = {value!r} is not supported by tdfast "
                             f"(only {supported!r})")
    ctx = str(get("ctx_mode"))
    if "video" not in ctx:
        raise InputError(f"{source}: opt.ctx_mode = {ctx!r}: tdfast needs video features")
    use_tef = "tef" in ctx
    max_v_l = get("max_v_l", int)
    if max_v_l > MAX_BUCKET_LEN:
        notes.append(f"max_v_l {max_v_l} is no bucket limit: max_video_len = {MAX_BUCKET_LEN}; "
                     f"longer videos go through sliding windows")
    td = family == "td_detr"
    lw_saliency = get("lw_saliency", float, 1.0)
    if (o.get("set_cost_span"), o.get("set_cost_giou")) != (o.get("span_loss_coef"), o.get("giou_loss_coef")):
        notes.append("matching costs differ from loss weights; tdfast uses one weight for both: "
                     "the loss weights were taken")
    values = dict(
        video_dim=get("v_feat_dim", int) - (2 if use_tef else 0), text_dim=get("t_feat_dim", int),
        max_video_len=min(max_v_l, MAX_BUCKET_LEN), max_query_len=get("max_q_l", int),
        clip_len=get("clip_length", float), use_tef=use_tef,
        normalize_video=not o.get("no_norm_vfeat", False), normalize_text=not o.get("no_norm_tfeat", False),
        hidden_dim=get("hidden_dim", int), num_heads=get("nheads", int),
        ffn_dim=get("dim_feedforward", int), num_td_layers=get("enc_layers", int),
        num_encoder_layers=get("enc_layers", int), num_decoder_layers=get("dec_layers", int),
        num_queries=get("num_queries", int), num_input_proj=get("n_input_proj", int),
        dropout=get("dropout", float), input_dropout=get("input_dropout", float),
        aux_loss=bool(o.get("aux_loss", True)), use_tdem=td, use_vsdc=td,
        alpha=get("alpha", float, 0.7), beta=get("beta", float, 0.7),
        lr=get("lr", float, 1e-4), weight_decay=get("wd", float, 1e-4),
        batch_size=get("bsz", int, 32), epochs=get("n_epoch", int, 200),
        lr_drop=get("lr_drop", int, 400), grad_clip=get("grad_clip", float, 0.1),
        early_stop_patience=max(get("max_es_cnt", int, 200), 0),
        eval_protocol="charades" if o.get("dset_name") in ("charades", "charades_cg", "tacos") else "qvhighlights",
        w_span_l1=get("span_loss_coef", float, 10.0), w_span_giou=get("giou_loss_coef", float, 1.0),
        w_class=get("label_loss_coef", float, 4.0), eos_coef=get("eos_coef", float, 0.1),
        saliency_margin=get("saliency_margin", float, 0.2),
        w_saliency_margin=lw_saliency, w_saliency_contrast=lw_saliency, w_negative=lw_saliency,
    )
    try:
        return RunConfig.from_dict(values), notes
    except InputError as e:
        raise InputError(f"{source}: opt describes a network tdfast can't build: {e}") from None


def map_state_dict(official: dict[str, Any], family: str, source: str) -> tuple[dict[str, Tensor], list[str]]:
    """Official tensors -> tdfast names (q/k/v split out of ``in_proj``); returns (mapped, unused)."""
    mapped: dict[str, Tensor] = {}
    unused: list[str] = []
    for key, value in official.items():
        if not isinstance(value, Tensor):
            raise InputError(f"{source}: model[{key!r}] is a {type(value).__name__}, not a tensor")
        if any(re.fullmatch(p, key) for p in UNUSED):
            unused.append(key)
            continue
        new = next((re.sub(p, r, key) for p, r in RENAMES if re.fullmatch(p, key)), None)
        if new is None:
            raise InputError(f"{source}: official tensor {key!r} has no place in the tdfast "
                             f"{family} network")
        if new.endswith(("in_proj_weight", "in_proj_bias")):
            base, kind = new.rsplit(".", 1)
            part = "weight" if kind == "in_proj_weight" else "bias"
            if value.shape[0] % 3:
                raise InputError(f"{source}: {key} has shape {tuple(value.shape)}, not 3 stacked projections")
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                mapped[f"{base}.{name}.{part}"] = chunk
        elif new == "start_token":
            mapped[new] = value.reshape(-1)  # nn.Embedding(1, D) -> [D]
        else:
            mapped[new] = value
    return mapped, unused


def read_official(path: str | Path) -> Converted:
    """Read an official checkpoint and map it onto a freshly built tdfast model's names/shapes."""
    ckpt = load_official(path)
    source = str(path)
    family = detect_family(set(ckpt["model"]), source)
    run, notes = config_from_opt(ckpt["opt"], family, source)
    config = run.model
    mapped, unused = map_state_dict(ckpt["model"], family, source)
    check_layer_counts(config, mapped, source)  # before building: 10**7 layers would take minutes
    with torch.device("meta"):  # names and shapes only, no memory
        expected = {k: v.shape for k, v in TDDETR(config).state_dict().items()}
    missing = sorted(set(expected) - set(mapped))
    if missing:
        raise InputError(f"{source}: the {family} network needs tensors the checkpoint lacks "
                         f"(tdfast names): {missing}")
    extra = sorted(set(mapped) - set(expected))
    if extra:
        raise InputError(f"{source}: tensors with no place in a network of this config "
                         f"(tdfast names): {extra}")
    for k, shape in expected.items():
        if mapped[k].shape != shape:
            raise InputError(f"{source}: tensor {k} has shape {tuple(mapped[k].shape)}, the config "
                             f"in opt needs {tuple(shape)}")
        if not mapped[k].is_floating_point():
            raise InputError(f"{source}: tensor {k} has dtype {mapped[k].dtype}, expected floating point")
        if not bool(torch.isfinite(mapped[k]).all()):
            raise InputError(f"{source}: tensor {k} holds NaN or inf values; a checkpoint with them "
                             f"predicts nothing (save one from before the training diverged)")
    return Converted(family, config, run.training, {k: mapped[k].float().contiguous() for k in expected},
                     ckpt.get("epoch"), unused, notes)


# config field -> (tdfast tensor-name prefix of its layers, the opt field that sets it)
LAYER_PREFIXES = {"num_td_layers": ("td_layers.", "enc_layers"),
                  "num_encoder_layers": ("encoder_layers.", "enc_layers"),
                  "num_decoder_layers": ("decoder.layers.", "dec_layers"),
                  "num_input_proj": ("video_proj.", "n_input_proj")}


def check_layer_counts(config: TDDETRConfig, mapped: dict[str, Tensor], source: str) -> None:
    """InputError unless each layer count of ``config`` is the number of layers the tensors hold."""
    for name, (prefix, opt_name) in LAYER_PREFIXES.items():
        found = {int(m.group(1)) for k in mapped if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
        held = max(found) + 1 if found else 0
        if held != getattr(config, name):
            raise InputError(f"{source}: opt.{opt_name} = {getattr(config, name)}, but the checkpoint "
                             f"holds {held} such layers ({prefix}*)")


def convert_official(path: str | Path, out: str | Path) -> Path:
    """Convert an official QD-DETR / TD-DETR checkpoint file into the checkpoint directory ``out``.

    ``out`` must not exist or be an empty directory (nothing is overwritten). The two files
    appear together (``tdfast.commit``): a conversion killed midway leaves either nothing of
    its own in ``out`` -- the rerun proceeds -- or the whole checkpoint. Returns the path.
    """
    check_new_dir(out)
    return save_converted(read_official(path), out)


def check_new_dir(out: str | Path) -> None:
    """InputError unless ``out`` names a new directory or an empty one (a conversion never
    overwrites). What a killed conversion staged there is tdfast's own and is removed first."""
    if str(out) == "":
        raise InputError("--out: expected a directory path, got an empty string (it would mean the "
                         "current directory)")
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise InputError(f"--out {str(out)!r}: a symbolic link to a missing target "
                         f"({os.readlink(out)!r}); give a new directory")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r}: exists and is not an empty directory (it is a file); "
                         f"choose a new one")
    if out.is_dir():
        finish_commit(out)  # a conversion killed after its commit point: its checkpoint is whole
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            clean_stale(out / name)  # staged by a conversion killed before it
        if any(out.iterdir()):
            raise InputError(f"--out {str(out)!r}: exists and is not an empty directory; choose a new one")


def save_converted(conv: Converted, out: str | Path) -> Path:
    """Build the tdfast model from a read checkpoint and write it as a checkpoint directory."""
    model = TDDETR(conv.config)
    model.load_state_dict(conv.state_dict, strict=True)
    return model.save_pretrained(out)


def summary(conv: Converted) -> str:
    """One screen: family, the config's network fields, what was mapped and dropped."""
    c = conv.config
    name = {"td_detr": "TD-DETR", "qd_detr": "QD-DETR"}[conv.family]
    lines = [
        f"family      {name} (epoch {conv.epoch})",
        f"features    video {c.video_dim}{' + 2 TEF' if c.use_tef else ''}, text {c.text_dim}, "
        f"clip {c.clip_len:g} s",
        f"network     hidden {c.hidden_dim}, heads {c.num_heads}, ffn {c.ffn_dim}, layers "
        f"TD {c.num_td_layers} / encoder {c.num_encoder_layers} / decoder {c.num_decoder_layers}, "
        f"queries {c.num_queries}" + (f", beta {c.beta:g}" if c.use_tdem else ", no TDEM"),
        f"tensors     {len(conv.state_dict)} tdfast tensors "
        f"({sum(t.numel() for t in conv.state_dict.values()):,} numbers)",
    ]
    if conv.unused:
        lines.append(f"not used    {len(conv.unused)} official tensors the official forward never "
                     f"reads: {', '.join(sorted({k.split('.')[0] for k in conv.unused}))}")
    lines += [f"note        {n}" for n in conv.notes]
    return "\n".join(lines)
