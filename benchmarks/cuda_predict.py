"""PREDICTION (no GPU) of the CUDA kernels' speed on an H200, from the compiled code only.

Compiles csrc/cuda/s2dtw_cuda.cu for sm_90 (`nvcc -cubin -Xptxas -v`), reads registers and spills per
kernel instantiation from ptxas and the SASS of each hot loop from `cuobjdump -sass` (the
nvidia-cuda-cuobjdump wheel, or CUDA's own), and prints a Markdown table of the issue-#15 cases:

    python benchmarks/cuda_predict.py [--source FILE.cu] [--include DIR] > benchmarks/results/cuda_prediction_<date>.md
    python benchmarks/cuda_predict.py --tape > benchmarks/results/cuda_prediction_tape_<date>.md
    python benchmarks/cuda_predict.py --multi > benchmarks/results/cuda_prediction_multism_<date>.md

--multi: one long pair in the multi-block regime (its strips over many SMs, handed on through progress flags), per
strip height, with the blocks the co-residency bound and the tape budget allow (see predict_multi).

--tape: the tape kept for the backward of each case, full and recomputing (block regime, see docs/architecture.md),
with the workspace the CUDA module asks for (workspace_bytes of the host-emulated module, tests/cuda_emulation: the
same plan and sizes code, 132 SMs) and the predicted time of both, recomputing costing one more forward of every
strip but the last (the forward cell loop's instructions and MUFU once more for those cells).

Instructions per cell are *static*: the instructions of the innermost loop that runs one cell per
iteration (both sides of its branches, so an upper bound on the path a cell takes). The model: a cell
costs `instructions` warp-instructions of issue on one of the SM's 4 schedulers, and the case takes the
largest of (a) issue: all warp-instructions over the SMs in use, (b) latency: the dependent chain
(one cell per step in the block regime, one per cell in the thread regime) at ~kChain cycles per
instruction on the chain, hidden only by the warps resident on the SM, (c) MUFU: 16 per clock per SM,
(d) HBM at 4.3 TB/s for cost, tape and gradient. All of it is an estimate to read a GPU run against.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMS, CLOCK, SCHEDULERS, MUFU_PER_CLK, HBM = 132, 1.98e9, 4, 16, 4.3e12
REGS_PER_SM, MAX_THREADS_SM, MAX_BLOCKS_SM = 65536, 2048, 32
CHAIN = 0.5 * 6.0  # cycles per instruction of a cell on the dependent chain: ~half of them, ~6 cycles each
BARRIER = 40.0  # cycles of a __syncthreads + shared-memory hand-over per step (block regime)
# <Scalar, kGrad, kVariant[, kMaxThreads[, kMulti]]>; kVariant (gamma = 0, smoothing = 0, open ends) is optional for
# older sources; a block kernel with kMulti is regime "multi"
KERNEL = re.compile(r"(thread|block)_kernelI([df])Lb([01])E(?:Lb([01])E)?(?:Li(\d+)E)?(?:Lb([01])E)?")


def kernel_key(m: re.Match) -> tuple:
    return ("multi" if m[6] == "1" else m[1], m[2], m[3] == "1", m[4] == "1", int(m[5] or 0))


@dataclass
class Kernel:
    regs: int = 0
    spill: int = 0
    loops: list = None  # per hot loop: (instructions, MUFU)


def _tool(name: str) -> str:
    wheel = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for path in [shutil.which(name), *wheel.glob(f"nvidia/*/bin/{name}")]:
        if path:
            return str(path)
    raise SystemExit(f"{name} not found (pip install nvidia-cuda-cuobjdump, or put CUDA's bin on PATH)")


def compile_cubin(source: Path, include: Path, out: Path) -> str:
    cmd = ["nvcc", "-std=c++17", "-O3", "-arch=sm_90", "-cubin", "--expt-relaxed-constexpr", f"-I{include}",
           f"-I{ROOT / 'csrc/cuda'}", "-Xptxas", "-v", str(source), "-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stderr


def parse_ptxas(log: str) -> dict[tuple, Kernel]:
    kernels, key = {}, None
    for line in log.splitlines():
        if m := KERNEL.search(line):
            key = kernel_key(m)
            kernels[key] = Kernel(loops=[])
        elif key and (m := re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)):
            kernels[key].spill = int(m[1]) + int(m[2])
        elif key and (m := re.search(r"Used (\d+) registers", line)):
            kernels[key].regs = int(m[1])
    return kernels


def hot_loops(sass: list[tuple[int, str]], marker: str) -> list[tuple[int, int]]:
    """Innermost loops (back edges) holding `marker` (the block regime's BAR.SYNC, the float exp's MUFU.EX2,
    the double exp's DFMA): (instructions, MUFU), in code order (the forward's first)."""
    index = {addr: k for k, (addr, _) in enumerate(sass)}
    spans = []
    for k, (_, ins) in enumerate(sass):
        if (m := re.search(r"\bBRA (0x[0-9a-f]+)", ins)) and int(m[1], 16) in index and index[int(m[1], 16)] <= k:
            spans.append((index[int(m[1], 16)], k))
    # Innermost among the loops holding the marker (a progress flag's poll is a loop inside the step loop).
    spans = [(lo, hi) for lo, hi in spans if any(marker in ins for _, ins in sass[lo:hi + 1])]
    inner = [s for s in spans if not any(o != s and s[0] <= o[0] and o[1] <= s[1] for o in spans)]
    out = []
    for lo, hi in sorted(inner):
        body = [ins for _, ins in sass[lo:hi + 1] if not ins.startswith("NOP")]
        out.append((len(body), sum("MUFU" in ins for ins in body)))
    return out


def parse_sass(text: str, kernels: dict[tuple, Kernel]) -> None:
    key, body = None, []
    for line in text.splitlines() + ["Function : end"]:
        if "Function :" in line:
            if key in kernels:
                marker = "BAR.SYNC" if key[0] != "thread" else "MUFU.EX2" if key[1] == "f" else "DFMA"
                kernels[key].loops = hot_loops(body, marker)
            m = KERNEL.search(line)
            key, body = kernel_key(m) if m else None, []
        elif m := re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([^;]+);", line):
            body.append((int(m[1], 16), m[2].strip()))


def occupancy(regs: int, threads: int) -> int:
    """Resident threads per SM for blocks of `threads` threads (registers allocated per warp in 256s)."""
    per_warp = math.ceil(max(regs, 1) * 32 / 256) * 256
    warps = REGS_PER_SM // per_warp
    blocks = min(MAX_BLOCKS_SM, MAX_THREADS_SM // threads, warps // math.ceil(threads / 32))
    return blocks * threads


CASES = [  # name, pairs, n, weak+smooth, and the regime and strip height choose_plan picks for it (sm_90, 132 SMs)
    ("4096 x 8x8 S2DTW", 4096, 8, True, "block", 32),
    ("65,536 x 8x8 S2DTW", 65536, 8, True, "thread", 128),
    ("64 x 512x512 soft-DTW", 64, 512, False, "block", 512),
    ("1 x 8192x8192 soft-DTW", 1, 8192, False, "block", 512),
    ("1 x 8192x8192 S2DTW", 1, 8192, True, "block", 512),
]


def predict(kernels: dict[tuple, Kernel], pairs: int, n: int, weak: bool, regime: str, threads: int) -> dict:
    P = 2 * n + 1 if weak else n
    cells = pairs * P * P
    bound_t = 0 if regime == "thread" else min(b for b in (256, 512, 1024) if b >= threads)
    # one fused kernel; the default (not the variants') one
    fwd = kernels.get((regime, "f", True, False, bound_t)) or kernels[(regime, "f", True, False, 0)]
    # The forward's cell loop comes first, the backward's last (thread<float, grad>: two copies of each).
    ins_f, mufu_f = fwd.loops[0]
    ins_b, mufu_b = fwd.loops[-1]
    ins, mufu = ins_f + ins_b, mufu_f + mufu_b
    resident = occupancy(fwd.regs, threads)
    if regime == "thread":
        sms = min(SMS, math.ceil(pairs / threads))
        warps = math.ceil(pairs / 32)
        issue = warps * P * P * ins / (sms * SCHEDULERS * CLOCK)
        waves = math.ceil(pairs / (resident * sms))
        latency = waves * P * P * ins * CHAIN / CLOCK
    else:
        per_sm = min(resident // threads, math.ceil(pairs / SMS))
        sms = min(SMS, pairs)
        strips = math.ceil(P / threads)
        steps = strips * (P - 1) + P
        warp_steps = pairs * steps * (threads / 32)
        issue = warp_steps * ins / (sms * SCHEDULERS * CLOCK)
        waves = math.ceil(pairs / (per_sm * sms))
        latency = waves * steps * (ins * CHAIN + 2 * BARRIER) / CLOCK
    mufu_t = cells * mufu / (sms * MUFU_PER_CLK * CLOCK)
    hbm = (pairs * n * n * 4 * 2 + cells * 8 * 2) / HBM  # cost in, gradient out, tape out and back
    bounds = {"issue": issue, "latency": latency, "MUFU": mufu_t, "HBM": hbm}
    which = max(bounds, key=bounds.get)
    return dict(regs=fwd.regs, spill=fwd.spill, resident=resident, ins_f=ins_f, ins_b=ins_b, mufu=mufu, sms=sms,
                time=bounds[which], bound=which, floor=min(mufu_t, hbm) if min(mufu_t, hbm) > 0 else hbm)


FLAG_CHUNK, FLAG_LATENCY = 64, 2000.0  # block_kernel.cuh's kFlagChunk; cycles for a flag to cross SMs (fence + L2)
TAPE_BUDGET = 2**30  # $S2DTW_CUDA_TAPE_MIB's default: recomputing, the blocks' tapes stay within a quarter of it
MULTI_CASES = [("1 x 8192x8192 soft-DTW", 8192, False), ("1 x 8192x8192 S2DTW", 8192, True)]


def predict_multi(kernels: dict[tuple, Kernel], n: int, weak: bool, threads: int, budget: int = TAPE_BUDGET) -> dict:
    """One pair in the multi-block regime: nb blocks of `threads` take the S strips in turn. Per pass (forward,
    recomputed forward when the tape does not fit, backward) a block runs S / nb strips of (Q + T - 1) steps, and
    strip i starts (FLAG_CHUNK + T) steps and FLAG_LATENCY cycles after strip i - 1; a step costs the chain latency
    of the pass's cell or the issue of the T / 32 warps, whichever is more (one block per SM)."""
    P = Q = 2 * n + 1 if weak else n
    k = kernels[("multi", "f", True, False, 512)]
    (ins_f, mufu_f), (ins_b, mufu_b) = k.loops[0], k.loops[-1]
    strips = math.ceil(P / threads)
    resident_blocks = SMS * (occupancy(k.regs, threads) // threads)
    nb = min(strips, resident_blocks)
    full_tape = P * Q * 8
    recompute = full_tape > budget
    if recompute:
        nb = max(1, min(nb, budget // 4 // (threads * Q * 8)))
    passes = [ins_f, ins_f, ins_b] if recompute else [ins_f, ins_b]
    per_block_strips = math.ceil(strips / nb)
    total = 0.0
    for ins in passes:
        step = max(ins * CHAIN + BARRIER, math.ceil(threads / 32) * ins / SCHEDULERS)
        steps = per_block_strips * (Q + threads - 1) + (nb - 1) * (FLAG_CHUNK + threads)
        total += steps * step + (nb - 1) * FLAG_LATENCY
    cells = P * Q
    mufu_t = cells * (mufu_f * (2 if recompute else 1) + mufu_b) / (min(SMS, nb) * MUFU_PER_CLK * CLOCK)
    tape = nb * threads * Q * 8 if recompute else full_tape
    return dict(nb=nb, strips=strips, regs=k.regs, spill=k.spill, recompute=recompute, tape=tape,
                time=max(total / CLOCK, mufu_t), floor=min(mufu_t, (n * n * 8 + 2 * tape) / HBM))


def multi_table(kernels: dict[tuple, Kernel]) -> str:
    rows = ["| case (float32, fwd+bwd) | strip (threads) | blocks | strips | regs | spills | tape kept | "
            "predicted | % of MUFU/HBM floor |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    budgets = [("", TAPE_BUDGET), (", $S2DTW_CUDA_TAPE_MIB=4096", 2**32)]
    for (name, n, weak), (label, budget) in [(c, b) for c in MULTI_CASES for b in budgets[:1 + c[2]]]:
        for threads in (64, 128, 256, 512):
            p = predict_multi(kernels, n, weak, threads, budget)
            rows.append(f"| {name}{label} | {threads} | {p['nb']} | {p['strips']} | {p['regs']} | {p['spill']} | "
                        f"{p['tape'] / 2**30:.3f} GiB{' (recomputing)' if p['recompute'] else ''} | "
                        f"{fmt_time(p['time'])} | {100 * p['floor'] / p['time']:.0f} % |")
    return "\n".join(rows)


def chosen_plans() -> str:
    """What choose_plan picks for MULTI_CASES (float32, with a gradient, 132 emulated SMs), read back from the
    emulated module's workspace_bytes: the (strip, blocks, recompute) layouts of that size (tests/cuda_emulation)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from cuda_emulation import build  # a test artefact, only for --multi / --tape
    from cuda_emulation.layouts import layouts_of

    from s2dtw._problem import Layout, Params, Problem, Switches

    module, lines = build.load(), []
    for (name, n, weak), mib in [(c, mib) for c in MULTI_CASES for mib in (TAPE_BUDGET >> 20, 4096)[:1 + c[2]]]:
        lengths = torch.full((1,), n, dtype=torch.int64)
        layout = Layout.batched(argparse.Namespace(shape=(1, n, n)), lengths, lengths)
        params = Params(gamma=0.1, smoothing=0.1 if weak else None, threshold=0.5 if weak else None)
        got = module.workspace_bytes("float32", True, Problem(layout, params, Switches(cuda_tape_mib=mib)))
        grid = 2 * n + 1 if weak else n
        found = ", ".join(f"strip {t}, {nb} blocks, {'recomputing' if r else 'full tape'}"
                          for t, nb, r in layouts_of(grid, grid, got))
        lines.append(f"- {name}, $S2DTW_CUDA_TAPE_MIB={mib}: {found or 'no block layout'} ({got / 2**30:.3f} GiB)")
    return "\n".join(lines)


def fmt_time(s: float) -> str:
    return f"{s * 1e6:.0f} us" if s < 1e-3 else f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def table(kernels: dict[tuple, Kernel]) -> str:
    rows = ["| kernel | registers | spill bytes | hot loops (static instructions, MUFU) |", "|---|---:|---:|---|"]
    for (regime, dt, grad, variant, bound), k in sorted(kernels.items()):
        name = (f"{regime}<{'double' if dt == 'd' else 'float'}, grad={int(grad)}{', variant' if variant else ''}"
                f"{f', {bound}' if bound else ''}>")
        rows.append(f"| {name} | {k.regs} | {k.spill} | {', '.join(f'{i} ({m})' for i, m in k.loops)} |")
    rows += ["", "| case (float32, fwd+bwd) | regime | regs | spills | resident threads/SM | instr/cell fwd + bwd "
             "| MUFU/cell | predicted | bound | % of MUFU/HBM floor |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for name, pairs, n, weak, regime, threads in CASES:
        p = predict(kernels, pairs, n, weak, regime, threads)
        rows.append(f"| {name} | {regime} ({threads} thr) | {p['regs']} | {p['spill']} | {p['resident']} | "
                    f"{p['ins_f']} + {p['ins_b']} | {p['mufu']} | {fmt_time(p['time'])} | {p['bound']} | "
                    f"{100 * p['floor'] / p['time']:.0f} % |")
    return "\n".join(rows)


def workspaces(pairs: int, n: int, weak: bool) -> dict[str, int]:
    """workspace_bytes (float32, with a gradient) of the emulated module under three tape budgets (MiB)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from cuda_emulation import build  # a test artefact, only for --tape

    from s2dtw._problem import Layout, Params, Problem, Switches

    module = build.load()
    shape = argparse.Namespace(shape=(pairs, n, n))  # Layout.batched reads only the shape
    lengths = torch.full((pairs,), n, dtype=torch.int64)
    layout = Layout.batched(shape, lengths, lengths)
    params = Params(gamma=0.1, smoothing=0.1 if weak else None, threshold=0.5 if weak else None)
    budgets = {"never": 2**30, "default": Switches.cuda_tape_mib, "always": 0}
    return {name: module.workspace_bytes("float32", True, Problem(layout, params, Switches(cuda_tape_mib=mib)))
            for name, mib in budgets.items()}


def tape_table(kernels: dict[tuple, Kernel]) -> str:
    gib = 2.0**30
    rows = ["| case (float32, fwd+bwd) | regime | strips | full tape | workspace: full tape | workspace: recomputing "
            "($S2DTW_CUDA_TAPE_MIB=0) | workspace: default budget (1 GiB) | predicted: full tape | "
            "predicted: recomputing |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, pairs, n, weak, regime, threads in CASES:
        P = 2 * n + 1 if weak else n
        ws = workspaces(pairs, n, weak)
        strips = math.ceil(P / threads) if regime == "block" else 1
        p = predict(kernels, pairs, n, weak, regime, threads)
        recompute = "" if ws["always"] < ws["never"] else "— (thread regime)" if regime == "thread" else "— (one strip)"
        if not recompute:
            key = (regime, "f", True, False, min(b for b in (256, 512, 1024) if b >= threads))
            (ins_f, mufu_f), extra = kernels[key].loops[0], (strips - 1) / strips  # every strip but the last again
            again = replace(kernels[key], loops=[(round(ins_f * (1 + extra)), mufu_f * (1 + extra)),
                                                 *kernels[key].loops[1:]])
            r = predict({**kernels, key: again}, pairs, n, weak, regime, threads)
            recompute = f"{fmt_time(r['time'])} (+{100 * (r['time'] / p['time'] - 1):.0f} %)"
        default = f"{ws['default'] / gib:.3f} GiB ({'recomputes' if ws['default'] < ws['never'] else 'full tape'})"
        rows.append(f"| {name} | {regime} ({threads} thr) | {strips} | {pairs * P * P * 8 / gib:.3f} GiB | "
                    f"{ws['never'] / gib:.3f} GiB | {ws['always'] / gib:.3f} GiB | {default} | "
                    f"{fmt_time(p['time'])} | {recompute} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT / "csrc/cuda/s2dtw_cuda.cu")
    parser.add_argument("--include", type=Path, default=ROOT / "csrc", help="where s2dtw_cell.h is")
    parser.add_argument("--tape", action="store_true", help="the tape table (full and recomputing) instead")
    parser.add_argument("--multi", action="store_true", help="the multi-block regime on one long pair instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        kernels = parse_ptxas(compile_cubin(args.source, args.include, cubin))
        sass = subprocess.run([_tool("cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True, check=True)
    parse_sass(sass.stdout, kernels)
    print(f"PREDICTION (no GPU), sm_90 / H200 model; source {os.path.relpath(args.source, ROOT)}\n")
    print(tape_table(kernels) if args.tape else multi_table(kernels) if args.multi else table(kernels))
    if args.multi:
        print("\nchoose_plan's pick (csrc/cuda/plan.cuh), read back from the emulated module's workspace_bytes:\n")
        print(chosen_plans())


if __name__ == "__main__":
    main()
