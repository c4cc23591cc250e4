"""The training loop: AdamW, grad clip, LR drop, autocast, validation, best / last checkpoints, resume."""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DistributedSampler

from tdfast.data.batch import Batch
from tdfast.data.collate import make_loader
from tdfast.devices import DTYPES, SHORT_DTYPE_NAMES
from tdfast.errors import InputError
from tdfast.model.tddetr import TDDETR
from tdfast.training import run_dir
from tdfast.training.config import RunConfig, TrainConfig
from tdfast.training.criterion import Criterion, loss_norm
from tdfast.training.distributed import (DistContext, all_gather_object, all_reduce_sum, barrier,
                                         broadcast_object, gather_batch)
from tdfast.training.inputs import TrainOptions, TrainSets
from tdfast.training.prepare import prepare_batch, shard
from tdfast.training.rng import batch_generator, capture_rng, restore_rng, seed_dropout, seed_everything
from tdfast.training.validate import selection_score, validate
from tdfast.training.wrapper import TrainingModel

AUTOCAST_DTYPES = {n: None if DTYPES[n] is torch.float32 else DTYPES[n] for n in SHORT_DTYPE_NAMES}  # fp32: no autocast
# Fields that may change when resuming (how long to go on), unlike the model and the recipe.
RESUMABLE_CHANGES = ("epochs", "early_stop_patience")


