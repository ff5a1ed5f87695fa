"""Where the time of an MDCNS training step goes, beside an RNS step of each backbone. CPU; not a test.

One process, one thread (`--threads`): the data, split, models and optimizer built as `mdcns.py` and
`baselines.py --sampler rns` build them with `run_all.sh`'s table3 flags for Beauty (user split, BCE, ~1,024
examples per batch, N = 100 candidates, M = 1, gamma = tau = 1, SASRec self model, `--peer` Mamba4Rec), then
`--batches` training batches of each row (MDCNS, and RNS with each backbone of `--rns`), the rows alternated batch
by batch so that a change of load hits all of them. Each step is cut into pieces at detach points and each piece
timed on this thread's CPU clock (`time.thread_time`: the work, not the waiting for a core of a shared machine);
the per-batch means are scaled to the epoch's number of batches. The first batch of each row is a warm-up and is
checked: the pieces' loss equals the method's own batch loss (`mdcns.mdcns_loss`, `common.standard_loss` with
one uniform negative) on the same batch and random state, so the pieces are the step the method files run.

MDCNS pieces: batch (indexing the epoch's rows), self forward, peer forward, candidates (Eq. 2), scoring (Eq. 3,
both models, candidates and positive), re-ranking and top-M (Eqs. 4-8, no gradient), recommendation loss
(Eqs. 9-10) forward, KD (Eqs. 11-13) forward, the two losses' backward to the scores, scoring backward (the
gathers of item rows into both tables' gradients), peer backward, self backward, optimizer (zero_grad + Adam step).
RNS pieces: batch, forward, negative, scoring and loss forward, their backward, model backward, optimizer.

With `--before COMMIT` the rows are built a second time from the code of COMMIT (`git archive`; its own
`bench/profile_mdcns.py`, `common`, `mdcns`, `baselines`, imported in this process as separate modules) and
every batch runs both codes' rows, alternated (each row beside its before, the two in turn first): a
before/after comparison in one run, under the same load.

    python bench/profile_mdcns.py --data-dir DIR             # Beauty, 50 batches per row
    python bench/profile_mdcns.py --data-dir DIR --before main           # and main's code, rows alternated
    python bench/profile_mdcns.py --smoke                               # synthetic data, seconds
"""
import argparse
import contextlib
import importlib.util
import io
import os
import sys
import tempfile
import time
from functools import partial

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import baselines  # noqa: E402
import mdcns  # noqa: E402
from common import (LOSSES, adam, build_backbone, examples, prepare, score_items, standard_loss,  # noqa: E402
                    training_batches, training_positives, uniform_negatives)

DATA_DIR = os.path.join(ROOT, "data")
TABLE3 = ["--split", "user", "--loss", "bce", "--valid-metric", "ndcg@20", "--ks", "5,10,20",
          "--examples-per-batch", "1024"]                                  # run_all.sh's table3 flags
MDCNS_FLAGS = ["--gamma", "1.0", "--kd-temperature", "1.0", "--top-m", "1"]  # table3's Beauty MDCNS


def one_uniform_negative(positives, ex, generator):
    """RNS's negatives: one uniform non-interacted item per example (`standard_loss`'s negatives_fn)."""
    return uniform_negatives(positives, ex.users, 1, generator)


class Clock:
    """Thread CPU seconds per piece, summed over the timed batches."""

    def __init__(self):
        self.seconds, self.last = {}, time.thread_time()

    def start(self):
        self.last = time.thread_time()

    def lap(self, piece: str):
        now = time.thread_time()
        self.seconds[piece] = self.seconds.get(piece, 0.0) + now - self.last
        self.last = now


def detached(*tensors):
    """Leaves with the same values that collect the gradient meant for `tensors` (a cut between two pieces)."""
    return [t.detach().requires_grad_() for t in tensors]


