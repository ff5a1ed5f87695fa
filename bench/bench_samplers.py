"""Benchmark of baselines.py's samplers on an ml-1m-sized problem, CPU. Not part of the test suite.

1. Negatives per second of each sampler (RNS, PNS α=0.1, DNS N=10, DNS(M,N) N=100 M=5) for batches of P
   examples of 6,040 users x 3,416 items x ~1M interactions, with random queries and item table (D=50, SASRec's
   ml-1m size). Scoring is part of DNS's cost, the model's forward pass is not.
2. One training epoch of SASRec (common.py's defaults: L=200, D=50, 2 blocks, batch 128, BPR) on ml-1m with
   each sampler, through the same `fit` as `baselines.py`, as a ratio to RNS. Goal: DNS(M,N) with N=100 under
   1.5x RNS.

The machine is shared, so: few repetitions, the samplers alternated within each repetition, medians, and ratios
to RNS measured in the same run rather than absolute times.

    python bench/bench_samplers.py                       # reads data/ml-1m/ml-1m.txt if present
    python bench/bench_samplers.py --data synthetic --epoch-repeats 1
    python bench/bench_samplers.py --smoke               # 100 synthetic users, a tiny SASRec: the script runs
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from baselines import SAMPLERS, build_parser, make_sampler, resolve_sampler_args  # noqa: E402
from common import (Examples, Interactions, PositiveSets, build_backbone, fit, resolve_args,  # noqa: E402
                    seed_everything, split_dataset, standard_loss, training_positives)

ML_1M = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "ml-1m", "ml-1m.txt")
OUT_DIR = tempfile.TemporaryDirectory(prefix="bench-samplers-")
SETTINGS = {"rns": [], "pns": ["--pns-alpha", "0.1"], "dns": ["--candidates", "10"],
            "dnsmn": ["--candidates", "100", "--top-m", "5"]}


def load(path: str, seed: int = 0, n_users: int = 6040, n_items: int = 3416) -> Interactions:
    """SASRec's ml-1m.txt (`user item` lines, chronological per user), or synthetic data of its shape (n_users x
    n_items, ml-1m's by default)."""
    if path != "synthetic" and os.path.exists(path):
        pairs = np.loadtxt(path, dtype=np.int64)                                           # (E, 2)
        return Interactions.from_raw(pairs[:, 0], pairs[:, 1], name="ml-1m", source=path)
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.geometric(1 / 150, n_users) + 20, 20, min(2000, n_items // 2))  # mean ~165
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    keys = rng.gumbel(size=(n_users, n_items)).astype(np.float32) + np.log(popularity).astype(np.float32)
    order = np.argsort(-keys, axis=1)                                                      # weighted, no repeats
    items = np.concatenate([order[u, :lengths[u]] for u in range(n_users)]) + 1
    return Interactions.from_raw(np.repeat(np.arange(n_users), lengths), items, name="ml-1m-shaped synthetic",
                                 source=f"bench synthetic(seed={seed})")


def sampler_args(name: str, extra=()):
    """baselines.py's flags for `name` with the settings of SETTINGS, on SASRec. `--dataset ml-1m` names what
    `load` reads (and keeps the defaults of `--dataset synthetic`, a short demo, away); fit's checkpoints go to a
    new temporary folder per call (a run's checkpoint would stop the next run in the same folder)."""
    argv = ["--sampler", name, "--backbone", "sasrec", "--dataset", "ml-1m", "--out-dir",
            tempfile.mkdtemp(dir=OUT_DIR.name),
            *SETTINGS[name], *extra]
    return resolve_sampler_args(build_parser().parse_args(argv))


def negatives_per_second(data: Interactions, batch: int, repeats: int, dim: int = 50):
    """Median negatives/s of each sampler, the samplers alternated within each repetition."""
    user, item = torch.from_numpy(data.user), torch.from_numpy(data.item)
    positives = PositiveSets(user, item, data.n_users, data.n_items)
    g = torch.Generator().manual_seed(0)
    pick = torch.randint(0, len(user), (batch,), generator=g)
    ex = Examples(torch.randn(batch, dim, generator=g), torch.randn(data.n_items + 1, dim, generator=g),
                  user[pick], item[pick])
    fns = {}
    for name in SAMPLERS:
        a = sampler_args(name)
        fns[name] = make_sampler(name, positives, 1, item, a.pns_alpha, a.candidates, a.top_m)
        fns[name](ex, g)                                                                   # warm-up
    seconds = {name: [] for name in SAMPLERS}
    for _ in range(repeats):
        for name in SAMPLERS:
            start = time.perf_counter()
            fns[name](ex, g)
            seconds[name].append(time.perf_counter() - start)
    return {name: batch / statistics.median(s) for name, s in seconds.items()}


def sasrec_epochs(data: Interactions, repeats: int, extra):
    """Median seconds of one SASRec training epoch per sampler (fit's own timer, evaluation excluded)."""
    base = resolve_args(sampler_args("rns", ["--epochs", "1", "--quiet", *extra]), "rns")
    split = split_dataset(data, "loo", base.seed, True, base.max_len, base.mask_history)
    print(f"{split.statistics['train_examples']:,} training positions in {len(split.train_sequences):,} "
          f"windows of L={base.max_len}", flush=True)
    seconds = {name: [] for name in SAMPLERS}
    for _ in range(repeats):
        for name in SAMPLERS:
            args = resolve_args(sampler_args(name, ["--epochs", "1", "--quiet", *extra]), name)
            args.data_file, args.data_sha256 = data.data_file, data.data_sha256          # as common.prepare sets
            seed_everything(args.seed)
            model = build_backbone("sasrec", split, args)
            fn = make_sampler(name, training_positives(split, args.device), args.negatives, split.train_item,
                              args.pns_alpha, args.candidates, args.top_m)
            record = fit(args, split, model, standard_loss(fn, args.loss, args.reg_weight), stage=name)
            seconds[name].append(record["epoch_seconds"][0])
            print(f"  {name}: {seconds[name][-1]:.1f}s", flush=True)
    return {name: statistics.median(s) for name, s in seconds.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=ML_1M, help="SASRec's ml-1m.txt, or 'synthetic' (same shape)")
    parser.add_argument("--batch", type=int, default=20000, help="examples per sampler call (part 1)")
    parser.add_argument("--repeats", type=int, default=5, help="sampler calls per sampler (part 1)")
    parser.add_argument("--epoch-repeats", type=int, default=2, help="SASRec epochs per sampler (part 2); 0 skips")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--smoke", action="store_true",
                        help="100 synthetic users x 300 items, batches of 500, one repeat, a D = 16, L = 20 SASRec")
    parser.add_argument("extra", nargs="*", help="flags passed on to the SASRec runs, after --, e.g. -- --max-len 50")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.smoke:
        args.data, args.batch, args.repeats, args.epoch_repeats = "synthetic", 500, 1, 1
        args.extra = [*args.extra, "--max-len", "20", "--dim", "16"]
    data = load(args.data, n_users=100, n_items=300) if args.smoke else load(args.data)
    print(data.describe(), f"| torch {torch.__version__}, {args.threads} thread(s)", flush=True)

    rates = negatives_per_second(data, args.batch, args.repeats)
    print(f"\nnegatives per second, batches of {args.batch:,} examples, median of {args.repeats}")
    for name, rate in rates.items():
        print(f"  {name:6s} {rate:12,.0f}/s   cost x{rates['rns'] / rate:6.1f} RNS")
    if args.epoch_repeats:
        epochs = sasrec_epochs(data, args.epoch_repeats, args.extra)
        print(f"\nSASRec epoch on {data.name}, median of {args.epoch_repeats}, ratio to RNS in the same run")
        for name, s in epochs.items():
            print(f"  {name:6s} x{s / epochs['rns']:.2f}   ({s:.1f}s)")
    return rates


if __name__ == "__main__":
    main()
