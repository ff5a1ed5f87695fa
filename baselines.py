"""Baselines: the negative samplers the two papers compare against, on every backbone.

ICPNS compares against RNS, PNS and HNS (= DNS); MDCNS (Table 3) against RNS, DNS, MixGCF, AdaSIR, GNNO, DNS+
(= DNS(M,N)), MixGCF+ and SRNS, and against itself with its three components removed (Table 6):

- RNS  Rendle, Freudenthaler, Gantner, Schmidt-Thieme. "BPR: Bayesian Personalized Ranking from Implicit
       Feedback." UAI 2009 (arXiv 1205.2618). A negative is uniform over the items the user has not interacted
       with in training.
- PNS  Chen, Sun, Shi, Hong. "On Sampling Strategies for Neural Network-based Collaborative Filtering." KDD 2017
       (arXiv 1706.07881), as cited by MDCNS; RecBole's `distribution: popularity`. p(i) ∝ count(i)^α over the
       user's non-positives, count(i) = the item's training interactions.
- DNS  Zhang, Chen, Wang, Yu. "Optimizing Top-N Collaborative Filtering via Dynamic Negative Item Sampling."
       SIGIR 2013. Score N uniform candidates with the current model and keep the highest.
- DNS(M,N)  Shi, Chen, Feng, Zhang, Wu, Gao, He. "On the Theories Behind Hard Negative Sampling for
       Recommendation." WWW 2023 (arXiv 2302.03472). Score N uniform candidates, pick one uniformly among the
       top M: M controls the hardness (DNS = DNS(1,N)). MDCNS calls it DNS+.
- MixGCF, MixGCF+ (`mixgcf`, `mixgcfmn`)  Huang et al., KDD 2021: a synthetic negative, the positive's embedding
       mixed into uniform candidates' at every LightGCN layer (positive mixing), the best mixed candidate per
       layer (hop mixing); MixGCF+ (MDCNS's) picks uniformly among the top M instead. `mixgcf_loss`.
- AdaSIR  Chen et al., WWW 2022: per-user pools, refreshed every epoch by importance resampling of uniform
       proposals (∝ exp(score)) and kept across epochs; a negative is uniform over its user's pool. `AdaSIRPools`.
- GNNO  Fan et al., SIGIR 2023: negatives drawn by their neighbourhood overlap (Jaccard) with the target on the
       item transition graph, capped by a hardness that grows over the epochs; MDCNS runs them inside a DNS(M,N)
       pool of uniform candidates. `GNNOSampler`.
- SRNS  Ding et al., NeurIPS 2020: per-user memories of candidates; the negative maximises its probability of
       outranking the positive plus α times that probability's standard deviation over the last 5 epochs (false
       negatives score high but steadily).
       `SRNSMemory`.
Each of the last five has a docstring with the paper, the official code, the MDCNS code's adaptation
(`Lyz103/SIGIR26-MDCNS`, `Baselines/Neg_samples_{posmix,two_pass,gnno,srns}`), its hyper-parameters, the size
of its state, and its deviations from both. Their equations are named after the papers' terms, not numbered:
the official code was read, the papers' equation numbering could not be checked.

Every sampler is a tensor function or a small class, takes an explicit `torch.Generator`, runs on the model's
device with no loop over users or samples, and states its draw order. RNS, PNS, DNS and DNS(M,N) return k
negatives per positive; MixGCF, MixGCF+, AdaSIR, GNNO and SRNS one (as MDCNS runs them). The loss is BPR or BCE
(`--loss`) over each (positive, negatives) example; the L2 penalty of general backbones is LightGCN's (MixGCF's
for mixgcf).

Use RNS, PNS, DNS or DNS(M,N) in your own project: copy the section between `# ---- core` and
`# ---- end of core ----` below; it needs only torch. The comment at its top states what your examples, draws and
scorer must be (checked at the first call); then, per training step,
    negatives_fn = negative_sampler("dnsmn", draw_uniform, score=score, n_candidates=100, m=5)   # once
    negatives = negatives_fn(ex, generator)        # ex.queries (P, D), ex.item_table (I+1, D), ex.users (P,)
    loss = bpr(scores of the positives, score(ex.queries, ex.item_table, negatives))
The five MDCNS baselines keep per-user state built from common.py's split and stay outside that section.

Commands (the dataset names need common.py's data registry):
    python baselines.py --sampler rns --dataset ml-1m --backbone sasrec
    python baselines.py --sampler dnsmn --dataset ml-1m --backbone sasrec --candidates 100 --top-m 5
    # ICPNS's baselines (LightGCN, RecBole ratio split, rating >= 3, 10-core, batch 4096):
    python baselines.py --sampler pns --dataset ml-1m --backbone lightgcn --split ratio --min-rating 3 \
        --k-core 10 --batch-size 4096
    # MDCNS's Table 3 baselines as run_all.sh runs them (SASRec's defaults: 2 heads, D 64, dropout 0.5, L 50;
    # ~1024 examples per batch as the code; stop at the 50th validation without improvement, <= 500 epochs, as
    # Baselines/Neg_samples_DNS+/run_finetune_full.py:54,161 @4fe2f72):
    python baselines.py --sampler dnsmn --dataset beauty --backbone sasrec --split user --loss bce \
        --valid-metric ndcg@20 --ks 5,10,20 --examples-per-batch 1024 --epochs 500 --patience 49 --candidates 100
    python baselines.py --sampler srns --dataset beauty --backbone sasrec --split user --loss bce \
        --valid-metric ndcg@20 --ks 5,10,20 --examples-per-batch 1024 --epochs 500 --patience 49   # N = 500
    python baselines.py --sampler mixgcf --dataset ml-100k --backbone lightgcn --split ratio   # hop mixing

Protocol (common.py): `--split loo` (default; leave-one-out by time), `ratio` (RecBole/ICPNS 8:1:1) or `user`
(MDCNS 70/20/10 of the users); full ranking over all items, training items masked for general backbones and
the input sequence for sequential ones (`--no-mask-history` for RecBole's sequential evaluation), pessimistic
ties; early stopping on the validation `--valid-metric`, test evaluated once. MF and LightGCN iterate the
training interactions uniformly (RecBole's convention, not LightGCN's user sampling); for sequential backbones
every position of a training sequence is a (prefix -> next item) example with its own negatives. That equals
prefix augmentation, up to the dropout masks, for GRU4Rec, Mamba4Rec and Kang's SASRec (tests/test_baselines.py
checks them in eval mode), not for the default SASRec, LinRec and FMLP4Rec, whose positions count back from a
row's last item (`--augmented-prefixes` trains one row per prefix).

Deviations of RNS, PNS, DNS and DNS(M,N) (each MDCNS baseline lists its own):
- DNS and DNS(M,N) draw their N candidates with replacement (RecBole's DNS does too; MDCNS's DNSDataset draws
  N distinct items). A duplicate in the top M is picked with its multiplicity.
- Candidates and negatives avoid all of the user's training items, including those after the current position
  of a sequence (MDCNS excludes the input sequence and the target, Eq. 2).
- Candidates are scored with the training step's own forward pass (train mode, dropout active for sequential
  backbones; LightGCN's propagated tables of the step), not a separate eval-mode forward as RecBole does.
- PNS counts training interactions only. RecBole counts the validation and test interactions as well
  (`recbole/sampler/sampler.py` `_get_candidates_list` over all phases), a leak we do not copy. An item without
  training interactions has count 0 and is never drawn, for any α (RecBole's table holds only seen items).
- With k > 1 negatives, DNS and DNS(M,N) score k independent pools of N candidates (RecBole's DNS does the same).
"""

