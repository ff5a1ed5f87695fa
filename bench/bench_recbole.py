"""Speed and memory side by side with RecBole 1.2.1, on the same data with the same settings.

    python bench/bench_recbole.py --recbole-python /tmp/recbole-venv/bin/python --threads 2 --rounds 2
    python bench/bench_recbole.py --rows mf-100k-rns,sasrec-100k     # a subset; ours only without --recbole-python
    python bench/bench_recbole.py --variant patched=/tmp/copy ...    # also a patched checkout, against ours
    python bench/bench_recbole.py --smoke                            # synthetic, ours only, seconds: it runs

Check `uptime` first: --threads 2 on an idle 2-core machine, --threads 1 when it is loaded (the same on both
sides). Results and how to read them: bench/README.md.

RecBole is never imported here: with --recbole-python the script writes a small driver to a temporary folder and
runs it with that interpreter (a venv where RecBole is installed, recipe in bench/README.md; the driver sets
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 itself). Every row runs each side in its own fresh subprocess, so peak RSS
(os.wait4's ru_maxrss: the whole process, data loading included) does not mix between rows. The two sides
alternate (ours, RecBole, then RecBole, ours in the next round, ...) so machine noise hits both alike. Only the
ratios mean something on a shared machine.

Settings, the same on both sides: train batch 2048, Adam lr 1e-3, seed 2020, metrics Recall/MRR/NDCG/Hit @10,20
with full ranking; dimension 64. SASRec: leave-one-out by time (RecBole LS valid_and_test, TO), 2 layers, 2 heads,
max_len 50, dropout 0.5, BPR with one uniform negative, history not masked at evaluation (RecBole's sequential
evaluation). BPR-MF and LightGCN: per-user random 8:1:1 (RS, RO, grouped by user); LightGCN 2 layers,
reg_weight 1e-5. DNS = best of N = 5 uniform candidates on both sides (RecBole `dynamic: True, candidate_num: 5`).
DNS(M,N) = M 5, N 100, ours only: its ratio is to our own RNS row (the target is <= 1.5x).

Data: ml-100k, every interaction (100,000; no rating filter, no k-core: what RecBole's own ml-100k config does,
and its 97,171 SASRec training rows confirm it): RecBole reads the copy inside its wheel, we read
<data-dir>/ml-100k/u.data (the same 100,000 rows). ml-1m: <data-dir>/ml-1m/interactions_chrono.tsv (all
1,000,209 pairs, chronological positions, no ratings or timestamps) is written once as a RecBole atomic
`ml-1m.inter` (user_id, item_id, timestamp = chronological position) in a temporary folder that BOTH sides read.

What is timed: seconds per training epoch (median over the row's epochs; ours: `common.fit`'s own epoch time,
i.e. exactly what a user runs; RecBole: `trainer._train_epoch`, which includes its dataloader's negative sampling
and DNS scoring), and full-ranking evaluation of the validation rows (median of repeats; ours `common.evaluate`
with --eval-batch-size rows per batch, RecBole `trainer.evaluate` with eval_batch_size 4096). Our rows also time
the floor: a bare matmul + top-20 of the same query and item tensors in the same batches.

The SASRec block is the same on both sides by default (`--sasrec-block s3rec`: RecBole's own, post-LayerNorm,
GELU feed-forward of inner size 4 D = 256; `kang` is SASRec's original). The work differs (bench/README.md):
RecBole's SASRec expands every prefix into its own padded row (97,171 rows of length 50 on ml-100k) and runs the
whole sequence for the last position only. Row `sasrec-100k` runs ours as a user does by default: each training
window once, a target at every position (the same 97,171 targets), with as many windows per step as give RecBole's
number of steps per epoch (2048 targets per step on average). Row `sasrec-100k-prefixes` runs ours on RecBole's
work, one row per prefix (`--augmented-prefixes`), 2048 rows per step; it is compared with the same RecBole run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "@@RESULT@@ "   # the line of a worker's stdout that carries its JSON result


@dataclass
class Row:
    name: str
    label: str
    dataset: str          # ml-100k | ml-1m
    backbone: str         # mf | lightgcn | sasrec
    sampler: str          # rns | dns | dnsmn
    ours_epochs: int
    recbole_epochs: int   # 0: no RecBole run of its own (see recbole_as)
    eval_repeats: int = 3
    augmented_prefixes: bool = False   # ours: one training row per prefix (--augmented-prefixes), RecBole's work
    recbole_as: str = ""  # compared with this row's RecBole run; without one (and 0 epochs), with our RNS row


ROWS = [
    Row("sasrec-100k", "SASRec ml-100k, BPR + 1 uniform neg.", "ml-100k", "sasrec", "rns", 3, 1, 3),
    Row("sasrec-100k-prefixes", "SASRec ml-100k, one row per prefix (RecBole's work)", "ml-100k", "sasrec", "rns",
        1, 0, 1, augmented_prefixes=True, recbole_as="sasrec-100k"),
    Row("sasrec-100k-dnsmn", "SASRec ml-100k DNS(5,100)", "ml-100k", "sasrec", "dnsmn", 3, 0, 1),
    Row("mf-100k-rns", "BPR-MF ml-100k RNS", "ml-100k", "mf", "rns", 5, 5, 5),
    Row("mf-100k-dns", "BPR-MF ml-100k DNS (N=5)", "ml-100k", "mf", "dns", 5, 5, 3),
    Row("mf-100k-dnsmn", "BPR-MF ml-100k DNS(5,100)", "ml-100k", "mf", "dnsmn", 5, 0, 1),
    Row("lightgcn-100k-rns", "LightGCN ml-100k RNS", "ml-100k", "lightgcn", "rns", 3, 3, 3),
    Row("lightgcn-100k-dns", "LightGCN ml-100k DNS (N=5)", "ml-100k", "lightgcn", "dns", 3, 3, 1),
    Row("lightgcn-100k-dnsmn", "LightGCN ml-100k DNS(5,100)", "ml-100k", "lightgcn", "dnsmn", 3, 0, 1),
    Row("mf-1m-rns", "BPR-MF ml-1m RNS", "ml-1m", "mf", "rns", 3, 3, 5),
    Row("mf-1m-dns", "BPR-MF ml-1m DNS (N=5)", "ml-1m", "mf", "dns", 3, 3, 1),
    Row("mf-1m-dnsmn", "BPR-MF ml-1m DNS(5,100)", "ml-1m", "mf", "dnsmn", 3, 0, 1),
    Row("lightgcn-1m-rns", "LightGCN ml-1m RNS", "ml-1m", "lightgcn", "rns", 2, 1, 3),
    Row("lightgcn-1m-dns", "LightGCN ml-1m DNS (N=5)", "ml-1m", "lightgcn", "dns", 2, 1, 1),
    Row("lightgcn-1m-dnsmn", "LightGCN ml-1m DNS(5,100)", "ml-1m", "lightgcn", "dnsmn", 2, 0, 1),
]
SMOKE_ROWS = [   # --smoke: our side only, on synthetic data
    Row("smoke-sasrec", "SASRec synthetic", "synthetic", "sasrec", "rns", 1, 0, 1),
    Row("smoke-sasrec-prefixes", "SASRec synthetic, one row per prefix", "synthetic", "sasrec", "rns", 1, 0, 1,
        augmented_prefixes=True),
]
EVAL_ROW = "mf-1m-rns"   # the full-ranking evaluation line of the table comes from this row
KS = [10, 20]
SEED = 2020
TRAIN_BATCH = 2048


# ----------------------------------------------------------------------------------------------------------
# Our side: one row in this process (run as `bench_recbole.py --worker-ours ROW.json`)
# ----------------------------------------------------------------------------------------------------------
def run_ours(row: dict, data_dir: str, ml1m_dir: str, threads: int, eval_batch_size: int, sasrec_block: str,
             root: str = ROOT) -> dict:
    import torch
    torch.set_num_threads(threads)
    sys.path.insert(0, root)
    import baselines
    import common
    from baselines import make_sampler

    start = time.perf_counter()
    sequential = row["backbone"] == "sasrec"
    if row["dataset"] == "synthetic":
        data = common.make_synthetic(SEED, n_users=60, n_items=50)                        # --smoke: seconds
    elif row["dataset"] == "ml-100k":
        data = common.load_dataset("ml-100k", data_dir, min_rating=0, k_core=0)
    else:
        data = common.load_dataset("ml-1m", ml1m_dir, k_core=0, use_cache=False)
    split = common.split_dataset(data, "loo" if sequential else "ratio", SEED, sequential, max_len=50,
                                 mask_history=not sequential)
    n_targets = int((split.train_targets > 0).sum()) if sequential else len(split.train_user)
    if sequential and not row["augmented_prefixes"]:   # windows per step giving RecBole's steps per epoch
        batch_size = max(1, round(TRAIN_BATCH * len(split.train_sequences) / n_targets))
    else:                                              # RecBole's rows per step
        batch_size = TRAIN_BATCH
    # the method file's own parser and checks: every flag a run reads exists, at its default unless set here
    flags = ["--backbone", row["backbone"], "--sampler", row["sampler"], "--dim", "64", "--heads", "2",
             "--layers", "2" if row["backbone"] != "mf" else "0", "--dropout", "0.5" if sequential else "0",
             "--reg-weight", "1e-5" if row["backbone"] == "lightgcn" else "0", "--epochs", str(row["ours_epochs"]),
             "--batch-size", str(batch_size), "--lr", "1e-3", "--seed", str(SEED), "--device", "cpu",
             "--eval-every", str(10 ** 9), "--patience", "10", "--valid-metric", "ndcg@10",
             "--ks", ",".join(map(str, KS)), "--eval-batch-size", str(eval_batch_size), "--quiet", "--max-len", "50",
             "--sasrec-block", sasrec_block, "--out-dir", tempfile.mkdtemp(prefix="bench-ours-")]
    args = common.resolve_args(baselines.build_parser().parse_args(
        flags + (["--augmented-prefixes"] if row["augmented_prefixes"] else [])), row["sampler"])
    args.data_file, args.data_sha256 = data.data_file, data.data_sha256                 # as common.prepare sets them
    if sequential:
        split = common.training_rows(args, split)
    common.seed_everything(SEED)
    model = common.build_backbone(row["backbone"], split, args)
    positives = common.training_positives(split, "cpu")
    n_candidates, m = {"rns": (None, None), "dns": (5, None), "dnsmn": (100, 5)}[row["sampler"]]
    negatives_fn = make_sampler(row["sampler"], positives, 1, split.train_item, n_candidates=n_candidates or 10,
                                m=m or 5)
    setup = time.perf_counter() - start
    record = common.fit(args, split, model, common.standard_loss(negatives_fn, "bpr", args.reg_weight))

    eval_seconds, floor_seconds = [], []
    rows = split.valid
    with torch.no_grad():
        model.eval()
        parts = [model(rows.query[s:s + eval_batch_size]) for s in range(0, len(rows), eval_batch_size)]
        queries, item_table = [q for q, _ in parts], parts[0][1]
    for _ in range(row["eval_repeats"]):   # alternate evaluate and its floor
        t = time.perf_counter()
        metrics = common.evaluate(model, rows, KS, eval_batch_size)
        eval_seconds.append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.no_grad():
            for q in queries:
                torch.topk(q @ item_table.T, max(KS), dim=1)
        floor_seconds.append(time.perf_counter() - t)
    return {"epoch_seconds": record["epoch_seconds"], "eval_seconds": eval_seconds, "floor_seconds": floor_seconds,
            "setup_seconds": setup, "train_targets": n_targets, "batch_size": batch_size,
            "steps_per_epoch": -(-(len(split.train_sequences) if sequential else n_targets) // batch_size),
            "train_rows": len(split.train_sequences) if sequential else n_targets,
            "valid_rows": len(rows), "n_items": split.n_items, "valid": metrics,
            "self_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


# ----------------------------------------------------------------------------------------------------------
# RecBole's side: a driver run by the RecBole interpreter (never imported here)
# ----------------------------------------------------------------------------------------------------------
RECBOLE_DRIVER = r'''
import json, os, resource, sys, time
os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_seed

job = json.load(open(sys.argv[1]))
row, threads = job["row"], job["threads"]
torch.set_num_threads(threads)
model_name = {"sasrec": "SASRec", "mf": "BPR", "lightgcn": "LightGCN"}[row["backbone"]]
config = {
    "seed": 2020, "reproducibility": True, "use_gpu": False, "show_progress": False, "state": "ERROR",
    "data_path": job["ml1m_dir"], "checkpoint_dir": job["work_dir"], "epochs": row["recbole_epochs"],
    "train_batch_size": 2048, "eval_batch_size": 4096, "learner": "adam", "learning_rate": 1e-3,
    "metrics": ["Recall", "MRR", "NDCG", "Hit"], "topk": [10, 20], "valid_metric": "NDCG@10",
    "embedding_size": 64,
    "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1, "alpha": 1.0,
                              "dynamic": row["sampler"] == "dns", "candidate_num": 5 if row["sampler"] == "dns" else 0},
}
if row["backbone"] == "sasrec":
    config.update({"loss_type": "BPR", "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO",
                   "group_by": "user", "mode": "full"}, "repeatable": True, "hidden_size": 64, "inner_size": 256,
                   "n_layers": 2, "n_heads": 2, "MAX_ITEM_LIST_LENGTH": 50, "hidden_dropout_prob": 0.5,
                   "attn_dropout_prob": 0.5})
else:
    config.update({"eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user",
                   "mode": "full"}})
    if row["backbone"] == "lightgcn":
        config.update({"n_layers": 2, "reg_weight": 1e-5})
if row["dataset"] == "ml-1m":
    config.update({"load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "TIME_FIELD": "timestamp"})
start = time.perf_counter()
config = Config(model=model_name, dataset=row["dataset"], config_dict=config)
init_seed(config["seed"], config["reproducibility"])
torch.set_num_threads(threads)
dataset = create_dataset(config)
train_data, valid_data, test_data = data_preparation(config, dataset)
init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
model = get_model(model_name)(config, train_data._dataset).to(config["device"])
trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
trainer.eval_collector.data_collect(train_data)
if config["train_neg_sample_args"].get("dynamic", False):
    train_data.get_model(trainer.model)
setup = time.perf_counter() - start
epoch_seconds = []
for epoch in range(row["recbole_epochs"]):
    t = time.perf_counter()
    trainer._train_epoch(train_data, epoch, show_progress=False)
    epoch_seconds.append(time.perf_counter() - t)
eval_seconds = []
for _ in range(row["eval_repeats"]):
    t = time.perf_counter()
    result = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    eval_seconds.append(time.perf_counter() - t)
out = {"epoch_seconds": epoch_seconds, "eval_seconds": eval_seconds, "setup_seconds": setup,
       "train_rows": len(train_data.dataset), "steps_per_epoch": len(train_data),
       "valid": {k: float(v) for k, v in result.items()}, "threads": torch.get_num_threads(),
       "self_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
print("@@RESULT@@ " + json.dumps(out), flush=True)
'''


# ----------------------------------------------------------------------------------------------------------
# The parent: data preparation, alternation, subprocesses, the table
# ----------------------------------------------------------------------------------------------------------
def write_ml1m_inter(data_dir: str, work_dir: str) -> str:
    """<work_dir>/ml-1m/ml-1m.inter from interactions_chrono.tsv: RecBole atomic, timestamp = chronological position."""
    source = os.path.join(data_dir, "ml-1m", "interactions_chrono.tsv")
    folder = os.path.join(work_dir, "ml-1m")
    os.makedirs(folder, exist_ok=True)
    with open(source) as f, open(os.path.join(folder, "ml-1m.inter"), "w") as out:
        header = f.readline().split()
        if header != ["user_id", "movie_id", "seq_pos"]:
            raise SystemExit(f"{source}: unexpected header {header}")
        out.write("user_id:token\titem_id:token\ttimestamp:float\n")
        out.writelines(f)   # the same three tab-separated columns
    return work_dir


def run_subprocess(command: list, env: dict, cwd: str, log_path: str) -> tuple[dict, float, float]:
    """Run `command`; return (its JSON result, peak RSS in GB of that process tree, wall seconds)."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    with open(log_path) as log:
        text = log.read()
    results = [line[len(MARK):] for line in text.splitlines() if line.startswith(MARK)]
    if process.returncode != 0 or not results:
        raise RuntimeError(f"{' '.join(command[:3])} failed (exit {process.returncode}); log {log_path}:\n"
                           + "\n".join(text.splitlines()[-25:]))
    return json.loads(results[-1]), usage.ru_maxrss / 1024 ** 2, wall


