"""Turn the runs of `run_all.sh` into results/RESULTS.md and the validation-curve plots.

    python results/aggregate.py [--runs results/runs] [--out results]

One table per (dataset, protocol, backbone): methods as rows, Recall/NDCG/MRR at the papers' K as mean ± std
over seeds with the number of seeds, the paper's value beside ours where the paper reports one, seconds per
epoch, and the epochs actually run. Above each table, the protocol in one paragraph; below it, the hand-written
`results/notes/<dataset>-<split>-<backbone>.md` (the likely cause of each gap to a paper) when it exists. Plots (PNG, needs
matplotlib): validation NDCG against epoch and against wall-clock seconds, one figure per (dataset, backbone), one
line per seed, one colour per method.
"""
import argparse
import glob
import json
import os
import platform
import statistics
from collections import defaultdict

# Published values, keyed by (dataset, protocol, backbone, method): {metric: value}, with the source.
PAPER = {
    # MDCNS (SIGIR 2026) Table 3, Beauty, SASRec backbone (Mamba4Rec peer), BCE loss, user split, full ranking.
    ("beauty", "user", "sasrec", "rns"): dict(zip(
        ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"),
        (0.0434, 0.0612, 0.0966, 0.0289, 0.0347, 0.0435))),
    ("beauty", "user", "sasrec", "dns"): dict(zip(
        ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"),
        (0.0398, 0.0545, 0.0715, 0.0288, 0.0335, 0.0378))),
    ("beauty", "user", "sasrec", "dnsmn"): dict(zip(
        ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"),
        (0.0550, 0.0769, 0.1140, 0.0355, 0.0425, 0.0519))),
    ("beauty", "user", "sasrec", "mdcns"): dict(zip(
        ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"),
        (0.0823, 0.1144, 0.1502, 0.0582, 0.0685, 0.0775))),
}
PAPER_SOURCE = {"beauty": "MDCNS paper, Table 3 (Beauty, SASRec, BCE)"}
# The K each grid reports: the papers' own (ICPNS @10; MDCNS @5/10/20).
REPORT_KS = {"ml-100k": (10,), "beauty": (5, 10, 20)}
METHOD_ORDER = ("rns", "pns", "dns", "dnsmn", "icpns", "mdcns")
GENERAL_BACKBONES = ("mf", "lightgcn")   # the others are sequential
METHOD_NAMES = {"rns": "RNS", "pns": "PNS", "dns": "DNS", "dnsmn": "DNS(M,N)", "icpns": "ICPNS",
                "mdcns": "MDCNS"}


def method_rank(method):
    """Rows and plot lines in METHOD_ORDER, unknown methods last."""
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def span(counts):
    """'20' when every run ran 20 epochs, '55–185' otherwise."""
    return "–".join(map(str, sorted({min(counts), max(counts)})))


def load_runs(root):
    runs = []
    for path in sorted(glob.glob(os.path.join(root, "**", "results.json"), recursive=True)):
        with open(path) as f:
            run = json.load(f)
        run["path"] = path
        runs.append(run)
    return runs


def group_key(run):
    return (os.path.basename(str(run["dataset"])), run["config"]["split"], run["backbone"])


def pretrain_seconds(run):
    """Seconds of each pre-training epoch of an ICPNS run (none for other methods or a loaded checkpoint)."""
    return run.get("pretrain", {}).get("record", {}).get("epoch_seconds", [])


def protocol_paragraph(runs):
    c = runs[0]["config"]
    d = runs[0]["data"]
    masking = ("training items masked (training + validation items at test)" if c["split"] == "ratio" or
               c["backbone"] in GENERAL_BACKBONES else
               ("input history masked" if c.get("mask_history", True) else "history not masked"))
    ran = span([len(r["epoch_seconds"]) + len(pretrain_seconds(r)) for r in runs])
    budgets = sorted({c_["epochs"] for c_ in (r["config"] for r in runs)})
    filters = []
    if c.get("min_rating") is not None:
        filters.append(f"rating ≥ {c['min_rating']:g}")
    if c.get("k_core") is not None:
        filters.append(f"{c['k_core']}-core")
    return (f"Split `{c['split']}`; {', '.join(filters) or 'the dataset default filtering'}; "
            f"{d['users']:,} users, {d['items']:,} items, {d['interactions']:,} interactions. Full ranking over "
            f"all items, {masking}; metrics at K = {c['ks']}, RecBole's formulas, pessimistic ties. Early "
            f"stopping on validation `{c['valid_metric']}`, evaluated every {c.get('eval_every', 1)} epoch(s), "
            f"once it had not improved for more than {c['patience']} validations; test evaluated once. "
            f"Epoch budget {budgets} per stage; epochs actually run {ran}. "
            f"Hardware: {cpu_name()}, {os.cpu_count()} cores, no GPU." + training_sentence(runs))


def settings(runs, name):
    """The distinct values of one config entry across a table's runs, joined by '/'."""
    return "/".join(f"{v:g}" if isinstance(v, float) else str(v)
                    for v in sorted({r["config"][name] for r in runs if r["config"].get(name) is not None}))


