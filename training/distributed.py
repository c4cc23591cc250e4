"""Multi-process training under ``torchrun`` (DDP; gloo on CPU, nccl on GPU).

How one global batch of G = ``config.batch_size`` rows is split, so that W
processes compute exactly what one process computes with batch G:

- Every process uses a ``DistributedSampler`` with the same seed (one process is
  the W = 1 case of the same sampler), and loads G / W rows. Process r's j-th row
  is row g = W * j + r of the single-process batch.
- ``gather_batch`` all-gathers the rows and puts them back in that order, so every
  process holds the whole global batch. The batch transforms (VSDC partner
  search, synthesis, negative queries, saliency pairs) then run on the global
  batch with a generator in the same state everywhere: VSDC partners come from
  the whole global batch, not from the process's share.
- ``prepare.shard`` keeps the rows this process owns; losses are sums divided by
  global counts (``losses.LossNorm``) and the backward loss is multiplied by W
  because DDP averages gradients.

The one thing that differs is dropout: each rank has its own dropout stream
(``rng.seed_dropout``), so with dropout > 0 the runs are equally valid but not
equal; the parity test sets dropout to 0.
"""
from __future__ import annotations

import os
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from tdfast.data.batch import Batch
from tdfast.errors import InputError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``, and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a 1-process context.

    ``device``: "cpu" (gloo) or "cuda" (nccl; process r uses GPU LOCAL_RANK).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device: expected 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        from tdfast.errors import BackendUnavailableError

        raise BackendUnavailableError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu "
                                      "or install a CUDA build of torch")
    if world == 1:
        return DistContext(0, 1, torch.device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return DistContext(rank, world, dev)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (no-op for one process)."""
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()


def _interleave(parts: list[Any]) -> list[Any]:
    """W lists of b items -> b * W items in global order g = W * j + r."""
    return [parts[r][j] for j in range(len(parts[0])) for r in range(len(parts))]


def gather_batch(batch: Batch, ctx: DistContext) -> Batch:
    """Each process's collated rows -> the whole global batch, on every process, in order.

    Tensors are padded to the longest video / query over all processes (one small
    all-reduce), all-gathered and interleaved; the lists (spans, meta) go through
    ``all_gather_object``. Returns the batch unchanged for one process.
    """
    if not ctx.active:
        return batch
    lengths = torch.tensor([batch.video.shape[1], batch.query.shape[1]], device=ctx.device)
    dist.all_reduce(lengths, op=dist.ReduceOp.MAX)
    query_fields = ("query_mask", *Batch.PADDED["query_mask"])
    tensors: dict[str, Tensor] = {}
    lists: dict[str, list] = {}
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, Tensor):
            t = _pad_dim1(value.to(ctx.device), int(lengths[1] if f.name in query_fields else lengths[0]))
            parts = [torch.empty_like(t) for _ in range(ctx.world_size)]
            dist.all_gather(parts, t.contiguous())
            tensors[f.name] = torch.stack(parts, dim=1).flatten(0, 1)  # [b, W, ...] -> [b * W, ...] in g order
        elif isinstance(value, list):
            lists[f.name] = [x.cpu() if isinstance(x, Tensor) else x for x in value]
    objs: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(objs, lists)
    return dataclasses.replace(batch, **tensors, **{k: _interleave([o[k] for o in objs]) for k in lists})


def _pad_dim1(t: Tensor, length: int) -> Tensor:
    """Zero/False-pad dim 1 of [b, L, ...] to ``length``."""
    extra = length - t.shape[1]
    if extra == 0:
        return t
    pad = [0, 0] * (t.dim() - 2) + [0, extra]
    return F.pad(t, pad) if t.dtype != torch.bool else F.pad(t.to(torch.uint8), pad).bool()


def all_reduce_sum(values: Tensor, ctx: DistContext) -> Tensor:
    """Sum a tensor over processes (in place for a multi-process run); returns it."""
    if ctx.active:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_object(obj: Any, ctx: DistContext) -> list[Any]:
    """Every process's ``obj``, by rank."""
    if not ctx.active:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not ctx.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()