from __future__ import annotations

import warnings
from functools import partial

import torch

from common import (LOSSES, AliasTable, Examples, LightGCN, PositiveSets, RecError, SplitData, base_parser,
                    build_backbone, evaluate_saved, examples, finish, fit, owns, prepare, read_checkpoint, run_cli,
                    score_items, standard_loss, training_positives, uniform_negatives, weighted_negatives)

SAMPLERS = ("rns", "pns", "dns", "dnsmn")                           # make_sampler: negatives for standard_loss
MDCNS_SAMPLERS = ("mixgcf", "mixgcfmn", "adasir", "gnno", "srns")   # make_batch_loss: their own loss or state


# ---- core: copy this section into your project; it needs only torch ----
# RNS, PNS, DNS and DNS(M,N) as functions of tensors: nothing here reads argv, globals, files or common.py; what
# they need from the plumbing (the uniform and the weighted draw over a user's non-positive items, the scorer) is
# passed in. Errors are ValueErrors. The contract, checked at the first call (`negative_sampler`):
#   ex     an object with queries (P, D), item_table (I+1, D) and users (P,): one training example per row (common.py's
#          `Examples`); row i of the item table is item i, item ids run 1..I and 0 is padding.
#   draw_uniform(users (P,), n, generator) -> (P, n) items uniform over each user's non-positives (RNS itself).
#   draw_weighted(users (P,), n, generator) -> (P, n) items with p(i) ∝ popularity_weights over each user's
#          non-positives (PNS).
#   score(queries (P, D), item_table (I+1, D), items (P, n)) -> (P, n) dot products (DNS, DNS(M,N)).
def popularity_weights(train_item: torch.Tensor, n_items: int, alpha: float) -> torch.Tensor:
    """PNS's one distribution: weights (1, I+1), count(i)^α with count over the TRAINING interactions only,
    0 for the padding item and for items without a training interaction."""
    count = torch.bincount(train_item.cpu(), minlength=n_items + 1).double()               # (I+1,)
    weights = torch.where(count > 0, count.pow(alpha), torch.zeros_like(count))          # p(i) ∝ count(i)^α
    weights[0] = 0.0
    return weights.unsqueeze(0)                                                          # (1, I+1)


def pick_from_top_m(scores, m: int, generator: torch.Generator):
    """Uniform among the top M (DNS(M,N), MDCNS Eqs. (7)-(8)): H = Top-M of each row of `scores`, pick ~ Uniform(H).
    scores (..., N) -> (...,) positions in 0..N-1; M is capped at N. Draws torch.randint(0, M, scores.shape[:-1])
    after the top-M, and nothing else (also for M = 1)."""
    top = scores.topk(min(m, scores.shape[-1]), dim=-1).indices                               # (..., M)
    choice = torch.randint(0, top.shape[-1], top.shape[:-1], generator=generator, device=scores.device)  # (...,)
    return top.gather(-1, choice.unsqueeze(-1)).squeeze(-1)                                   # (...,)


def dns_negatives(scores, candidates, k: int = 1):
    """DNS (Zhang et al. 2013): the highest-scored of each pool of N candidates (ties: the first in the pool).
    scores, candidates (P, k·N) = k pools of N consecutive items -> (P, k)."""
    P, N = len(candidates), candidates.shape[1] // k
    best = scores.view(P, k, N).argmax(-1, keepdim=True)                                   # (P, k, 1)
    return candidates.view(P, k, N).gather(-1, best).squeeze(-1)                          # (P, k)


def dns_mn_negatives(scores, candidates, m: int, k: int, generator: torch.Generator):
    """DNS(M,N) (Shi et al. 2023), MDCNS's DNS+: one item uniformly among the M highest-scored of each pool of
    N candidates. scores, candidates (P, k·N) -> (P, k). Draws `pick_from_top_m`'s torch.randint(0, M, (P, k))."""
    P, N = len(candidates), candidates.shape[1] // k
    if not 1 <= m <= N:
        raise ValueError(f"DNS(M,N) needs 1 <= M <= N, got M={m}, N={N}")
    # MDCNS Eq. (7)-(8) with the model's own scores: H = Top-M(scores), v- ~ Uniform(H)
    chosen = pick_from_top_m(scores.view(P, k, N), m, generator)                          # (P, k) in the pool
    return candidates.view(P, k, N).gather(-1, chosen.unsqueeze(-1)).squeeze(-1)          # (P, k)


def check_items(items, n_items: int, what: str):
    """Every id of `items` in 1..n_items (n_items = the item table's rows - 1), or one ValueError line."""
    bad = (items < 1) | (items > n_items)
    if bool(bad.any()):
        raise ValueError(f"{what} returned item id {int(items[bad][0])}, outside 1..{n_items}: item ids run 1..I "
                         "with 0 as padding, and the item table has I+1 rows")


def negative_sampler(name: str, draw_uniform=None, draw_weighted=None, score=None, *, k: int = 1,
                     n_candidates: int = 10, m: int = 5):
    """negatives_fn(ex, generator) -> (P, k) item ids, k negatives per example, for a BPR or BCE loss over
    (positive, negatives): rns (draw_uniform), pns (draw_weighted), dns and dnsmn (draw_uniform, score).
    n_candidates: N, the pool DNS and DNS(M,N) score (DNS's default 10 is ICPNS's HNS; MDCNS's DNS+ uses 100);
    m: M of DNS(M,N). DNS and DNS(M,N) score k independent pools of N, without gradient.
    Draw order (mdcns.py reproduces it): draw_uniform(users, k·N), then pick_from_top_m's randint."""
    needs = {"rns": (draw_uniform,), "pns": (draw_weighted,), "dns": (draw_uniform, score),
             "dnsmn": (draw_uniform, score)}
    if name not in needs or any(f is None for f in needs[name]):
        raise ValueError(f"negative_sampler({name!r}): rns needs draw_uniform, pns draw_weighted, dns and dnsmn "
                         "draw_uniform and score")
    if k < 1 or (name in ("dns", "dnsmn") and n_candidates < 1) or (name == "dnsmn" and not 1 <= m <= n_candidates):
        raise ValueError(f"{name} needs k >= 1 (and 1 <= m <= n_candidates for its pools), got k={k}, m={m}, "
                         f"n_candidates={n_candidates}")
    unchecked = True

    def negatives(ex, generator):
        nonlocal unchecked
        if name in ("rns", "pns"):
            drawn = (draw_uniform if name == "rns" else draw_weighted)(ex.users, k, generator)    # (P, k)
        else:
            # MDCNS Eq. (2): C_N uniform over the user's non-interacted items
            candidates = draw_uniform(ex.users, k * n_candidates, generator)                      # (P, k·N)
            with torch.no_grad():
                scores = score(ex.queries.detach(), ex.item_table.detach(), candidates)           # (P, k·N)
            drawn = dns_negatives(scores, candidates, k) if name == "dns" else \
                dns_mn_negatives(scores, candidates, m, k, generator)                              # (P, k)
        if unchecked:
            check_items(drawn, ex.item_table.shape[0] - 1, f"the {name} sampler's draw")
            unchecked = len(drawn) == 0
        return drawn

    return negatives
