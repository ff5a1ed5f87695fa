"""MDCNS: Multi-source Divergence-Consensus Negative Sampling (Teacher-Peer-Self).

"Divergence Meets Consensus: A Multi-Source Negative Sampling Framework for Sequential Recommendation",
Yuanzi Li, Lingjie Wang, Jingyu Zhao, Zihang Tian, Yuhan Wang, Lei Wang, Xu Chen. SIGIR 2026, arXiv 2605.19651.
Official code: github.com/Lyz103/SIGIR26-MDCNS (method at bc6870e, `MDCNS_Code/trainers.py`, `MDHNSTrainer`).

The idea. Self-guided hard-negative samplers (DNS and its top-M variant) score a uniform candidate pool with the
model being trained and keep its top items, so the model's own mistakes decide what it learns next. MDCNS trains
a second sequential recommender, the peer, jointly from scratch, and scores the same N candidates with both
models and with their aggregate, the teacher. Each view re-ranks the candidates by its score plus the two models'
disagreement |s_self - s_peer| and contributes one negative picked from its top-M, so every model learns from
three differently chosen negatives. A consensus-distillation term pulls each model's softmax over the candidates
towards the (detached) teacher's. Only the self model is evaluated; the peer's metrics are reported beside it.

Commands:
    python mdcns.py                                                  # synthetic data, offline
    python mdcns.py --dataset ml-1m --backbone sasrec
    python mdcns.py --dataset beauty --backbone sasrec --peer mamba4rec \
        --gamma 1.0 --kd-temperature 1.0                             # Table 3 Beauty row (published settings)
    python mdcns.py ... --no-distillation                            # Table 6 "w/o CD"
    python mdcns.py ... --no-distillation --no-divergence            # Table 6 "w/o CD-DR"
    python mdcns.py ... --no-distillation --no-divergence --no-multi-source   # "w/o CD-DR-MS" = DNS(M,N), no peer
    python mdcns.py ... --augmented-prefixes                         # the code's prefix rows, 1024 per batch
Published settings (SASRec self, Mamba4Rec peer, BCE, N=100, M=1, alpha=beta=1, one seed 42 run each; the official
logs MDCNS_Code/TEST_KD/<Dataset>-SASRec-Mamba4Rec_a1.0_b1.0_l<gamma>_dwsb1.0_t0.0_k<M>_N<N>_kdt<tau>_kdg0.01.log,
KuaiRand's in MDCNS_Code/KuaiRand1/): Beauty gamma 1.0 tau 1.0; Toys 3.0 / 0.7; Sports 3.0 / 1.0; Health 3.5 / 0.7;
LastFM 0.3 / 5.0; KuaiRand 0.3 / 2.0 with M=10, N=70.

Use MDCNS in your own project: copy the section between `# ---- core` and `# ---- end of core ----` below; it
needs only torch. `mdcns_loss`'s docstring states what your models, batches, candidate sampler, scorer and loss
must be (checked at the first batch); a training step is then
    loss_fn = mdcns_loss(draw_candidates, score, bce)        # your sampler, your scorer, your loss; paper defaults
    pair = SelfAndPeer(my_sasrec, my_peer)                    # model(seqs, every_position=True) -> (queries, items)
    optimizer = torch.optim.Adam(pair.parameters(), lr=1e-3)
    for batch in batches:                                     # (sequences, targets, users), ids 1..I, 0 = padding
        optimizer.zero_grad(); loss_fn(pair, batch, generator).backward(); optimizer.step()

Protocol (the file's defaults, the paper's): `--split user`: users shuffled by the seed, 70% train (every prefix
of their sequences is a training example), 20% validation, 10% test; a validation/test user's last item is
predicted from the rest of the sequence, full ranking over all items, the input items masked (-inf), pessimistic
ties (common.py). Recall and NDCG at 5/10/20; early stopping on validation NDCG@20, stopping at the 30th validation
in a row without improvement as the code (`--patience 29`; at most 300 epochs); test is evaluated once, at the
best validation epoch. `--split loo` gives the standard leave-one-out.
The code's LastFM files differ (80/10/10 of the users in file order, every prefix evaluated): `--split user-prefixes`.

Deviations from the paper (P) and the official code (C); the default is what produced the published numbers:
 1. Teacher score, Eq. (4): P sums the two models' scores, C averages them. Default mean; `--teacher sum`.
 2. KD support, Eqs. (11)-(12): P sums over the N candidates, C also includes the positive (N+1 entries).
    Default with the positive; `--no-kd-positive`.
 3. KD pooling and weight, Eq. (13): P says mu = 1; C sums the KL over its 1024-example batch with weight 0.01
    while the recommendation losses are batch means, i.e. 10.24 x a per-example mean. Our batches hold a varying
    number of examples (every position of a sequence), so the default keeps C's balance, not its literal form:
    KD as a per-example mean with mu = 0.01 x 1024 = 10.24. `--kd-reduction sum --kd-weight 0.01` is C literally
    (the balance then moves with the batch size), `--kd-weight 1` is P's text.
 4. Training examples: C trains on explicitly augmented prefixes (one row per prefix, the last 50 items, 1024
    rows per batch). Default: every position of every training sequence in one pass (common.py, as
    baselines.py), ~1024 examples per batch; the prefixes of a sequence then share a dropout mask and a batch,
    and a sequence longer than 51 items is cut into windows. This is not the same computation as prefix rows for
    the default SASRec (and LinRec, FMLP4Rec): those blocks count positions back from a row's last item, so a
    prefix inside a longer row sees its items at shifted positions. For GRU4Rec, Mamba4Rec and Kang's SASRec it
    equals prefix rows up to the dropout masks (tests/test_baselines.py checks them in eval mode).
    `--augmented-prefixes` is C step for step, at about (examples / sequences) times the forward cost (~8x on
    Beauty) and L int64 per example of memory.
 5. Candidates, Eq. (2): C draws N distinct items (random.sample) outside the input sequence and the target; we
    use common's exact uniform draw with replacement (duplicates are rare: N=100 of ~12k items) outside the
    user's whole training history, a superset of the prefix and its target.
 6. Backbones are common.py's. The default SASRec (`--sasrec-block s3rec`) is C's S3-Rec-style block (post-LN,
    GELU, N(0, 0.02) init) with positions counted back from the last item, as C's left-padded rows number them;
    `--sasrec-block kang` is Kang's original block (xavier init, positions from the first item). Rows are
    right-padded instead of C's left padding, so GRU4Rec and Mamba4Rec never step over padding before the first
    item (C's do). Both models share --dim/--layers/--heads/--dropout, as in C (num_hidden_layers 2 for every
    model).
 7. P reports a mean of 3 runs; the logs behind every number are single seed-42 runs. Default seed 42.
 8. Ablations (Table 6): with CD, DR and MS all off no peer is built or trained (it could not influence the
    self model); the run is DNS(M, N) and draws exactly baselines.py's negatives (its loss unweighted: alpha
    only has to be positive there).
"""
from __future__ import annotations