@dataclass
class Progress:
    """Counters saved with every checkpoint. ``epoch``: epochs finished; ``batch``: batches
    of the current epoch done; ``step``: optimizer steps in all."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best_score: tuple[float, ...] = ()  # validate.selection_score of the best epoch; () before any
    best_epoch: int = 0
    epochs_without_gain: int = 0
    stopped_early: bool = False
    initial_metrics: dict | None = None
    best_metrics: dict | None = None
    log_records: int = 0


@dataclass
class TrainResult:
    """What a run produced. Metrics are the ``brief`` dicts of ``tdfast.eval``."""

    out_dir: Path
    initial_metrics: dict | None  # the untrained model on val (None when not measured)
    best_metrics: dict | None  # the kept checkpoint on val
    best_epoch: int
    epochs: int  # epochs finished
    steps: int
    stopped_early: bool
    history: list[dict] = field(default_factory=list)  # one record per epoch: train loss, val brief


class EpochSampler(DistributedSampler):
    """``DistributedSampler`` (order: a function of seed and epoch) that can start an epoch
    part-way through, for resuming."""

    skip = 0

    def set_position(self, epoch: int, skip: int) -> None:
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return max(self.num_samples - self.skip, 0)


class Trainer:
    """One training run of the network ``run.model`` with the settings ``run.training`` on
    ``sets`` (``TrainSets``), carried out as ``options`` says (``TrainOptions``: out_dir, seed,
    epochs, autocast, save_every_steps, progress, num_workers, eval_before, on_step; ``train``
    applies its device and resume) in the process ``ctx``.

    ``run.training.batch_size`` is the global batch; each of the ``ctx.world_size`` processes
    loads its share. Checkpoints go to ``options.out_dir`` (layout in ``run_dir``): every epoch
    and, with ``save_every_steps`` > 0, every that many steps, so a crash loses at most the
    steps since the last one. ``autocast``: fp32 (none), or bf16 / fp16 (GPU only).
    """

    def __init__(self, run: RunConfig, sets: TrainSets, options: TrainOptions,
                 ctx: DistContext = DistContext()) -> None:
        autocast = options.autocast
        if autocast not in AUTOCAST_DTYPES:
            raise InputError(f"--autocast: expected one of {sorted(AUTOCAST_DTYPES)}, got {autocast!r}")
        if autocast != "fp32" and ctx.device.type != "cuda":
            raise InputError(f"--autocast {autocast}: autocast is for GPU training; use fp32 with "
                             f"--device {ctx.device.type}")
        t = run.training
        if options.epochs is not None:
            t = TrainConfig.from_dict({**t.to_dict(), "epochs": int(options.epochs)})
        config, t = self.config, self.training = run.model, t
        if t.batch_size % ctx.world_size:
            raise InputError(f"batch_size: expected a multiple of the number of processes "
                             f"({ctx.world_size}), got {t.batch_size}")
        seed = options.seed
        self.options, self.ctx, self.out_dir, self.seed = options, ctx, Path(options.out_dir), seed
        self.val_set, self.val_gt = sets.val, sets.val_gt
        self.show_progress = options.progress and ctx.is_main
        seed_everything(seed)
        self.model = TDDETR(config).to(ctx.device)
        seed_dropout(seed, ctx.rank)
        self.generator = batch_generator(seed)
        if t.w_dyn_match > 0 and not (config.use_tdem and config.dyn_null_slot):
            raise InputError(f"w_dyn_match: expected 0 without use_tdem and dyn_null_slot (it trains the "
                             f"dynamics attention's null slot), got {t.w_dyn_match}")
        self.net: torch.nn.Module = TrainingModel(self.model, dyn_match=t.w_dyn_match > 0)
        if ctx.active:
            from torch.nn.parallel import DistributedDataParallel

            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            # With one decoder layer the anchor refinement (decoder.bbox_embed) feeds no
            # output: DDP must be told some parameters get no gradient.
            self.net = DistributedDataParallel(self.net, device_ids=ids,
                                               find_unused_parameters=config.num_decoder_layers == 1)
        self.criterion = Criterion(t)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        # 10x drop every lr_drop epochs; lr_drop 0: never
        drop = t.lr_drop if t.lr_drop > 0 else 1 << 30
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=drop, gamma=0.1)
        dtype = AUTOCAST_DTYPES[autocast]
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=dtype is torch.float16)
        self.autocast = (lambda: torch.autocast(ctx.device.type, dtype=dtype)) if dtype else nullcontext
        self.per_rank = t.batch_size // ctx.world_size
        self.sampler = EpochSampler(sets.train, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                    seed=seed)
        self.loader = make_loader(sets.train, self.per_rank, shuffle=False, seed=seed,
                                  num_workers=options.num_workers, sampler=self.sampler)
        self.progress = Progress()
        self.log = run_dir.JsonlLog(self.out_dir / run_dir.LOG_NAME, enabled=ctx.is_main)
        self.history: list[dict] = []

    # ------------------------------------------------------------------ one step
    def train_step(self, local: Batch) -> dict[str, float]:
        """One optimizer step on this process's rows of a global batch -> global loss terms."""
        c, ctx = self.training, self.ctx
        done = self.progress.epoch / c.epochs  # fraction of the epochs finished (VSDC's strip-look schedule)
        batch = prepare_batch(gather_batch(local, ctx).to(ctx.device), self.config, c, self.generator, done)
        norm = loss_norm(batch, self.config.num_queries)
        mine = shard(batch, ctx.rank, ctx.world_size)
        with self.autocast():
            out = self.net(mine.video, mine.video_mask, mine.query, mine.query_mask, mine.neg_query,
                           mine.neg_query_mask)
        if not all(bool(torch.isfinite(out[k]).all()) for k in ("pred_spans", "pred_logits")):
            self.diverged("the model's outputs are NaN/inf (the last update broke the weights)")
        terms = self.criterion(out, mine, norm)
        self.optimizer.zero_grad(set_to_none=True)
        # losses are (local sum) / (global count); DDP averages gradients over processes
        self.scaler.scale(terms["loss"] * ctx.world_size).backward()
        if c.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        values = dict(zip(terms, all_reduce_sum(torch.stack([v.detach().float() for v in terms.values()]),
                                                ctx).tolist()))
        if not math.isfinite(values["loss"]):  # the same on every process: the sum is all-reduced
            self.diverged(f"the training loss is {values['loss']} (not finite)")
        return values

    def diverged(self, what: str) -> None:
        """Stop a diverged run with one message (InputError: the cause is the config)."""
        c = self.training
        raise InputError(f"step {self.progress.step + 1}: {what}: the run diverged; lower lr (now {c.lr:g}) "
                         f"or grad_clip (now {c.grad_clip:g}) with --set; "
                         f"{run_dir.last_checkpoint_note(self.out_dir)}")

    # ------------------------------------------------------------------ loop
    def fit(self, resume: Path | None = None) -> TrainResult:
        """Train until ``training.epochs`` epochs are done (or early stop), from the ``last/``
        checkpoint ``resume`` if given; ``options.on_step(step, losses)`` runs after every step."""
        from tqdm import tqdm

        epochs, on_step = self.training.epochs, self.options.on_step
        if resume is not None:
            self.restore(resume)  # replaces self.progress: take ``p`` after it
        p = self.progress
        if resume is None and self.options.eval_before and self.val_set is not None:
            p.initial_metrics = self.validate_and_log(epoch=0)[0]
        while p.epoch < epochs and not p.stopped_early:
            self.sampler.set_position(p.epoch, p.batch * self.per_rank)
            self.net.train()
            bar = tqdm(self.loader, desc=f"epoch {p.epoch + 1}/{epochs}", disable=not self.show_progress,
                       initial=p.batch, total=p.batch + len(self.loader), leave=False)
            for local in bar:
                values = self.train_step(local)
                p.step, p.batch = p.step + 1, p.batch + 1
                lr = self.optimizer.param_groups[0]["lr"]
                self.log.write({"kind": "train", "epoch": p.epoch + 1, "step": p.step, "lr": lr, **values})
                bar.set_postfix(loss=f"{values['loss']:.4f}")
                if self.options.save_every_steps and p.step % self.options.save_every_steps == 0:
                    self.save()
                if on_step is not None:
                    on_step(p.step, values)
            self.end_epoch()
        barrier(self.ctx)
        return TrainResult(self.out_dir, p.initial_metrics, p.best_metrics, p.best_epoch, p.epoch, p.step,
                           p.stopped_early, list(self.history))

    def end_epoch(self) -> None:
        """LR schedule, validation, best weights, early stop, checkpoint."""
        p, c = self.progress, self.training
        p.epoch, p.batch = p.epoch + 1, 0
        self.scheduler.step()
        record: dict[str, Any] = {"kind": "epoch", "epoch": p.epoch, "step": p.step}
        if self.val_set is None:
            improved, metrics, preds = True, None, None
        else:
            brief, metrics, preds = self.validate_and_log(p.epoch)
            score = selection_score(brief, c.eval_protocol)
            improved = score > p.best_score  # the same on every process: brief is broadcast
            if improved:
                p.best_score = score
            record["val"] = brief
        if improved:
            p.best_epoch, p.epochs_without_gain = p.epoch, 0
            p.best_metrics = record.get("val")
            if self.ctx.is_main:
                run_dir.save_best(self.out_dir, self.model, metrics, preds)
        else:
            p.epochs_without_gain += 1
            p.stopped_early = 0 < c.early_stop_patience <= p.epochs_without_gain
        record.update(best_epoch=p.best_epoch, stopped_early=p.stopped_early)
        self.history.append(record)
        self.log.write(record)
        self.save()

    def validate_and_log(self, epoch: int) -> tuple[dict, dict | None, list[dict] | None]:
        """Validate on the main process, log a ``val`` record -> (the ``brief`` metrics on every
        process, the full metrics and the predictions on the main process, None elsewhere)."""
        metrics = preds = None
        if self.ctx.is_main:
            metrics, preds = validate(self.model, self.val_set, self.val_gt, self.ctx.device,
                                      self.training.eval_protocol)
            self.log.write({"kind": "val", "epoch": epoch, "step": self.progress.step, **metrics["brief"]})
        brief = broadcast_object(None if metrics is None else metrics["brief"], self.ctx)
        return brief, metrics, preds

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Flush the log and write ``last/`` with the full train state (all processes call it)."""
        rng = all_gather_object(capture_rng(self.generator), self.ctx)
        if self.ctx.is_main:
            self.log.flush()
            self.progress.log_records = self.log.count
            state = {"progress": asdict(self.progress), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                     "rng": rng, "world_size": self.ctx.world_size, "seed": self.seed,
                     "history": self.history, "training": self.training.to_dict()}
            run_dir.save_last(self.out_dir, self.model, state)
        barrier(self.ctx)

    def restore(self, ckpt: Path) -> None:
        """Load weights, optimizer, scheduler, RNG and counters from a ``last/`` checkpoint."""
        from safetensors.torch import load_file

        from tdfast.model.checkpoint import WEIGHTS_NAME, load_config

        state = run_dir.load_train_state(ckpt)
        saved = {**load_config(ckpt).to_dict(), **run_dir.training_config(state, ckpt).to_dict()}
        diff = {k: (saved[k], v) for k, v in {**self.config.to_dict(), **self.training.to_dict()}.items()
                if saved.get(k) != v and k not in RESUMABLE_CHANGES}
        if diff:
            raise InputError(f"--resume {str(ckpt)!r}: the checkpoint was trained with another config; "
                             f"differing fields (checkpoint, now): {diff}")
        self.model.load_state_dict(load_file(str(ckpt / WEIGHTS_NAME), device=str(self.ctx.device)))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(**{**state["progress"], "best_score": tuple(state["progress"]["best_score"])})
        self.seed = self.sampler.seed = int(state["seed"])  # the data order of the resumed run
        self.history = list(state["history"])
        rng = state["rng"]
        restore_rng(rng[self.ctx.rank] if len(rng) == self.ctx.world_size else rng[0], self.generator)
        if len(rng) != self.ctx.world_size:
            # other process count: the batch stream continues, dropout streams restart per rank
            seed_dropout(int(self.progress.step), self.ctx.rank)
        self.log.truncate(self.progress.log_records)
