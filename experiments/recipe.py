"""The paper-scale recipe of ``docs/recipe.md``, as text, and its run on a stand-in.

``QVH_RECIPE``, ``QVH_ABLATE_RECIPE`` and ``CHARADES_RECIPE`` are the shell blocks the
docs show verbatim (a test keeps them equal). ``run_recipe`` executes such a block line
by line in this process (``tdfast ...`` through ``tdfast.cli.main``, ``python -m zipfile
...`` through ``zipfile.main``), after substituting ``$NAME`` variables. ``write_standin``
writes a small synthetic dataset with the real dims and file layout (SlowFast 2304 + CLIP
512 video columns, 512-d CLIP text tokens, Moment-DETR file names), so::

    python -m tdfast.experiments.recipe DIR [--epochs 1]

runs the train / evaluate / submit / analyze blocks end to end on a stand-in under DIR
(the ablation block is 45 full trainings; its test stubs the training of each run).
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Callable

QVH_RECIPE = r"""tdfast train --preset qvhighlights --set early_stop_patience=0 --epochs $EPOCHS --seed $SEED \
    --train $QVH/data/highlight_train_release.jsonl --val $QVH/data/highlight_val_release.jsonl \
    --video-feats $QVH/features/slowfast_features $QVH/features/clip_features \
    --text-feats $QVH/features/clip_text_features --out $RUNS/qvh_seed$SEED
tdfast predict $RUNS/qvh_seed$SEED --ann $QVH/data/highlight_val_release.jsonl \
    --video-feats $QVH/features/slowfast_features $QVH/features/clip_features \
    --text-feats $QVH/features/clip_text_features --out $RUNS/qvh_seed$SEED/hl_val_submission.jsonl
tdfast eval --submission $RUNS/qvh_seed$SEED/hl_val_submission.jsonl \
    --gt $QVH/data/highlight_val_release.jsonl --out $RUNS/qvh_seed$SEED/hl_val_metrics.json
tdfast predict $RUNS/qvh_seed$SEED --ann $QVH/data/highlight_test_release.jsonl \
    --video-feats $QVH/features/slowfast_features $QVH/features/clip_features \
    --text-feats $QVH/features/clip_text_features --out $RUNS/qvh_seed$SEED/hl_test_submission.jsonl
python -m zipfile -c $RUNS/qvh_seed$SEED/submission.zip \
    $RUNS/qvh_seed$SEED/hl_val_submission.jsonl $RUNS/qvh_seed$SEED/hl_test_submission.jsonl
tdfast analyze spurious $RUNS/qvh_seed$SEED --ann $QVH/data/highlight_val_release.jsonl \
    --video-feats $QVH/features/slowfast_features $QVH/features/clip_features \
    --text-feats $QVH/features/clip_text_features --out $RUNS/qvh_seed$SEED/spurious_val.json
"""

CHARADES_RECIPE = r"""tdfast train --preset charades --set early_stop_patience=0 --epochs $EPOCHS --seed $SEED \
    --train $CHARADES/data/charades_sta_train_tvr_format.jsonl \
    --val $CHARADES/data/charades_sta_test_tvr_format.jsonl \
    --video-feats $CHARADES/features/slowfast_features $CHARADES/features/clip_features \
    --text-feats $CHARADES/features/clip_text_features --out $RUNS/charades_seed$SEED
tdfast predict $RUNS/charades_seed$SEED --ann $CHARADES/data/charades_sta_test_tvr_format.jsonl \
    --video-feats $CHARADES/features/slowfast_features $CHARADES/features/clip_features \
    --text-feats $CHARADES/features/clip_text_features --out $RUNS/charades_seed$SEED/test_preds.jsonl
tdfast eval --mode charades --submission $RUNS/charades_seed$SEED/test_preds.jsonl \
    --gt $CHARADES/data/charades_sta_test_tvr_format.jsonl --out $RUNS/charades_seed$SEED/test_metrics.json
tdfast analyze spurious $RUNS/charades_seed$SEED --ann $CHARADES/data/charades_sta_test_tvr_format.jsonl \
    --video-feats $CHARADES/features/slowfast_features $CHARADES/features/clip_features \
    --text-feats $CHARADES/features/clip_text_features --out $RUNS/charades_seed$SEED/spurious_test.json
"""

# Every Table 4 row, the untrained control and the Table S1 / S2 sweeps, 3 seeds each: 45 runs
# of 220 epochs, so the stand-in test runs it with each run's training replaced by a stub.
QVH_ABLATE_RECIPE = r"""tdfast ablate --preset qvhighlights --set early_stop_patience=0 --epochs 220 --seeds 0,1,2 \
    --alphas paper --betas paper \
    --train $QVH/data/highlight_train_release.jsonl --val $QVH/data/highlight_val_release.jsonl \
    --video-feats $QVH/features/slowfast_features $QVH/features/clip_features \
    --text-feats $QVH/features/clip_text_features --out $RUNS/ablation_qvh