import argparse
from functools import partial

import torch

from common import (LOSSES, SEQUENTIAL_BACKBONES, PositiveSets, RecError, base_parser, build_backbone, evaluate,
                    evaluate_saved, finish, fit, parser_action, prepare, run_cli, score_items, synthetic_defaults,
                    training_positives, uniform_negatives, world_size)

# ---- core: copy this section into your project; it needs only torch ----
# MDCNS as functions of tensors: nothing here reads argv, globals, files or common.py. Errors are ValueErrors.
CODE_BATCH = 1024      # examples per batch in the official code (MDCNS_Code/main.py:67, --batch_size)
CODE_KD_WEIGHT = 0.01  # kd_gamma of every released run (MDCNS_Code/run_finetune.bash:26)


# The method as tensor functions: Eqs. (4)-(13)
def teacher_scores(s_self, s_peer, aggregation: str = "mean"):
    """Eq. (4): s_teacher = s_self + s_peer (paper, "sum") or 0.5 (s_self + s_peer) (code, "mean")."""
    if aggregation not in ("mean", "sum"):
        raise ValueError(f"unknown teacher aggregation {aggregation!r}; choose mean or sum")
    total = s_self + s_peer
    return 0.5 * total if aggregation == "mean" else total


def divergence_rescore(s_self, s_peer, aggregation: str = "mean", divergence: bool = True):
    """Eqs. (4)-(6): the candidates' scores in the three views, each raised by the self/peer disagreement.
    s_self, s_peer (P, N) -> (3, P, N), views in the order self, peer, teacher. divergence=False returns the raw
    view scores (Table 6 "w/o DR")."""
    views = torch.stack([s_self, s_peer, teacher_scores(s_self, s_peer, aggregation)])   # (3, P, N)
    if not divergence:
        return views
    d = (s_self - s_peer).abs()                                     # Eq. (5), (P, N)
    return views + d                                                # Eq. (6), (3, P, N), d broadcast per view