# ---- end of core ----


def pns_negatives(weights: torch.Tensor, table: AliasTable, positives: PositiveSets, users, k: int,
                  generator: torch.Generator):
    """PNS's draw: k items per user from p(i) ∝ weights[0, i] over the user's non-positives, exactly (alias-table
    draws with the positives rejected, finished by a masked multinomial; common.weighted_negatives with one
    group). A user whose positives hold every weighted item falls back to uniform over its non-positives.
    users (B,) -> (B, k)."""
    one_group = torch.zeros(positives.n_users, dtype=torch.long, device=users.device)     # (U,) all group 0
    return weighted_negatives(weights, table, one_group, positives, users, k, generator)


def make_sampler(name: str, positives: PositiveSets, k: int, train_item=None, alpha: float = 0.1,
                 n_candidates: int = 10, m: int = 5):
    """`negative_sampler` with common.py's plumbing, a `negatives_fn(examples, generator) -> (P, k)` for
    common.standard_loss: RNS is common.uniform_negatives (exact inverse-CDF over each user's non-positives, no
    rejection), PNS `pns_negatives`, scores common.score_items. train_item: the training interactions' items
    (PNS's counts); alpha: PNS's α; n_candidates: N (dns, dnsmn); m: M (dnsmn)."""
    if name not in SAMPLERS:
        raise RecError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    draw_weighted = None
    if name == "pns":
        weights = popularity_weights(train_item, positives.n_items, alpha)
        table = AliasTable(weights).to(positives.key.device)
        weights = weights.to(positives.key.device)
        draw_weighted = partial(pns_negatives, weights, table, positives)
    return negative_sampler(name, partial(uniform_negatives, positives), draw_weighted, score_items, k=k,
                            n_candidates=n_candidates, m=m)


class UniformWarmUp:
    """--uniform-epochs W: uniform negatives in epochs 1..W, then `hard` (DNS or DNS(M,N)). The official DNS+
    baseline's `--start_epoch` (Baselines/Neg_samples_DNS+/trainers.py: `_DNS` if epoch >= start_epoch, else one of
    the N uniform candidates at random, which is a uniform negative). Its script defaults to W = 30; every released
    log of it sets 0, this file's default. Driven by fit's on_epoch_start; its epoch is checkpointed (`saved`), so a
    run resumed mid-epoch stays in that epoch."""
    saved = ("epoch",)

    def __init__(self, hard, positives: PositiveSets, k: int, epochs: int):
        self.hard, self.positives, self.k, self.epochs, self.epoch = hard, positives, k, epochs, 1

    def new_epoch(self, model, epoch: int, generator: torch.Generator):
        self.epoch = epoch

    def __call__(self, ex: Examples, generator: torch.Generator):
        if self.epoch <= self.epochs:
            return uniform_negatives(self.positives, ex.users, self.k, generator)          # (P, k)
        return self.hard(ex, generator)                                                   # (P, k)




# ----------------------------------------------------------------------------------------------------------
# MDCNS's other baselines (its Table 3): MixGCF, MixGCF+, AdaSIR, GNNO, SRNS. One negative per positive, as
# MDCNS runs them. MixGCF's negative is a synthetic embedding, so it has its own batch loss; AdaSIR, GNNO and
# SRNS return item ids to common.standard_loss but keep state that changes at every epoch's start.
# ----------------------------------------------------------------------------------------------------------
ADASIR_POOL = 10                  # S, items kept per user (MDCNS code two_pass_weight(.., 200, 10, 1); AdaSIR's 50)
GNNO_NEGATIVES = 10               # G, GNNO-drawn items among the N candidates (MDCNS code `gnums`)
GNNO_HARDNESS = (0.05, 0.01, 0.4)  # h at epoch 1, its increase per epoch, its ceiling (MDCNS code)
SRNS_MEMORY = 20                  # S1 = S2, memory size and fresh items per update (MDCNS code; paper 8 and 64)
SRNS_HISTORY = 5                  # T, epochs of scores behind each standard deviation (paper and MDCNS code)
SRNS_ALPHA = 5.0                  # α, weight of the standard deviation (paper and MDCNS code)
SRNS_WARMUP = 1                   # epochs over which α_t grows linearly to α (MDCNS code; paper's ml-1m run 50)


def with_saved_state(batch_loss, state, keep: dict):
    """`batch_loss` that keeps the sampler's state (its `saved` attributes) in keep, fit's checkpointed dict, current
    after every step, so that --resume continues it exactly (fit calls state.new_epoch as every epoch starts)."""
    def wrapped(model, batch, generator):
        loss = batch_loss(model, batch, generator)
        keep["sampler"] = {name: getattr(state, name) for name in state.saved}
        return loss

    return wrapped


def restore_state(state, saved: dict, device):
    """Put a checkpoint's sampler state (`keep["sampler"]`, on the CPU) back into `state`, on `device`."""
    def moved(value):
        if isinstance(value, torch.Tensor):
            return value.to(device)
        return type(value)(map(moved, value)) if isinstance(value, (list, tuple)) else value
    for name, value in saved.items():
        setattr(state, name, moved(value))


def active_users(split: SplitData) -> torch.Tensor:
    """The users with at least one training example, sorted (R,); under torchrun those of this process, whose rows
    of every batch it trains (common.owns): each process keeps the per-user state of its own users."""
    users = torch.unique(split.train_sequence_user if split.sequential else split.train_user)
    return users[owns(users)]


@torch.no_grad()
def user_queries(model, split: SplitData, users, batch_size: int):
    """Each of `users`' (R,) query under the current weights, in eval mode (no dropout): the user's embedding for
    general backbones; for sequential ones the hidden state at the last position of the user's last training
    window, i.e. the query of its last training target. Returns (R, D) and a copy of the item table (I+1, D).
    Note: icpns.user_representations takes the state after the whole training sequence instead (a community
    describes the user as the model would recommend for it); here the pools and memories hold negatives for
    training targets, so the query is a training position's. Both are model(users) for general backbones."""
    was_training = model.training
    model.eval()
    if model.sequential:
        # the row that ends at each user's last training target; a user's rows are consecutive: its first window
        # ends at the end of its sequence, its last prefix row is its longest prefix
        newest_row = torch.full((split.n_users,), -1, dtype=torch.long)                 # (U,)
        newest_row.scatter_reduce_(0, split.train_sequence_user, torch.arange(len(split.train_sequence_user)),
                                 "amax" if split.prefix_rows else "amin", include_self=False)
        outputs = [model(split.train_sequences[w].to(users.device))
                   for w in newest_row[users.cpu()].split(batch_size)]
        queries, item_table = torch.cat([q for q, _ in outputs]), outputs[0][1]        # (R, D), (I+1, D)
    else:
        queries, item_table = model(users)                                             # (R, D), (I+1, D)
    model.train(was_training)
    return queries, item_table.clone()