"""

# Moment-DETR / QD-DETR release names: split -> annotation file, and the feature dirs.
QVH_FILES = {"train": "highlight_train_release.jsonl", "val": "highlight_val_release.jsonl",
             "test": "highlight_test_release.jsonl"}
CHARADES_FILES = {"train": "charades_sta_train_tvr_format.jsonl", "test": "charades_sta_test_tvr_format.jsonl"}
FEATURE_DIRS = ("slowfast_features", "clip_features")  # 2304 + 512 columns, in this order
TEXT_DIR = "clip_text_features"


def commands(block: str, env: dict[str, str]) -> list[list[str]]:
    """A recipe block -> argv lists: backslash continuations joined, ``$NAME`` replaced from
    ``env`` (a missing name is a KeyError), each line split like a shell would."""
    lines = block.replace("\\\n", " ").strip().splitlines()
    return [shlex.split(re.sub(r"\$([A-Z_]+)", lambda m: env[m.group(1)], line)) for line in lines]


def run_recipe(block: str, env: dict[str, str], log: Callable[[str], None] = print) -> None:
    """Run every command of ``block`` in this process; RuntimeError on the first that fails."""
    import zipfile

    from tdfast.cli import main

    for argv in commands(block, env):
        log("$ " + shlex.join(argv))
        if argv[0] == "tdfast":
            code = main(argv[1:])
        elif argv[:3] == ["python", "-m", "zipfile"]:
            code = zipfile.main(argv[3:]) or 0
        else:
            raise ValueError(f"recipe command: expected 'tdfast ...' or 'python -m zipfile ...', got {argv}")
        if code:
            raise RuntimeError(f"recipe command failed with exit code {code}: {shlex.join(argv)}")


def write_standin(root: str | os.PathLike, kind: str, num_videos: int = 4, seed: int = 0) -> Path:
    """A synthetic dataset under ``root`` with the real dims and the release file layout.

    kind ``qvhighlights``: 2-s clips, up to 75 of them, an unlabelled test split, files as
    ``QVH_FILES``; ``charades``: 1-s clips, train and labelled test, files as
    ``CHARADES_FILES``. ``num_videos`` per split. Returns ``root``.
    """
    from tdfast.data.synthetic import make_synthetic_dataset

    root = Path(root)
    qvh = kind == "qvhighlights"
    names = QVH_FILES if qvh else CHARADES_FILES
    ds = make_synthetic_dataset(root / ".synthetic", seed=seed, num_train=num_videos,
                                num_val=num_videos if qvh else 0, num_test=num_videos,
                                video_dims=(2304, 512), text_dim=512, clip_len=2.0 if qvh else 1.0,
                                min_clips=20, max_clips=75, test_labels=not qvh)
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "features").mkdir(parents=True, exist_ok=True)
    for split, name in names.items():
        if qvh:
            shutil.move(str(getattr(ds, split)), root / "data" / name)
        else:  # Charades-STA has windows only (the generator's clip ids assume 2-s clips)
            _write_windows_only(getattr(ds, split), root / "data" / name)
    for src, name in zip(ds.video_dirs, FEATURE_DIRS):
        shutil.move(str(src), root / "features" / name)
    shutil.move(str(ds.text_dir), root / "features" / TEXT_DIR)
    shutil.rmtree(ds.root)
    return root


def _write_windows_only(src: Path, dst: Path) -> None:
    """Copy an annotation jsonl without ``relevant_clip_ids`` / ``saliency_scores``."""
    import json

    from tdfast.atomic import atomic_write_bytes

    lines = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    drop = ("relevant_clip_ids", "saliency_scores")
    text = "".join(json.dumps({k: v for k, v in rec.items() if k not in drop}) + "\n" for rec in lines)
    atomic_write_bytes(dst, text.encode("utf-8"))


def run_standin(out_dir: str | os.PathLike, epochs: int = 1, num_videos: int = 4,
                log: Callable[[str], None] = print) -> Path:
    """Both recipes end to end on stand-ins under ``out_dir`` (data in ``qvh/``,
    ``charades/``; runs in ``runs/``). Returns the runs directory."""
    out = Path(out_dir)
    env = {"QVH": str(write_standin(out / "qvh", "qvhighlights", num_videos)),
           "CHARADES": str(write_standin(out / "charades", "charades", num_videos)),
           "RUNS": str(out / "runs"), "EPOCHS": str(epochs), "SEED": "0"}
    run_recipe(QVH_RECIPE, env, log)
    run_recipe(CHARADES_RECIPE, env, log)
    return out / "runs"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tdfast.experiments.recipe",
                                description="Run docs/recipe.md end to end on a synthetic stand-in.")
    p.add_argument("out", help="directory for the stand-in data and runs (new)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--videos", type=int, default=4, help="videos per split")
    args = p.parse_args(argv)
    runs = run_standin(args.out, args.epochs, args.videos)
    print(f"recipe ran end to end; outputs in {runs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
