"""What an epoch of MDCNS's other baselines (MixGCF, MixGCF+, AdaSIR, GNNO, SRNS) costs against RNS. CPU; not
part of the test suite.

One training epoch per row through baselines.py exactly as `run_all.sh` runs it: the commands are the grids' own
(`run_all.sh --dry-run`: RNS, MixGCF, AdaSIR and SRNS from `table3` on Beauty, MixGCF+ and GNNO at M = 5 from
their sweeps `mixgcfplus-sweep` and `gnno-sweep`; Beauty, user split, SASRec D = 64, L = 50, BCE, ~1024 examples
per batch), with `--epochs 1` appended, each in a fresh subprocess, the rows
alternated within each repetition, medians, and ratios to RNS from the same run (the machine is shared). Per
row: fit's epoch seconds (the sampler's per-epoch work, e.g. AdaSIR's pool refresh or SRNS's snapshot, happens
inside the epoch and is counted), the process's wall seconds (data loading, GNNO's Jaccard matrix, validation and
test included) and its peak RSS.

    python bench/bench_samplers_extra.py                       # Beauty from --data-dir
    python bench/bench_samplers_extra.py --repeats 1 --threads 2
    python bench/bench_samplers_extra.py --dataset synthetic   # every row on generated data
    python bench/bench_samplers_extra.py --smoke               # synthetic, RNS and MixGCF once: it runs, seconds
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_mdcns import DATA_DIR, GRIDS, ROOT, grid_commands  # noqa: E402

ROWS = ("rns", "mixgcf", "mixgcfmn", "adasir", "gnno", "srns")
SMOKE_ROWS = ("rns", "mixgcf")


def run_one_epoch(command, dataset, threads, out_dir):
    """(epoch seconds, wall seconds, peak RSS in GB) of `command` for one epoch on `dataset`."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    extra = ["--epochs", "1", "--out-dir", out_dir] + (["--dataset", dataset] if dataset != "beauty" else [])
    start = time.perf_counter()
    with open(out_dir + ".log", "w") as log:
        process = subprocess.Popen([*command, *extra], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)                     # the later --epochs / --out-dir win
    wall = time.perf_counter() - start
    if status != 0:
        with open(out_dir + ".log") as log:
            raise SystemExit(f"error: {' '.join(command[1:3])} failed: {log.read().strip().splitlines()[-1]}")
    with open(os.path.join(out_dir, "results.json")) as f:
        return json.load(f)["epoch_seconds"][0], wall, usage.ru_maxrss / 2 ** 20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="beauty", choices=("beauty", "synthetic"),
                        help="beauty (the grids' data), or synthetic (the same commands on generated data)")
    parser.add_argument("--data-dir", default=DATA_DIR, help="where the datasets are (default data/ in the repository)")
    parser.add_argument("--repeats", type=int, default=2, help="epochs per row, alternated (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every run (default 1)")
    parser.add_argument("--smoke", action="store_true", help="synthetic data, rows RNS and MixGCF, one repetition")
    args = parser.parse_args(argv)
    rows = SMOKE_ROWS if args.smoke else ROWS
    if args.smoke:
        args.dataset, args.repeats = "synthetic", 1
    commands = {**grid_commands(GRIDS["beauty-table3"], args.data_dir),
                **grid_commands(["--grid", "mixgcfplus-sweep", "--method", "mixgcfmn-m5"], args.data_dir),
                **grid_commands(["--grid", "gnno-sweep", "--method", "gnno-m5"], args.data_dir)}
    missing = [row for row in rows if row not in commands]
    if missing:
        raise SystemExit(f"error: run_all.sh --dry-run lists no command for {', '.join(missing)}; the grids this "
                         f"script reads (table3, mixgcfplus-sweep, gnno-sweep) have changed: update main()")
    runs = {row: [] for row in rows}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for row in rows:
                out_dir = os.path.join(tmp, f"repeat{repeat}-{row}")
                runs[row].append(run_one_epoch(commands[row], args.dataset, args.threads, out_dir))
                epoch, wall, rss = runs[row][-1]
                print(f"  repeat {repeat + 1}: {row:9s} epoch {epoch:7.1f}s  wall {wall:7.1f}s  RSS {rss:.2f} GB",
                      flush=True)
    medians = {row: [statistics.median(r[i] for r in rs) for i in range(3)] for row, rs in runs.items()}
    rns = medians["rns"][0]
    print(f"\nSASRec training epoch on {args.dataset}, {args.threads} thread(s), median of {args.repeats}, "
          f"ratio to RNS in the same run\n")
    print("| sampler | s / epoch | × RNS | wall s (1 epoch + load + setup + eval) | peak RSS GB |")
    print("|---|---|---|---|---|")
    for row, (epoch, wall, rss) in medians.items():
        print(f"| {row} | {epoch:.1f} | {epoch / rns:.2f} | {wall:.1f} | {rss:.2f} |")
    return medians


if __name__ == "__main__":
    main()
