"""Does `torch.compile` make one step of the selective scan cheaper on the CPU? Not a test.

One time step of `common._SelectiveScan`, forward and backward, at Mamba4Rec's shapes (d_inner 128, d_state 16,
the (rows, d_state, d_inner) layout), for a few row counts: the scan's eager ops with preallocated outputs (as
`_SelectiveScan` runs them) against the same step as one `torch.compile(dynamic=True)` function, which inductor
fuses into one C++ loop (every step's row count is a new shape, hence dynamic). Prints the compile time (the
first calls, wall) and the CPU microseconds per step (`time.thread_time`, one thread), and checks that both give
the same numbers. 64 rows is a full row group, 1-8 rows are the steps of a batch's few long rows.

    python bench/compile_scan_step.py            # ~15 s, a few of them compiling
    python bench/compile_scan_step.py --smoke    # the fused functions uncompiled, few calls: checks the script
"""
import argparse
import time

import torch

n, d = 16, 128   # d_state, d_inner (Mamba4Rec at D = 64)


def forward_eager(h, dt, A2, dtx, B, C, out, decay, y):
    a = torch.mul(dt, A2, out=decay).exp2_()                        # exp(dt_t A)
    torch.mul(h, a, out=out).addcmul_(dtx, B)                       # h_t = a h_{t-1} + dt B x
    torch.bmm(C, out, out=y)                                        # C_t . h_t


def forward_fused(h, dt, A2, dtx, B, C):
    h = h * torch.exp2(dt * A2) + dtx * B
    return h, (C.transpose(1, 2) * h).sum(1, keepdim=True)


def backward_eager(G, gy, h, h_prev, dt, A2, At, dtx, B, C, gA, decay, gB, gdtx, gC, gdt):
    Gt = G.addcmul_(C.transpose(1, 2), gy)                          # G_t = C_t gy_t + carried
    torch.bmm(dtx, Gt.transpose(1, 2), out=gB)                      # sum_d G dt x
    torch.bmm(B.transpose(1, 2), Gt, out=gdtx)                      # sum_n G B
    torch.bmm(gy, h.transpose(1, 2), out=gC)                        # sum_d h gy
    a = torch.mul(dt, A2, out=decay).exp2_()
    Gt.mul_(a)                                                      # carried to t - 1
    W = torch.mul(Gt, h_prev, out=a)                                # dLoss/d(dt A)
    gA.addcmul_(W, dt)
    torch.sum(W.mul_(At), 1, keepdim=True, out=gdt)


def backward_fused(G, gy, h, h_prev, dt, A2, At, dtx, B, C, gA):
    G = G + C.transpose(1, 2) * gy
    gB = (dtx * G).sum(2).unsqueeze(1)
    gdtx = (B * G).sum(1, keepdim=True)
    gC = (gy * h).sum(2).unsqueeze(1)
    G = G * torch.exp2(dt * A2)
    W = G * h_prev
    return G, gB, gdtx, gC, gA + W * dt, (W * At).sum(1, keepdim=True)


def inputs(rows):
    g = torch.Generator().manual_seed(rows)
    r = lambda *s: torch.randn(*s, generator=g)                                        # noqa: E731
    At = -torch.rand(n, d, generator=g) * 16
    return dict(h=r(rows, n, d), h_prev=r(rows, n, d), G=r(rows, n, d), gy=r(rows, 1, d),
                dt=torch.rand(rows, 1, d, generator=g), A2=At * 1.4426950408889634, At=At, dtx=r(rows, 1, d),
                B=r(rows, n, 1), C=r(rows, 1, n), gA=torch.zeros(rows, n, d))


def per_call_us(fn, repeats):
    for _ in range(min(20, repeats)):
        fn()
    start = time.thread_time()
    for _ in range(repeats):
        fn()
    return (time.thread_time() - start) / repeats * 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="no compile, 5 calls per row: checks the script runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    compile_ = (lambda f: f) if args.smoke else (lambda f: torch.compile(f, dynamic=True))
    fwd, bwd = compile_(forward_fused), compile_(backward_fused)
    repeats = 5 if args.smoke else 400
    start = time.perf_counter()
    for rows in (64, 7):            # the first shape compiles, the second recompiles once with a dynamic size
        x = inputs(rows)
        fwd(*(x[k] for k in ("h", "dt", "A2", "dtx", "B", "C")))
        bwd(*(x[k] for k in ("G", "gy", "h", "h_prev", "dt", "A2", "At", "dtx", "B", "C", "gA")))
    print(f"{'first calls' if args.smoke else 'compile'} (forward + backward step, wall): "
          f"{time.perf_counter() - start:.1f} s")
    print("| rows | forward eager, us | forward compiled, us | backward eager, us | backward compiled, us |")
    print("|---|---|---|---|---|")
    table = {}
    for rows in (64, 16, 4, 1):
        x = inputs(rows)
        out, decay, y = torch.empty(rows, n, d), torch.empty(rows, n, d), torch.empty(rows, 1, d)
        f_args = [x[k] for k in ("h", "dt", "A2", "dtx", "B", "C")]
        hf, yf = fwd(*f_args)
        forward_eager(*f_args, out, decay, y)
        assert torch.allclose(hf, out, atol=1e-4) and torch.allclose(yf, y, atol=1e-3), "forward differs"
        b_args = [x[k] for k in ("G", "gy", "h", "h_prev", "dt", "A2", "At", "dtx", "B", "C", "gA")]
        fused = bwd(*b_args)
        gB, gdtx, gC, gdt = (torch.empty(rows, 1, k) for k in (n, d, n, d))
        eager_args = [t.clone() for t in b_args]
        backward_eager(*eager_args, decay, gB, gdtx, gC, gdt)
        for a, b in zip(fused, (eager_args[0], gB, gdtx, gC, eager_args[-1], gdt)):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-3), "backward differs"
        # the eager backward runs in place on G and gA, as in the scan; the compiled one allocates its outputs
        times = [per_call_us(lambda: forward_eager(*f_args, out, decay, y), repeats),
                 per_call_us(lambda: fwd(*f_args), repeats),
                 per_call_us(lambda: backward_eager(*eager_args, decay, gB, gdtx, gC, gdt), repeats),
                 per_call_us(lambda: bwd(*b_args), repeats)]
        print(f"| {rows} | " + " | ".join(f"{t:.1f}" for t in times) + " |")
        table[rows] = times
    return table


if __name__ == "__main__":
    main()
