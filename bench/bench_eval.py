"""Full-ranking evaluation cost against its floor: a bare matmul + top-k on the same tensors.

    python bench/bench_eval.py [--users 6040] [--items 3416] [--repeats 5]
    python bench/bench_eval.py --smoke                   # 200 rows x 300 items, once: the script runs, in seconds

A SASRec-sized model (D = 50, L = 200) on an ml-1m-sized problem (6,040 sequences x 3,416 items), one target per
row, history masked. Rows: our `evaluate` (encode + score + mask + metrics), the same with the encoder's output
precomputed (score + mask + metrics only), and the floor (matmul + topk on the precomputed queries). The two
are alternated and the medians compared; the goal is evaluate / floor < 2.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402


class Precomputed(torch.nn.Module):
    """Returns fixed queries for the rows it is given (the encoder's cost taken out)."""

    sequential = True

    def __init__(self, queries, item_table):
        super().__init__()
        self.queries, self.item_table = torch.nn.Parameter(queries), torch.nn.Parameter(item_table)
        self.row = 0

    def forward(self, sequences):
        out = self.queries[self.row:self.row + len(sequences)]
        self.row = (self.row + len(sequences)) % len(self.queries)
        return out, self.item_table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=6040)
    parser.add_argument("--items", type=int, default=3416)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--smoke", action="store_true", help="200 rows x 300 items of length up to 30, one repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.users, args.items, args.length, args.repeats = 200, 300, 30, 1
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, args.length, args.users)
    sequences = [rng.choice(np.arange(1, args.items + 1), n, replace=False) for n in lengths]
    targets = [rng.integers(1, args.items + 1, 1) for _ in range(args.users)]
    masked = [np.setdiff1d(s, t) for s, t in zip(sequences, targets)]
    target_ptr, target_items = common.to_csr(targets)
    masked_ptr, masked_items = common.to_csr(masked)
    rows = common.EvalRows(common.pad_right(sequences, args.length), target_ptr, target_items, masked_ptr,
                           masked_items)
    model = common.SASRec(args.items, 50, args.length, 2, 1, 0.2).eval()
    with torch.no_grad():
        queries = torch.cat([model(rows.query[i:i + 1024])[0] for i in range(0, args.users, 1024)])
    precomputed = Precomputed(queries, model.item_embedding.weight.detach().clone())

    def floor():
        with torch.no_grad():
            for start in range(0, args.users, args.batch_size):
                scores = queries[start:start + args.batch_size] @ precomputed.item_table.T
                torch.topk(scores, 20, dim=1)

    timings = {"evaluate (SASRec encode + rank + metrics)": [], "evaluate, queries precomputed": [],
               "floor: matmul + topk": []}
    for _ in range(args.repeats):   # alternate, so machine noise hits all rows alike
        for name, run in (("evaluate (SASRec encode + rank + metrics)",
                           lambda: common.evaluate(model, rows, [5, 10, 20], args.batch_size)),
                          ("evaluate, queries precomputed",
                           lambda: common.evaluate(precomputed, rows, [5, 10, 20], args.batch_size)),
                          ("floor: matmul + topk", floor)):
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)
    floor_median = statistics.median(timings["floor: matmul + topk"])
    print(f"{args.users} rows x {args.items} items, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"{name:45s} {median * 1000:8.1f} ms   x{median / floor_median:5.2f} of the floor")
    return timings


if __name__ == "__main__":
    main()