def median(values):
    return statistics.median(values) if values else float("nan")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recbole-python", default=None,
                        help="python of a venv with RecBole 1.2.1 (recipe in bench/README.md); omit for ours only")
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--rows", default="all", help=f"comma-separated subset of: {', '.join(r.name for r in ROWS)}")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, the same on both sides")
    parser.add_argument("--rounds", type=int, default=1, help="alternations per row (each round runs every side)")
    parser.add_argument("--epoch-scale", type=float, default=1.0, help="multiply every row's epoch counts")
    parser.add_argument("--eval-batch-size", type=int, default=1024, help="our rows ranked at once")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR",
                        help="also run our side from another checkout DIR (holding common.py and baselines.py), "
                             "e.g. a patched copy, alternating with the others; reported against ours")
    parser.add_argument("--json", default=None, help="also write every measurement here")
    parser.add_argument("--markdown", default=None, help="also write the table here (for bench/README.md)")
    parser.add_argument("--sasrec-block", default="s3rec", choices=("s3rec", "kang"),
                        help="our SASRec block (default s3rec: RecBole's own; kang: SASRec's original)")
    parser.add_argument("--smoke", action="store_true",
                        help="synthetic data, our side only, one epoch of a few small rows: checks that the script "
                             "runs, in seconds")
    parser.add_argument("--worker-ours", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker_ours:   # a child: one of our rows
        job = json.load(open(args.worker_ours))
        result = run_ours(job["row"], job["data_dir"], job["ml1m_dir"], job["threads"], job["eval_batch_size"],
                          job["sasrec_block"], job["root"])
        print(MARK + json.dumps(result), flush=True)
        return

    if args.smoke:
        rows, args.recbole_python = SMOKE_ROWS, None
    else:
        rows = ROWS if args.rows == "all" else [r for r in ROWS if r.name in args.rows.split(",")]
    if not rows:
        raise SystemExit(f"--rows matched nothing; choose among {', '.join(r.name for r in ROWS)}")
    scaled = [Row(**{**asdict(r), "ours_epochs": max(1, round(r.ours_epochs * args.epoch_scale)),
                     "recbole_epochs": r.recbole_epochs and max(1, round(r.recbole_epochs * args.epoch_scale))})
              for r in rows]
    variants = dict(v.split("=", 1) for v in args.variant)
    sides = {"ours": ROOT, **{name: os.path.abspath(d) for name, d in variants.items()}}   # our side(s): root
    if args.recbole_python:
        sides["recbole"] = None
    data_dir = os.path.abspath(args.data_dir)
    work = tempfile.mkdtemp(prefix="bench_recbole_")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONUNBUFFERED": "1"}
    ml1m_dir = write_ml1m_inter(data_dir, work) if any(r.dataset == "ml-1m" for r in scaled) else work
    driver = os.path.join(work, "recbole_driver.py")
    with open(driver, "w") as f:
        f.write(RECBOLE_DRIVER)
    print(f"{datetime.datetime.now():%Y-%m-%d %H:%M}  {platform.node()}  {os.cpu_count()} CPUs  "
          f"threads {args.threads}  load average {load_average()}  work dir {work}", flush=True)

    measurements = {r.name: {side: [] for side in sides} for r in scaled}
    loads = []
    for round_ in range(args.rounds):
        for r in scaled:
            order = list(sides) if round_ % 2 == 0 else list(sides)[::-1]   # alternate who goes first
            for side in order:
                if side == "recbole" and not r.recbole_epochs:
                    continue
                job = os.path.join(work, f"{r.name}-{side}-{round_}.json")
                with open(job, "w") as f:
                    json.dump({"row": asdict(r), "data_dir": data_dir, "ml1m_dir": ml1m_dir, "work_dir": work,
                               "threads": args.threads, "eval_batch_size": args.eval_batch_size,
                               "sasrec_block": args.sasrec_block, "root": sides[side]}, f)
                command = ([args.recbole_python, driver, job] if side == "recbole"
                           else [sys.executable, os.path.abspath(__file__), "--worker-ours", job])
                load = os.getloadavg()[0]
                result, rss, wall = run_subprocess(command, env, work, job.replace(".json", ".log"))
                loads.append(load)
                result.update(rss_gb=rss, wall_seconds=wall, load_before=load)
                measurements[r.name][side].append(result)
                print(f"  {r.name:20s} {side:8s} epoch {median(result['epoch_seconds']):8.3f}s  eval "
                      f"{median(result['eval_seconds']):6.3f}s  RSS {rss:5.2f} GB  (wall {wall:5.0f}s, "
                      f"load {load:.2f}, valid ndcg@10 {result['valid'].get('ndcg@10', float('nan')):.4f})",
                      flush=True)

    shutil.rmtree(os.path.join(work, "ml-1m"), ignore_errors=True)   # the 13 MB copy; logs and jobs stay
    table = summarize(scaled, measurements, [v for v in variants])
    header = (f"{datetime.date.today()}, {platform.node()} ({os.cpu_count()} CPUs), torch threads {args.threads} "
              f"on both sides, {args.rounds} round(s); 1-min load average before each run "
              f"{min(loads):.2f}-{max(loads):.2f} (median {median(loads):.2f})")
    print("\n" + header + "\n\n" + table)
    return measurements
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(header + "\n\n" + table + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "rows": [asdict(r) for r in scaled], "sides": sides,
                       "measurements": measurements}, f, indent=1)


