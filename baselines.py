"""Baselines: uniform, popularity and hard negative sampling (RNS, PNS, DNS, DNS(M,N)) on every backbone.

The samplers the two papers measure themselves against (ICPNS: RNS, PNS, HNS = DNS; MDCNS: RNS, DNS, DNS+ =
DNS(M,N), also MDCNS with all three components removed, its Table 6):

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

Every sampler is a pure tensor function (top of the file), returns k negatives per positive, takes an explicit
`torch.Generator` and runs on the model's device with no loop over users or samples. The loss is BPR or BCE
(`--loss`) over each (positive, negatives) example; the L2 penalty of general backbones is LightGCN's.

Commands (the dataset names need common.py's data registry):
    python baselines.py --sampler rns --dataset ml-1m --backbone sasrec
    python baselines.py --sampler dnsmn --dataset ml-1m --backbone sasrec --candidates 100 --top-m 5
    # ICPNS's baselines (LightGCN, RecBole ratio split, rating >= 3, 10-core, batch 4096):
    python baselines.py --sampler pns --dataset ml-1m --backbone lightgcn --split ratio --min-rating 3 \
        --k-core 10 --batch-size 4096
    # MDCNS's baselines (SASRec 2 heads, d 64, dropout 0.5, L 50, BCE, user split, NDCG@20, patience 30):
    python baselines.py --sampler dnsmn --dataset beauty --backbone sasrec --split user --loss bce --dim 64 \
        --heads 2 --dropout 0.5 --max-len 50 --batch-size 1024 --valid-metric ndcg@20 --patience 30 --epochs 300

Protocol (common.py): `--split loo` (default; leave-one-out by time), `ratio` (RecBole/ICPNS 8:1:1) or `user`
(MDCNS 70/20/10 of the users); full ranking over all items, training items masked for general backbones and
the input sequence for sequential ones (`--no-mask-history` for RecBole's sequential evaluation), pessimistic
ties; early stopping on the validation `--valid-metric`, test evaluated once. MF and LightGCN iterate the
training interactions uniformly (RecBole's convention, not LightGCN's user sampling); for SASRec and GRU4Rec
every position of a training sequence is a (prefix -> next item) example with its own negatives, which equals
prefix augmentation for a causal model (tests/test_baselines.py checks it).

Deviations:
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

import torch

from common import (AliasTable, PositiveSets, RecError, base_parser, build_backbone, evaluate_saved, finish, fit,
                    prepare, run_cli, score_items, standard_loss, training_positives, uniform_negatives,
                    weighted_negatives)

SAMPLERS = ("rns", "pns", "dns", "dnsmn")


# ----------------------------------------------------------------------------------------------------------
# Samplers: pure tensor functions. RNS is common.uniform_negatives(positives, users, k, generator): exact
# inverse-CDF over each user's non-positives, no rejection.
# ----------------------------------------------------------------------------------------------------------
def popularity_weights(train_item: torch.Tensor, n_items: int, alpha: float) -> torch.Tensor:
    """PNS's one distribution: weights (1, I+1), count(i)^α with count over the TRAINING interactions only,
    0 for the padding item and for items without a training interaction."""
    count = torch.bincount(train_item.cpu(), minlength=n_items + 1).double()               # (I+1,)
    weights = torch.where(count > 0, count.pow(alpha), torch.zeros_like(count))          # p(i) ∝ count(i)^α
    weights[0] = 0.0
    return weights.unsqueeze(0)                                                          # (1, I+1)


def pns_negatives(weights: torch.Tensor, table: AliasTable, positives: PositiveSets, users, k: int,
                  generator: torch.Generator):
    """PNS: k items per user from p(i) ∝ weights[0, i] over the user's non-positives, exactly (alias-table draws
    with the positives rejected, finished by a masked multinomial; common.weighted_negatives with one group).
    A user whose positives hold every weighted item falls back to uniform over its non-positives.
    users (B,) -> (B, k)."""
    one_group = torch.zeros(positives.n_users, dtype=torch.long, device=users.device)     # (U,) all group 0
    return weighted_negatives(weights, table, one_group, positives, users, k, generator)


def candidate_scores(queries, item_table, candidates, block: int = 2 ** 11):
    """common.score_items over blocks of about `block` candidates, with identical values: the (rows, N, D)
    gather of a block stays in cache instead of one (P, N, D) gather going through memory.
    queries (P, D), candidates (P, N) -> (P, N)."""
    rows = max(1, block // candidates.shape[1])
    return torch.cat([score_items(q, item_table, c)                                       # (rows, N) each
                      for q, c in zip(queries.split(rows), candidates.split(rows))])


@torch.no_grad()
def dns_negatives(queries, item_table, candidates, k: int):
    """DNS (Zhang et al. 2013): the highest-scored of each pool of N candidates (ties: the first in the pool).
    queries (P, D), item_table (I+1, D), candidates (P, k·N) = k pools of N consecutive items -> (P, k)."""
    P = len(candidates)
    pools = candidates.view(P, k, -1)                                                      # (P, k, N)
    scores = candidate_scores(queries.detach(), item_table.detach(), candidates).view(P, k, -1)  # (P,k,N)
    best = scores.argmax(-1, keepdim=True)                                                 # (P, k, 1)
    return pools.gather(-1, best).squeeze(-1)                                              # (P, k)


@torch.no_grad()
def dns_mn_negatives(queries, item_table, candidates, m: int, k: int, generator: torch.Generator):
    """DNS(M,N) (Shi et al. 2023), MDCNS's DNS+: one item uniformly among the M highest-scored of each pool of
    N candidates. queries (P, D), item_table (I+1, D), candidates (P, k·N) -> (P, k).

    Draw order (mdcns.py reproduces it): the caller draws the candidates first,
    `uniform_negatives(positives, users, k·N, generator)`, then this function draws the uniform pick,
    `torch.randint(0, M, (P, k), generator=generator)`, and nothing else."""
    P = len(candidates)
    pools = candidates.view(P, k, -1)                                                      # (P, k, N)
    if not 1 <= m <= pools.shape[-1]:
        raise RecError(f"DNS(M,N) needs 1 <= M <= N, got M={m}, N={pools.shape[-1]}")
    scores = candidate_scores(queries.detach(), item_table.detach(), candidates).view(P, k, -1)  # (P,k,N)
    # MDCNS Eq. (7)-(8) with the model's own scores: H = Top-M(scores), v- ~ Uniform(H)
    top = scores.topk(m, dim=-1).indices                                                   # (P, k, M) in pool
    pick = torch.randint(0, m, (P, k), generator=generator, device=candidates.device)      # (P, k) in [0, M)
    chosen = top.gather(-1, pick.unsqueeze(-1))                                            # (P, k, 1)
    return pools.gather(-1, chosen).squeeze(-1)                                            # (P, k)


def make_sampler(name: str, positives: PositiveSets, k: int, train_item=None, alpha: float = 0.1,
                 n_candidates: int = 10, m: int = 5):
    """A `negatives_fn(examples, generator) -> (P, k)` for common.standard_loss. train_item: the training
    interactions' items (PNS's counts); n_candidates: N (dns, dnsmn); m: M (dnsmn)."""
    if name == "rns":
        return lambda ex, generator: uniform_negatives(positives, ex.users, k, generator)
    if name == "pns":
        weights = popularity_weights(train_item, positives.n_items, alpha)
        table = AliasTable(weights).to(positives.key.device)
        weights = weights.to(positives.key.device)
        return lambda ex, generator: pns_negatives(weights, table, positives, ex.users, k, generator)
    if name == "dns":
        def dns(ex, generator):
            candidates = uniform_negatives(positives, ex.users, k * n_candidates, generator)   # (P, k·N)
            return dns_negatives(ex.queries, ex.item_table, candidates, k)
        return dns
    if name == "dnsmn":
        def dns_mn(ex, generator):
            # MDCNS Eq. (2): C_N uniform over the user's non-interacted items
            candidates = uniform_negatives(positives, ex.users, k * n_candidates, generator)   # (P, k·N)
            return dns_mn_negatives(ex.queries, ex.item_table, candidates, m, k, generator)
        return dns_mn
    raise RecError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------
def build_parser():
    parser = base_parser("RNS, PNS, DNS and DNS(M,N) negative sampling on MF, LightGCN, SASRec and GRU4Rec",
                         __file__)
    group = parser.add_argument_group("negative sampling")
    group.add_argument("--sampler", default="rns", choices=SAMPLERS,
                       help="rns: uniform (Rendle 2009); pns: popularity^α (Chen 2017); dns: best of N "
                            "(Zhang 2013, ICPNS's HNS); dnsmn: uniform among the top M of N (Shi 2023, MDCNS's "
                            "DNS+)")
    group.add_argument("--negatives", type=int, default=1,
                       help="k, negatives per positive (both papers' baselines use 1)")
    group.add_argument("--pns-alpha", type=float, default=None,
                       help="α in p(i) ∝ count(i)^α, pns only (default 0.1, ICPNS's recommended PNS setting; "
                            "RecBole's default is 1.0)")
    group.add_argument("--candidates", type=int, default=None,
                       help="N, uniform candidates scored per negative, dns and dnsmn only (default: dns 10, "
                            "ICPNS's HNS candidate_num; dnsmn 100, MDCNS's DNS+ N)")
    group.add_argument("--top-m", type=int, default=None,
                       help="M, dnsmn picks uniformly among the M best of N candidates, dnsmn only (default 5; "
                            "MDCNS sweeps M over {1..5, 10, 20, ..., 90} for DNS+ without reporting the best)")
    return parser


def resolve_sampler_args(args):
    """Per-sampler defaults of --pns-alpha, --candidates, --top-m; an error for a flag the sampler ignores."""
    owners = {"pns_alpha": ("pns",), "candidates": ("dns", "dnsmn"), "top_m": ("dnsmn",)}
    for name, samplers in owners.items():
        if getattr(args, name) is not None and args.sampler not in samplers:
            raise RecError(f"--{name.replace('_', '-')} applies to --sampler {' or '.join(samplers)}, "
                           f"not {args.sampler}")
    if args.sampler == "pns" and args.pns_alpha is None:
        args.pns_alpha = 0.1
    if args.sampler in ("dns", "dnsmn") and args.candidates is None:
        args.candidates = 10 if args.sampler == "dns" else 100
    if args.sampler == "dnsmn" and args.top_m is None:
        args.top_m = 5
    if args.negatives < 1:
        raise RecError("--negatives must be at least 1")
    if args.pns_alpha is not None and args.pns_alpha < 0:
        raise RecError("--pns-alpha must be non-negative")
    if args.candidates is not None and args.candidates < 1:
        raise RecError("--candidates must be at least 1")
    if args.top_m is not None and not 1 <= args.top_m <= args.candidates:
        raise RecError(f"--top-m must be between 1 and --candidates ({args.candidates})")
    return args


def main(argv=None):
    args = resolve_sampler_args(build_parser().parse_args(argv))
    args, split = prepare(args, args.sampler)
    model = build_backbone(args.backbone, split, args)
    positives = training_positives(split, args.device)
    negatives_fn = make_sampler(args.sampler, positives, args.negatives, split.train_item, args.pns_alpha,
                                args.candidates, args.top_m)
    record = evaluate_saved(args, split, model) if args.eval_only else \
        fit(args, split, model, standard_loss(negatives_fn, args.loss, args.reg_weight))
    return finish(args, split, model, record)


if __name__ == "__main__":
    run_cli(main)