def mdcns_step(args, pair, optimizer, positives, batch_of, generator, clock):
    """One MDCNS step (`mdcns.mdcns_loss` + backward + Adam), cut into timed pieces. Returns the loss."""
    loss_fn = LOSSES[args.loss]
    self_weights, peer_weights = mdcns.view_weights(args.alpha, args.beta, args.gamma, args.multi_source)
    clock.start()
    batch = batch_of()
    clock.lap("batch")
    ex = examples(pair.self_model, batch)
    clock.lap("self forward")
    candidates = uniform_negatives(positives, ex.users, args.n_candidates, generator)             # (P, N)
    clock.lap("candidates")
    q_self, t_self = detached(ex.queries, ex.item_table)
    scored = torch.cat([ex.positives.unsqueeze(1), candidates], 1)                                 # (P, 1+N)
    all_self = score_items(q_self, t_self, scored)                                                 # (P, 1+N)
    clock.lap("scoring")
    ex_peer = examples(pair.peer, batch)
    clock.lap("peer forward")
    q_peer, t_peer = detached(ex_peer.queries, ex_peer.item_table)
    all_peer = score_items(q_peer, t_peer, scored)                                                 # (P, 1+N)
    clock.lap("scoring")
    N = candidates.shape[1]
    picks = mdcns.mdcns_negatives(all_self[:, 1:], all_peer[:, 1:], args.top_m, generator, args.teacher,
                                  args.divergence, args.multi_source)                              # (P, V)
    clock.lap("re-ranking and top-M")
    scores = [all_self, all_peer]
    cut = detached(*scores)
    (pos_self, s_self), (pos_peer, s_peer) = (t.split([1, N], 1) for t in cut)
    rec = mdcns.weighted_rec_loss(loss_fn, pos_self, s_self.gather(1, picks), self_weights) + \
        mdcns.weighted_rec_loss(loss_fn, pos_peer, s_peer.gather(1, picks), peer_weights)
    clock.lap("rec loss forward")
    support_self, support_peer = (cut[0], cut[1]) if args.kd_positive else (s_self, s_peer)        # (P, N+1)
    teacher = mdcns.teacher_scores(support_self, support_peer, args.teacher)
    kd = args.distillation * args.kd_weight * (mdcns.consensus_distillation(support_self, teacher, args.kd_temperature,
                                                        args.kd_reduction) +
                           mdcns.consensus_distillation(support_peer, teacher, args.kd_temperature,
                                                        args.kd_reduction))
    clock.lap("KD forward")
    optimizer.zero_grad(set_to_none=True)
    rec.backward()
    clock.lap("rec loss backward")
    kd.backward()
    clock.lap("KD backward")
    torch.autograd.backward(scores, [t.grad for t in cut])
    clock.lap("scoring backward")
    torch.autograd.backward([ex_peer.queries], [q_peer.grad])
    ex_peer.item_table.grad += t_peer.grad
    clock.lap("peer backward")
    torch.autograd.backward([ex.queries], [q_self.grad])
    ex.item_table.grad += t_self.grad
    clock.lap("self backward")
    optimizer.step()
    clock.lap("optimizer")
    return (rec + kd).item()


def rns_step(args, model, optimizer, positives, batch_of, generator, clock):
    """One RNS step (`common.standard_loss` with one uniform negative) cut into timed pieces."""
    clock.start()
    batch = batch_of()
    clock.lap("batch")
    ex = examples(model, batch)
    clock.lap("forward")
    negatives = uniform_negatives(positives, ex.users, 1, generator)                               # (P, 1)
    clock.lap("negatives")
    queries, table = detached(ex.queries, ex.item_table)
    positive_scores = (queries * table[ex.positives]).sum(-1, keepdim=True)                        # (P, 1)
    loss = LOSSES[args.loss](positive_scores, score_items(queries, table, negatives))
    clock.lap("scoring and loss forward")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clock.lap("scoring and loss backward")
    torch.autograd.backward([ex.queries], [queries.grad])
    ex.item_table.grad += table.grad
    clock.lap("model backward")
    optimizer.step()
    clock.lap("optimizer")
    return loss.item()