def pick_from_top_m(scores, m: int, generator: torch.Generator):
    """Eqs. (7)-(8): H = Top-M of each row of `scores`, v- ~ Uniform(H). scores (..., N) -> (...,) positions in
    0..N-1. M is capped at N like the code's topk(min(K, N)). One torch.randint(0, M) per row, drawn after the
    top-M, so a single view replays DNS(M, N) draw for draw."""
    top = scores.topk(min(m, scores.shape[-1]), dim=-1).indices                               # (..., M)
    choice = torch.randint(0, top.shape[-1], top.shape[:-1], generator=generator, device=scores.device)  # (...,)
    return top.gather(-1, choice.unsqueeze(-1)).squeeze(-1)                                   # (...,)


def consensus_distillation(student, teacher, temperature: float, reduction: str = "mean"):
    """Eqs. (11)-(12): tau^2 KL(p_teacher || p_student), p = softmax(s / tau) over each row's support; the teacher
    is detached (no gradient flows into it). student, teacher (P, K) -> scalar, the mean over the P examples
    ("mean") or their sum (the code's F.kl_div(..., reduction='sum'))."""
    log_p_teacher = torch.nn.functional.log_softmax(teacher.detach() / temperature, dim=-1)   # (P, K)
    log_p_student = torch.nn.functional.log_softmax(student / temperature, dim=-1)            # (P, K)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)                      # (P,)
    kl = temperature ** 2 * kl
    return kl.sum() if reduction == "sum" else kl.mean()


def weighted_rec_loss(loss_fn, positive_scores, negative_scores, weights):
    """Eqs. (9)-(10): sum_v w_v L(v+, v-_v) over the views' negatives, each a BPR or BCE batch mean (for BCE the
    positive term repeats per view, as in the code). positive_scores (P, 1), negative_scores (P, V)."""
    return sum(w * loss_fn(positive_scores, negative_scores[:, v:v + 1]) for v, w in enumerate(weights) if w)


def view_weights(alpha: float, beta: float, gamma: float, multi_source: bool = True):
    """Eq. (10) weights of the views (self, peer, teacher) in the self model's and in the peer's loss. The peer
    mirrors the self model (code): alpha on its own view, beta on the other model's. Without multi-source views
    each model learns from its own view only (and the teacher view is not drawn)."""
    if multi_source:
        return (alpha, beta, gamma), (beta, alpha, gamma)
    return (alpha, 0.0), (0.0, alpha)


def default_kd_weight(kd_reduction: str = "mean") -> float:
    """mu of Eq. (13) that keeps the code's balance: its 0.01 on a KL summed over 1024-example batches is
    0.01 x 1024 = 10.24 on a per-example mean ("mean"), and 0.01 on a sum ("sum", the code literally)."""
    return CODE_KD_WEIGHT * (CODE_BATCH if kd_reduction == "mean" else 1)


