"""Compile the fused TD kernels ahead of time for a GPU that is not here, and read what ptxas
says about them (registers, spills, shared memory, serialized wgmma).

Triton's AOT path (``triton.compile(ASTSource(...), target=GPUTarget(...))``) needs no GPU or
driver: the ptxas bundled in the Triton wheel assembles the PTX. Used by the record tool
(``python -m tdfast.kernels.aot``) and by the tile probe (``tile_probe``), which both compile
exactly the launches ``td_interaction`` makes (``kernel_launches``). Works with Triton 3.6 to
3.9 (the ``ASTSource`` signature names every argument, constexprs typed ``"constexpr"``).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import torch

from tdfast.kernels.launch_config import LaunchConfig
from tdfast.kernels.packing import PackedTDWeights, pack_weights

SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}  # opt-in max per block
DIM, HEADS = 256, 8  # qvhighlights widths: what the records and the probe compile
PTR_TYPES = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}


def layer_weights(dtype: torch.dtype, use_tdem: bool) -> PackedTDWeights:
    """Packed weights of one random TD layer at qvhighlights widths (only shapes and dtypes matter)."""
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


Job = tuple  # (kernel name, signature, attrs, constexprs, num_warps, num_stages, arch)


def launch_jobs(weights: PackedTDWeights, batch: int, video_len: int, text_len: int, cfg: LaunchConfig,
                allow_tf32: bool, arch: int) -> dict[str, tuple[str, Job]]:
    """{kind: (dedup key, job)} for both launches of one layer call, ready for ``compile_jobs``;
    equal keys are the same compilation (same kernel, constexprs, hints, warps, stages, arch)."""
    out = {}
    for kind, fn, args, meta, warps, stages in kernel_launches(weights, batch, video_len, text_len,
                                                               cfg, allow_tf32):
        signature, attrs = _signature(fn, args, meta)
        job = (fn.fn.__name__, signature, attrs, meta, warps, stages, arch)
        key = json.dumps([job[0], signature, sorted(map(str, attrs)), meta, warps, stages, arch],
                         sort_keys=True)
        out[kind] = (key, job)
    return out


def compile_jobs(jobs: list[Job], workers: int | None = None) -> list[dict]:
    """ptxas reports of ``jobs`` in order (``{"error": ...}`` for a job that failed to compile),
    compiled in ``workers`` spawned processes (default: the CPU count)."""
    import concurrent.futures
    import multiprocessing

    workers = min(workers or os.cpu_count() or 1, max(1, len(jobs)))
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_worker_init) as pool:
        return list(pool.map(_compile_job, jobs))
