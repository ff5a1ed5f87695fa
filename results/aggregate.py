"""Turn the runs of `run_all.sh` into results/RESULTS.md and the validation-curve plots.

    python results/aggregate.py [--runs results/runs] [--out results]

One table per (dataset, protocol, backbone, grid): methods as rows, Recall/NDCG/MRR at the papers' K as mean ±
std over seeds with the number of seeds, the paper's value beside ours where the paper reports one, seconds per
epoch, and the epochs actually run. Runs with --exclude-held-out (negatives also avoid each user's validation and
test items, the official ICPNS pipeline's leak) are rows of their own, "<method> (held-out excluded)", and their
table is followed by a side-by-side one: each method clean and with held-out items excluded, and the difference.
Above each table, the protocol in one paragraph; below it, the hand-written `results/notes/<name>.md` (the likely
cause of each gap to a paper) when it exists, <name> being <dataset>-<split>-<backbone>, followed by -<grid> for a
grid with held-out-excluded runs (it shares its protocol with another grid). Plots (PNG, needs matplotlib):
validation NDCG against epoch and against wall-clock seconds, one figure per table, one line per seed, one colour
per method.
"""
import argparse
import glob
import json
import os
import shlex
import statistics
import sys
from collections import defaultdict

import numpy as np

# Published values, keyed by (dataset, protocol, backbone, method): {metric: value}, with the source.
# MDCNS (SIGIR 2026) Table 3: SASRec backbone (Mamba4Rec peer), BCE loss, user split, full ranking; each row
# R@5, R@10, R@20, N@5, N@10, N@20. DNS is DNS(1, 100), DNS+ the best M of a sweep.
TABLE3 = {
    "beauty": {"rns": (0.0434, 0.0612, 0.0966, 0.0289, 0.0347, 0.0435),
               "mixgcf": (0.0349, 0.0550, 0.0805, 0.0232, 0.0297, 0.0361),
               "adasir": (0.0590, 0.0840, 0.1127, 0.0417, 0.0497, 0.0568),
               "gnno": (0.0577, 0.0854, 0.1144, 0.0388, 0.0476, 0.0550),
               "mixgcfmn": (0.0532, 0.0720, 0.1068, 0.0359, 0.0418, 0.0506),
               "srns": (0.0487, 0.0742, 0.1180, 0.0334, 0.0416, 0.0527),
               "dns": (0.0398, 0.0545, 0.0715, 0.0288, 0.0335, 0.0378),
               "dnsmn": (0.0550, 0.0769, 0.1140, 0.0355, 0.0425, 0.0519),
               "mdcns": (0.0823, 0.1144, 0.1502, 0.0582, 0.0685, 0.0775)},
    "sports": {"rns": (0.0233, 0.0368, 0.0587, 0.0153, 0.0195, 0.0250),
               "dns": (0.0048, 0.0087, 0.0157, 0.0027, 0.0039, 0.0056),
               "dnsmn": (0.0312, 0.0486, 0.0713, 0.0202, 0.0258, 0.0316),
               "mdcns": (0.0402, 0.0573, 0.0806, 0.0285, 0.0340, 0.0398)},
    "lastfm": {"rns": (0.0917, 0.1483, 0.2244, 0.0591, 0.0773, 0.0966),
               "dns": (0.0782, 0.1209, 0.1678, 0.0515, 0.0652, 0.0769),
               "dnsmn": (0.1154, 0.1768, 0.2569, 0.0745, 0.0943, 0.1145),
               "mdcns": (0.1363, 0.2033, 0.2869, 0.0915, 0.1131, 0.1342)},
}
PAPER = {(dataset, "user-prefixes" if dataset == "lastfm" else "user", "sasrec", method): dict(zip(
             ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"), values))
         for dataset, rows in TABLE3.items() for method, values in rows.items()}
# MDCNS Table 4: LinRec and FMLP4Rec as the backbone (Mamba4Rec peer), BCE, Beauty; each row R@5, R@10, N@5, N@10
# (its SASRec column repeats Table 3).
TABLE4 = {
    ("beauty", "linrec"): {"rns": (0.0523, 0.0751, 0.0363, 0.0435), "dnsmn": (0.0617, 0.0939, 0.0420, 0.0525),
                           "mdcns": (0.0818, 0.1162, 0.0579, 0.0689)},
    ("beauty", "fmlp4rec"): {"rns": (0.0532, 0.0800, 0.0342, 0.0429), "dnsmn": (0.0635, 0.0903, 0.0432, 0.0519),
                             "mdcns": (0.0872, 0.1198, 0.0621, 0.0726)},
    ("sports", "linrec"): {"rns": (0.0261, 0.0433, 0.0159, 0.0215), "dnsmn": (0.0323, 0.0472, 0.0220, 0.0268),
                           "mdcns": (0.0475, 0.0618, 0.0313, 0.0359)},
    ("sports", "fmlp4rec"): {"rns": (0.0261, 0.0416, 0.0163, 0.0213), "dnsmn": (0.0365, 0.0494, 0.0236, 0.0278),
                             "mdcns": (0.0447, 0.0635, 0.0302, 0.0363)},
}
PAPER.update({(dataset, "user", backbone, method): dict(zip(("recall@5", "recall@10", "ndcg@5", "ndcg@10"), values))
              for (dataset, backbone), rows in TABLE4.items() for method, values in rows.items()})
# MDCNS Table 6 (ablation: w/o CD, w/o CD-DR; "w/o CD-DR-MS" is DNS+, MDCNS the Table 3 row) and Table 7 (MDCNS_wts:
# a GRU4Rec peer), SASRec, BCE; each row R@5, R@10, N@5, N@10
TABLE6_7 = {
    "beauty": {"mdcns-no-cd": (0.0697, 0.0957, 0.0491, 0.0573), "mdcns-no-cd-dr": (0.0599, 0.0831, 0.0434, 0.0510),
               "mdcns-gru4rec-peer": (0.0760, 0.1140, 0.0542, 0.0663)},
    "sports": {"mdcns-no-cd": (0.0368, 0.0531, 0.0256, 0.0308), "mdcns-no-cd-dr": (0.0343, 0.0503, 0.0226, 0.0278),
               "mdcns-gru4rec-peer": (0.0433, 0.0596, 0.0299, 0.0351)},
    "lastfm": {"mdcns-gru4rec-peer": (0.1384, 0.2078, 0.0921, 0.1144)},
}
PAPER.update({(dataset, "user-prefixes" if dataset == "lastfm" else "user", "sasrec", method): dict(zip(
    ("recall@5", "recall@10", "ndcg@5", "ndcg@10"), values)) for dataset, rows in TABLE6_7.items()
    for method, values in rows.items()})
PAPER_SOURCE = {(dataset, "sasrec"): f"MDCNS paper, Table 3 ({dataset}, SASRec, BCE)" for dataset in TABLE3}
TABLE6_7_SOURCE = {"mdcns-no-cd": "Table 6", "mdcns-no-cd-dr": "Table 6", "mdcns-gru4rec-peer": "Table 7"}
PAPER_SOURCE.update({(dataset, backbone): f"MDCNS paper, Table 4 ({dataset}, {backbone}, BCE; R@20 and N@20 not "
                     "reported)" for dataset, backbone in TABLE4})
# MDCNS Table 5: BPR, Beauty; peer Mamba4Rec (SASRec for the Mamba4Rec self model); each row R@5, R@10, N@5, N@10.
# Its Mamba4Rec DNS+ cell repeats the SASRec DNS+ cell but for R@5 (as published).
TABLE5 = {
    "sasrec": {"rns": (0.0416, 0.0657, 0.0300, 0.0377), "dnsmn": (0.0523, 0.0760, 0.0351, 0.0427),
               "mdcns": (0.0791, 0.1109, 0.0569, 0.0671)},
    "gru4rec": {"rns": (0.0241, 0.0398, 0.0154, 0.0204), "dnsmn": (0.0340, 0.0501, 0.0231, 0.0283),
                "mdcns": (0.0612, 0.0921, 0.0425, 0.0524)},
    "mamba4rec": {"rns": (0.0527, 0.0791, 0.0343, 0.0428), "dnsmn": (0.0572, 0.0760, 0.0351, 0.0427),
                  "mdcns": (0.0755, 0.1122, 0.0548, 0.0667)},
}
PAPER_BPR = {("beauty", "user", backbone, method): dict(zip(("recall@5", "recall@10", "ndcg@5", "ndcg@10"), values))
             for backbone, rows in TABLE5.items() for method, values in rows.items()}


def paper_cell(key, method, runs):
    """The paper's values of a row: Table 5's for a BPR run where it has the row, else Tables 3, 4, 6, 7's."""
    if runs and runs[0]["config"].get("loss") == "bpr" and (*key[:3], method) in PAPER_BPR:
        return PAPER_BPR[(*key[:3], method)]
    return PAPER.get((*key[:3], method))
# The K each grid reports: the papers' own (ICPNS @10; MDCNS @5/10/20).
REPORT_KS = {"ml-100k": (10,), "beauty": (5, 10, 20), "sports": (5, 10, 20), "lastfm": (5, 10, 20)}
# Grids made before tables were kept per grid: their notes and plots are named <dataset>-<split>-<backbone>.
UNSUFFIXED_GRIDS = ("", "icpns-ml100k", "mdcns-beauty", "ml1m-loo")
# M chosen on validation, per sampler: each sweep grid a table of its own, not method rows, shown in the section
# of the grid whose runs use its M
SWEEP_GRIDS = {"dnsplus-sweep": ("DNS+", "table3"), "mixgcfplus-sweep": ("MixGCF+", "table3"),
               "gnno-sweep": ("GNNO", "table3"), "mixgcfplus-bpr-sweep": ("MixGCF+ at BPR", "mixgcfplus-bpr"),
               **{f"dnsplus-bpr-{b}-sweep": (f"DNS+ at BPR on {b}", "table5") for b in ("sasrec", "gru4rec", "mamba4rec")}}
METHOD_ORDER = ("rns", "pns", "dns", "mixgcf", "adasir", "gnno", "dnsmn", "mixgcfmn", "srns", "icpns",
                "mdcns-no-cd-dr", "mdcns-no-cd", "mdcns-gru4rec-peer", "mdcns")
GENERAL_BACKBONES = ("mf", "lightgcn", "ngcf")   # the others are sequential
METHOD_NAMES = {"rns": "RNS", "pns": "PNS", "dns": "DNS", "dnsmn": "DNS(M,N)", "icpns": "ICPNS",
                "mdcns": "MDCNS", "mixgcf": "MixGCF", "mixgcfmn": "MixGCF+", "adasir": "AdaSIR", "gnno": "GNNO",
                "srns": "SRNS", "mdcns-no-cd": "MDCNS w/o CD", "mdcns-no-cd-dr": "MDCNS w/o CD-DR",
                "mdcns-gru4rec-peer": "MDCNS_wts (GRU4Rec peer)"}
HELD_OUT = " (held-out excluded)"   # the row name's suffix for --exclude-held-out runs


def method_rank(method):
    """Rows and plot lines in METHOD_ORDER, unknown methods last."""
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def excludes_held_out(run):
    return bool(run["config"].get("exclude_held_out", False))


def method_variant(run):
    """The method as a table row names it: MDCNS runs without a component (the paper's Table 6 ablation: CD =
    consensus distillation, DR = divergence re-ranking, MS = multi-source scoring) are "mdcns-no-cd",
    "mdcns-no-cd-dr", ..., and runs with a peer other than the default one (Table 7's weak-to-strong GRU4Rec peer)
    "mdcns-<peer>-peer"."""
    if run["method"] != "mdcns":
        return run["method"]
    config = run["config"]
    removed = [name for name, flag in (("cd", "distillation"), ("dr", "divergence"), ("ms", "multi_source"))
               if not config.get(flag, True)]
    default_peer = "sasrec" if run["backbone"] == "mamba4rec" else "mamba4rec"
    peer = config.get("peer") or default_peer
    return "mdcns" + ("-no-" + "-".join(removed) if removed else "") + (f"-{peer}-peer" if peer != default_peer
                                                                        else "")


def row_key(run):
    """A table row: the method (`method_variant`), and whether its negatives also avoided the held-out items (clean
    rows first)."""
    return method_variant(run), excludes_held_out(run)


def row_rank(row):
    return method_rank(row[0]), row[1]


def row_name(row, runs=()):
    """The method's name, its hardness (the top M of N candidates) where it has one, and the held-out suffix."""
    name = METHOD_NAMES.get(row[0], row[0])
    if row[0] in ("dnsmn", "mixgcfmn", "gnno") and runs:
        name += f" (M = {settings(runs, 'top_m')}, N = {settings(runs, 'candidates')})"
    elif row[0] in ("dns", "mixgcf") and runs:
        name += f" (N = {settings(runs, 'candidates')})"
    return name + (HELD_OUT if row[1] else "")


def span(counts):
    """'20' when every run ran 20 epochs, '55–185' otherwise."""
    return "–".join(map(str, sorted({min(counts), max(counts)})))


def load_runs(root):
    """Every results.json under root, with its path and its grid: the folder between root and the run's own."""
    runs = []
    for path in sorted(glob.glob(os.path.join(root, "**", "results.json"), recursive=True)):
        with open(path) as f:
            run = json.load(f)
        run["path"] = path
        grid = os.path.relpath(os.path.dirname(os.path.dirname(path)), root)
        run["grid"] = "" if grid == "." else grid
        runs.append(run)
    return runs


def group_key(run):
    return (os.path.basename(str(run["dataset"])), run["config"]["split"], run["backbone"], run.get("grid", ""))


def table_name(key, runs):
    """The stem of a table's notes and plot files (see the module docstring)."""
    name = "-".join(key[:3])
    return name if key[3] in UNSUFFIXED_GRIDS else f"{name}-{key[3].replace(os.sep, '-')}"


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
            f"once it had not improved for more than {settings(runs, 'patience')} validations; test evaluated once. "
            f"Epoch budget {budgets} per stage; epochs actually run {ran}. "
            f"Hardware: {hardware(runs)}." + training_sentence(runs))


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
    if c["backbone"] == "sasrec":   # runs from before --sasrec-block existed used Kang's block
        blocks = "/".join(sorted({r["config"].get("sasrec_block", "kang") for r in runs}))
        shape = [f"{blocks} block"] + shape + [f"heads {settings(runs, 'heads')}"]
    if sequential:
        shape += [f"L = {settings(runs, 'max_len')}", f"dropout {settings(runs, 'dropout')}"]
    peers = settings(runs, "peer")
    return (f" Backbone {c['backbone']} ({', '.join(shape)}){f', MDCNS peer {peers}' if peers else ''}; "
            f"{settings(runs, 'loss').upper()} loss, Adam lr {settings(runs, 'lr')}, "
            f"{settings(runs, 'batch_size')} {'sequences' if sequential else 'interactions'}"
            f"{f' (~{examples} examples)' if (examples := settings(runs, 'examples_per_batch')) else ''} per batch.")


def hardware(runs):
    """The machines a table's runs recorded (results.json `machine`), or that they did not record it."""
    found = sorted({f"{m['cpu']}{f' ({c} kernels)' if (c := m.get('cpu_capability')) else ''}, {m['cores']} cores, "
                    f"{m['torch_threads']} torch thread(s), {m['gpu'] or 'no GPU'}"
                    for m in (r.get("machine") for r in runs) if m})
    missing = sum(1 for r in runs if not r.get("machine"))
    return "; ".join(found + ([f"not recorded for {missing} run(s) made before results.json kept it"]
                              if missing else []))


def mean_std(values, standard_error=False):
    """'mean ± sample std' (one value: itself); with standard_error, also the standard error of the mean."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    std = statistics.stdev(values)
    se = f" (s.e. {std / len(values) ** 0.5:.4f})" if standard_error else ""
    return f"{statistics.mean(values):.4f} ± {std:.4f}{se}"


def history_zero_table(runs):
    """Test metrics with the input history scored -inf (ours, MDCNS's) and 0 (the MDCNS code's baselines,
    `test_history_masked_to_zero`), means over seeds: what the baselines' evaluation does to a row."""
    by_method = defaultdict(list)
    for run in runs:
        if "test_history_masked_to_zero" in run:
            by_method[method_variant(run)].append(run)
    if not by_method:
        return None
    metrics = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
    lines = ["| method | " + " | ".join(f"{m} history −inf / 0" for m in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for method in sorted(by_method, key=method_rank):
        rs = by_method[method]
        cells = [f"{statistics.mean(r['test'][m] for r in rs):.4f} / "
                 f"{statistics.mean(r['test_history_masked_to_zero'][m] for r in rs):.4f}" for m in metrics]
        lines.append(f"| {row_name((method, False), rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_validation(run, metric):
    """The run's best validation value of `metric` and its epoch."""
    best = max(run["history"], key=lambda h: h["valid"][metric])
    return best["valid"][metric], best["epoch"]


def sweep_table(runs):
    """An M sweep: each M's best validation value (the choice) and, for reference only, its test value."""
    metric = runs[0]["config"]["valid_metric"]
    lines = [f"| M (N = {settings(runs, 'candidates')}) | best validation {metric} | at epoch | epochs run | "
             f"test {metric} (not used to choose) |", "|---|---|---|---|---|"]
    chosen = best_m(runs)
    for run in sorted(runs, key=lambda r: r["config"]["top_m"]):
        value, epoch = best_validation(run, metric)
        mark = " (chosen)" if run["config"]["top_m"] == chosen else ""
        lines.append(f"| {run['config']['top_m']}{mark} | {value:.4f} | {epoch} | {len(run['epoch_seconds'])} | "
                     f"{run['test'][metric]:.4f} |")
    return "\n".join(lines)


def best_m(runs):
    """The M of the sweep run with the best validation value (ties: the smaller M)."""
    metric = runs[0]["config"]["valid_metric"]
    return max(runs, key=lambda r: (best_validation(r, metric)[0], -r["config"]["top_m"]))["config"]["top_m"]


def table(key, runs):
    dataset = key[0]
    ks = REPORT_KS.get(dataset, (10,))
    metrics = [f"{m}@{k}" for m in ("recall", "ndcg", "mrr") for k in ks]
    by_row = defaultdict(list)
    for run in runs:
        by_row[row_key(run)].append(run)
    lines = ["| method | seeds | " + " | ".join(metrics) + " | s / epoch | epochs run (ICPNS: pre-training + "
             "fine-tuning) |",
             "|---|---|" + "---|" * len(metrics) + "---|---|"]
    rows = sorted(by_row, key=row_rank)
    for row in rows:
        rs = by_row[row]
        cells = []
        for metric in metrics:
            ours = mean_std([r["test"][metric] for r in rs], standard_error=key[3] in ("table3", "table4"))
            paper = None if row[1] else (paper_cell(key, row[0], rs) or {}).get(metric)   # papers: clean only
            cells.append(f"{ours} (paper {paper:.4f})" if paper is not None else ours)
        seconds = statistics.mean(statistics.median(r["epoch_seconds"]) for r in rs)
        ran = span([len(r["epoch_seconds"]) for r in rs])
        pre = [len(pretrain_seconds(r)) for r in rs]
        if max(pre):   # ICPNS: pre-training epochs + fine-tuning epochs
            ran = span(pre) + " + " + ran
        lines.append(f"| {row_name(row, rs)} | {len(rs)} | " + " | ".join(cells) + f" | {seconds:.2f} | {ran} |")
    published = {m for m, h in rows if paper_cell(key, m, by_row[m, h])}
    source = PAPER_SOURCE.get((dataset, key[2])) if published - set(TABLE6_7_SOURCE) else None
    for table in sorted({TABLE6_7_SOURCE[m] for m in published if m in TABLE6_7_SOURCE}):
        source = (f"{source}; " if source else "MDCNS paper, ") + f"{table} ({dataset}, SASRec, BCE)"
    if source and runs[0]["config"].get("loss") == "bpr" and any((*key[:3], m) in PAPER_BPR for m, _ in rows):
        source = f"MDCNS paper, Table 5 ({dataset}, {key[2]}, BPR)"
    note = f"Paper values: {source}." if source else "Paper values: not reported for this setting."
    return "\n".join(lines) + "\n\n" + note


def held_out_table(key, runs):
    """Each method's test metrics at the first reported K, clean beside held-out-excluded (means over seeds), and
    the difference of the means: what the official pipeline's leak adds to each method."""
    k = REPORT_KS.get(key[0], (10,))[0]
    by_row = defaultdict(list)
    for run in runs:
        by_row[row_key(run)].append(run)
    header = "| method | " + " | ".join(f"{m}@{k} {part}" for m in ("recall", "ndcg")
                                         for part in ("clean", "held-out excluded", "difference")) + " |"
    lines = [header, "|---|" + "---|" * 6]
    for method in sorted({m for m, _ in by_row}, key=method_rank):
        cells = []
        for metric in (f"recall@{k}", f"ndcg@{k}"):
            clean, leak = ([r["test"][metric] for r in by_row.get((method, x), [])] for x in (False, True))
            cells += [mean_std(clean) if clean else "–", mean_std(leak) if leak else "–",
                      f"{statistics.mean(leak) - statistics.mean(clean):+.4f}" if clean and leak else "–"]
        lines.append(f"| {METHOD_NAMES.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(key, runs, out_dir, name):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    metric = runs[0]["config"]["valid_metric"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    rows = sorted({row_key(r) for r in runs}, key=row_rank)
    for colour, row in enumerate(rows):   # one line per seed, one colour per row
        seeds = sorted((r for r in runs if row_key(r) == row), key=lambda r: r["seed"])
        for i, run in enumerate(seeds):
            history = [h for h in run["history"] if h.get("stage", "train") != "pretrain"]
            offset = sum(pretrain_seconds(run))
            epochs = [h["epoch"] for h in history]
            seconds = [offset + h["seconds"] for h in history]
            values = [h["valid"][metric] for h in history]
            style = dict(color=f"C{colour}", alpha=0.9 if i == 0 else 0.45,
                         label=f"{row_name(row)} ({len(seeds)} seed{'s' * (len(seeds) > 1)})"
                         if i == 0 else None)
            axes[0].plot(epochs, values, **style)
            axes[1].plot(seconds, values, **style)
    axes[0].set_xlabel("epoch (fine-tuning epochs for ICPNS)")
    axes[1].set_xlabel("wall-clock training seconds (ICPNS: after pre-training)")
    for ax in axes:
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{key[0]} · {key[1]} split · {key[2]}" + (f" · {key[3]}" if name != "-".join(key[:3]) else ""))
    fig.tight_layout()
    file_name = f"valid-{name}.png"
    fig.savefig(os.path.join(out_dir, file_name), dpi=110)
    plt.close(fig)
    return file_name


# ---------------------------------------------------------------- the summary at the top of RESULTS.md
SUMMARY_GRIDS = ("table3", "table4", "table3-paired", "ablation", "weak-peer", "table5")   # the reproduction grids
SUMMARY_METRICS = ("recall@10", "ndcg@10")


def paper_table(key, method, runs):
    if runs[0]["config"].get("loss") == "bpr" and (*key[:3], method) in PAPER_BPR:
        return "Table 5"
    if method.startswith("mdcns-no-"):
        return "Table 6"
    if method.endswith("-peer"):
        return "Table 7"
    return "Table 4" if (key[0], key[2]) in TABLE4 else "Table 3"


def summary_table(groups, out_dir):
    """Every paper cell a reproduction grid ran: ours (mean over seeds), the paper's, the gap, the note."""
    lines = ["| paper | dataset · backbone | row | grid | seeds | " +
             " | ".join(f"{m} ours / paper (gap)" for m in SUMMARY_METRICS) + " | note |",
             "|---|---|---|---|---|" + "---|" * len(SUMMARY_METRICS) + "---|"]
    cells = []
    for key, runs in groups.items():
        if key[3] not in SUMMARY_GRIDS:
            continue
        by_row = defaultdict(list)
        for run in runs:
            by_row[row_key(run)].append(run)
        for row, rs in by_row.items():
            paper = None if row[1] else paper_cell(key, row[0], rs)
            if not paper:
                continue
            values = []
            for metric in SUMMARY_METRICS:
                ours = statistics.mean(r["test"][metric] for r in rs)
                values.append(f"{ours:.4f} / {paper[metric]:.4f} ({100 * (ours / paper[metric] - 1):+.0f} %)")
            name = table_name(key, runs)
            note = f"[{name}](notes/{name}.md)" if os.path.exists(os.path.join(out_dir, "notes", f"{name}.md")) \
                else ""
            where = paper_table(key, row[0], rs)
            cells.append(((where, key[0], key[2], row_rank(row), key[3]),
                          f"| {where} | {key[0]} · {key[2]} | {row_name(row, rs)} | `{key[3]}` | "
                          f"{len(rs)} | " + " | ".join(values) + f" | {note} |"))
    return "\n".join(lines + [line for _, line in sorted(cells)]) if cells else None


# ---------------------------------------------------------------- paired comparisons (per test row)
TEST_ROWS = "test_rows.npz"   # beside results.json: each test row's recall@K and ndcg@K, the split's row order
PAIRED_GRIDS = ("table3-paired", "ablation", "weak-peer", "table4", "table5")   # grids whose runs write TEST_ROWS
# (row A, row B, what A - B measures): every pair whose two rows exist in a (dataset, split, backbone) is shown
PAIRS = (("mdcns", "dnsmn", "MDCNS over DNS+, the strongest baseline"),
         ("mdcns", "mdcns-no-cd", "Table 6: consensus distillation (MDCNS over w/o CD)"),
         ("mdcns-no-cd", "mdcns-no-cd-dr", "Table 6: divergence re-ranking (w/o CD over w/o CD-DR)"),
         ("mdcns-no-cd-dr", "dnsmn", "Table 6: multi-source scoring (w/o CD-DR over w/o CD-DR-MS = DNS+)"),
         ("mdcns-no-cd-dr", "dnsmn-m10", "Table 6: multi-source scoring against DNS+ at the official logs' M = 10"),
         ("dnsmn", "dnsmn-m10", "DNS+ at the M chosen on validation over DNS+ at M = 10"),
         ("mdcns-gru4rec-peer", "mdcns", "Table 7: GRU4Rec peer over Mamba4Rec peer"),
         ("mdcns-gru4rec-peer", "dnsmn", "Table 7: MDCNS_wts over DNS+"),
         ("dnsmn", "rns", "DNS+ over RNS"))
PAIRED_METRICS = ("recall@10", "ndcg@10")


def stratified_bootstrap(differences, resamples: int = 10_000, seed: int = 0):
    """The mean over strata (seeds) of each stratum's mean paired difference, its 95 % percentile interval and a
    two-sided p, from `resamples` bootstrap resamples of the rows drawn within each stratum (with replacement,
    numpy's default_rng(seed)).

    differences: one array per stratum, a row's metric under A minus under B (the same test row, one seed).
    p: the share of resampled statistics at least as far from the estimate as the estimate is from 0, i.e. the
    bootstrap distribution shifted to the null of no difference, (1 + count) / (resamples + 1).
    Returns (estimate, low, high, p)."""
    rng = np.random.default_rng(seed)
    boot = np.zeros(resamples)
    for d in differences:
        d = np.asarray(d, dtype=np.float64)
        for start in range(0, resamples, 500):   # 500 resamples at a time: (500, rows) indices in memory
            n = min(500, resamples - start)
            boot[start:start + n] += d[rng.integers(0, len(d), size=(n, len(d)))].mean(1)
    boot /= len(differences)
    estimate = float(np.mean([np.mean(d) for d in differences]))
    low, high = np.quantile(boot, [0.025, 0.975])
    p = (1 + np.count_nonzero(np.abs(boot - estimate) >= abs(estimate))) / (resamples + 1)
    return estimate, float(low), float(high), float(p)


def load_test_rows(run):
    path = os.path.join(os.path.dirname(run["path"]), TEST_ROWS)
    if not os.path.exists(path):
        return None
    with np.load(path) as f:
        return {name: f[name] for name in f.files}


def paired(a_runs, b_runs, metric, resamples: int = 10_000, seed: int = 0):
    """A - B on `metric`, each seed's test rows paired (the same split: equal row fingerprints), bootstrapped over
    rows within seeds (`stratified_bootstrap`). Returns (estimate, low, high, p, seeds), or None without a pair."""
    a_by_seed, b_by_seed = ({r["seed"]: load_test_rows(r) for r in runs} for runs in (a_runs, b_runs))
    differences, seeds = [], []
    for seed_ in sorted(set(a_by_seed) & set(b_by_seed)):
        a, b = a_by_seed[seed_], b_by_seed[seed_]
        if a is None or b is None or str(a["fingerprint"]) != str(b["fingerprint"]):
            continue   # no per-row results, or not the same test rows: nothing to pair
        differences.append(a[metric] - b[metric])
        seeds.append(seed_)
    if not differences:
        return None
    return (*stratified_bootstrap(differences, resamples, seed), seeds)


def paired_row(run):
    """The row a run belongs to in the paired comparisons: `method_variant`, except that the ablation grid's DNS+,
    run at the M of the official DNS+ logs that the published DNS+ cells match, is "dnsmn-m<M>", a row apart from
    table3-paired's DNS+ at the M its validation sweep chose ("dnsmn")."""
    variant = method_variant(run)
    if variant == "dnsmn" and run.get("grid") == "ablation":
        return f"dnsmn-m{run['config']['top_m']}"
    return variant


def paired_tables(runs):
    """RESULTS.md's paired comparisons: for each (dataset, split, backbone) of the PAIRED_GRIDS runs, every PAIRS
    comparison whose two rows exist, on PAIRED_METRICS: mean difference over seeds, 95 % interval, p."""
    groups = defaultdict(lambda: defaultdict(list))
    for run in runs:   # rows compare within one (dataset, split, backbone, loss)
        if run.get("grid") in PAIRED_GRIDS and not excludes_held_out(run):
            groups[(*group_key(run)[:3], run["config"]["loss"])][paired_row(run)].append(run)
    sections = []
    for key in sorted(groups):
        rows = groups[key]
        lines = ["| comparison (A − B) | seeds | " + " | ".join(f"{m}: A − B [95 % CI], p" for m in PAIRED_METRICS)
                 + " |", "|---|---|" + "---|" * len(PAIRED_METRICS)]
        for a, b, what in PAIRS:
            if a not in rows or b not in rows:
                continue
            cells, seeds = [], []
            for metric in PAIRED_METRICS:
                result = paired(rows[a], rows[b], metric)
                if result is None:
                    break
                estimate, low, high, p, seeds = result
                mark = " (interval contains 0)" if low <= 0 <= high else ""
                cells.append(f"{estimate:+.4f} [{low:+.4f}, {high:+.4f}], p {p:.4f}{mark}")
            if cells:
                lines.append(f"| {what} | {' '.join(map(str, seeds))} | " + " | ".join(cells) + " |")
        if len(lines) > 2:
            sections.append(f"### {key[0]} · `{key[1]}` split · {key[2]} · {key[3].upper()}\n\n" + "\n".join(lines)
                            + "\n")
    return sections


# Flags of a grid line that are not settings of the run (where it reads and writes, how much it prints)
NOT_SETTINGS = {"data_dir", "out_dir", "quiet", "resume"}


def command_differences(command, config):
    """The flags of a method command whose value differs from the run's config, as "flag: ran X, grid Y", and the
    flags the config does not record (the run predates them: it ran at the flag's value before it existed)."""
    words = shlex.split(command)
    differences, unrecorded = [], []
    for i, word in enumerate(words):
        if not word.startswith("--"):
            continue
        key = word[2:].replace("-", "_")
        value = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else True
        if key in NOT_SETTINGS:
            continue
        if key not in config:
            unrecorded.append(word)
            continue
        ran = config[key]
        if isinstance(ran, list):
            same = ",".join(map(str, ran)) == value
        elif isinstance(ran, bool) or value is True:
            same = ran is True and value is True
        elif isinstance(ran, (int, float)):
            same = float(ran) == float(value)
        else:
            same = str(ran) == value
        if not same:
            differences.append(f"{word}: ran {ran}, grid {value}")
    return differences, unrecorded


def check_commands(lines):
    """For the "done" lines of `run_all.sh --dry-run` (each a command whose results.json exists), print each run
    whose config differs from the flags its grid line gives today; return the number of such runs."""
    differ = checked = 0
    unrecorded = defaultdict(int)
    for line in lines:
        if not line.startswith("done "):
            continue
        command = line.split(None, 1)[1]
        words = shlex.split(command)
        out_dir = words[words.index("--out-dir") + 1]
        with open(os.path.join(out_dir, "results.json")) as f:
            config = json.load(f)["config"]
        differences, missing = command_differences(command, config)
        checked += 1
        for flag in missing:
            unrecorded[flag] += 1
        if differences:
            differ += 1
            print(f"{out_dir}: " + "; ".join(differences))
    print(f"{checked} done runs checked, {differ} ran with flags their grid line no longer gives" +
          "".join(f"; {flag} not recorded by {n} (older than the flag)" for flag, n in sorted(unrecorded.items())))
    return differ


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs"),
                        help="folder searched recursively for results.json")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                        help="where RESULTS.md and the PNG plots go")
    parser.add_argument("--no-plots", action="store_true", help="tables only (no matplotlib needed)")
    parser.add_argument("--best-m", metavar="SWEEP_DIR", help="only print the M chosen on validation by the sweep "
                        "runs (dnsplus-sweep, mixgcfplus-sweep, gnno-sweep, mixgcfplus-bpr-sweep) of --dataset in "
                        "SWEEP_DIR (nothing until --sweep-size runs are done)")
    parser.add_argument("--dataset", help="with --best-m")
    parser.add_argument("--sweep-size", type=int, default=14, help="with --best-m: the number of M in the sweep "
                        "(default 14, DNS+'s; run_all.sh passes each sweep's)")
    parser.add_argument("--check-commands", metavar="FILE", help="only compare the done runs listed by "
                        "`run_all.sh --dry-run` in FILE (- for stdin) with their results.json (run_all.sh --check)")
    args = parser.parse_args()
    if args.check_commands:
        with (sys.stdin if args.check_commands == "-" else open(args.check_commands)) as f:
            raise SystemExit(1 if check_commands(f) else 0)
    if args.best_m:
        sweep = [r for r in load_runs(args.best_m) if os.path.basename(str(r["dataset"])) == args.dataset]
        if len(sweep) >= args.sweep_size:
            print(best_m(sweep))
        return
    runs = load_runs(args.runs)
    if not runs:
        raise SystemExit(f"error: no results.json under {args.runs}; run ./run_all.sh first")
    groups, sweeps = defaultdict(list), defaultdict(list)
    for run in runs:
        if run["grid"] in SWEEP_GRIDS:
            sweeps[os.path.basename(str(run["dataset"])), run["grid"]].append(run)
        else:
            groups[group_key(run)].append(run)
    sections = ["# Results\n",
                "Produced by `./run_all.sh` and `python results/aggregate.py` from the `results.json` files under "
                "`results/runs/`. Test metrics at the best validation epoch, mean ± std over seeds (sample std). "
                "Seconds per epoch are each run's median; the runs of a table were not necessarily run side by "
                "side on an idle machine, so compare them loosely: `bench/` measures speed side by side.\n"]
    summary = summary_table(groups, args.out)
    if summary:
        sections.append("## Summary: every paper cell we ran\n")
        sections.append("Test metrics at the best validation epoch, our mean over seeds beside the MDCNS paper's "
                        "single run; each gap is explained, with evidence, in the note of its table.\n")
        sections.append(summary + "\n")
        findings = os.path.join(args.out, "notes", "summary.md")
        if os.path.exists(findings):   # hand-written: what the tables say, in a few lines
            with open(findings) as f:
                sections.append(f.read().strip() + "\n")
    for key in sorted(groups):
        runs_ = groups[key]
        name = table_name(key, runs_)
        leak = any(map(excludes_held_out, runs_))
        sections.append(f"## {key[0]} · `{key[1]}` split · {key[2]}" +
                        (f" · grid `{key[3]}`" if key[3] not in UNSUFFIXED_GRIDS else "") +
                        (", with held-out items excluded" if leak else "") + "\n")
        sections.append(protocol_paragraph(runs_) + "\n")
        sections.append(table(key, runs_) + "\n")
        if leak:
            sections.append("Held-out excluded (`--exclude-held-out`): negatives also avoid each user's validation "
                            "and test items, as in the official ICPNS pipeline; a leak of held-out labels into "
                            "training. Each method side by side:\n")
            sections.append(held_out_table(key, runs_) + "\n")
        zero = history_zero_table(runs_)
        if zero:
            sections.append("The same models with the input history scored 0 instead of −inf at test, as the MDCNS "
                            "code's baselines evaluate (`Baselines/Neg_samples_DNS+/trainers.py`, full sort), means "
                            "over seeds:\n")
            sections.append(zero + "\n")
        for grid, (sampler, user) in SWEEP_GRIDS.items():
            sweep = [r for r in sweeps.get((key[0], grid), []) if r["backbone"] == key[2]]
            if sweep and key[3] == user:
                sections.append(f"{sampler}'s M, chosen on validation (grid `{grid}`, seed 42, "
                                f"{settings(sweep, 'epochs')} epochs per M; {len(sweep)} values of M finished; the "
                                f"{user} rows use the best of the full sweep):\n")
                sections.append(sweep_table(sweep) + "\n")
        notes = os.path.join(args.out, "notes", f"{name}.md")
        if os.path.exists(notes):   # hand-written: the likely cause of every gap to a paper's number
            with open(notes) as f:
                sections.append(f.read().strip() + "\n")
        if not args.no_plots:
            sections.append(f"![validation curves]({plot(key, runs_, args.out, name)})\n")
    paired_sections = paired_tables(runs)
    if paired_sections:
        sections.append("## Paired comparisons (per test row)\n")
        sections.append("Rows A and B of one table trained at the same seeds share their test rows; each seed's "
                        "per-row differences (`test_rows.npz`) are resampled within the seed, 10,000 times (seed "
                        "0), and the statistic is the mean over seeds of the mean difference: the estimate, its "
                        "95 % percentile interval and a two-sided p (`stratified_bootstrap`). A difference whose "
                        "interval contains 0 is marked: it could be noise.\n")
        sections.extend(paired_sections)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "RESULTS.md")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(sections))
    os.replace(path + ".tmp", path)
    print(f"wrote {path} ({len(runs)} runs, {len(groups)} tables)")


if __name__ == "__main__":
    main()
