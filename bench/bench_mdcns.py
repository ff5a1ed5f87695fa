"""What an MDCNS epoch costs against the baselines' epochs, side by side. CPU; not part of the test suite.

One training epoch of each row, through the method files exactly as `run_all.sh` runs them (a subprocess
each, `--epochs 1`, fit's own epoch timer, evaluation excluded), the rows alternated within each repetition,
medians, and ratios to RNS measured in the same run (the machine is shared: absolute seconds drift with load).

Rows: RNS and DNS(M,N) (baselines.py); MDCNS with a GRU4Rec peer (a cheap peer: the cost of the two-model
scheme itself); MDCNS with its published Mamba4Rec peer (the cost the paper's setting adds). The settings are
the grids' of `run_all.sh`: Beauty under the MDCNS protocol, ml-1m under SASRec's own settings.

    python bench/bench_mdcns.py                          # Beauty from ../shared/data
    python bench/bench_mdcns.py --dataset ml-1m --repeats 1
    python bench/bench_mdcns.py --dataset synthetic      # offline smoke run of the script
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(ROOT, "..", "shared", "data")
# the flags of run_all.sh's grid lines (mdcns-beauty, ml1m-loo); synthetic: a small case of the Beauty flags
GRID_FLAGS = {
    "beauty": ["--split", "user", "--loss", "bce", "--dim", "64", "--heads", "2", "--dropout", "0.5",
               "--max-len", "50"],
    "ml-1m": ["--split", "loo", "--max-len", "200", "--dim", "50", "--heads", "1", "--dropout", "0.2",
              "--batch-size", "128", "--loss", "bpr"],
    "synthetic": ["--split", "user", "--loss", "bce", "--dim", "16", "--max-len", "20"],
}
ROWS = {
    "RNS": ["baselines.py", "--sampler", "rns"],
    "DNS(M,N)": ["baselines.py", "--sampler", "dnsmn"],
    "MDCNS, GRU4Rec peer": ["mdcns.py", "--top-m", "1", "--peer", "gru4rec"],
    "MDCNS, Mamba4Rec peer": ["mdcns.py", "--top-m", "1", "--peer", "mamba4rec"],
}


def epoch_seconds(row, dataset, data_dir, threads, out_dir):
    """Seconds of one training epoch of `row` (its results.json's epoch_seconds[0])."""
    command = [sys.executable, *ROWS[row][:1], "--dataset", dataset, "--data-dir", data_dir, "--backbone",
               "sasrec", "--epochs", "1", "--seed", "1", "--quiet", "--out-dir", out_dir, *ROWS[row][1:],
               *GRID_FLAGS[dataset]]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: {row} failed: {result.stderr.strip().splitlines()[-1]}")
    with open(os.path.join(out_dir, "results.json")) as f:
        return json.load(f)["epoch_seconds"][0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="beauty", choices=sorted(GRID_FLAGS))
    parser.add_argument("--data-dir", default=DATA_DIR, help="where the datasets are (default ../shared/data)")
    parser.add_argument("--repeats", type=int, default=2, help="epochs per row, alternated (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every run (default 1)")
    args = parser.parse_args()
    seconds = {row: [] for row in ROWS}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for index, row in enumerate(ROWS):
                out_dir = os.path.join(tmp, f"repeat{repeat}-row{index}")
                seconds[row].append(epoch_seconds(row, args.dataset, args.data_dir, args.threads, out_dir))
                print(f"  repeat {repeat + 1}: {row:22s} {seconds[row][-1]:7.1f}s", flush=True)
    medians = {row: statistics.median(s) for row, s in seconds.items()}
    print(f"\nSASRec training epoch on {args.dataset}, {args.threads} thread(s), median of {args.repeats}, "
          f"ratio to RNS in the same run")
    for row, s in medians.items():
        print(f"  {row:22s} x{s / medians['RNS']:5.2f}   ({s:.1f}s)")


if __name__ == "__main__":
    main()