def last_example_of_each_user(users) -> torch.Tensor:
    """Index of each distinct user's last example in a batch (R,), ordered by user."""
    distinct, inverse = torch.unique(users, return_inverse=True)
    order = torch.arange(len(users), device=users.device)
    return torch.zeros(len(distinct), dtype=torch.long, device=users.device).scatter_reduce_(
        0, inverse, order, "amax", include_self=False)


# --- MixGCF / MixGCF+ ---------------------------------------------------------------------------------------
@torch.no_grad()
def hop_mixing_choice(queries, item_layers, candidates, m: int, generator: torch.Generator):
    """MixGCF's hop mixing: for each layer l the candidate whose mixed embedding e'_n^(l) = α_l e_p^(l) +
    (1 - α_l) e_n^(l) scores highest against the pooled query, <e_u, e'_n^(l)> = α_l <e_u, e_p^(l)> +
    (1 - α_l) <e_u, e_n^(l)>. α_l is shared by the row's candidates and 1 - α_l > 0, so this is the candidate of
    highest <e_u, e_n^(l)>: the choice needs no mixed embedding. MixGCF+ (m > 1): uniformly among the top m
    (`pick_from_top_m`). queries (P, D), item_layers (L+1, I+1, D), candidates (P, N) -> chosen items (P, L+1).
    Draws torch.randint(0, m, (P, L+1)) and nothing else (also for m = 1)."""
    scores = torch.stack([score_items(queries, table, candidates) for table in item_layers], 1)  # (P, L+1, N)
    best = pick_from_top_m(scores, m, generator)                                         # (P, L+1) in the pool
    return candidates.gather(1, best)                                                    # (P, L+1)


def positive_mixing(positive_layers, negative_layers, alpha):
    """MixGCF's positive mixing, e'^(l) = α_l e_p^(l) + (1 - α_l) e_n^(l), α_l ~ U(0, 1) per example and layer.
    positive_layers, negative_layers (P, L+1, D), alpha (P, L+1, 1) -> (P, L+1, D), differentiable."""
    return alpha * positive_layers + (1 - alpha) * negative_layers


def mixgcf_loss(positives: PositiveSets, n_candidates: int, m: int, loss_name: str, reg_weight: float = 0.0):
    """MixGCF (m = 1) and MixGCF+ (m > 1) as a batch loss for common.fit.

    MixGCF: Huang, Dong, Ding, Yang, Feng, Wang, Tang. "MixGCF: An Improved Training Method for Graph Neural
    Network-based Recommender Systems." KDD 2021; code github.com/huangtinglin/MixGCF (`modules/LightGCN.py`).
    Instead of picking an item, synthesise the negative: draw N uniform candidates; positive mixing blends each
    candidate's embedding at every propagation layer with the positive's (α_l ~ U(0, 1)); hop mixing picks, per
    layer, the mixed candidate scored highest by the user; the synthetic negative is the layers' pooled picks,
    and the loss's gradient flows into the positive's and the picked candidates' embeddings. MixGCF+ (MDCNS's
    name; its `Neg_samples_posmix` with M > 1): the pick is uniform among the top M, as DNS(M,N).

    Backbones: LightGCN mixes and picks on each of its L+1 layers (common.LightGCN.propagate_layers) and pools
    by their mean, as its own; every other backbone has one layer, its item table (MF's embeddings; for
    sequential backbones the item embeddings, which is the MDCNS code's adaptation to SASRec).
    Draw order per step: uniform_negatives(positives, users, N), torch.rand(P, L+1, 1) (α), then
    torch.randint(0, m, (P, L+1)) (the pick). The L2 penalty (general backbones) is MixGCF's: the user's, the
    positive's and the synthetic negative's layer-0 embeddings.

    Deviations. Paper/MixGCF code: it draws K synthetic negatives per positive (K = 1 in its runs) and uses
    LightGCN's own edge/message dropout, which common.LightGCN does not have; candidates avoid the user's
    training items (so does MixGCF's sampler). MDCNS code (`trainers.py new_pos_mixing`): one α per example for
    its single layer (the same as ours with one layer); N distinct candidates outside the prefix and target, ours
    uniform with replacement outside the user's whole training history (common.uniform_negatives).
    """
    loss_fn = LOSSES[loss_name]

    def batch_loss(model, batch, generator):
        if isinstance(model, LightGCN):                                    # hop mixing over the layers
            users, items = batch
            user_layers, item_layers = model.propagate_layers()            # (L+1, U, D), (L+1, I+1, D)
            ex = Examples(user_layers.mean(0)[users], item_layers.mean(0), users, items)   # LightGCN's pooling
        else:
            ex = examples(model, batch)
            item_layers = ex.item_table.unsqueeze(0)                       # (1, I+1, D): one layer
        P, layers = len(ex.users), len(item_layers)
        candidates = uniform_negatives(positives, ex.users, n_candidates, generator)       # (P, N)
        alpha = torch.rand(P, layers, 1, generator=generator, device=candidates.device)    # (P, L+1, 1)
        chosen = hop_mixing_choice(ex.queries.detach(), item_layers.detach(), candidates, m, generator)  # (P,L+1)
        positive_layers = item_layers[:, ex.positives].transpose(0, 1)                     # (P, L+1, D)
        layer = torch.arange(layers, device=chosen.device)
        mixed = positive_mixing(positive_layers, item_layers[layer, chosen], alpha)        # (P, L+1, D)
        synthetic = mixed.mean(1)                                                           # (P, D) pooled
        positive_scores = (ex.queries * ex.item_table[ex.positives]).sum(-1, keepdim=True)  # (P, 1)
        negative_scores = (ex.queries * synthetic).sum(-1, keepdim=True)                    # (P, 1)
        loss = loss_fn(positive_scores, negative_scores)
        if reg_weight and not model.sequential:
            users_0, positives_0 = model.ego_embeddings(ex.users, ex.positives)            # (P, D) each
            loss = loss + reg_weight * 0.5 * (users_0.pow(2).sum() + positives_0.pow(2).sum() +
                                              mixed[:, 0].pow(2).sum()) / P
        return loss

    return batch_loss