class SelfAndPeer(torch.nn.Module):
    """M_self and M_peer in one module, so one optimizer (and common.py's `fit`) moves both to the device,
    switches both to train mode and checkpoints/restores both together. forward is the self model's: only M_self
    recommends. peer is None for the DNS(M, N) reduction. `sequential` is for common.py's `fit`."""

    sequential = True

    def __init__(self, self_model: torch.nn.Module, peer: torch.nn.Module | None):
        super().__init__()
        self.self_model, self.peer = self_model, peer

    def forward(self, sequences, every_position: bool = False):
        return self.self_model(sequences, every_position)


def mdcns_negatives(s_self, s_peer, top_m: int, generator: torch.Generator, teacher: str = "mean",
                    divergence: bool = True, multi_source: bool = True):
    """Eqs. (4)-(8): positions (P, V) in the candidate pool of the negatives of the views (self, peer[, teacher]),
    from the candidates' scores s_self, s_peer (P, N). With s_peer None (CD, DR and MS all off): DNS(M, N), one
    view, (P, 1). Under no_grad: the code samples on the training-mode (dropout-active) logits, detached."""
    with torch.no_grad():
        if s_peer is None:
            return pick_from_top_m(s_self, top_m, generator).unsqueeze(1)                       # (P, 1)
        views = divergence_rescore(s_self, s_peer, teacher, divergence)                          # (3, P, N)
        if not multi_source:
            views = views[:2]                                                                    # (2, P, N)
        return pick_from_top_m(views, top_m, generator).T                                        # (P, V)


# The training loss (Algorithm 1, one batch)
def position_examples(model, batch, check: bool = False):
    """The examples of a batch, one per position with a target: model(sequences, every_position=True) flattened
    to queries (P, D), the item table (I+1, D), each example's user (P,) and target (P,). check: test the batch
    and the model's output against mdcns_loss's contract first (one ValueError line)."""
    if check and len(batch) != 3:
        raise ValueError(f"a batch is (sequences (B, L), targets (B, L), users (B,)), not {len(batch)} tensors")
    sequences, targets, users = batch
    if check:
        check_batch(sequences, targets, users)
    output = model(sequences, every_position=True)                                    # (B, L, D), (I+1, D)
    if check:
        check_output(output, sequences, targets)
    queries, item_table = output
    keep = targets > 0                                                                 # (B, L), 0 = no example
    position_users = users.unsqueeze(1).expand_as(targets)[keep]                      # (P,)
    return queries[keep], item_table, position_users, targets[keep]


