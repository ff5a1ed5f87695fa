"""ICPNS: In-Community Popularity Negative Sampling.

Chen Chen, Haobo Lin, Yuanbo Xu (Jilin University). "Towards Reliable Negative Sampling for Recommendation with
Implicit Feedback via In-Community Popularity." arXiv 2602.18759 (2026). Official code: github.com/Uli-Chen/ICPNS
(a RecBole-GNN fork; `recbole_gnn/sampler.py` ICPSampler, `recbole_gnn/trainer.py` ICPNSTrainer).

The idea. An item a user never clicked is a reliable negative only if the user was likely exposed to it, and
exposure is driven by latent user communities. ICPNS pre-trains the backbone with uniform negatives (RNS), clusters
the users into K communities from their learned representations, and counts, for each community k and item i,
c[k, i] = the members of k who interacted with i in training. It then fine-tunes the backbone drawing each
positive's negative from its user's community with p(j | u) ∝ c[k(u), j]^α over the items u has not interacted
with: items popular in your community that you skipped are "real" and "hard" negatives, and α smooths the counts.

    python icpns.py --dataset ml-1m --backbone lightgcn
    python icpns.py --dataset ml-1m --backbone mf --pretrained runs/<earlier run>/pretrained.pt --alpha 0.2
    python icpns.py --dataset ml-1m --backbone sasrec --split loo      # sequential backbones need loo or user

Evaluation protocol (the official RecBole config): rating >= 3 and 10-core on the MovieLens files (the dataset's
defaults in common.py), a per-user random 8:1:1 split (`--split ratio`, RecBole RS/RO), full ranking over all items
with the user's training items masked (training + validation items at test time), pessimistic ties, Recall, NDCG
and MRR @10 (and @20). Both stages stop early on validation NDCG@10 and keep the best state; test is evaluated
once, after fine-tuning. The pre-trained state is written to `<out-dir>/pretrained.pt` and can be reused with
`--pretrained PATH` (same dataset, split and seed: a checkpoint that does not fit is an error).

Our sampler draws from the official one's distribution at a fraction of its memory and build time. The
official code builds one Walker alias table per user (O(users x items) memory, built by a Python loop over
users); we keep one table per community (O(K x items)) and reject the user's own positives, which leaves exactly
the per-user renormalized distribution, and finish the draws of users whose positives hold most of their
community's mass by an exact masked draw instead of looping (`common.weighted_negatives`; tests/test_icpns.py
proves the equality by chi-square against the literal per-user construction).

Use ICPNS in your own project: copy the section between `# ---- core` and `# ---- end of core ----` below; it
needs only torch. With communities from any clustering of your users' representations (community (U,)):
    counts = in_community_popularity(community, train_user, train_item, K, n_items)        # c, (K, I+1)
    weights = smoothed_weights(counts, alpha=0.8)                                             # (c + ε)^α
    negatives = icpns_negatives(weights, community, users, 1, generator, draw=my_draw)       # (B, 1), for BPR
where my_draw(weights, group_of_user, users, k, generator) draws k items from p(j | u) ∝ weights[group_of_user[u],
j] over u's non-positive items (e.g. torch.multinomial on those rows with u's items and item 0 zeroed).

Defaults: the official config of the backbone (OFFICIAL_DEFAULTS; Uli-Chen/ICPNS recbole_gnn/properties/model/).
Both configs: seed 2026, Adam at `--lr` 1e-3 for pre-training (learning_rate) and a fresh Adam at `--finetune-lr`
1e-3 for fine-tuning (finetune_lr), at most 1000 pre-training epochs, validation NDCG@10 after every epoch of both
stages (eval_step 1; the trainer's fine-tuning loop validates every epoch). LightGCN (LightGCN.yaml @2ce5570):
K = 8, α = 0.8, batch 4096, pre-training patience 100, 200 fine-tuning epochs with patience 200 (no early stop).
MF (BPR.yaml @2f16859): K = 64, α = 0.1, batch 40960, pre-training patience 20, 500 fine-tuning epochs with
patience 20. NGCF (NGCF.yaml @2f16859): K = 8, α = 0.1, batch 4096, pre-training patience 100, 500 fine-tuning
epochs with patience 20. Sequential backbones have no official config: LightGCN's values, batch 128 sequences. As in the
official trainer, the best fine-tuning epoch is kept even if it validates below the pre-trained model. With these
budgets `python icpns.py` (synthetic, LightGCN) takes a few minutes on one CPU core; `python icpns.py
--pretrain-epochs 20 --epochs 20` is a quick look.

Deviations from the paper / official code (default first, then the flag for the alternative):
1. Items no community member interacted with have weight 0^α = 0 and are never drawn (official code, which
   produced the published numbers); the config's `epsilon: 0.0001` is never used there. `--epsilon ε` > 0 smooths
   the counts as (c + ε)^α so every item can be drawn. α = 0 gives 0^0 = 1: uniform (RNS), as with numpy.
2. The official code clusters RecBole's padding user 0, an untrained row near the origin, together with the real
   users. Our users are 0..U-1 without padding; `--cluster-padding-user` (default) adds a zero-vector pseudo-user
   to the k-means input and drops its label; `--no-cluster-padding-user` clusters the real users only.
3. A `--pretrained` checkpoint of another backbone, shape or training split is an error. The official trainer
   builds a ValueError for a failed load and never raises it, fine-tuning whatever is in memory.
4. [INFER] Fine-tuning starts from the best pre-training state (by validation). The official trainer resumes
   `checkpoint_path`; when that load fails it continues from the last pre-training epoch, since RecBole's fit
   does not restore the best state. No flag.
5. Negatives avoid the user's training items only. The official pipeline (graph backbones) also avoids the
   user's validation and test items: RecBole-GNN's `GeneralGraphDataset` builds `user_positive_item_dict` from the
   whole filtered data before the split (`recbole_gnn/data/dataset.py` lines 27-31 @2ce5570), the split copies
   carry it, and the sampler zeroes the weight of every item in it (`sampler.py` ~58-68, ~100-102): held-out
   labels shape training. `--exclude-held-out` reproduces that, in fine-tuning only, as there: pre-training uses
   RecBole's uniform sampler, which avoids training items only (so one pre-training serves both settings), and
   the counts c are training interactions in both.
6. A user-item pair seen twice counts once in c (the official csr_matrix sums duplicates; the MovieLens files
   have none). The padding item is never drawn (the official α = 0 and fallback paths can draw item 0).
7. Communities come from the backbone's query for the user: the user table for MF, the propagated (layer-mean)
   embedding for LightGCN, the representation of the user's training sequence for SASRec/GRU4Rec/Mamba4Rec. The
   official code calls `model.forward()` and so runs on graph backbones only.
8. k-means is scikit-learn's `KMeans` as the official code calls it (`n_init='auto'`, hence one k-means++
   seeding, up to 300 Lloyd iterations), run on the CPU and seeded with `--seed` (the official
   `random_state=2026` equals its config's seed 2026; reclustering uses seed + epoch). Other clusterers of the
   official code (minibatch, gmm, dbscan, hierarchical, spectral, faiss) are not provided.
9. `--recluster-every E` rebuilds the communities from the current model every E fine-tuning epochs (the
   paper's future work); off by default, as in the paper.
Shared with the other method files (common.py): the L2 term is LightGCN's ½‖e⁰‖²/B, not RecBole's EmbLoss of
non-squared norms; batches iterate the training interactions (RecBole's convention).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import os
import time

import numpy as np
import torch
from sklearn.cluster import KMeans

from common import (SEQUENTIAL_BACKBONES, AliasTable, PositiveSets, RecError, base_parser, build_backbone,
                    evaluate, evaluate_saved, finish, fit, from_main, is_main, load_torch_file, pad_right,
                    parser_action, prepare, pretrain_uniform, read_checkpoint, run_cli, standard_loss,
                    synthetic_defaults, training_positives, weighted_negatives)


# ---- core: copy this section into your project; it needs only torch ----
# ICPNS's stages 3-4 as functions of tensors: nothing here reads argv, globals, files or common.py; the exact
# weighted draw over a user's non-positive items is passed in. Errors are ValueErrors. The contract: users are
# 0..U-1, item ids 1..I (0 is padding, column 0 of every weight row), community (U,) holds each user's community
# 0..K-1, or -1 for a user without training interactions (never sampled). Stage 2's communities come from any
# clustering of the users' representations (the runs: `community_of_user`, scikit-learn's k-means).
def in_community_popularity(community, train_user, train_item, n_communities: int, n_items: int):
    """Stage 3: c[k, i] = number of members of community k who interacted with item i in training.
    community (U,) long; train_user, train_item (E,) -> float (K, I+1); column 0 (padding) is 0.
    A pair seen twice counts once (Deviation 6)."""
    device = community.device
    train_user, train_item = torch.as_tensor(train_user, device=device), torch.as_tensor(train_item, device=device)
    if len(train_item) and not (1 <= int(train_item.min()) and int(train_item.max()) <= n_items):
        raise ValueError(f"a training item id outside 1..{n_items}: item ids run 1..I and 0 is padding")
    if len(train_user) and not (0 <= int(train_user.min()) and int(train_user.max()) < len(community)):
        raise ValueError(f"a training user id outside 0..{len(community) - 1} (community has one entry per user)")
    pairs = torch.unique(train_user * (n_items + 1) + train_item)                      # distinct (u, i)
    users, items = pairs // (n_items + 1), pairs % (n_items + 1)
    counts = torch.zeros(n_communities, n_items + 1, dtype=torch.float64, device=device)
    counts.index_put_((community[users], items), torch.ones(len(pairs), dtype=torch.float64, device=device),
                      accumulate=True)
    return counts                                                                        # (K, I+1)


def smoothed_weights(counts, alpha: float, epsilon: float = 0.0):
    """w[k, i] = (c[k, i] + ε)^α, the unnormalized sampling weights; padding column 0 is set to 0.
    With ε = 0 (official), items of count 0 get weight 0 when α > 0 and are never drawn, while α = 0 gives
    0^0 = 1 for every item: uniform sampling (torch.pow follows numpy here)."""
    weights = (counts + epsilon).pow(alpha)                                              # (K, I+1)
    weights[:, 0] = 0.0
    return weights


def icpns_negatives(weights, community, users, k: int, generator: torch.Generator, *, draw):
    """Stage 4's negatives: p(j | u) = w[k(u), j] / sum_{j' not in I_u^+} w[k(u), j'] for j not in I_u^+, uniform
    over the user's non-positives when w vanishes on all of them (the official fallback); k independent draws.
    weights (K, I+1) (`smoothed_weights`), community (U,), users (B,) -> (B, k).
    draw(weights, group_of_user, users, k, generator) -> (B, k) draws exactly that law, p(j | u) ∝
    weights[group_of_user[u], j] over u's non-positives: in the runs common.py's `weighted_negatives` (alias
    tables, the positives rejected, an exact masked finish); a masked torch.multinomial is the same law."""
    if bool((community[users] < 0).any()):
        raise ValueError("ICPNS was asked for a negative of a user without training interactions")
    return draw(weights, community, users, k, generator)
# ---- end of core ----


# ----------------------------------------------------------------------------------------------------------
# Stage 2 (k-means) and the sampler as the runs use it
# ----------------------------------------------------------------------------------------------------------
def community_of_user(representations, n_communities: int, seed: int, cluster_padding_user: bool = True):
    """Stage 2: the community of each user, k-means on the users' representations (N, D) -> labels (N,) on their
    device. scikit-learn's KMeans as the official `cluster_users` calls it: k-means++ seeding, n_init='auto'
    (one seeding for k-means++), at most 300 Lloyd iterations (sklearn's defaults), on the CPU; random_state is
    our `seed` (the official 2026 equals its config's seed).

    cluster_padding_user: add a zero-vector pseudo-user to the k-means input, as the official code clusters
    RecBole's (untrained) padding user 0 with the others (Deviation 2); its label is dropped."""
    x = representations.detach().cpu().numpy()                                           # (N, D)
    if cluster_padding_user:
        x = np.concatenate([x, np.zeros((1, x.shape[1]), dtype=x.dtype)])                # (N+1, D)
    if n_communities > len(x):
        raise RecError(f"cannot form {n_communities} communities from {len(x)} users; lower --communities")
    kmeans = KMeans(n_clusters=n_communities, init="k-means++", n_init="auto", max_iter=300, random_state=seed)
    labels = torch.from_numpy(kmeans.fit_predict(x).astype(np.int64))
    return labels[:len(representations)].to(representations.device)


class ICPNSampler:
    """Stage 4's sampler as the runs use it: `icpns_negatives` with common.py's exact draw. One alias table per
    community, the user's positives rejected, unfinished draws completed by an exact masked draw
    (`common.weighted_negatives`): the same law as the official per-user tables in O(K x I) memory.

    community: (U,) long on the sampling device, -1 for users without training interactions (never sampled).
    positives: the items no negative may be (default: the training items; `training_positives(split, device,
    exclude_held_out=True)` adds the held-out ones, as the official pipeline does: Deviation 5).
    """

    def __init__(self, community, train_user, train_item, n_items: int, n_communities: int, alpha: float,
                 epsilon: float = 0.0, positives: PositiveSets | None = None):
        device = community.device
        self.community = community
        if positives is None:
            positives = PositiveSets(train_user, train_item, len(community), n_items, device)
        self.positives = positives
        self.counts = in_community_popularity(community, train_user, train_item, n_communities, n_items)
        self.weights = smoothed_weights(self.counts, alpha, epsilon)                    # (K, I+1)
        empty = self.weights.sum(1) == 0
        # A community without interactions (e.g. the padding pseudo-user's own) has no member to sample for;
        # a uniform row only keeps its alias table well defined.
        self.weights[empty, 1:] = 1.0
        self.table = AliasTable(self.weights).to(device)

    def draw(self, weights, group_of_user, users, k: int, generator: torch.Generator):
        """icpns_negatives' `draw`: common.weighted_negatives over this sampler's alias tables (of `weights`)."""
        return weighted_negatives(weights, self.table, group_of_user, self.positives, users, k, generator)

    def sample(self, users, k: int, generator: torch.Generator):
        """users (B,) on the sampler's device -> (B, k) negatives, independent draws."""
        return icpns_negatives(self.weights, self.community, users, k, generator, draw=self.draw)


# ----------------------------------------------------------------------------------------------------------
# Representations, checkpoints, the two stages
# ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def user_representations(model, split, device, batch_size: int = 1024):
    """The backbone's query for each user with training interactions (Deviation 7), in eval mode.
    Returns (users (N,), representations (N, D)) on `device`.

    Note: for sequential backbones this is the state after the user's whole training sequence (its last L
    items), the query the model would recommend the user's next item from: a community groups users by where
    they are. baselines.user_queries differs on purpose: AdaSIR's and SRNS's per-user state scores negatives
    for training targets, so it takes the query of the user's last training target (the items before it). The
    two coincide for MF, LightGCN and NGCF (model(users)); merging them would move ICPNS's or those baselines'
    numbers."""
    was_training = model.training
    model.eval()
    length = torch.bincount(split.train_user, minlength=split.n_users)                 # (U,)
    users = (length > 0).nonzero().squeeze(1)
    if not model.sequential:
        representations, _ = model(users.to(device))                                    # MF table / LightGCN mean
    else:
        # each user's training items in chronological order (train_user is sorted), the last L of them
        per_user = np.split(split.train_item.numpy(), length.cumsum(0)[:-1].numpy())
        sequences = pad_right([per_user[u][-split.max_len:] for u in users.tolist()], split.max_len)  # (N, L)
        representations = torch.cat([model(sequences[s:s + batch_size].to(device))[0]
                                     for s in range(0, len(sequences), batch_size)])   # (N, D)
    model.train(was_training)
    return users.to(device), representations


def training_fingerprint(split) -> str:
    """A hash of the training interactions: a checkpoint pre-trained on another split would have seen this
    split's validation or test interactions."""
    digest = hashlib.sha256()
    for tensor in (split.train_user, split.train_item):
        digest.update(tensor.numpy().tobytes())
    digest.update(f"{split.n_users},{split.n_items}".encode())
    return digest.hexdigest()[:16]


def save_pretrained(path: str, model, args, split, record: dict):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save({"backbone": args.backbone, "dataset": args.dataset, "split": args.split, "seed": args.seed,
                "fingerprint": training_fingerprint(split), "record": record,
                "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}, path)


def load_pretrained(path: str, model, args, split) -> dict:
    """Load a checkpoint of `save_pretrained` into `model`, or raise RecError saying what does not fit."""
    checkpoint = load_torch_file(path, f"--pretrained {path}", "checkpoint")
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise RecError(f"--pretrained {path} is not an icpns.py checkpoint (no state_dict)")
    if checkpoint.get("backbone") != args.backbone:
        raise RecError(f"--pretrained {path} holds a {checkpoint.get('backbone')} backbone, not {args.backbone}")
    state, own = checkpoint["state_dict"], model.state_dict()
    problems = [f"missing {name}" for name in own.keys() - state.keys()]
    problems += [f"unexpected {name}" for name in state.keys() - own.keys()]
    problems += [f"{name} has shape {tuple(state[name].shape)}, the model {tuple(own[name].shape)}"
                 for name in own.keys() & state.keys() if state[name].shape != own[name].shape]
    if problems:
        raise RecError(f"--pretrained {path} does not fit this {args.backbone}: " + "; ".join(sorted(problems)))
    if checkpoint.get("fingerprint") != training_fingerprint(split):
        raise RecError(f"--pretrained {path} was pre-trained on other training interactions (dataset "
                       f"{checkpoint.get('dataset')}, split {checkpoint.get('split')}, seed {checkpoint.get('seed')}); "
                       "it may have trained on this split's validation or test items. Use the same --dataset, "
                       "filters, --split and --seed")
    model.load_state_dict(state)
    return checkpoint.get("record", {})


def build_sampler(model, split, args, seed: int, positives: PositiveSets):
    """Stages 2-3 from the model's current state: communities (k-means seeded with `seed`), counts, the sampler
    avoiding `positives`. Returns (sampler, info)."""
    start = time.perf_counter()
    device = torch.device(args.device)
    users, representations = user_representations(model, split, device, args.eval_batch_size)
    # under torchrun k-means runs on rank 0 and every process receives its labels
    labels = from_main(community_of_user, representations, args.communities, seed,
                       args.cluster_padding_user).to(device)
    community = torch.full((split.n_users,), -1, dtype=torch.long, device=device)
    community[users] = labels
    sampler = ICPNSampler(community, split.train_user, split.train_item, split.n_items, args.communities,
                          args.alpha, args.epsilon, positives)
    sizes = torch.bincount(labels, minlength=args.communities).tolist()
    return sampler, {"sizes": sizes, "seconds": time.perf_counter() - start}


# The official configs (Uli-Chen/ICPNS recbole_gnn/properties/model/): LightGCN.yaml @2ce5570 and, for MF, BPR.yaml
# @2f16859 (num_clusters, popularity_alpha, train_batch_size, stopping_step, finetune_epochs, stopping_step_ft).
# Both also set learning_rate = finetune_lr = 1e-3, epochs 1000, eval_step 1 and seed 2026 (build_parser).
# Sequential backbones have no official config: LightGCN's values, with common.py's batch of 128 sequences.
OFFICIAL_DEFAULTS = {
    "lightgcn": dict(communities=8, alpha=0.8, batch_size=4096, pretrain_patience=100, epochs=200, patience=200),
    "mf": dict(communities=64, alpha=0.1, batch_size=40960, pretrain_patience=20, epochs=500, patience=20),
    "ngcf": dict(communities=8, alpha=0.1, batch_size=4096, pretrain_patience=100, epochs=500, patience=20),  # NGCF.yaml
}


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("ICPNS: pre-train with uniform negatives, cluster users into communities, fine-tune "
                         "with negatives drawn by in-community popularity (arXiv 2602.18759)", __file__)
    parser.epilog = ("Defaults left at None are the official config's for the backbone: lightgcn (LightGCN.yaml): "
                     "--communities 8 --alpha 0.8 --batch-size 4096 --pretrain-patience 100 --epochs 200 "
                     "--patience 200 (no early stop); mf (BPR.yaml): --communities 64 --alpha 0.1 --batch-size 40960 "
                     "--pretrain-patience 20 --epochs 500 --patience 20; ngcf (NGCF.yaml): --communities 8 --alpha 0.1 "
                     "--batch-size 4096 --pretrain-patience 100 --epochs 500 --patience 20; sequential backbones (no "
                     "official config): "
                     "LightGCN's, batch 128 sequences. All configs: --lr and --finetune-lr 1e-3, --pretrain-epochs "
                     "1000, validation every epoch (--eval-every 1) in both stages, seed 2026. --exclude-held-out "
                     "applies to fine-tuning only, as in the official pipeline (Deviation 5).")
    # Official configs: ratio split, NDCG@10 for early stopping, learning_rate 1e-3, seed 2026
    parser.set_defaults(split="ratio", backbone="lightgcn", valid_metric="ndcg@10", ks="10,20", epochs=None,
                        lr=1e-3, patience=None, seed=2026)
    parser_action(parser, "batch_size").help = (
        "examples per step: training interactions for general backbones (default: the backbone's official "
        "train_batch_size, below), sequences for sequential backbones (default 128)")
    icpns = parser.add_argument_group("ICPNS")
    icpns.add_argument("--communities", type=int, default=None,
                       help="K, the number of user communities (official num_clusters: LightGCN 8, MF 64; its "
                            "other per-model configs 8-32)")
    icpns.add_argument("--alpha", type=float, default=None,
                       help="α, smoothing exponent of the in-community popularity, weights c^α (official "
                            "popularity_alpha: LightGCN 0.8, MF 0.1, other backbones 0.1-0.4); 0 = uniform (RNS)")
    icpns.add_argument("--epsilon", type=float, default=0.0,
                       help="ε added to every count before smoothing, (c+ε)^α, so items no community member "
                            "interacted with can be drawn; 0 = the official code (its epsilon key is unused)")
    icpns.add_argument("--cluster-padding-user", default=True, action=argparse.BooleanOptionalAction,
                       help="add a zero-vector pseudo-user to k-means, like the official code's padding user 0")
    icpns.add_argument("--recluster-every", type=int, default=0, metavar="E",
                       help="rebuild the communities from the current model every E fine-tuning epochs (the "
                            "paper's future work); 0 = never, as in the paper")
    icpns.add_argument("--finetune-lr", type=float, default=1e-3,
                       help="learning rate of fine-tuning's fresh Adam (official finetune_lr 1e-3, LightGCN.yaml "
                            "and BPR.yaml); --lr is pre-training's (official learning_rate 1e-3)")
    pre = parser.add_argument_group("ICPNS stage 1: pre-training with uniform negatives (RNS)")
    pre.add_argument("--pretrain-epochs", type=int, default=1000,
                     help="maximum pre-training epochs (official epochs 1000); --epochs is the fine-tuning budget "
                          "(official finetune_epochs: LightGCN 200, MF 500)")
    pre.add_argument("--pretrain-patience", type=int, default=None,
                     help="pre-training stops after this many validations without improvement (official "
                          "stopping_step: LightGCN 100, MF 20); --patience is fine-tuning's (official "
                          "stopping_step_ft: LightGCN 200, MF 20)")
    pre.add_argument("--pretrained", default=None, metavar="PATH",
                     help="skip pre-training and load this checkpoint (an earlier run's <out-dir>/pretrained.pt, "
                          "same dataset, split and seed); one that does not fit is an error")
    synthetic_defaults(parser, pretrain_epochs=10)
    return parser


def resolve_official_defaults(args):
    """Fill the flags left at None with the backbone's official value (OFFICIAL_DEFAULTS)."""
    sequential = args.backbone in SEQUENTIAL_BACKBONES
    for name, value in OFFICIAL_DEFAULTS["lightgcn" if sequential else args.backbone].items():
        if getattr(args, name) is None and not (sequential and name == "batch_size"):
            setattr(args, name, value)
    return args


def main(argv=None):
    args = resolve_official_defaults(build_parser().parse_args(argv))
    for name in ("communities", "pretrain_epochs"):
        if getattr(args, name) < 1:
            raise RecError(f"--{name.replace('_', '-')} must be at least 1")
    if args.alpha < 0 or args.epsilon < 0 or args.recluster_every < 0 or args.pretrain_patience < 0:
        raise RecError("--alpha, --epsilon, --recluster-every and --pretrain-patience must be non-negative")
    if args.finetune_lr <= 0:
        raise RecError("--finetune-lr must be positive")
    if args.pretrained and not os.path.isfile(args.pretrained):
        raise RecError(f"--pretrained {args.pretrained}: no such file")
    args, split = prepare(args, "icpns")
    clustered = len(torch.unique(split.train_user)) + args.cluster_padding_user   # the points k-means clusters
    if args.communities > clustered:
        raise RecError(f"--communities {args.communities} exceeds the {clustered} users k-means clusters (users with "
                       f"training interactions{', plus the padding pseudo-user' if args.cluster_padding_user else ''}"
                       "); lower --communities")
    model = build_backbone(args.backbone, split, args).to(args.device)
    # what fine-tuning's negatives avoid: training items, + held-out items with --exclude-held-out (Deviation 5)
    excluded = training_positives(split, args.device, args.exclude_held_out)
    if args.eval_only:
        return finish(args, split, model, evaluate_saved(args, split, model))
    # --resume in fine-tuning: stages 1-3 are done, their records and the communities in use are in the checkpoint
    resumed = read_checkpoint(args) if args.resume else None
    keep = resumed["keep"] if resumed and resumed["stage"] == "finetune" else None

    # Stage 1: pre-train with uniform negatives (or load), keep the best state by validation
    if keep:
        pretrain = keep["pretrain"]
    elif args.pretrained:
        pretrain = {"loaded_from": os.path.abspath(args.pretrained),
                    "record": load_pretrained(args.pretrained, model, args, split),
                    "valid": evaluate(model, split.valid, args.ks, args.eval_batch_size)}
        print(f"loaded {args.pretrained}: valid {args.valid_metric} {pretrain['valid'][args.valid_metric]:.4f}")
    else:
        stage_args = copy.copy(args)
        stage_args.epochs, stage_args.patience = args.pretrain_epochs, args.pretrain_patience
        pretrain = {"record": pretrain_uniform(stage_args, split, model, stage="pretrain", epochs_after=args.epochs)}
        path = os.path.join(args.out_dir, "pretrained.pt")
        if is_main():   # one writer under torchrun
            save_pretrained(path, model, args, split, pretrain["record"])
        print(f"wrote {path}")

    # Stages 2-3: communities from the pre-trained representations, in-community popularity
    if keep:
        sampler = ICPNSampler(keep["community"].to(args.device), split.train_user, split.train_item, split.n_items,
                              args.communities, args.alpha, args.epsilon, excluded)
        communities = keep["communities"]
    else:
        sampler, communities = build_sampler(model, split, args, args.seed, excluded)
    print(f"{args.communities} communities in {communities['seconds']:.1f}s, sizes {communities['sizes']}")
    # what fine-tuning's checkpoints keep (fit saves it): the communities in use
    keep = keep or {"pretrain": pretrain, "communities": communities, "reclusterings": [],
                    "community": sampler.community}
    reclusterings = keep["reclusterings"]

    # Stage 4: fine-tune with a fresh Adam (fit makes one) at --finetune-lr, one ICPNS negative per positive
    def negatives(ex, generator):
        return sampler.sample(ex.users, 1, generator)                                  # (P, 1)

    def recluster(model, epoch, generator):   # --recluster-every R: before fine-tuning epochs R + 1, 2R + 1, ...
        nonlocal sampler
        if args.recluster_every and epoch > 1 and (epoch - 1) % args.recluster_every == 0:
            sampler, info = build_sampler(model, split, args, args.seed + epoch - 1, excluded)
            keep["community"] = sampler.community
            reclusterings.append({"before_epoch": epoch, **info})
            print(f"reclustered before fine-tuning epoch {epoch}: sizes {info['sizes']}")

    finetune_args = copy.copy(args)
    finetune_args.lr = args.finetune_lr
    record = fit(finetune_args, split, model, standard_loss(negatives, args.loss, args.reg_weight), stage="finetune",
                 keep=keep, on_epoch_start=recluster)
    return finish(args, split, model, record, extra={
        "pretrain": pretrain, "communities": communities, "reclusterings": reclusterings})


if __name__ == "__main__":
    run_cli(main)