# --- AdaSIR -------------------------------------------------------------------------------------------------
@torch.no_grad()
def importance_resample(queries, item_table, proposals, pool_size: int, generator: torch.Generator):
    """AdaSIR's importance resampling: from proposals j_1..j_N ~ Q, pool_size draws with replacement with
    probability w_n ∝ exp(s_{u,j_n}) / Q(j_n). Q is uniform over the user's non-positive items, so w = softmax(s).
    queries (R, D), proposals (R, N) -> (R, pool_size). Draws torch.multinomial(w, pool_size) only."""
    weights = torch.softmax(score_items(queries, item_table, proposals), dim=1)           # (R, N), Σ = 1
    index = torch.multinomial(weights, pool_size, replacement=True, generator=generator)   # (R, S)
    return proposals.gather(1, index)                                                       # (R, S)


def merge_pools(old, new, generator: torch.Generator):
    """AdaSIR's sample reuse: each of the S slots of the kept pool is uniform over the 2S items of old and new.
    old, new (R, S) -> (R, S). Draws torch.randint(0, 2S, (R, S)) only."""
    R, S = old.shape
    slot = torch.randint(0, 2 * S, (R, S), generator=generator, device=old.device)         # (R, S)
    return torch.cat([old, new], 1).gather(1, slot)                                         # (R, S)


class AdaSIRPools:
    """AdaSIR: Chen, Lian, Jin, Zheng, Chen. "Learning Recommenders for Implicit Feedback with Importance
    Resampling." WWW 2022; code github.com/HERECJ/AdaSIR (`sampler.py two_pass`, `main.py`).

    Each user keeps a pool of S items, kept across epochs. At the start of every epoch each training user's pool
    is refreshed: N proposals from a uniform Q, S of them resampled with probability ∝ exp(score) / Q
    (`importance_resample`), and the pool becomes S slots drawn uniformly from the old pool and the new
    sample (`merge_pools`; at epoch 1 the new sample alone). Within the epoch a positive's negative is
    uniform over its user's pool. S = 10 and N = 200 are the MDCNS code's (`two_pass_weight(.., 200, 10, 1)`).
    Draw order: at each epoch's start uniform_negatives(positives, training users, N), the resampling's
    multinomial, the merge's randint (from epoch 2); per step torch.randint(0, S, (P, 1)).
    State: the pools, users x S int64 (Beauty 22,363 x 10: 1.8 MB; ml-1m 6,040 x 10: 0.5 MB).

    Deviations. Paper/AdaSIR code: proposals uniform over all items, ours over the user's non-positive items
    (project convention); its loss may weight a negative by its importance weight (`--weighted`, for sampled
    softmax), BPR/BCE here do not (neither does the MDCNS code). MDCNS code (`Neg_samples_two_pass`): a pool per
    training row (prefix), refreshed after each step that used it (with the post-step model, in train mode); its
    first epoch draws from empty pools, i.e. the padding item; its proposals are uniform over every item id
    (`datasets.py`, `torch.randint(0, item_size)`), the padding item and the row's own target and history
    included, which are the row's highest-scored items, so resampling tends to keep them in the pool: it trains
    on false negatives that ours never draws (an inference from the code; no log to measure it). Ours refreshes
    every pool at each epoch's start in eval mode (the AdaSIR code's schedule); for sequential backbones the pool
    is the user's, built from the query of its last training position (`user_queries`), and serves every
    position of its sequence.
    """

    def __init__(self, positives: PositiveSets, split: SplitData, n_proposals: int, pool_size: int,
                 batch_size: int):
        self.positives, self.split, self.n_proposals, self.batch_size = positives, split, n_proposals, batch_size
        device = positives.key.device
        self.users = active_users(split).to(device)                                         # (R,)
        self.pool = torch.zeros(positives.n_users, pool_size, dtype=torch.long, device=device)  # (U, S)

    saved = ("pool",)   # what a checkpoint keeps (with_saved_state)

    def new_epoch(self, model, epoch: int, generator: torch.Generator):
        queries, item_table = user_queries(model, self.split, self.users, self.batch_size)  # (R, D), (I+1, D)
        proposals = uniform_negatives(self.positives, self.users, self.n_proposals, generator)  # (R, N) ~ Q
        new = importance_resample(queries, item_table, proposals, self.pool.shape[1], generator)  # (R, S)
        self.pool[self.users] = new if epoch == 1 else merge_pools(self.pool[self.users], new, generator)

    def __call__(self, ex: Examples, generator: torch.Generator):
        slot = torch.randint(0, self.pool.shape[1], (len(ex.users), 1), generator=generator,
                             device=ex.users.device)                                         # (P, 1)
        return self.pool[ex.users].gather(1, slot)                                           # (P, 1)


# --- GNNO ---------------------------------------------------------------------------------------------------
def transition_jaccard(train_user, train_item, n_items: int, window: int = 3, block: int = 1024) -> torch.Tensor:
    """GNNO's neighbourhood overlap on the item transition graph of the training sequences: i ~ j when one
    follows the other within `window` steps in a user's training sequence (window 3 in the GNNO and MDCNS code,
    `build_WITG_from_trainset`; the graph's edge weights do not enter the Jaccard of its binary adjacency),
    J(i, j) = |N(i) ∩ N(j)| / |N(i) ∪ N(j)|, 0 when both are empty. train_user, train_item chronological per
    user (SplitData's order). Returns the dense (I+1, I+1) float32 matrix: Beauty 12,102^2 x 4 B = 586 MB, ml-1m
    3,417^2 x 4 B = 47 MB (the MDCNS code holds the same dense matrix)."""
    user, item = torch.as_tensor(train_user).cpu(), torch.as_tensor(train_item).cpu()
    n = n_items + 1
    same = [user[k:] == user[:-k] for k in range(1, window + 1)]                         # a loop over k <= 3
    head = torch.cat([item[:-k][s] for k, s in enumerate(same, 1)])                      # (E,)
    tail = torch.cat([item[k:][s] for k, s in enumerate(same, 1)])                       # (E,)
    key = torch.unique(torch.cat([head * n + tail, tail * n + head]))                    # both directions, once
    rows, cols = key // n, key % n
    crow = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(rows, minlength=n).cumsum(0)])  # (n+1,)
    ones = torch.ones(len(key))
    degree = torch.bincount(rows, minlength=n).float()                                   # |N(i)|
    jaccard = torch.zeros(n, n)
    with warnings.catch_warnings():   # "sparse CSR support is in beta": the matmul and to_dense used are stable
        warnings.simplefilter("ignore")
        adjacency = torch.sparse_csr_tensor(crow, cols, ones, (n, n), check_invariants=True)  # A, symmetric
        for start in range(0, n, block):                                                 # blocks of rows
            end = min(start + block, n)
            a, b = int(crow[start]), int(crow[end])
            rows_block = torch.sparse_csr_tensor(crow[start:end + 1] - a, cols[a:b], ones[a:b], (end - start, n),
                                                 check_invariants=True)
            both = (rows_block @ adjacency).to_dense()                                   # |N(i) ∩ N(j)|
            union = degree[start:end, None] + degree[None, :] - both                     # |N(i) ∪ N(j)|
            # GNNO's Jaccard similarity of the two neighbourhoods
            jaccard[start:end] = torch.where(union > 0, both / union.clamp(min=1), torch.zeros(()))
    return jaccard