def mdcns_loss(draw_candidates, score, loss, *, n_candidates: int = 100, top_m: int = 1, alpha: float = 1.0,
               beta: float = 1.0, gamma: float = 1.0, teacher: str = "mean", kd_temperature: float = 1.0,
               kd_weight: float | None = None, kd_reduction: str = "mean", kd_positive: bool = True,
               distillation: bool = True, divergence: bool = True, multi_source: bool = True):
    """Algorithm 1 on one batch, both models at once, as batch_loss(pair, batch, generator) -> scalar:
    L = L_rec(self) + L_rec(peer) + mu (L_kd(self) + L_kd(peer)), the code's single backward.

    The contract (checked at the first batch, one ValueError line):
      batch      (sequences (B, L), targets (B, L), users (B,)), integer, on the models' device. Item ids 1..I,
                 0 = padding, rows right-padded; targets[b, t] is the item after sequences[b, t] (0: no example).
      pair       SelfAndPeer(self_model, peer); each model(sequences, every_position=True) -> (queries (B, L, D),
                 item_table (I+1, D)), row i the embedding of item i. peer None: DNS(M, N).
      draw_candidates(users (P,), n, generator) -> (P, n) items 1..I: Eq. (2)'s pool, outside each user's items.
      score(queries (P, D), item_table (I+1, D), items (P, n)) -> (P, n): Eq. (3), the dot product.
      loss(positive_scores (P, 1), negative_scores (P, 1)) -> scalar: BCE in the published runs, or BPR.
    Keywords: the paper's symbols; every default is the published runs' (Beauty: gamma 1, tau 1). kd_weight None
    is `default_kd_weight(kd_reduction)`."""
    if n_candidates < 1 or not 1 <= top_m <= n_candidates:
        raise ValueError(f"need 1 <= top_m <= n_candidates, got top_m {top_m}, n_candidates {n_candidates}")
    if kd_temperature <= 0 or min(alpha, beta, gamma) < 0 or (kd_weight is not None and kd_weight < 0):
        raise ValueError("kd_temperature must be positive; alpha, beta, gamma and kd_weight at least 0")
    if teacher not in ("mean", "sum") or kd_reduction not in ("mean", "sum"):
        raise ValueError(f"teacher and kd_reduction are mean or sum, got {teacher!r}, {kd_reduction!r}")
    self_weights, peer_weights = view_weights(alpha, beta, gamma, multi_source)
    if not any(w > 0 for w in self_weights):
        raise ValueError(f"no view has a positive weight (alpha {alpha}, beta {beta}, gamma {gamma}, multi_source "
                         f"{multi_source}): nothing would train")
    kd_weight = default_kd_weight(kd_reduction) if kd_weight is None else kd_weight
    unchecked = True

    def batch_loss(pair, batch, generator):
        nonlocal unchecked
        queries, item_table, users, positives = position_examples(pair.self_model, batch, unchecked)  # (P, D)..
        # Eq. (2): N candidates per example, uniform over the items the user has not interacted with in training;
        # one pool shared by both models and all views.
        candidates = draw_candidates(users, n_candidates, generator)                              # (P, N)
        if unchecked:
            check_items(candidates, item_table.shape[0] - 1, "draw_candidates' pool")
        # Eq. (3): dot-product scores; each model scores with its own item table the positive and the pool, in one
        # call (one backward into the item table instead of two)
        scored = torch.cat([positives.unsqueeze(1), candidates], 1)                               # (P, 1+N)
        support_self = score(queries, item_table, scored)                                         # (P, 1+N)
        pos_self, s_self = support_self.split([1, n_candidates], 1)                               # (P, 1), (P, N)
        if pair.peer is None:                                        # Table 6 "w/o CD-DR-MS": DNS(M, N)
            unchecked = unchecked and len(positives) == 0
            picks = mdcns_negatives(s_self, None, top_m, generator)                               # (P, 1)
            return loss(pos_self, s_self.gather(1, picks))                                       # (P, 1) gather
        queries_peer, item_table_peer, _, _ = position_examples(pair.peer, batch, unchecked)  # the same examples
        unchecked = unchecked and len(positives) == 0
        support_peer = score(queries_peer, item_table_peer, scored)                               # (P, 1+N)
        pos_peer, s_peer = support_peer.split([1, n_candidates], 1)                               # (P, 1), (P, N)
        # Eqs. (4)-(8): one negative per view
        picks = mdcns_negatives(s_self, s_peer, top_m, generator, teacher, divergence, multi_source)  # (P, V)
        # Eqs. (9)-(10), each model scoring the shared negatives with its own logits
        total = weighted_rec_loss(loss, pos_self, s_self.gather(1, picks), self_weights) + \
            weighted_rec_loss(loss, pos_peer, s_peer.gather(1, picks), peer_weights)              # (P, V) gathers
        if distillation:
            # Eqs. (11)-(13) on raw scores. Note: the positive joins the support by default (code), not in the paper
            support_self = support_self if kd_positive else s_self                                 # (P, N+1)
            support_peer = support_peer if kd_positive else s_peer                                 # (P, N+1)
            s_teacher = teacher_scores(support_self, support_peer, teacher)                        # (P, N+1)
            total = total + kd_weight * (
                consensus_distillation(support_self, s_teacher, kd_temperature, kd_reduction) +
                consensus_distillation(support_peer, s_teacher, kd_temperature, kd_reduction))
        return total

    return batch_loss


