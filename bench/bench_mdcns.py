"""What an MDCNS epoch costs against the baselines' epochs, side by side. CPU; not part of the test suite.

One training epoch of each row, through the method files exactly as `run_all.sh` runs them: each row's command is
the grid's own (`run_all.sh --dry-run`), with `--epochs 1` appended (a subprocess each, fit's own epoch timer,
evaluation excluded), the rows alternated within each repetition (every other one in reverse order), medians, and
ratios to RNS measured in the same run (the machine is shared: absolute seconds drift with load).

Rows: RNS with the grid's SASRec, and with GRU4Rec and Mamba4Rec as the trained backbone (the grid's RNS command
with `--backbone ...`); DNS(M,N) (baselines.py); MDCNS with its published Mamba4Rec peer (the cost of the paper's
setting) and with a GRU4Rec peer (a cheap peer: the cost of the two-model scheme itself); a row whose method the
grid does not list is skipped. With `--before COMMIT` every row also runs on the code of COMMIT (`git archive`
into a temporary folder), alternated with the others. The grids: the s3rec SASRec of `table3`, Beauty's runs
(`beauty-table3`, the default: the setting of the speed targets below), Beauty under the MDCNS protocol with
Kang's block (`mdcns-beauty`, 20 epochs), ml-1m under SASRec's own settings (`ml1m-loo`), synthetic (`--quick`).

The targets, printed at the end from each repetition's own rows (side by side) and from the medians: an MDCNS
epoch with the Mamba4Rec peer <= 3x the RNS epoch of the same SASRec, and a Mamba4Rec RNS epoch <= 1.3x SASRec's.

    python bench/bench_mdcns.py --data-dir DIR          # table3's Beauty, 2 repetitions
    python bench/bench_mdcns.py --repeats 1 --before ec8af34       # and every row on the code of ec8af34
    python bench/bench_mdcns.py --dataset beauty --repeats 1       # the mdcns-beauty grid (Kang's block)
    python bench/bench_mdcns.py --smoke                            # synthetic, two rows, seconds: the script runs
"""
import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(ROOT, "data")
GRIDS = {"beauty-table3": ["--grid", "table3", "--dataset", "beauty"], "beauty": ["--grid", "mdcns-beauty"],
         "ml-1m": ["--grid", "ml1m-loo"], "synthetic": ["--quick"]}
# row (--rows): (its name in the table, the grid's method, flags appended to its command)
ROWS = {
    "rns": ("RNS", "rns", []),
    "rns-gru4rec": ("RNS, GRU4Rec backbone", "rns", ["--backbone", "gru4rec"]),
    "rns-mamba4rec": ("RNS, Mamba4Rec backbone", "rns", ["--backbone", "mamba4rec"]),
    "dnsmn": ("DNS(M,N)", "dnsmn", []),
    "mdcns-mamba4rec": ("MDCNS, Mamba4Rec peer", "mdcns", ["--peer", "mamba4rec"]),
    "mdcns-gru4rec": ("MDCNS, GRU4Rec peer", "mdcns", ["--peer", "gru4rec"]),
}
SMOKE_ROWS = "rns,mdcns-mamba4rec"
# (row, the row it is compared with, the bound): the speed targets
TARGETS = (("MDCNS, Mamba4Rec peer", "RNS", 3.0), ("RNS, Mamba4Rec backbone", "RNS", 1.3))


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


def code_at(commit: str, folder: str) -> str:
    """The repository's files as of `commit`, written to `folder` (git archive). Returns the folder."""
    archive = subprocess.run(["git", "-C", ROOT, "archive", commit], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"error: git archive {commit} failed: {archive.stderr.decode().strip()}; pass --before "
                         f"COMMIT from this repository's history")
    tarfile.open(fileobj=io.BytesIO(archive.stdout)).extractall(folder, filter="data")
    return folder