def gnno_hardness(epoch: int) -> float:
    """GNNO's curriculum: the largest overlap a negative may have, h_e = min(h_1 + (e - 1) c, h_max), from easy
    (little overlap allowed) to hard; h_1 = 0.05, c = 0.01, h_max = 0.4 as the MDCNS code runs it."""
    start, step, ceiling = GNNO_HARDNESS
    return min(start + (epoch - 1) * step, ceiling)


@torch.no_grad()
def gnno_negatives(jaccard, positives: PositiveSets, users, targets, hardness: float, n: int,
                   generator: torch.Generator, rounds: int = 8, block: int = 2 ** 22):
    """GNNO's negatives: n draws with replacement from p(j | t) ∝ exp(J(t, j)) · 1[J(t, j) <= h] over the items j
    the user has not interacted with, t the example's target (the GNNO code's softmax over J's row, masked).
    A row with no such item (every non-positive overlaps t by more than h) draws uniformly over the user's
    non-positives; the MDCNS code draws the padding item there. users, targets (P,) -> (P, n).

    Exact, without touching whole rows of J in the common case: `rounds` of rejection, a uniform non-positive j
    (common.uniform_negatives) accepted with probability exp(J(t, j) - h) · 1[J(t, j) <= h] <= 1, so an accepted
    draw has exactly p(j | t); the draws still open after the rounds are finished by a multinomial over the rows
    of J (in blocks of about `block` entries), the same law. Draw order per round: uniform_negatives(positives,
    users, n), torch.rand(P, n); the rounds stop early once every draw is accepted; then torch.multinomial per
    block of open rows."""
    P = len(users)
    out = torch.zeros(P, n, dtype=torch.long, device=users.device)
    open_ = torch.ones(P, n, dtype=torch.bool, device=users.device)                          # (P, n)
    for _ in range(rounds):
        draw = uniform_negatives(positives, users, n, generator)                               # (P, n)
        overlap = jaccard[targets.unsqueeze(1), draw]                                          # (P, n) J(t, j)
        coin = torch.rand(P, n, generator=generator, device=users.device)
        accept = open_ & (overlap <= hardness) & (coin < (overlap - hardness).exp())
        out = torch.where(accept, draw, out)
        open_ &= ~accept
        if not bool(open_.any()):
            return out
    rows = open_.any(1).nonzero().squeeze(1)                                                   # (R,)
    for chunk in rows.split(max(1, block // jaccard.shape[1])):
        overlap = jaccard[targets[chunk]]                                                      # (B, I+1)
        allowed = ~positives.dense_mask(users[chunk])                                          # (B, I+1)
        weights = torch.where((overlap <= hardness) & allowed, overlap.exp(), torch.zeros(()))  # (B, I+1)
        weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, allowed.float())     # empty: uniform
        draws = torch.multinomial(weights, n, replacement=True, generator=generator)          # (B, n)
        out[chunk] = torch.where(open_[chunk], draws, out[chunk])
    return out


class GNNOSampler:
    """GNNO: Fan, Pu, Zhang, Wu. "Neighborhood-based Hard Negative Mining for Sequential Recommendation."
    SIGIR 2023, arXiv 2306.10047; code github.com/floatSDSDS/GNNO (`models/sequential/TopoCuri.py`).

    Items that many sequences visit near the target (a large neighbourhood overlap on the item transition graph)
    are likely false negatives; items with some overlap are hard, informative negatives. GNNO draws negatives
    with probability growing with the overlap J(t, j) but excludes those above a hardness h that rises over the
    epochs (`gnno_hardness`). As the MDCNS code runs it (`Neg_samples_gnno`): per example, N - G uniform
    candidates and G = 10 GNNO negatives form one pool of N, and the negative is uniform among the pool's top M
    by the model's score (DNS(M,N), MDCNS Eqs. (7)-(8)). MDCNS searches M in {1, ..., 10, 15, 20, ..., 50}, N = 100.
    Draw order per step: uniform_negatives(positives, users, N - G), gnno_negatives' multinomial(s),
    torch.randint(0, M, (P, 1)). State: J, (I+1)^2 float32 (`transition_jaccard`: Beauty 586 MB, ml-1m 47 MB).

    Deviations. GNNO paper/code: its negatives join a contrastive loss over all candidates (n_hn of them, with
    its own hardness schedule); MDCNS keeps one by DNS(M,N), and so do we. MDCNS code: its GNNO draws may be the
    user's history items or the padding item, ours avoid the user's training items; its N - G uniform candidates
    are distinct and avoid the prefix and target, ours are common.uniform_negatives. The graph is built from the
    training interactions in time order, for general backbones too (their training items keep that order).
    """

    def __init__(self, positives: PositiveSets, split: SplitData, n_candidates: int, m: int):
        self.positives, self.n_candidates, self.m = positives, n_candidates, m
        self.jaccard = transition_jaccard(split.train_user, split.train_item, split.n_items).to(positives.key.device)
        self.hardness = gnno_hardness(1)

    saved = ("hardness",)

    def new_epoch(self, model, epoch: int, generator: torch.Generator):
        self.hardness = gnno_hardness(epoch)

    def __call__(self, ex: Examples, generator: torch.Generator):
        uniform = uniform_negatives(self.positives, ex.users, self.n_candidates - GNNO_NEGATIVES, generator)
        hard = gnno_negatives(self.jaccard, self.positives, ex.users, ex.positives, self.hardness, GNNO_NEGATIVES,
                              generator)                                                   # (P, G)
        pool = torch.cat([uniform, hard], 1)                                               # (P, N)
        with torch.no_grad():
            scores = score_items(ex.queries.detach(), ex.item_table.detach(), pool)       # (P, N)
        return dns_mn_negatives(scores, pool, self.m, 1, generator)                        # (P, 1)


# --- SRNS ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def srns_criterion(queries, item_table, items, targets, history, users, alpha_t: float):
    """SRNS's sampling score of each memory item j, P_pos(j) + α_t · std[P_pos(j)], where P_pos(j) =
    σ(s_uj - s_u,pos) is the likelihood that j outranks the positive: now (the step's scores), and its population
    standard deviation over the epoch-start snapshots in `history` (a list of (user queries (U, D), item table
    (I+1, D)); 0 with one snapshot). False negatives score high with a steady, low variance; hard true
    negatives fluctuate. queries (P, D), items (P, S1), targets (P,), users (P,) -> (P, S1)."""
    def likelihood(q, table):
        s_items = score_items(q, table, items)                                             # (P, S1)
        s_positive = (q * table[targets]).sum(-1, keepdim=True)                            # (P, 1)
        return torch.sigmoid(s_items - s_positive)                                         # (P, S1)

    past = torch.stack([likelihood(q[users], table) for q, table in history])             # (T, P, S1)
    return likelihood(queries, item_table) + alpha_t * past.std(0, correction=0)          # (P, S1)


def fresh_positions(memory, n_positions: int, n_fresh: int, generator: torch.Generator):
    """SRNS's exploration: n_fresh distinct positions of the variance set, uniformly among those not in the
    memory. memory (R, S1) -> (R, S2). Draws torch.rand(R, n_positions) only."""
    keys = torch.rand(len(memory), n_positions, generator=generator, device=memory.device)  # (R, N) in [0, 1)
    keys.scatter_(1, memory, 2.0)                                                           # memory sorts last
    return keys.topk(n_fresh, dim=1, largest=False).indices                                 # (R, S2)


class SRNSMemory:
    """SRNS: Ding, Quan, Yao, Li, Jin. "Simplify and Robustify Negative Sampling for Implicit Collaborative
    Filtering." NeurIPS 2020, arXiv 2009.03376; code github.com/dingjingtao/SRNS (`SRNS_real/SRNS_main.py`).

    False negatives (items the user would like) keep a high score with a low variance over training; hard true
    negatives fluctuate. Each user keeps a variance set of N uniform non-positive items, drawn anew every epoch,
    and a memory of S1 positions in it. A positive's negative is the memory item of highest P_pos + α_t · std
    (`srns_criterion`), with α_t = α min(1, (e - 1) / warm-up) at epoch e and the standard deviation over the
    last T = 5 epochs' scores. Then, in the same step, the memory of each user of the batch (scored with its last
    example's query) takes S2 fresh positions (`fresh_positions`) and keeps the S1 of the S1 + S2 that score
    highest now.
    N = 500 as MDCNS runs SRNS (`Neg_samples_srns/run_finetune.bash`), S1 = S2 = 20, T = 5, α = 5, warm-up 1
    epoch (MDCNS code defaults).
    Draw order: at each epoch's start uniform_negatives(positives, training users, N) (the variance sets) and,
    at epoch 1, torch.rand(R, N) (the initial memories); per step fresh_positions' torch.rand.
    State: variance sets users x N int64 (Beauty 22,363 x 500: 89 MB; ml-1m 6,040 x 500: 24 MB), memories
    users x S1 int64 (3.6 MB / 1.0 MB), T snapshots of the user queries and item table, T (U + I + 1) D float32
    (Beauty, D = 64: 44 MB; ml-1m: 12 MB).

    Deviations. Paper/SRNS code: it scores each variance set at the end of the 5 epochs before it is used and
    keeps those scores (5 sets in rotation); we keep the last 5 epoch-start snapshots of the user queries and
    item table instead and score any item from them when asked: the same numbers, in 44 MB instead of 15 score
    arrays of users x N (671 MB on Beauty). Its memory keeps S1 of the S1 + S2 by sampling without replacement
    with probability ∝ exp(score / τ) (τ = 10 in its ml-1m run); the MDCNS code keeps the top S1 by score, and so
    do we (τ -> 0). As in both codes, memory positions are kept when the variance set is redrawn. The memory
    update uses each user's first example in the batch there, the last here (for sequential backbones the
    longest prefix).
    MDCNS code: per training row (prefix); it draws the N candidates anew each time a row is loaded, so its
    score history at a memory position mixes different items (its std is then an item-independent noise term,
    of raw train-mode scores, unbiased estimator; ours is the same item's across snapshots, population std of
    P_pos); it uses raw scores instead of P_pos and no variance term in its first 3 epochs; its N candidates are
    distinct and avoid the prefix and target. In both codes, on sequential backbones, the variance set is redrawn
    before a row (here: a user with one window, nearly every Beauty user at L = 50) is used again, so the items
    at the kept memory positions are fresh uniform draws: each step chooses among S1 uniform items, and N beyond
    S1 + S2 does not change what is drawn (only users with several windows carry memory items within an epoch).
    Sequential backbones (ours): the snapshots hold each user's query at its last training position
    (`user_queries`), so the history of P_pos(j) is the user's, the current P_pos the position's.
    """

    def __init__(self, positives: PositiveSets, split: SplitData, n_candidates: int, batch_size: int):
        self.positives, self.split, self.batch_size = positives, split, batch_size
        device = positives.key.device
        self.users = active_users(split).to(device)                                          # (R,)
        self.variance_sets = torch.zeros(positives.n_users, n_candidates, dtype=torch.long, device=device)  # (U,N)
        self.memory = torch.zeros(positives.n_users, SRNS_MEMORY, dtype=torch.long, device=device)     # (U, S1)
        self.history, self.alpha_t = [], 0.0

    saved = ("variance_sets", "memory", "history", "alpha_t")

    def new_epoch(self, model, epoch: int, generator: torch.Generator):
        queries, item_table = user_queries(model, self.split, self.users, self.batch_size)  # (R, D), (I+1, D)
        every_user = queries.new_zeros(self.positives.n_users, queries.shape[1])            # (U, D)
        every_user[self.users] = queries
        self.history = (self.history + [(every_user, item_table)])[-SRNS_HISTORY:]
        N = self.variance_sets.shape[1]
        self.variance_sets[self.users] = uniform_negatives(self.positives, self.users, N, generator)  # (R, N)
        if epoch == 1:   # S1 distinct random positions
            keys = torch.rand(len(self.users), N, generator=generator, device=self.users.device)  # (R, N)
            self.memory[self.users] = keys.topk(SRNS_MEMORY, dim=1, largest=False).indices
        self.alpha_t = SRNS_ALPHA * min(1.0, (epoch - 1) / SRNS_WARMUP)

    def __call__(self, ex: Examples, generator: torch.Generator):
        queries, item_table = ex.queries.detach(), ex.item_table.detach()
        items = self.variance_sets[ex.users].gather(1, self.memory[ex.users])               # (P, S1)
        criterion = srns_criterion(queries, item_table, items, ex.positives, self.history, ex.users, self.alpha_t)
        negatives = items.gather(1, criterion.argmax(1, keepdim=True))                      # (P, 1)
        # memory update, once per user of the batch
        last = last_example_of_each_user(ex.users)                                          # (R,)
        users = ex.users[last]
        memory = self.memory[users]                                                         # (R, S1)
        fresh = fresh_positions(memory, self.variance_sets.shape[1], SRNS_MEMORY, generator)  # (R, S2)
        positions = torch.cat([memory, fresh], 1)                                           # (R, S1 + S2)
        scores = score_items(queries[last], item_table, self.variance_sets[users].gather(1, positions))
        self.memory[users] = positions.gather(1, scores.topk(SRNS_MEMORY, dim=1).indices)  # top S1 by score now
        return negatives


def make_batch_loss(args, split: SplitData, positives: PositiveSets, keep: dict | None = None):
    """The batch loss common.fit trains with, for any --sampler (args resolved by resolve_sampler_args), and its
    on_epoch_start (None for a sampler without a state across epochs).
    keep: fit's checkpointed dict, for the samplers with a state across steps or epochs (AdaSIR, GNNO, SRNS, a
    --uniform-epochs warm-up); a resumed run's keep brings that state back."""
    if args.sampler in SAMPLERS:
        negatives_fn = make_sampler(args.sampler, positives, args.negatives, split.train_item, args.pns_alpha,
                                    args.candidates, args.top_m)
        if not args.uniform_epochs:
            return standard_loss(negatives_fn, args.loss, args.reg_weight), None
        state = UniformWarmUp(negatives_fn, positives, args.negatives, args.uniform_epochs)
    elif args.sampler in ("mixgcf", "mixgcfmn"):
        return mixgcf_loss(positives, args.candidates, args.top_m or 1, args.loss, args.reg_weight), None
    elif args.sampler == "adasir":
        state = AdaSIRPools(positives, split, args.candidates, ADASIR_POOL, args.eval_batch_size)
    elif args.sampler == "gnno":
        state = GNNOSampler(positives, split, args.candidates, args.top_m)
    else:
        state = SRNSMemory(positives, split, args.candidates, args.eval_batch_size)
    keep = {} if keep is None else keep
    if "sampler" in keep:
        restore_state(state, keep["sampler"], positives.key.device)
    return with_saved_state(standard_loss(state, args.loss, args.reg_weight), state, keep), state.new_epoch


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------
DEFAULT_CANDIDATES = {"dns": 10, "dnsmn": 100, "mixgcf": 100, "mixgcfmn": 100, "adasir": 200, "gnno": 100,
                      "srns": 500}
DEFAULT_TOP_M = {"dnsmn": 5, "mixgcfmn": 5, "gnno": 5}


def build_parser():
    parser = base_parser("Baseline negative samplers (RNS, PNS, DNS, DNS(M,N), MixGCF, MixGCF+, AdaSIR, GNNO, "
                         "SRNS) on every backbone", __file__)
    group = parser.add_argument_group("negative sampling")
    group.add_argument("--sampler", default="rns", choices=SAMPLERS + MDCNS_SAMPLERS,
                       help="rns: uniform (Rendle 2009); pns: popularity^α (Chen 2017); dns: best of N "
                            "(Zhang 2013, ICPNS's HNS); dnsmn: uniform among the top M of N (Shi 2023, MDCNS's "
                            "DNS+); mixgcf: synthetic negative by positive and hop mixing (Huang 2021); mixgcfmn: "
                            "MixGCF picking uniformly among the top M (MDCNS's MixGCF+); adasir: importance "
                            "resampling into per-user pools (Chen 2022); gnno: neighbourhood-overlap negatives in a "
                            "DNS(M,N) pool (Fan 2023); srns: score + variance from per-user memories (Ding 2020)")
    group.add_argument("--negatives", type=int, default=1,
                       help="k, negatives per positive (both papers' baselines use 1; mixgcf, mixgcfmn, adasir, "
                            "gnno and srns draw exactly 1, as MDCNS runs them)")
    group.add_argument("--uniform-epochs", type=int, default=None,
                       help="W, dns and dnsmn: uniform negatives for the first W epochs, then the sampler (the "
                            "official DNS+ baseline's --start_epoch: 30 in its script, 0 in every released log) "
                            "(default: 0)")
    group.add_argument("--pns-alpha", type=float, default=None,
                       help="α in p(i) ∝ count(i)^α, pns only (default 0.1, ICPNS's recommended PNS setting; "
                            "RecBole's default is 1.0)")
    group.add_argument("--candidates", type=int, default=None,
                       help="N, per sampler (defaults: the MDCNS code's): dns 10 scored candidates (ICPNS's HNS "
                            "candidate_num); dnsmn 100 (MDCNS's DNS+); mixgcf, mixgcfmn 100 candidates to mix "
                            "(MixGCF's README uses 16-64); adasir 200 proposals per pool refresh; gnno 100 "
                            f"candidates, {GNNO_NEGATIVES} of them GNNO's; srns 500, the variance set per user")
    group.add_argument("--top-m", type=int, default=None,
                       help="M, the pick is uniform among the M best candidates: dnsmn, mixgcfmn, gnno (default 5; "
                            "MDCNS sweeps M over {1..5, 10, 20, ..., 90} for DNS+, {1..10, 15, ..., 50, 100} for "
                            "MixGCF+, {1..10, 15, ..., 50} for GNNO, without reporting the best)")
    return parser


def resolve_sampler_args(args):
    """Per-sampler defaults of --pns-alpha, --candidates, --top-m, --uniform-epochs; an error for a flag the
    sampler ignores."""
    owners = {"pns_alpha": ("pns",), "candidates": tuple(DEFAULT_CANDIDATES), "top_m": tuple(DEFAULT_TOP_M),
              "uniform_epochs": ("dns", "dnsmn")}
    for name, samplers in owners.items():
        if getattr(args, name) is not None and args.sampler not in samplers:
            raise RecError(f"--{name.replace('_', '-')} applies to --sampler {' or '.join(samplers)}, "
                           f"not {args.sampler}")
    if args.sampler == "pns" and args.pns_alpha is None:
        args.pns_alpha = 0.1
    if args.candidates is None:
        args.candidates = DEFAULT_CANDIDATES.get(args.sampler)
    if args.top_m is None:
        args.top_m = DEFAULT_TOP_M.get(args.sampler)
    if args.uniform_epochs is None:
        args.uniform_epochs = 0
    if args.uniform_epochs < 0:
        raise RecError("--uniform-epochs must be non-negative")
    if args.negatives < 1:
        raise RecError("--negatives must be at least 1")
    if args.sampler in MDCNS_SAMPLERS and args.negatives != 1:
        raise RecError(f"--sampler {args.sampler} draws one negative per positive; drop --negatives")
    if args.pns_alpha is not None and args.pns_alpha < 0:
        raise RecError("--pns-alpha must be non-negative")
    if args.candidates is not None and args.candidates < 1:
        raise RecError("--candidates must be at least 1")
    if args.top_m is not None and not 1 <= args.top_m <= args.candidates:
        raise RecError(f"--top-m must be between 1 and --candidates ({args.candidates})")
    if args.sampler == "gnno" and args.candidates <= GNNO_NEGATIVES:
        raise RecError(f"--candidates of gnno must exceed its {GNNO_NEGATIVES} GNNO negatives (MDCNS uses 100)")
    if args.sampler == "srns" and args.candidates < 2 * SRNS_MEMORY:
        raise RecError(f"--candidates of srns must be at least {2 * SRNS_MEMORY}, the memory and its fresh "
                       "positions (MDCNS uses 500)")
    return args


def main(argv=None):
    args = resolve_sampler_args(build_parser().parse_args(argv))
    args, split = prepare(args, args.sampler)
    model = build_backbone(args.backbone, split, args)
    positives = training_positives(split, args.device, args.exclude_held_out)
    if args.eval_only:
        return finish(args, split, model, evaluate_saved(args, split, model))
    # the sampler's own state across steps (AdaSIR, GNNO, SRNS), checkpointed by fit and brought back by --resume
    keep = (read_checkpoint(args)["keep"] if args.resume else None) or {}
    batch_loss, on_epoch_start = make_batch_loss(args, split, positives, keep)
    record = fit(args, split, model, batch_loss, keep=keep, on_epoch_start=on_epoch_start)
    return finish(args, split, model, record)


if __name__ == "__main__":
    run_cli(main)