# The contract of a batch and a model, checked once (mdcns_loss)
def check_batch(sequences, targets, users):
    """mdcns_loss's contract for a batch, as one ValueError line: integer (B, L), (B, L), (B,); item ids 1..I with
    0 only as right padding (items first, then zeros), which is also how 0-based ids show; no target at padding."""
    B = len(sequences)
    if sequences.dim() != 2 or targets.shape != sequences.shape or users.shape != (B,):
        raise ValueError(f"batch shapes {tuple(sequences.shape)}, {tuple(targets.shape)}, {tuple(users.shape)}; "
                         "expected sequences (B, L), targets (B, L), users (B,)")
    if any(t.dtype.is_floating_point or t.dtype == torch.bool for t in (sequences, targets, users)):
        raise ValueError("sequences, targets and users must be integer tensors (item and user ids)")
    if bool(((sequences < 0) | (targets < 0)).any()):
        raise ValueError("a negative item id in the batch: item ids run 1..I and 0 is padding")
    gap = (sequences[:, :-1] == 0) & (sequences[:, 1:] > 0)                            # (B, L-1)
    if bool(gap.any()):
        raise ValueError(f"item 0 comes before item {int(sequences[:, 1:][gap][0])} in a sequence: item ids run "
                         "1..I and 0 is only right padding (shift 0-based ids by 1; pad on the right)")
    if bool(((targets > 0) & (sequences == 0)).any()):
        raise ValueError("a target at a padding position: targets[b, t] is the item after sequences[b, t]")


def check_output(output, sequences, targets):
    """mdcns_loss's contract for a model: model(sequences, every_position=True) -> (queries (B, L, D),
    item_table (I+1, D)), every item id of the batch a row of the table."""
    shapes = [tuple(t.shape) for t in output] if isinstance(output, (tuple, list)) else type(output).__name__
    if not (isinstance(output, (tuple, list)) and len(output) == 2 and output[0].dim() == 3 and
            output[0].shape[:2] == sequences.shape and output[1].dim() == 2 and
            output[0].shape[2] == output[1].shape[1]):
        raise ValueError(f"model(sequences {tuple(sequences.shape)}, every_position=True) returned {shapes}; "
                         "expected (queries (B, L, D), item_table (I+1, D))")
    check_items(sequences, output[1].shape[0] - 1, "sequences", low=0)
    check_items(targets, output[1].shape[0] - 1, "targets", low=0)


def check_items(items, n_items: int, what: str, low: int = 1):
    """Every id of `items` in low..n_items (n_items = the item table's rows - 1), or one ValueError line."""
    bad = (items < low) | (items > n_items)
    if bool(bad.any()):
        raise ValueError(f"{what} holds item id {int(items[bad][0])}, outside {low}..{n_items}: item ids run "
                         "1..I with 0 as padding, and the item table has I+1 rows")

