"""What an MDCNS epoch costs against the baselines' epochs, side by side. CPU; not part of the test suite.

One training epoch of each row, through the method files exactly as `run_all.sh` runs them: each row's command is
the grid's own (`run_all.sh --dry-run`), with `--epochs 1` appended (a subprocess each, fit's own epoch timer,
evaluation excluded), the rows alternated within each repetition, medians, and ratios to RNS measured in the same
run (the machine is shared: absolute seconds drift with load).

Rows: RNS and DNS(M,N) (baselines.py); MDCNS with a GRU4Rec peer (a cheap peer: the cost of the two-model
scheme itself); MDCNS with its published Mamba4Rec peer (the cost the paper's setting adds). The grids: Beauty
under the MDCNS protocol (`mdcns-beauty`), ml-1m under SASRec's own settings (`ml1m-loo`), synthetic (`--quick`).

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
GRIDS = {"beauty": ["--grid", "mdcns-beauty"], "ml-1m": ["--grid", "ml1m-loo"], "synthetic": ["--quick"]}
# row: (the grid's method, flags appended to its command)
ROWS = {
    "RNS": ("rns", []),
    "DNS(M,N)": ("dnsmn", []),
    "MDCNS, GRU4Rec peer": ("mdcns", ["--peer", "gru4rec"]),
    "MDCNS, Mamba4Rec peer": ("mdcns", ["--peer", "mamba4rec"]),
}


def grid_commands(grid_flags, data_dir):
    """method -> its SASRec command in the grid that `grid_flags` select (e.g. GRIDS["beauty"]), as
    `run_all.sh --dry-run` lists it (seed 1)."""
    with tempfile.TemporaryDirectory() as runs:   # an empty runs folder: every run is listed as to do
        listing = subprocess.run(["bash", os.path.join(ROOT, "run_all.sh"), "--dry-run", *grid_flags,
                                  "--seeds", "1", "--data-dir", data_dir, "--runs", runs],
                                 capture_output=True, text=True, check=True).stdout
    commands = {}
    for line in listing.splitlines():
        if line.startswith("todo") and "--backbone sasrec" in line:
            words = line.split()[1:]
            method = words[words.index("--sampler") + 1] if "--sampler" in words else words[1][:-len(".py")]
            commands[method] = [sys.executable, *words[1:]]          # the interpreter running this script
    return commands


def epoch_seconds(command, extra, threads, out_dir):
    """Seconds of one training epoch of `command` + `extra` (its results.json's epoch_seconds[0])."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    result = subprocess.run([*command, *extra, "--epochs", "1", "--out-dir", out_dir], cwd=ROOT, env=env,
                            capture_output=True, text=True)   # the later --epochs / --out-dir win
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command[1:3])} failed: {result.stderr.strip().splitlines()[-1]}")
    with open(os.path.join(out_dir, "results.json")) as f:
        return json.load(f)["epoch_seconds"][0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="beauty", choices=sorted(GRIDS),
                        help="whose grid's commands to time: beauty (mdcns-beauty), ml-1m (ml1m-loo), synthetic "
                             "(--quick) (default beauty)")
    parser.add_argument("--data-dir", default=DATA_DIR, help="where the datasets are (default ../shared/data)")
    parser.add_argument("--repeats", type=int, default=2, help="epochs per row, alternated (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every run (default 1)")
    args = parser.parse_args()
    commands = grid_commands(GRIDS[args.dataset], args.data_dir)
    seconds = {row: [] for row in ROWS}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for index, (row, (method, extra)) in enumerate(ROWS.items()):
                out_dir = os.path.join(tmp, f"repeat{repeat}-row{index}")
                seconds[row].append(epoch_seconds(commands[method], extra, args.threads, out_dir))
                print(f"  repeat {repeat + 1}: {row:22s} {seconds[row][-1]:7.1f}s", flush=True)
    medians = {row: statistics.median(s) for row, s in seconds.items()}
    print(f"\nSASRec training epoch on {args.dataset}, {args.threads} thread(s), median of {args.repeats}, "
          f"ratio to RNS in the same run")
    for row, s in medians.items():
        print(f"  {row:22s} x{s / medians['RNS']:5.2f}   ({s:.1f}s)")


if __name__ == "__main__":
    main()
