"""How MDCNS's published γ, τ were chosen, measured on the official code's own logs.

    python results/official_selection.py --repo /path/to/SIGIR26-MDCNS [--dataset LastFM] [--backbone Linrec]
        [--curve 1.0,0.7]

`--repo` is a clone (or bare git directory) of Lyz103/SIGIR26-MDCNS. Its logs `MDCNS_Code/<folder>/<dataset>-<self>-
<peer>_..._l<γ>_..._kdt<τ>_....log`, in TEST_KD (Table 3: SASRec self, Mamba4Rec peer, BCE), EXP2_BCE (Table 4: LinRec
and FMLP4Rec self), EXP2_BPR (Table 5: SASRec, GRU4Rec, Mamba4Rec self at BPR) and Exp6_WeaktoStrong (Table 7: SASRec
self, GRU4Rec peer), are one run per (γ, τ) of `MDCNS_Code/main.py`, which after every epoch evaluates the validation rows, then the test rows,
early-stops on the self model's validation NDCG@20 (patience 30), and ends with the test metrics of the best
validation epoch. For each dataset and self backbone this prints every configuration's best validation NDCG@20 and
its test R@10 / N@10, then the configuration a researcher would choose on validation beside the one with the best
test line (what `MDCNS_Code/dp.ipynb` ranks) and the log whose test line is the published cell.
`--curve γ,τ` also prints that configuration's validation NDCG@20 epoch by epoch, epochs counted from 1 as in this
project's logs, to set beside a run of ours (`results/runs/<grid>/<run>/log.txt`).
"""
import argparse
import ast
import os
import re
import subprocess
from collections import defaultdict

# The paper's table of each log folder
TABLES = {"TEST_KD": "Table 3", "EXP2_BCE": "Table 4", "EXP2_BPR": "Table 5 (BPR)",
          "Exp6_WeaktoStrong": "Table 7 (GRU4Rec peer)"}
# The MDCNS paper's MDCNS cells, R@10 and N@10, by (log folder, dataset, self model)
PUBLISHED = {("TEST_KD", "Beauty", "SASRec"): (0.1144, 0.0685), ("TEST_KD", "Toys_and_Games", "SASRec"): (0.1200, 0.0765),
             ("TEST_KD", "Sports_and_Outdoors", "SASRec"): (0.0573, 0.0340),
             ("TEST_KD", "Health", "SASRec"): (0.0992, 0.0487), ("TEST_KD", "LastFM", "SASRec"): (0.2033, 0.1131),
             ("EXP2_BCE", "Beauty", "Linrec"): (0.1162, 0.0689), ("EXP2_BCE", "Beauty", "FMLPRecModel"): (0.1198, 0.0726),
             ("EXP2_BCE", "Toys_and_Games", "Linrec"): (0.1241, 0.0777),
             ("EXP2_BCE", "Toys_and_Games", "FMLPRecModel"): (0.1282, 0.0785),
             ("EXP2_BCE", "Sports_and_Outdoors", "Linrec"): (0.0618, 0.0359),
             ("EXP2_BCE", "Sports_and_Outdoors", "FMLPRecModel"): (0.0635, 0.0363),
             ("EXP2_BPR", "Beauty", "SASRec"): (0.1109, 0.0671), ("EXP2_BPR", "Beauty", "GRU4Rec"): (0.0921, 0.0524),
             ("EXP2_BPR", "Beauty", "Mamba4Rec"): (0.1122, 0.0667),
             ("EXP2_BPR", "Toys_and_Games", "SASRec"): (0.1153, 0.0737),
             ("EXP2_BPR", "Toys_and_Games", "GRU4Rec"): (0.0901, 0.0522),
             ("EXP2_BPR", "Toys_and_Games", "Mamba4Rec"): (0.1267, 0.0764),
             ("EXP2_BPR", "Sports_and_Outdoors", "SASRec"): (0.0604, 0.0348),
             ("EXP2_BPR", "Sports_and_Outdoors", "GRU4Rec"): (0.0469, 0.0253),
             ("EXP2_BPR", "Sports_and_Outdoors", "Mamba4Rec"): (0.0629, 0.0368),
             ("Exp6_WeaktoStrong", "Beauty", "SASRec"): (0.1140, 0.0663),
             ("Exp6_WeaktoStrong", "Toys_and_Games", "SASRec"): (0.1195, 0.0731),
             ("Exp6_WeaktoStrong", "Sports_and_Outdoors", "SASRec"): (0.0596, 0.0351),
             ("Exp6_WeaktoStrong", "LastFM", "SASRec"): (0.2078, 0.1144)}
NAME = re.compile(r"MDCNS_Code/(?P<folder>TEST_KD|EXP2_BCE|EXP2_BPR|Exp6_WeaktoStrong)/(?P<dataset>[^-/]+)-"
                  r"(?P<backbone>[^-/]+)-(?P<peer>[^-/_]+)_.*_l(?P<gamma>[\d.]+)_.*_kdt(?P<tau>[\d.]+)_.*\.log$")
SECTION = re.compile(r"-{30} (Validation|Test) for Epoch (\d+) -{30}")


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, check=True).stdout