# ---- end of core ----


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("MDCNS (SIGIR 2026, arXiv 2605.19651): self + peer sequential recommenders trained "
                         "jointly with multi-view, divergence-re-ranked hard negatives and consensus distillation.",
                         __file__)
    parser.epilog = ("Published settings (SASRec self, Mamba4Rec peer, BCE, N=100, M=1, alpha=beta=1, seed 42): "
                     "Beauty --gamma 1.0 --kd-temperature 1.0; Toys 3.0 / 0.7; Sports 3.0 / 1.0; Health 3.5 / 0.7; "
                     "LastFM 0.3 / 5.0; KuaiRand 0.3 / 2.0 with --top-m 10 --n-candidates 70.")
    # The official code's settings (Lyz103/SIGIR26-MDCNS @bc6870e, MDCNS_Code/main.py:34-71, run_finetune.bash:36)
    # and its protocol: validation NDCG@20 (main.py:159-161); it stops at the 30th validation in a row without
    # improvement (main.py:150 EarlyStopping(patience=30), utils.py:152-156 counter >= patience), i.e.
    # --patience 29 here, where P stops at the (P+1)-th (RecBole's rule).
    parser.set_defaults(backbone="sasrec", split="user", loss="bce", dim=64, layers=2, heads=2, dropout=0.5,
                        max_len=50, epochs=300, patience=29, valid_metric="ndcg@20", ks="5,10,20", seed=42,
                        examples_per_batch=CODE_BATCH)
    synthetic_defaults(parser, epochs=4)   # two models, one of them the plain-PyTorch Mamba scan: ~2 s an epoch
    parser_action(parser, "batch_size").help = (
        "sequences per step (prefix rows with --augmented-prefixes); default: set from --examples-per-batch")
    g = parser.add_argument_group("MDCNS")
    g.add_argument("--peer", default=None, choices=SEQUENTIAL_BACKBONES,
                   help="M_peer, trained jointly from scratch with its own loss (default: mamba4rec as in the "
                        "paper; sasrec when --backbone is mamba4rec)")
    g.add_argument("--n-candidates", type=int, default=100,
                   help="N, the size of the candidate pool C_N in Eq. (2); the paper uses 100 (KuaiRand 70)")
    g.add_argument("--top-m", type=int, default=1,
                   help="M in Eq. (7): each view's negative is uniform over its top-M re-scored candidates; the "
                        "paper tunes {1..5}, the published runs use 1 (KuaiRand 10)")
    g.add_argument("--alpha", type=float, default=1.0,
                   help="alpha in Eq. (10): weight of a model's own-view negative; 1 in every published run")
    g.add_argument("--beta", type=float, default=1.0,
                   help="beta in Eq. (10): weight of the other model's view negative; 1 in every published run")
    g.add_argument("--gamma", type=float, default=1.0,
                   help="gamma in Eq. (10) (code: d_lambda): weight of the teacher-view negative; the paper grids "
                        "[0.5, 3.0]; published Beauty 1.0, Toys 3.0, Sports 3.0, Health 3.5, LastFM 0.3, "
                        "KuaiRand 0.3")
    g.add_argument("--teacher", default="mean", choices=("mean", "sum"),
                   help="s_teacher in Eq. (4): the code's mean 0.5 (s_self + s_peer) (published numbers) or the "
                        "paper's sum")
    g.add_argument("--kd-temperature", type=float, default=1.0,
                   help="tau in Eq. (11); the paper searches {0.7, 1, 10}; published Beauty 1.0, Toys 0.7, "
                        "Sports 1.0, Health 0.7, LastFM 5.0, KuaiRand 2.0")
    g.add_argument("--kd-weight", type=float, default=None,
                   help="mu in Eq. (13) (code: kd_gamma). Default 10.24 = 0.01 x 1024 with --kd-reduction mean "
                        "(the code's balance), 0.01 with --kd-reduction sum (the code literally); the paper says 1")
    g.add_argument("--kd-reduction", default="mean", choices=("mean", "sum"),
                   help="how Eq. (12) is pooled over a batch's examples: mean, or sum (the code's "
                        "reduction='sum', whose weight relative to the mean rec loss grows with the batch)")
    g.add_argument("--kd-positive", default=True, action=argparse.BooleanOptionalAction,
                   help="include v+ in the support of Eqs. (11)-(12) (code); --no-kd-positive: C_N only (paper)")
    g.add_argument("--distillation", default=True, action=argparse.BooleanOptionalAction,
                   help="consensus distillation CD, Eqs. (11)-(13); --no-distillation is Table 6 'w/o CD'")
    g.add_argument("--divergence", default=True, action=argparse.BooleanOptionalAction,
                   help="divergence re-ranking DR, Eqs. (5)-(6); --no-divergence ranks each view by its raw "
                        "scores (Table 6 'w/o CD-DR' with --no-distillation)")
    g.add_argument("--multi-source", default=True, action=argparse.BooleanOptionalAction,
                   help="multi-source views MS, Eq. (10); --no-multi-source: each model learns from its own view "
                        "only. CD, DR and MS all off = DNS(M, N), no peer (Table 6 'w/o CD-DR-MS')")
    return parser