def same_loss(step_loss, method_loss, generator):
    """Runs method_loss() then step_loss() from the same random state (global and `generator`); their values."""
    state = generator.get_state()
    with torch.random.fork_rng(devices=[]):
        want = method_loss().item()
    generator.set_state(state)
    return step_loss(), want


class Row:
    """A row of the table: its model(s), optimizer, batches and clock."""

    def __init__(self, name, args, split, model, step, method_loss):
        self.name, self.args, self.split, self.model = name, args, split, model
        self.optimizer = adam(model.parameters(), args.lr)                            # fit's optimizer
        self.positives = training_positives(split, "cpu", args.exclude_held_out)
        self.generator = torch.Generator().manual_seed(args.seed + 1)
        self.batches = training_batches(split, args.batch_size, torch.Generator().manual_seed(args.seed), "cpu")
        self.n_batches = -(-len(split.train_sequences) // args.batch_size)
        self.step, self.method_loss, self.clock, self.seen = step, method_loss, Clock(), []

    def run(self, timed: bool):
        batch = next(self.batches)
        self.seen.append(len(batch[0]))
        clock = self.clock if timed else Clock()
        run = lambda: self.step(self.args, self.model, self.optimizer, self.positives, lambda: batch,  # noqa: E731
                                self.generator, clock)
        if timed:
            return run()
        got, want = same_loss(run, lambda: self.method_loss(self.model, batch, self.generator), self.generator)
        if abs(got - want) > 1e-5 * max(1.0, abs(want)):
            raise SystemExit(f"error: {self.name}: the pieces' loss {got} is not the method's {want}")
        return got


def build_rows(data_flags, peer, rns_backbones, out_dir):
    """The rows, each built as its method file builds it; nothing is written but into out_dir (the method files'
    checks of --out-dir)."""
    rows = []
    argv = [*data_flags, *TABLE3, "--backbone", "sasrec", "--peer", peer, *MDCNS_FLAGS, "--quiet",
            "--out-dir", os.path.join(out_dir, "mdcns")]
    args = mdcns.build_parser().parse_args(argv)
    mdcns.check_args(args)
    with contextlib.redirect_stdout(io.StringIO()):
        args, split = prepare(args, "mdcns")
    torch.manual_seed(args.seed)
    pair = mdcns.SelfAndPeer(build_backbone("sasrec", split, args), build_backbone(args.peer, split, args)).train()
    positives = training_positives(split, "cpu", args.exclude_held_out)
    rows.append(Row(f"MDCNS, SASRec + {peer} peer", args, split, pair, mdcns_step,
                    mdcns.training_loss(args, positives)))
    for backbone in rns_backbones:
        args = baselines.build_parser().parse_args([*data_flags, *TABLE3, "--sampler", "rns", "--backbone", backbone,
                                                    "--quiet", "--out-dir", os.path.join(out_dir, backbone)])
        with contextlib.redirect_stdout(io.StringIO()):
            args, split = prepare(args, "rns")
        torch.manual_seed(args.seed)
        model = build_backbone(backbone, split, args).train()
        positives = training_positives(split, "cpu", args.exclude_held_out)
        rows.append(Row(f"RNS, {backbone}", args, split, model, rns_step,
                        standard_loss(partial(one_uniform_negative, positives), args.loss)))
    return rows


METHOD_MODULES = ("common", "baselines", "mdcns", "icpns")


def rows_of_code(folder, data_flags, peer, rns_backbones, out_dir):
    """`build_rows` of the checkout in `folder` (its bench/profile_mdcns.py, which imports that checkout's method
    modules): this process's own `common`, `baselines`, ... are set aside while it imports and put back after, so
    both codes live side by side; the rows' names end in " (before)"."""
    ours = {name: sys.modules.pop(name) for name in METHOD_MODULES if name in sys.modules}
    path = list(sys.path)
    try:
        spec = importlib.util.spec_from_file_location("profile_mdcns_before",
                                                      os.path.join(folder, "bench", "profile_mdcns.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        rows = module.build_rows(data_flags, peer, rns_backbones, out_dir)
    finally:
        sys.path[:] = path
        for name in METHOD_MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(ours)
    for row in rows:
        row.name += " (before)"
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DATA_DIR, help="where beauty/ is (default data/ in the repository)")
    parser.add_argument("--peer", default="mamba4rec", help="MDCNS's peer (default mamba4rec, the paper's)")
    parser.add_argument("--rns", default="sasrec,gru4rec,mamba4rec", help="backbones of the RNS rows")
    parser.add_argument("--batches", type=int, default=50, help="timed batches per row (default 50)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--smoke", action="store_true", help="synthetic data, 3 batches: checks the script runs")
    parser.add_argument("--before", metavar="COMMIT", help="also every row on the code of COMMIT, alternated")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data_flags = ["--dataset", "synthetic", "--max-len", "50"] if args.smoke else \
        ["--dataset", "beauty", "--data-dir", args.data_dir]
    batches = 3 if args.smoke else args.batches
    rns = [b for b in args.rns.split(",") if b]
    with tempfile.TemporaryDirectory() as out_dir:
        rows = build_rows(data_flags, args.peer, rns, out_dir)
        if args.before:
            import bench_mdcns                                              # its git archive of a commit
            before = rows_of_code(bench_mdcns.code_at(args.before, os.path.join(out_dir, "before")), data_flags,
                                  args.peer, rns, os.path.join(out_dir, "runs"))
            rows = [row for pair in zip(rows, before) for row in pair]      # each row beside its before
    if batches + 1 > min(row.n_batches for row in rows):
        raise SystemExit(f"error: --batches {batches} needs more batches than an epoch has "
                         f"({min(row.n_batches for row in rows)}); lower it")
    for row in rows:
        row.run(timed=False)                                              # warm-up, and the loss check
    # with --before, each row and its before swap places every other batch: the row run right after another method's
    # finds the caches full of that one's data, so a fixed order would favour one code
    swapped = [rows[i ^ 1] for i in range(len(rows))] if args.before else rows
    for i in range(batches):
        for row in rows if i % 2 == 0 else swapped:
            row.run(timed=True)
    print(f"{batches} timed batches per row, {args.threads} thread(s), thread CPU time; per batch (ms) and scaled to "
          f"an epoch (s); load average at the end {os.getloadavg()[0]:.2f}")
    for row in rows:
        total = sum(row.clock.seconds.values())
        scale = row.n_batches / batches
        print(f"\n{row.name}: {row.n_batches} batches per epoch of ~{sum(row.seen) / len(row.seen):.0f} rows, "
              f"{total / batches * 1e3:.1f} ms per batch, {total * scale:.2f} s per epoch")
        for piece, seconds in row.clock.seconds.items():
            print(f"  {piece:28s} {seconds / batches * 1e3:8.2f} ms {seconds * scale:8.2f} s {seconds / total:6.1%}")
    epochs = {row.name: sum(row.clock.seconds.values()) * row.n_batches / batches for row in rows}
    for before in (False, True) if args.before else (False,):
        mdcns_row, *rns_rows = [name for name in epochs if name.endswith(" (before)") == before]
        ratios = [f"MDCNS / {rns_rows[0]}: {epochs[mdcns_row] / epochs[rns_rows[0]]:.2f}x"] if rns_rows else []
        if len(rns_rows) > 1:
            ratios.append(f"{rns_rows[-1]} / {rns_rows[0]}: {epochs[rns_rows[-1]] / epochs[rns_rows[0]]:.2f}x")
        print("\n" + "; ".join(ratios))
    return rows


if __name__ == "__main__":
    main()
