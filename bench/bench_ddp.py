"""What a second process buys: one training epoch at 1 and at 2 processes (`torchrun --standalone
--nproc_per_node 2`, gloo, CPU), and the all-reduce of one step's gradients alone. CPU; not part of the test suite.

Each row is a method-file command run with `--epochs 1` once as `python <script>` and once under torchrun (a
subprocess each; fit's own epoch timer, rank 0's, validation excluded; results.json's `eval_seconds`, the sharded
test evaluation, beside it), the two alternated within each repetition (every other repetition in reverse order),
medians. The global batch is the same at 1 and 2 processes (--batch-size rows, split by user), so an epoch takes
as many steps: the second process can only halve the work per step. The 1-minute load average is printed with
every run: on a shared machine a second process only helps if a core is free.

The all-reduce row times `torch.distributed.all_reduce` of one flat float32 buffer the size of the row's
parameters between 2 gloo processes (what `common.train_step` sends once per step), median of 50.

    python bench/bench_ddp.py                          # every row (ml-100k, Beauty from --data-dir): ~8 min
    python bench/bench_ddp.py --rows lightgcn-100k,sasrec-beauty --repeats 2    # the first two rows of the table
    python bench/bench_ddp.py --rows mdcns-beauty --repeats 1 --data-dir /path/to/data
    python bench/bench_ddp.py --smoke                  # BPR-MF on synthetic data, once: the script runs, seconds
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# row: (method file and flags, what the table calls it)
ROWS = {
    "lightgcn-100k": (["baselines.py", "--sampler", "rns", "--dataset", "ml-100k", "--backbone", "lightgcn",
                       "--split", "ratio"], "LightGCN ml-100k, RNS, ratio split, batch 2048 interactions"),
    "sasrec-beauty": (["baselines.py", "--sampler", "rns", "--dataset", "beauty", "--backbone", "sasrec",
                       "--split", "user", "--loss", "bce"], "SASRec Beauty, RNS, user split, BCE, batch 128 sequences"),
    "mdcns-beauty": (["mdcns.py", "--dataset", "beauty", "--peer", "gru4rec"],
                     "MDCNS Beauty, SASRec + GRU4Rec peer, ~1024 examples per batch"),
    "smoke": (["baselines.py", "--sampler", "rns", "--dataset", "synthetic", "--backbone", "mf", "--split", "ratio"],
              "BPR-MF synthetic, RNS (--smoke)"),
}


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def one_epoch(command, processes: int, data_dir: str, out_dir: str) -> dict:
    """One training epoch of `command` at `processes` processes: its epoch and test-evaluation seconds."""
    launcher = [sys.executable] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run([*launcher, *command, "--data-dir", data_dir, "--epochs", "1", "--quiet", "--out-dir",
                             out_dir], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} at {processes} processes failed: "
                         f"{result.stderr.strip().splitlines()[-1]}")
    with open(os.path.join(out_dir, "results.json")) as f:
        saved = json.load(f)
    assert saved["config"]["world_size"] == processes
    rows = saved["data"].get("train_rows", saved["data"]["train_interactions"])   # sequences, or interactions
    state = torch.load(os.path.join(out_dir, "model.pt"), weights_only=True)["state_dict"]   # the model(s)
    return {"epoch": saved["epoch_seconds"][0], "eval": saved["eval_seconds"],
            "steps": -(-rows // saved["config"]["batch_size"]),
            "parameters": sum(v.numel() for v in state.values() if v.is_floating_point())}


def _all_reduce_worker(rank, folder, numel, repeats):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=300))
    buffer, seconds = torch.randn(numel), []
    for _ in range(repeats + 5):                    # 5 warm-up rounds
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(buffer)
        seconds.append(time.perf_counter() - start)
    if rank == 0:
        with open(os.path.join(folder, "seconds.json"), "w") as f:
            json.dump(seconds[5:], f)
    dist.destroy_process_group()


def all_reduce_ms(numel: int, repeats: int = 50) -> float:
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_all_reduce_worker, args=(folder, numel, repeats), nprocs=2, join=True)
        with open(os.path.join(folder, "seconds.json")) as f:
            return 1000 * statistics.median(json.load(f))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(row for row in ROWS if row != "smoke"),
                        help=f"comma-separated, of: {', '.join(ROWS)}")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--smoke", action="store_true", help="row smoke (synthetic data), one repetition, the "
                                                             "all-reduce 5 times")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.repeats = "smoke", 1
    rows = args.rows.split(",")
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        raise SystemExit(f"error: unknown rows {unknown}; choose from {', '.join(ROWS)}")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, {os.cpu_count()} CPUs, load {load()}")
    table = []
    with tempfile.TemporaryDirectory() as runs:
        for row in rows:
            command, title = ROWS[row]
            times = {1: [], 2: []}
            for repeat in range(args.repeats):
                for processes in ((1, 2) if repeat % 2 == 0 else (2, 1)):
                    before = load()
                    got = one_epoch(command, processes, args.data_dir, os.path.join(runs, f"{row}-{processes}-{repeat}"))
                    times[processes].append(got)
                    print(f"{row} {processes} process(es): epoch {got['epoch']:.1f} s, test evaluation "
                          f"{got['eval']:.2f} s (load {before} -> {load()})", flush=True)
            numel, steps = times[1][0]["parameters"], times[1][0]["steps"]
            reduce_ms = all_reduce_ms(numel, 5 if args.smoke else 50)
            print(f"{row}: all-reduce of {numel:,} float32 gradients between 2 processes: {reduce_ms:.2f} ms, "
                  f"x {steps} steps", flush=True)
            epoch = {p: statistics.median(t["epoch"] for t in times[p]) for p in times}
            evaluation = {p: statistics.median(t["eval"] for t in times[p]) for p in times}
            table.append(f"| {title} | {steps} | {epoch[1]:.1f} | {epoch[2]:.1f} | {epoch[1] / epoch[2]:.2f}× | "
                         f"{evaluation[1]:.2f} / {evaluation[2]:.2f} | {reduce_ms:.1f} ms "
                         f"({100 * reduce_ms * steps / 1000 / epoch[2]:.0f}% of the 2-process epoch) |")
    print(f"\nload at the end {load()}\n")
    print("| row | steps / epoch | 1 process, s / epoch | 2 processes, s / epoch | speed-up | test evaluation s, "
          "1 / 2 | all-reduce per step |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(table))
    return table


if __name__ == "__main__":
    main()