def summarize(rows, measurements, variants=()) -> str:
    """Markdown tables: medians over rounds of each side's per-run medians; peak RSS is the max over rounds."""
    def side(name, who, key):
        runs = measurements.get(name, {}).get(who, [])
        return median([median(run[key]) for run in runs]) if runs else float("nan")

    def rss(name, who):
        runs = measurements.get(name, {}).get(who, [])
        return max(run["rss_gb"] for run in runs) if runs else float("nan")

    def fmt(x, digits=2):
        return "—" if x != x else f"{x:.{digits}f}"

    def times(x):   # a ratio
        return "—" if x != x else f"{x:.2f}×"

    def rns_row(name):   # the RNS row a DNS(M,N) row is compared with
        base = name.replace("-dnsmn", "")
        return next((n for n in (base + "-rns", base) if n in measurements), None)

    lines = ["| row | ours s/epoch | RecBole s/epoch | ratio | ours eval s | RecBole eval s | eval ratio | "
             "ours RSS GB | RecBole RSS GB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        theirs_row = r.recbole_as or r.name
        ours, theirs = side(r.name, "ours", "epoch_seconds"), side(theirs_row, "recbole", "epoch_seconds")
        ratio = times(ours / theirs)
        if not r.recbole_epochs and not r.recbole_as:   # DNS(M,N): ratio to our own RNS row
            base = rns_row(r.name)
            ratio = times(ours / side(base, "ours", "epoch_seconds") if base else float("nan")) + " our RNS"
        eo, er = side(r.name, "ours", "eval_seconds"), side(theirs_row, "recbole", "eval_seconds")
        lines.append(f"| {r.label} | {fmt(ours, 3)} | {fmt(theirs, 2)} | {ratio} | {fmt(eo, 3)} | {fmt(er, 3)} | "
                     f"{times(eo / er)} | {fmt(rss(r.name, 'ours'))} | {fmt(rss(theirs_row, 'recbole'))} |")
    if EVAL_ROW in measurements and measurements[EVAL_ROW]["ours"]:
        eo, er = side(EVAL_ROW, "ours", "eval_seconds"), side(EVAL_ROW, "recbole", "eval_seconds")
        floor = side(EVAL_ROW, "ours", "floor_seconds")
        n = measurements[EVAL_ROW]["ours"][0]
        lines.append(f"| full-ranking eval ml-1m ({n['valid_rows']:,} users × {n['n_items']:,} items, MF) | | | | "
                     f"{fmt(eo, 3)} | {fmt(er, 3)} | {times(eo / er)} RecBole; {times(eo / floor)} the matmul + "
                     f"top-k floor ({fmt(floor, 3)} s) | | |")
    for v in variants:
        lines += ["", f"Variant `{v}` against ours (same run, alternating):", "",
                  f"| row | ours s/epoch | {v} s/epoch | {v} / ours | {v} / its RNS | ours eval s | {v} eval s | "
                  f"{v} eval / floor | {v} RSS GB |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            ours, var = side(r.name, "ours", "epoch_seconds"), side(r.name, v, "epoch_seconds")
            base = rns_row(r.name) if not r.recbole_epochs else None
            to_rns = times(var / side(base, v, "epoch_seconds")) if base else ""
            eo, ev = side(r.name, "ours", "eval_seconds"), side(r.name, v, "eval_seconds")
            lines.append(f"| {r.label} | {fmt(ours, 3)} | {fmt(var, 3)} | {times(var / ours)} | {to_rns} | "
                         f"{fmt(eo, 3)} | {fmt(ev, 3)} | {times(ev / side(r.name, v, 'floor_seconds'))} | "
                         f"{fmt(rss(r.name, v))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