def parse_log(text):
    """{'valid': {epoch: metrics}, 'test': {epoch: metrics}, 'final': metrics or None} of the self model."""
    runs = {"valid": {}, "test": {}, "final": None}
    part, epoch, final_next = None, None, False
    for line in text.replace("\r", "\n").splitlines():
        section = SECTION.search(line)
        if section:
            part, epoch = section.group(1).lower().replace("validation", "valid"), int(section.group(2))
        elif "Best Validation Scores for Test" in line:
            final_next = True
        elif line.startswith("Model 1 (") and part is not None:
            runs[part][epoch] = ast.literal_eval(line.split("Results:", 1)[1].strip())
        elif final_next and line.startswith("{'Epoch'"):
            runs["final"] = ast.literal_eval(line)
            final_next = False
    return runs


def validation_curve(runs):
    """[(epoch counted from 1, validation NDCG@20 of the self model)] of a parsed log, in epoch order."""
    return [(epoch + 1, float(metrics["NDCG@20"])) for epoch, metrics in sorted(runs["valid"].items())]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", required=True, help="a clone or git directory of Lyz103/SIGIR26-MDCNS")
    parser.add_argument("--dataset", help="one of the logs' datasets, e.g. LastFM, Beauty (default: all)")
    parser.add_argument("--backbone", help="the self model: SASRec, Linrec, FMLPRecModel, GRU4Rec or Mamba4Rec "
                        "(default: all)")
    parser.add_argument("--folder", choices=sorted(TABLES), help="one log folder, i.e. one paper table (default: all)")
    parser.add_argument("--curve", metavar="GAMMA,TAU", help="also print this configuration's validation NDCG@20 "
                        "epoch by epoch (epochs counted from 1), e.g. 1.0,0.7")
    args = parser.parse_args()
    try:
        curve = tuple(float(x) for x in args.curve.split(",")) if args.curve else None
    except ValueError:
        curve = ()
    if curve is not None and len(curve) != 2:
        raise SystemExit(f"error: --curve {args.curve!r} is not GAMMA,TAU (two numbers, e.g. 1.0,0.7)")
    if not os.path.isdir(args.repo):
        raise SystemExit(f"error: --repo {args.repo} is not a directory; clone Lyz103/SIGIR26-MDCNS first")
    configs = defaultdict(dict)
    for path in git(args.repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines():
        match = NAME.match(path)
        if match and args.dataset in (None, match["dataset"]) and args.backbone in (None, match["backbone"]) and \
                args.folder in (None, match["folder"]):
            runs = parse_log(git(args.repo, "show", f"HEAD:{path}"))
            if runs["valid"]:
                key = match["folder"], match["dataset"], match["backbone"], match["peer"]
                configs[key][float(match["gamma"]), float(match["tau"])] = runs
    if not configs:
        raise SystemExit(f"error: no MDCNS_Code/{args.folder or '*'}/{args.dataset or '*'}-{args.backbone or '*'}-"
                         f"*.log with validation lines in {args.repo}")
    for (folder, dataset, backbone, peer), by_config in sorted(configs.items()):
        rows = []
        for (gamma, tau), runs in sorted(by_config.items()):
            best = max(runs["valid"], key=lambda e: (float(runs["valid"][e]["NDCG@20"]), -e))  # first best epoch
            test = runs["test"].get(best)
            finished = runs["final"] is not None
            rows.append(dict(gamma=gamma, tau=tau, epoch=best, valid=float(runs["valid"][best]["NDCG@20"]),
                             r10=float(test["HIT@10"]) if test else None,
                             n10=float(test["NDCG@10"]) if test else None, finished=finished,
                             final=runs["final"]))
        print(f"## {TABLES[folder]}, {dataset}, {backbone} self, {peer} peer ({folder}): {len(rows)} configurations\n")
        print("| γ | τ | best valid N@20 | at epoch | test R@10 | test N@10 | run finished |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['gamma']:g} | {r['tau']:g} | {r['valid']:.4f} | {r['epoch']} | "
                  f"{r['r10']:.4f} | {r['n10']:.4f} | {'yes' if r['finished'] else 'no (cut)'} |")
        by_valid = max(rows, key=lambda r: r["valid"])
        by_test = max(rows, key=lambda r: r["r10"])
        published = PUBLISHED.get((folder, dataset, backbone))
        print(f"\nchosen on validation N@20: γ {by_valid['gamma']:g}, τ {by_valid['tau']:g} -> test R@10 "
              f"{by_valid['r10']:.4f}, N@10 {by_valid['n10']:.4f}")
        print(f"best test R@10 of the grid: γ {by_test['gamma']:g}, τ {by_test['tau']:g} -> test R@10 "
              f"{by_test['r10']:.4f}, N@10 {by_test['n10']:.4f}")
        if published:
            same = [r for r in rows if abs(r["r10"] - published[0]) < 5e-5 and abs(r["n10"] - published[1]) < 5e-5]
            where = ", ".join(f"γ {r['gamma']:g}, τ {r['tau']:g}" for r in same) or "no log of this grid"
            print(f"published {TABLES[folder]}: R@10 {published[0]:.4f}, N@10 {published[1]:.4f} ({where})")
        if curve in by_config:
            points = ", ".join(f"{epoch} {value:.4f}" for epoch, value in validation_curve(by_config[curve]))
            print(f"validation NDCG@20 by epoch, γ {curve[0]:g}, τ {curve[1]:g}: {points}")
        elif curve:
            print(f"no log of γ {curve[0]:g}, τ {curve[1]:g} for {dataset}, {backbone}")
        print()


if __name__ == "__main__":
    main()