def training_sentence(runs):
    """The backbone's size, the loss, the optimiser and the batch, as the runs' configs hold them."""
    c = runs[0]["config"]
    if "dim" not in c:
        return ""
    sequential = c["backbone"] not in GENERAL_BACKBONES
    shape = [f"D = {settings(runs, 'dim')}"]
    if c["backbone"] != "mf":
        shape.append(f"layers {settings(runs, 'layers')}")
    if c["backbone"] == "sasrec":
        shape.append(f"heads {settings(runs, 'heads')}")
    if sequential:
        shape += [f"L = {settings(runs, 'max_len')}", f"dropout {settings(runs, 'dropout')}"]
    peers = settings(runs, "peer")
    return (f" Backbone {c['backbone']} ({', '.join(shape)}){f', MDCNS peer {peers}' if peers else ''}; "
            f"{settings(runs, 'loss').upper()} loss, Adam lr {settings(runs, 'lr')}, "
            f"{settings(runs, 'batch_size')} {'sequences' if sequential else 'interactions'} per batch.")


def cpu_name():
    """The CPU model from /proc/cpuinfo where there is one, else the architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return f"{platform.machine()} CPU"


def mean_std(values):
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(key, runs):
    dataset = key[0]
    ks = REPORT_KS.get(dataset, (10,))
    metrics = [f"{m}@{k}" for m in ("recall", "ndcg", "mrr") for k in ks]
    by_method = defaultdict(list)
    for run in runs:
        by_method[run["method"]].append(run)
    lines = ["| method | seeds | " + " | ".join(metrics) + " | s / epoch | epochs run (ICPNS: pre-training + "
             "fine-tuning) |",
             "|---|---|" + "---|" * len(metrics) + "---|---|"]
    methods = sorted(by_method, key=method_rank)
    for method in methods:
        rs = by_method[method]
        cells = []
        for metric in metrics:
            ours = mean_std([r["test"][metric] for r in rs])
            paper = PAPER.get((*key, method), {}).get(metric)
            cells.append(f"{ours} (paper {paper:.4f})" if paper is not None else ours)
        seconds = statistics.mean(statistics.median(r["epoch_seconds"]) for r in rs)
        ran = span([len(r["epoch_seconds"]) for r in rs])
        pre = [len(pretrain_seconds(r)) for r in rs]
        if max(pre):   # ICPNS: pre-training epochs + fine-tuning epochs
            ran = span(pre) + " + " + ran
        lines.append(f"| {METHOD_NAMES.get(method, method)} | {len(rs)} | " + " | ".join(cells) +
                     f" | {seconds:.2f} | {ran} |")
    source = PAPER_SOURCE.get(dataset) if any((*key, m) in PAPER for m in methods) else None
    note = f"Paper values: {source}." if source else "Paper values: not reported for this setting."
    return "\n".join(lines) + "\n\n" + note


def plot(key, runs, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    metric = runs[0]["config"]["valid_metric"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    methods = sorted({r["method"] for r in runs}, key=method_rank)
    for colour, method in enumerate(methods):   # one line per seed, one colour per method
        seeds = sorted((r for r in runs if r["method"] == method), key=lambda r: r["seed"])
        for i, run in enumerate(seeds):
            history = [h for h in run["history"] if h.get("stage", "train") != "pretrain"]
            offset = sum(pretrain_seconds(run))
            epochs = [h["epoch"] for h in history]
            seconds = [offset + h["seconds"] for h in history]
            values = [h["valid"][metric] for h in history]
            style = dict(color=f"C{colour}", alpha=0.9 if i == 0 else 0.45,
                         label=f"{METHOD_NAMES.get(method, method)} ({len(seeds)} seed{'s' * (len(seeds) > 1)})"
                         if i == 0 else None)
            axes[0].plot(epochs, values, **style)
            axes[1].plot(seconds, values, **style)
    axes[0].set_xlabel("epoch (fine-tuning epochs for ICPNS)")
    axes[1].set_xlabel("wall-clock training seconds (ICPNS: after pre-training)")
    for ax in axes:
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{key[0]} · {key[1]} split · {key[2]}")
    fig.tight_layout()
    name = f"valid-{key[0]}-{key[1]}-{key[2]}.png"
    fig.savefig(os.path.join(out_dir, name), dpi=110)
    plt.close(fig)
    return name


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs"),
                        help="folder searched recursively for results.json")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                        help="where RESULTS.md and the PNG plots go")
    parser.add_argument("--no-plots", action="store_true", help="tables only (no matplotlib needed)")
    args = parser.parse_args()
    runs = load_runs(args.runs)
    if not runs:
        raise SystemExit(f"error: no results.json under {args.runs}; run ./run_all.sh first")
    groups = defaultdict(list)
    for run in runs:
        groups[group_key(run)].append(run)
    sections = ["# Results\n",
                "Produced by `./run_all.sh` and `python results/aggregate.py` from the `results.json` files under "
                "`results/runs/`. Test metrics at the best validation epoch, mean ± std over seeds (sample std). "
                "Seconds per epoch are each run's median; the runs of a table were not necessarily run side by "
                "side on an idle machine, so compare them loosely: `bench/` measures speed side by side.\n"]
    for key in sorted(groups):
        runs_ = groups[key]
        sections.append(f"## {key[0]} · `{key[1]}` split · {key[2]}\n")
        sections.append(protocol_paragraph(runs_) + "\n")
        sections.append(table(key, runs_) + "\n")
        notes = os.path.join(args.out, "notes", f"{key[0]}-{key[1]}-{key[2]}.md")
        if os.path.exists(notes):   # hand-written: the likely cause of every gap to a paper's number
            with open(notes) as f:
                sections.append(f.read().strip() + "\n")
        if not args.no_plots:
            sections.append(f"![validation curves]({plot(key, runs_, args.out)})\n")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "RESULTS.md")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(sections))
    os.replace(path + ".tmp", path)
    print(f"wrote {path} ({len(runs)} runs, {len(groups)} tables)")


if __name__ == "__main__":
    main()
