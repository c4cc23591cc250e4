"""Ahead-of-time compilation of the fused TD kernels for a GPU that is not here.

    python -m tdfast.kernels.aot --arch 90 [--arch 80] [--full] --json OUT

compiles, with Triton's AOT path (``triton.compile(ASTSource(...), target=GPUTarget(...))``,
no GPU or driver needed), both kernels of one TD layer at qvhighlights widths (D = 256,
8 heads) and writes per kernel and configuration what ptxas reports (a fixed schema,
docs/kernels.md "Ahead-of-time compilation"):

    {"triton": version, "configs": [{"arch", "name", "dtype", "L", "M", "compiled", "error",
                                     "registers", "spill_bytes", "shared_bytes",
                                     "wgmma_serialized"}]}

* default: the launcher's default configuration on that arch with the installed Triton
  (``default_config(..., arch)``; the 16-bit tiles differ under Triton 3.6)
  for B in {1, 32, 256} (deduplicated) per dtype (float32, tf32, float16, bfloat16),
  L in {75, 150}, M = 32;
* ``--full``: every configuration the launcher can choose on that arch (each tile set
  ``default_config`` returns over B = 1 .. 4096, L in {75, 150, 16}, M in {16, 32, 64}), with
  and without the dynamics branch.

registers / spill bytes / wgmma serialization come from running the bundled ptxas with ``-v``
on the PTX Triton produced (the C7512 note says wgmma was serialized); shared bytes are the
dynamic shared memory Triton allocates plus ptxas's static ``smem``. Works with Triton 3.6
to 3.9 (the versions this was checked with: the ``ASTSource`` signature names every
argument, constexprs typed ``"constexpr"``).
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from tdfast.kernels.launch_config import LaunchConfig, default_config, next_pow2
from tdfast.kernels.packing import PackedTDWeights, pack_weights

DTYPES = {"float32": (torch.float32, False), "tf32": (torch.float32, True),
          "float16": (torch.float16, False), "bfloat16": (torch.bfloat16, False)}
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}  # opt-in max per block
DIM, HEADS = 256, 8  # qvhighlights
DEFAULT_BATCHES = (1, 32, 256)
FULL_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
PTR_TYPES = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}


def _weights(dtype: torch.dtype, use_tdem: bool) -> PackedTDWeights:
    from tdfast.model.td_interaction import TDCrossAttention

    layer = TDCrossAttention(DIM, HEADS, 0.0, use_tdem, beta=0.7)
    start = torch.zeros(DIM) if use_tdem else None
    return pack_weights(layer.weights(start), HEADS, 0.7, dtype, "cpu")


def _signature(fn, args: dict, constexprs: dict) -> tuple[dict, dict]:
    """(signature, attrs) for ``ASTSource``: pointer / int / float types of the runtime
    arguments, and the 16-divisibility hints the JIT would give them at launch (every torch
    allocation is 16-byte aligned; none on the kernels' ``do_not_specialize`` ints)."""
    import inspect

    from tdfast.kernels import td_interaction as k

    plain = set(k.TEXT_KV_RUNTIME_INTS if fn.fn.__name__ == "_text_kv_kernel" else k.ROWS_RUNTIME_INTS)
    signature, attrs = {}, {}
    for i, name in enumerate(inspect.signature(fn.fn).parameters):
        if name in constexprs:
            signature[name] = "constexpr"
            continue
        value = args[name]
        if isinstance(value, torch.Tensor):
            signature[name] = PTR_TYPES[value.dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
            if value % 16 == 0 and name not in plain:  # do_not_specialize: no hint at launch
                attrs[(i,)] = [["tt.divisibility", 16]]
    return signature, attrs


def _ptxas(arch: int) -> str:
    """The ptxas Triton itself uses for sm_<arch> (TRITON_PTXAS_PATH wins, as in Triton).

    Triton 3.9 ships two (``ptxas`` and, for sm_90 and up, the newer ``ptxas-blackwell``) and
    picks with ``get_ptxas(arch)``; Triton 3.6 has ``get_ptxas()`` without the argument.
    """
    import inspect

    from triton.backends.nvidia import compiler as nv

    get = getattr(nv, "get_ptxas", None)
    if get is not None:
        tool = get(arch) if inspect.signature(get).parameters else get()
        return getattr(tool, "path", tool)
    path = Path(nv.__file__).parent / "bin" / "ptxas"
    if not path.exists():
        raise FileNotFoundError(f"no ptxas at {path}; set TRITON_PTXAS_PATH")
    return str(path)


def ptxas_report(ptx: str, arch: int) -> dict:
    """Run ptxas -v on ``ptx`` for sm_<arch> (sm_90a for 90, as Triton does): registers,
    spill bytes (stores + loads), static smem and whether wgmma was serialized (C7512)."""
    gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        proc = subprocess.run([_ptxas(arch), "-v", f"--gpu-name={gpu}", str(src), "-o", str(Path(tmp) / "k.o")],
                              capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode:
        raise RuntimeError(f"ptxas failed ({proc.returncode}): {log[-800:]}")
    return _parse_ptxas(log)


def _parse_ptxas(log: str) -> dict:
    regs = re.findall(r"Used (\d+) registers", log)
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    smem = re.findall(r"(\d+) bytes smem", log)
    return {"registers": int(regs[-1]) if regs else None,
            "spill_bytes": sum(int(a) + int(b) for a, b in spills),
            "static_smem": sum(int(s) for s in smem),
            "wgmma_serialized": "C7512" in log or "wgmma.mma_async instructions are serialized" in log,
            "log": log}


@contextlib.contextmanager
def _ptxas_logs():
    """Capture the ``ptxas -v`` log of Triton's own cubin step (Triton runs ptxas with -v and
    its stderr into a temporary file, then deletes it): the registers and spills reported are
    then those of the very binary Triton builds, with Triton's ptxas flags. Falls back to
    running ptxas ourselves (``ptxas_report``) where nothing was captured."""
    logs: list[str] = []
    real_run = subprocess.run

    def run(cmd, *args, **kwargs):
        result = real_run(cmd, *args, **kwargs)
        err = kwargs.get("stderr")
        if isinstance(cmd, (list, tuple)) and cmd and "ptxas" in Path(str(cmd[0])).name \
                and hasattr(err, "name"):
            with open(err.name) as f:
                logs.append(f.read())
        return result

    subprocess.run = run
    try:
        yield logs
    finally:
        subprocess.run = real_run


def compile_kernel(kernel: str, signature: dict, attrs: dict, constexprs: dict, num_warps: int,
                   num_stages: int, arch: int) -> dict:
    """Compile ``tdfast.kernels.td_interaction.<kernel>`` for sm_<arch> and report on it
    (raises on failure). Plain arguments, so that it runs in a worker process."""
    import triton
    from triton.backends.compiler import GPUTarget

    from tdfast.kernels import td_interaction

    fn = getattr(td_interaction, kernel)
    src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    target = GPUTarget("cuda", arch, 32)
    backend = triton.compiler.make_backend(target)
    options = backend.parse_options({"num_warps": num_warps, "num_stages": num_stages})
    with _ptxas_logs() as logs:
        compiled = triton.compile(src, target=target, options=options.__dict__)
    report = _parse_ptxas(logs[-1]) if logs and "registers" in logs[-1] else None
    if report is None or report["registers"] is None:  # Triton ran no ptxas we could see
        report = ptxas_report(compiled.asm["ptx"], arch)
    meta = compiled.metadata
    shared = meta.shared if hasattr(meta, "shared") else meta["shared"]
    report["shared_bytes"] = int(shared) + report.pop("static_smem")
    report.pop("log")
    return report


def _worker_init() -> None:
    # Compile the real kernels even when the caller runs under TRITON_INTERPRET=1 (the CPU test
    # suite does): the worker defines them fresh, and Triton reads the variable at definition.
    os.environ["TRITON_INTERPRET"] = "0"


def _compile_job(job: tuple) -> dict:
    try:
        return compile_kernel(*job)
    except Exception as e:  # recorded, not raised: one bad configuration must not hide the rest
        return {"error": f"{type(e).__name__}: {e}"[:1000]}


def kernel_launches(weights: PackedTDWeights, batch: int, video_len: int, text_len: int,
                    cfg: LaunchConfig, allow_tf32: bool) -> list[tuple[str, object, dict, dict, int, int]]:
    """(kind, kernel, runtime args, constexprs, num_warps, num_stages) of both launches, with the
    same constexprs and integer values the launcher would pass (``td_interaction``)."""
    from tdfast.kernels import td_interaction as k

    kv_meta, rows_meta = k.kernel_args(weights, text_len, cfg, allow_tf32)
    w = weights
    stub = lambda dtype: torch.empty(0, dtype=dtype)  # noqa: E731  (only the dtype matters)
    act, f32 = stub(w.dtype), stub(torch.float32)
    n_tblocks = -(-batch * text_len // cfg.kv_block_t)
    kv_args = dict(text_ptr=act, wkv_ptr=w.wkv, bkv_ptr=w.bkv, kv_ptr=act, M=text_len,
                   TR=batch * text_len, n_tblocks=n_tblocks)
    dyn = [w.f1_gain_sum, w.f1_bias, w.w_f1, w.ln2_w, w.ln2_b, w.w_f2, w.b_f2, w.wq_t, w.bq_t, w.wo_t]
    rows_names = ["f1_gain_sum_ptr", "f1_bias_ptr", "w_f1_ptr", "ln2_w_ptr", "ln2_b_ptr",
                  "w_f2_ptr", "b_f2_ptr", "wq_t_ptr", "bq_t_ptr", "wo_t_ptr"]
    rows_args = dict(video_ptr=act, pos_ptr=act, start_ptr=act, kv_ptr=act, bias_ptr=act, out_ptr=act,
                     wq_v_ptr=w.wq_v, bq_v_ptr=w.bq_v, wo_v_ptr=w.wo_v, bo_ptr=w.bo,
                     **dict(zip(rows_names, dyn if w.has_dyn else [f32] * 10)),
                     L=video_len, M=text_len, R=batch * video_len, stride_bias_b=text_len,
                     beta=float(w.beta), qk_scale=1.0, eps=1e-5)
    return [("text_kv", k._text_kv_kernel, kv_args, kv_meta, cfg.kv_num_warps, cfg.kv_num_stages),
            ("rows", k._rows_kernel, rows_args, rows_meta, cfg.num_warps, cfg.num_stages)]


def plan(arch: int, full: bool, dtypes: list[str], video_lens: list[int], text_lens: list[int],
         triton_version: str | None = None):
    """(dtype name, L, M, use_tdem, batch, config) to compile for sm_<arch>, without duplicates,
    with the tiles the launcher picks under Triton ``triton_version`` (default: the installed one).

    Default: the launcher's choice on sm_<arch> for B in DEFAULT_BATCHES at each (L, M).
    ``--full``: every choice it makes there over B = 1 .. 4096, L in {75, 150, 16} and M in {32, 16, 64} (its choices
    depend only on B * L, B * M and the M tile), each listed once under the first (L, M) that
    selects it, with and without TDEM.
    """
    out, seen = [], set()
    for name in dtypes:
        dtype, tf32 = DTYPES[name]
        if full:
            grid = itertools.product((75, 150, 16), (32, 16, 64), FULL_BATCHES, (True, False))
        else:
            grid = itertools.product(video_lens, text_lens, DEFAULT_BATCHES, (True,))
        for video_len, text_len, batch, use_tdem in grid:
            cfg = default_config(dtype, batch, video_len, text_len, DIM, HEADS, tf32, arch, triton_version)
            key = (name, cfg.name, cfg.kv_name, max(16, next_pow2(text_len)), use_tdem) if full \
                else (name, video_len, text_len, cfg.name, cfg.kv_name)
            if key not in seen:
                seen.add(key)
                out.append((name, video_len, text_len, use_tdem, batch, cfg))
    return out


def labels(cfg: LaunchConfig, use_tdem: bool) -> dict[str, str]:
    """The record's ``name`` of each kernel of one launch: ``{"text_kv": "text_kv:<tiles>",
    "rows": "rows:<tiles>"}``, with ``:no_tdem`` appended without the dynamics branch."""
    tail = "" if use_tdem else ":no_tdem"
    return {"text_kv": f"text_kv:{cfg.kv_name}{tail}", "rows": f"rows:{cfg.name}{tail}"}


def planned_rows(arch: int, full: bool, dtypes: list[str] | None = None,
                 video_lens: list[int] | None = None, text_lens: list[int] | None = None,
                 triton_version: str | None = None) -> list[dict]:
    """The identity (arch, name, dtype, L, M) of every row ``run`` records for sm_<arch> under
    Triton ``triton_version`` (default: the installed one), in order, without compiling: what
    a record made with that version for this arch must hold to be current."""
    rows, listed = [], set()
    for name, video_len, text_len, use_tdem, _, cfg in plan(arch, full, dtypes or list(DTYPES),
                                                             video_lens or [75, 150], text_lens or [32],
                                                             triton_version):
        for label in labels(cfg, use_tdem).values():
            if (label, name, video_len, text_len) not in listed:
                listed.add((label, name, video_len, text_len))
                rows.append({"arch": arch, "name": label, "dtype": name, "L": video_len, "M": text_len})
    return rows


def run(archs: list[int], full: bool, dtypes: list[str], video_lens: list[int], text_lens: list[int],
        jobs: int | None = None, log=print) -> dict:
    """Compile everything ``plan`` lists for each arch; returns the record (schema above).

    Identical compilations (same kernel, constexprs and argument hints: e.g. the text kernel
    under two row tiles, or L = 75 and 150) run once; ``jobs`` worker processes (default:
    the CPU count) compile in parallel.
    """
    import concurrent.futures
    import multiprocessing

    import triton

    rows, unique, listed = [], {}, set()
    weights = {}
    for arch in archs:
        for name, video_len, text_len, use_tdem, batch, cfg in plan(arch, full, dtypes, video_lens,
                                                                    text_lens):
            dtype, tf32 = DTYPES[name]
            w = weights.setdefault((dtype, use_tdem), _weights(dtype, use_tdem))
            for kind, fn, args, meta, warps, stages in kernel_launches(w, batch, video_len, text_len,
                                                                       cfg, tf32):
                signature, attrs = _signature(fn, args, meta)
                job = (fn.fn.__name__, signature, attrs, meta, warps, stages, arch)
                key = json.dumps([job[0], signature, sorted(map(str, attrs)), meta, warps, stages, arch],
                                 sort_keys=True)
                unique.setdefault(key, job)
                label = labels(cfg, use_tdem)[kind]
                if (arch, label, name, video_len, text_len) in listed:
                    continue  # the same kernel under another pairing of the two kernels' tiles
                listed.add((arch, label, name, video_len, text_len))
                rows.append(({"arch": arch, "name": label, "dtype": name, "L": video_len,
                              "M": text_len}, key))
    workers = jobs or os.cpu_count() or 1
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_worker_init) as pool:
        reports = dict(zip(unique, pool.map(_compile_job, unique.values())))
    configs = []
    for row, key in rows:
        rep = reports[key]
        ok = "error" not in rep
        row.update(compiled=ok, error=rep.get("error"),
                   **{k: rep[k] if ok else None
                      for k in ("registers", "spill_bytes", "shared_bytes", "wgmma_serialized")})
        configs.append(row)
        log(json.dumps({k: v for k, v in row.items() if v is not None}))
    return {"triton": triton.__version__, "configs": configs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tdfast.kernels.aot", description=__doc__.split("\n")[0])
    p.add_argument("--arch", type=int, action="append", help="SM version, e.g. 90 or 80 (repeatable)")
    p.add_argument("--full", action="store_true", help="every configuration the launcher can choose")
    p.add_argument("--json", type=Path, required=True, help="write the record here")
    p.add_argument("--dtype", action="append", choices=sorted(DTYPES),
                   help="restrict to these dtypes (repeatable; default all four)")
    p.add_argument("--video-len", type=int, action="append", help="L (repeatable; default 75 and 150)")
    p.add_argument("--text-len", type=int, action="append", help="M (repeatable; default 32)")
    p.add_argument("--jobs", type=int, help="parallel compiler processes (default: CPU count)")
    args = p.parse_args(argv)
    record = run(args.arch or [90], args.full, args.dtype or list(DTYPES), args.video_len or [75, 150],
                 args.text_len or [32], args.jobs, log=lambda s: print(s, file=sys.stderr, flush=True))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    bad = [c for c in record["configs"] if not c["compiled"]]
    print(f"wrote {args.json}: {len(record['configs'])} kernels compiled for sm_{args.arch or [90]}, "
          f"{len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
