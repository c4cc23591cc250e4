"""The ``opt`` of checkpoints saved by toolkits that train the official network, as plain data.

The official QD-DETR / TD-DETR code saves ``opt`` as an ``argparse.Namespace``. lighthouse
(line/lighthouse) trains the same QD-DETR network and saves ``opt`` as an
``easydict.EasyDict``, a ``dict`` subclass pickled as: the class, an empty instance, its
items (``SETITEMS``), then a copy of them as attributes (``BUILD``).
``torch.load(weights_only=True)`` may only fill exact ``dict`` / ``OrderedDict`` instances and
set attributes on ``OrderedDict`` ones, so the name ``easydict.EasyDict`` is allow-listed as
``collections.OrderedDict``: the EasyDict comes back as an OrderedDict holding the same
items, without importing easydict or running anything from the file.

lighthouse also trains other DETR families whose networks are not tdfast's; their
checkpoints are refused from ``opt.model_name`` in one line naming the family.
"""
from __future__ import annotations

import argparse
from collections import OrderedDict
from typing import Any

from tdfast.errors import InputError

# What torch.load(weights_only=True) may build beyond tensors and builtins.
SAFE_GLOBALS: list[Any] = [argparse.Namespace, (OrderedDict, "easydict.EasyDict")]

# lighthouse's configs/model/*.yml model_name -> the family's name.
LIGHTHOUSE_FAMILIES = {
    "qd_detr": "QD-DETR", "moment_detr": "Moment-DETR", "cg_detr": "CG-DETR", "eatr": "EaTR",
    "tr_detr": "TR-DETR", "uvcom": "UVCOM", "taskweave": "TaskWeave",
}

# Options lighthouse's QD-DETR never saves because its code fixes them: its
# build_transformer passes normalize_before=False, its build_model never passes use_txt_pos.
LIGHTHOUSE_DEFAULTS = {"pre_norm": False, "use_txt_pos": False}


def official_opt(opt: Any, source: str) -> tuple[argparse.Namespace, str]:
    """A checkpoint's ``opt`` -> (the official-style Namespace, the toolkit that saved it).

    ``argparse.Namespace`` (the official code) is returned as is; an EasyDict read as an
    OrderedDict (lighthouse) must be a QD-DETR run without audio features and gets lighthouse's
    fixed options filled in. Anything else is an InputError naming what was found.
    """
    if isinstance(opt, argparse.Namespace):
        return opt, "official"
    if not isinstance(opt, dict):
        raise InputError(f"{source}: expected 'opt' to be an argparse.Namespace (official QD-DETR / "
                         f"TD-DETR code) or an EasyDict (lighthouse), got {type(opt).__name__}")
    if not all(isinstance(k, str) for k in opt):
        raise InputError(f"{source}: 'opt' has keys that are not names: "
                         f"{sorted(repr(k) for k in opt if not isinstance(k, str))[:5]}")
    name = opt.get("model_name")
    if name is None:
        raise InputError(f"{source}: 'opt' is a dict without 'model_name': not a lighthouse "
                         f"checkpoint, and not the official format (an argparse.Namespace)")
    if name != "qd_detr":
        family = LIGHTHOUSE_FAMILIES.get(name, repr(name))
        raise InputError(f"{source}: a lighthouse {family} checkpoint (opt.model_name = {name!r}); "
                         f"tdfast runs the QD-DETR and TD-DETR networks only")
    if opt.get("a_feat_dirs") or opt.get("a_feat_dim"):
        raise InputError(f"{source}: a lighthouse QD-DETR trained with audio features "
                         f"(opt.a_feat_dirs = {opt.get('a_feat_dirs')!r}); tdfast takes video and "
                         f"text features only")
    return argparse.Namespace(**{**LIGHTHOUSE_DEFAULTS, **opt}), "lighthouse"
