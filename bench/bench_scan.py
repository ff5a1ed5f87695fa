"""Mamba's selective scan alone, before and after its rewrite (ec685d7), side by side. CPU; not part of the test suite.

Rows (each timed forward + backward, and forward alone without gradients as in evaluation), alternated within
each repetition, medians; ratios to the first row measured in the same run:
- before: `common.selective_scan` as of commit `--before` (a loop over time steps in cache-sized blocks);
- after: the current `common.selective_scan`, no padding;
- after, padded like Beauty: rows right-padded after lengths drawn like Beauty's training windows under
  L = 50 (1 + geometric, mean 7.8, capped at L; Beauty's: mean 7.8, median 5), the `lengths` Mamba4Rec passes;
- chunked, T = 2 / 5: the parallel form weighed in `_SelectiveScan`'s docstring (`chunked_scan` below), autograd
  backward.
Shapes: Mamba4Rec's D = 64 (d_inner 128, d_state 16), L = 50, --batch rows.

    python bench/bench_scan.py                      # batch 128, one thread
    python bench/bench_scan.py --batch 1024 --repeats 3 --no-chunked
    python bench/bench_scan.py --smoke              # 8 rows of 10 steps, once, no git history: it runs, seconds
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
import types

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common import selective_scan  # noqa: E402

BEFORE = "ec685d7"   # main before the scan's rewrite


def common_at(commit: str):
    """common.py as of `commit` (git show), as a module of its own."""
    try:
        source = subprocess.run(["git", "-C", ROOT, "show", f"{commit}:common.py"], capture_output=True, text=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"error: cannot read common.py at {commit} with git ({error}); pass --before COMMIT from "
                         f"this repository's history")
    module = types.ModuleType(f"common_{commit}")
    sys.modules[module.__name__] = module   # dataclasses look their module up
    exec(compile(source, f"common.py@{commit}", "exec"), module.__dict__)
    return module


def chunked_scan(x, dt, A, B, C, D, T: int):
    """The chunked parallel form: inside each chunk of T steps h_t = sum_{s<=t} exp(S_t - S_s) u_s + exp(S_t) h_start
    with S = cumsum(dt A) within the chunk and u = dt B x (a masked (T, T) decay matrix per row, channel and state;
    differences of cumsums, so no exponent is positive); across chunks a recurrence over the L / T chunk states."""
    Bt, L, d = x.shape
    n = A.shape[1]
    pad = -L % T
    x, dt, B, C = (F.pad(t, (0, 0, 0, pad)) for t in (x, dt, B, C))                # dt = 0: decay 1, no input
    chunks = (L + pad) // T
    S = (dt.unsqueeze(-1) * A).view(Bt, chunks, T, d, n).cumsum(2)                   # (Bt, c, T, d, n)
    u = ((dt * x).unsqueeze(-1) * B.unsqueeze(2)).view(Bt, chunks, T, d, n)           # (Bt, c, T, d, n)
    later = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)              # s > t
    gaps = (S.unsqueeze(3) - S.unsqueeze(2)).masked_fill(later[:, :, None, None], float("-inf"))  # S_t - S_s
    local = (torch.exp(gaps) * u.unsqueeze(2)).sum(3)                                # (Bt, c, T, d, n)
    h, starts = x.new_zeros(Bt, d, n), []
    for k in range(chunks):
        starts.append(h)
        h = torch.exp(S[:, k, -1]) * h + local[:, k, -1]                             # chunk k's last state
    states = local + torch.exp(S) * torch.stack(starts, 1).unsqueeze(2)              # (Bt, c, T, d, n)
    y = (states.view(Bt, L + pad, d, n) * C.unsqueeze(2)).sum(-1)[:, :L]              # (Bt, L, d)
    return y + x[:, :L] * D


def inputs(batch: int, L: int, d_inner: int, d_state: int, seed: int = 0):
    """Random inputs at MambaBlock's scales: dt = softplus(. - 3) ~ 0.05, A = -(1..d_state) (Mamba's init)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, L, d_inner, generator=g)
    dt = F.softplus(torch.randn(batch, L, d_inner, generator=g) - 3)
    A = -torch.arange(1.0, d_state + 1).expand(d_inner, d_state).clone()
    B, C = torch.randn(batch, L, d_state, generator=g), torch.randn(batch, L, d_state, generator=g)
    D = torch.ones(d_inner)
    lengths = (1 + torch.distributions.Geometric(1 / 7.8).sample((batch,))).clamp(max=L).long()
    return [x, dt, A, B, C, D], lengths, torch.randn(batch, L, d_inner, generator=g)


def timed(scan, tensors, weights, grad: bool):
    """Seconds (wall, CPU) of one forward (+ backward) of `scan`."""
    wall, cpu = time.perf_counter(), time.process_time()
    if grad:
        tensors = [t.requires_grad_() for t in tensors]
        torch.autograd.grad(scan(*tensors), tensors, weights)
    else:
        with torch.no_grad():
            scan(*tensors)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128, help="rows (sequences) per call (default 128)")
    parser.add_argument("--max-len", type=int, default=50, help="L (default 50)")
    parser.add_argument("--repeats", type=int, default=5, help="calls per row, alternated (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--before", default=BEFORE, help=f"the commit whose scan is the 'before' row (default "
                                                         f"{BEFORE})")
    parser.add_argument("--no-chunked", action="store_true", help="leave out the chunked parallel rows (slow)")
    parser.add_argument("--smoke", action="store_true",
                        help="batch 8, L 10, one repeat, without the before row (it reads git history)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch, args.max_len, args.repeats = 8, 10, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tensors, lengths, weights = inputs(args.batch, args.max_len, 128, 16)
    rows = {} if args.smoke else {"before (time-step loop)": common_at(args.before).selective_scan}
    rows.update({"after": selective_scan, "after, padded like Beauty": lambda *t: selective_scan(*t, lengths)})
    if not args.no_chunked:
        rows.update({f"chunked parallel, T = {T}": (lambda T: lambda *t: chunked_scan(*t, T))(T) for T in (2, 5)})
    times = {(row, grad): [] for row in rows for grad in (True, False)}
    for repeat in range(args.repeats + 1):                                           # the first is a warm-up
        for row, scan in rows.items():
            for grad in (True, False):
                seconds = timed(scan, [t.clone() for t in tensors], weights, grad)
                if repeat:
                    times[row, grad].append(seconds)
    print(f"selective scan, batch {args.batch}, L {args.max_len}, d_inner 128, d_state 16, {args.threads} "
          f"thread(s), median of {args.repeats}; wall ms (CPU ms), speed-up over the first row")
    print(f"  {'':28s} {'forward + backward':>32s} {'forward, no grad':>32s}")
    first = next(iter(rows))
    for row in rows:
        cells = []
        for grad in (True, False):
            wall, cpu = (statistics.median(s[i] for s in times[row, grad]) for i in (0, 1))
            base = statistics.median(s[0] for s in times[first, grad])
            cells.append(f"{wall * 1e3:9.1f} ({cpu * 1e3:7.1f})  x{base / wall:6.2f}")
        print(f"  {row:28s} {cells[0]:>32s} {cells[1]:>32s}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return times


if __name__ == "__main__":
    main()