def epoch_seconds(command, extra, threads, out_dir, code=ROOT):
    """Seconds of one training epoch of `command` + `extra` run on the code in `code` (its results.json's
    epoch_seconds[0])."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    result = subprocess.run([*command, *extra, "--epochs", "1", "--out-dir", out_dir], cwd=code, env=env,
                            capture_output=True, text=True)   # the later --epochs / --out-dir win
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command[1:3])} failed: {result.stderr.strip().splitlines()[-1]}")
    with open(os.path.join(out_dir, "results.json")) as f:
        return json.load(f)["epoch_seconds"][0]


def targets(seconds: dict, repeats: int) -> list:
    """One line per target whose rows ran: the ratio in each repetition (rows side by side) and of the medians."""
    lines = []
    for row, base, bound in TARGETS:
        if row in seconds and base in seconds:
            each = [a / b for a, b in zip(seconds[row], seconds[base])]
            ratio = statistics.median(seconds[row]) / statistics.median(seconds[base])
            lines.append(f"  {row} / {base}: {', '.join(f'{r:.2f}' for r in each)} (repetitions), {ratio:.2f} "
                         f"(medians); target <= {bound}: {'met' if ratio <= bound else 'missed'}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="beauty-table3", choices=sorted(GRIDS),
                        help="whose grid's commands to time: beauty-table3 (table3's Beauty runs, s3rec SASRec), "
                             "beauty (mdcns-beauty, Kang's block), ml-1m (ml1m-loo), synthetic (--quick) "
                             "(default beauty-table3)")
    parser.add_argument("--data-dir", default=DATA_DIR, help="where the datasets are (default data/ in the repository)")
    parser.add_argument("--repeats", type=int, default=2, help="epochs per row, alternated (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every run (default 1)")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated, of: %(default)s (default: all)")
    parser.add_argument("--before", metavar="COMMIT", help="also run every row on the code of COMMIT (e.g. "
                                                           "ec685d7, before the scan's rewrite)")
    parser.add_argument("--smoke", action="store_true",
                        help="synthetic data (the --quick grid), rows RNS and MDCNS with the Mamba4Rec peer, one "
                             "repetition: checks that the script runs, in seconds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.dataset, args.repeats, args.rows = "synthetic", 1, SMOKE_ROWS
    unknown = [row for row in args.rows.split(",") if row not in ROWS]
    if unknown:
        raise SystemExit(f"error: unknown row(s) {', '.join(unknown)} in --rows; choose from: {', '.join(ROWS)}")
    wanted = [ROWS[row] for row in args.rows.split(",")]
    commands = grid_commands(GRIDS[args.dataset], args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        listed = {row: (method, extra) for row, method, extra in wanted if method in commands}
        for row, method, _ in wanted:
            if method not in commands:
                print(f"  skipped: {row} (the grid has no {method} run)")
        rows = {row: (method, extra, ROOT) for row, (method, extra) in listed.items()}
        if args.before:
            before = code_at(args.before, os.path.join(tmp, "before"))
            rows.update({f"{row} (before)": (method, extra, before) for row, (method, extra) in listed.items()})
        seconds = {row: [] for row in rows}
        for repeat in range(args.repeats):   # every other repetition in reverse order: load drifts hit all rows
            order = list(enumerate(rows.items()))
            for index, (row, (method, extra, code)) in order[::-1] if repeat % 2 else order:
                out_dir = os.path.join(tmp, f"repeat{repeat}-row{index}")
                seconds[row].append(epoch_seconds(commands[method], extra, args.threads, out_dir, code))
                print(f"  repeat {repeat + 1}: {row:35s} {seconds[row][-1]:7.1f}s", flush=True)
    medians = {row: statistics.median(s) for row, s in seconds.items()}
    print(f"\nTraining epoch on {args.dataset} (SASRec unless named), {args.threads} thread(s), median of "
          f"{args.repeats}, ratio to RNS in the same run; load average at the end {os.getloadavg()[0]:.2f}")
    for row, s in medians.items():
        print(f"  {row:35s} x{s / medians['RNS']:5.2f}   ({s:.1f}s)" if "RNS" in medians else f"  {row:35s} {s:.1f}s")
    lines = targets(seconds, args.repeats)
    if lines:
        print("Targets:\n" + "\n".join(lines))
    return seconds


if __name__ == "__main__":
    main()