def check_args(args):
    if args.backbone not in SEQUENTIAL_BACKBONES:
        raise RecError(f"MDCNS needs a sequential backbone ({', '.join(SEQUENTIAL_BACKBONES)}), not "
                       f"{args.backbone}")
    for name in ("n_candidates", "top_m"):
        if getattr(args, name) < 1:
            raise RecError(f"--{name.replace('_', '-')} must be at least 1")
    if args.top_m > args.n_candidates:
        raise RecError(f"--top-m {args.top_m} exceeds --n-candidates {args.n_candidates}")
    if args.kd_temperature <= 0:
        raise RecError("--kd-temperature must be positive")
    for name in ("alpha", "beta", "gamma", "kd_weight"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise RecError(f"--{name.replace('_', '-')} must be at least 0, got {getattr(args, name)}")
    if not any(w > 0 for w in view_weights(args.alpha, args.beta, args.gamma, args.multi_source)[0]):
        raise RecError(f"no view has a positive weight (--alpha {args.alpha}" +
                       (f" --beta {args.beta} --gamma {args.gamma}): nothing would train; raise one of them"
                        if args.multi_source else ", --no-multi-source): nothing would train; raise --alpha"))
    if args.peer is None:
        args.peer = "sasrec" if args.backbone == "mamba4rec" else "mamba4rec"
    if args.kd_weight is None:
        args.kd_weight = default_kd_weight(args.kd_reduction)
    if args.kd_reduction == "sum" and world_size() > 1:   # common.train_step weighs means over examples
        raise RecError("--kd-reduction sum sums the KL over a whole batch, which torchrun splits between processes; "
                       "use --kd-reduction mean (the default: the code's balance) or one process")
    if args.peer == "sasrec" and args.dim is not None and args.heads is not None and args.dim % args.heads:
        raise RecError(f"--heads {args.heads} must divide --dim {args.dim}: the sasrec peer shares them")


def training_loss(args, positives: PositiveSets):
    """`mdcns_loss` with the flags' settings and common.py's plumbing: candidates uniform over each user's
    non-positives (`uniform_negatives`, Deviation 5), dot-product scores (`score_items`), --loss."""
    return mdcns_loss(partial(uniform_negatives, positives), score_items, LOSSES[args.loss],
                      n_candidates=args.n_candidates, top_m=args.top_m, alpha=args.alpha, beta=args.beta,
                      gamma=args.gamma, teacher=args.teacher, kd_temperature=args.kd_temperature,
                      kd_weight=args.kd_weight, kd_reduction=args.kd_reduction, kd_positive=args.kd_positive,
                      distillation=args.distillation, divergence=args.divergence, multi_source=args.multi_source)


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_args(args)
    args, split = prepare(args, "mdcns")
    self_model = build_backbone(args.backbone, split, args)
    uses_peer = args.distillation or args.divergence or args.multi_source
    peer = build_backbone(args.peer, split, args) if uses_peer else None
    if peer is None:
        args.peer = None
        print("CD, DR and MS are all off: MDCNS is DNS(M, N) here; no peer is built or trained")
    else:
        print(f"self {args.backbone}, peer {args.peer}; N={args.n_candidates} M={args.top_m} alpha={args.alpha} "
              f"beta={args.beta} gamma={args.gamma} teacher={args.teacher} tau={args.kd_temperature} "
              f"mu={args.kd_weight if args.distillation else 0} ({args.kd_reduction})")
    pair = SelfAndPeer(self_model, peer)
    positives = training_positives(split, args.device, args.exclude_held_out)
    # Note: the code steps two Adams, one per model. Adam is per-parameter, so fit's single Adam over both
    # parameter sets (same lr, betas, no weight decay) takes exactly the same steps.
    record = evaluate_saved(args, split, pair) if args.eval_only else \
        fit(args, split, pair, training_loss(args, positives))
    extra = {}
    if peer is not None:   # the peer as restored at the self model's best validation epoch
        extra["peer"] = {"backbone": args.peer,
                         "valid": evaluate(peer, split.valid, args.ks, args.eval_batch_size),
                         "test": evaluate(peer, split.test, args.ks, args.eval_batch_size)}
        print(f"peer {args.peer} test " + "  ".join(f"{m}@{k} {extra['peer']['test'][f'{m}@{k}']:.4f}"
                                                    for m in ("recall", "ndcg") for k in args.ks))
    return finish(args, split, pair, record, extra)


if __name__ == "__main__":
    run_cli(main)
