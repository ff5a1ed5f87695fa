"""Shared plumbing for the negative-sampling reference implementations.

What no paper owns lives here, in the order a run uses it:

1. Interactions: one in-memory form (user, item, position in the user's history), items 1..n, 0 = padding.
2. Data: the synthetic generator (the offline default) and the real datasets (registry, download, parsers,
   filtering, cache).
3. Splits: `loo` (leave-one-out by time), `ratio` (per-user random 8:1:1, RecBole's rounding), `user` (MDCNS:
   70/20/10 of the users).
4. Backbones: MF, LightGCN, SASRec, GRU4Rec, Mamba4Rec, all behind one scoring interface:
   `queries, item_table = model(inputs)`; the score of an item is the dot product of the two.
5. Negative-sampling plumbing every method shares: users' training positives, exact uniform sampling of
   non-interacted items (RNS itself), candidate pools, alias tables with positives excluded.
6. Full-ranking evaluation and `ranking_metrics` (RecBole's formulas, pessimistic ties).
7. The training loop (`fit`), the shared command line and `results.json`.

Copy this file together with one method file (`baselines.py`, `icpns.py`, `mdcns.py`) into another project.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm


class RecError(ValueError):
    """A problem with the user's input or settings; the command line prints it as one line, no traceback."""


# ----------------------------------------------------------------------------------------------------------
# 1. Interactions
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Interactions:
    """Implicit feedback, sorted by (user, position).

    user:     int64 (E,), 0..n_users-1
    item:     int64 (E,), 1..n_items (0 is the padding item of every sequence and score table)
    position: int64 (E,), 0-based position in the user's chronological history
    """

    user: np.ndarray
    item: np.ndarray
    position: np.ndarray
    n_users: int
    n_items: int
    name: str = "custom"
    source: str = "arrays"

    @classmethod
    def from_raw(cls, raw_user, raw_item, order=None, name="custom", source="arrays") -> "Interactions":
        """Remap arbitrary user/item ids to 0..U-1 and 1..I (in order of first appearance) and sort each
        user's interactions by `order` (timestamps, or file order when None) with a stable sort, so
        interactions with equal timestamps keep their file order."""
        raw_user, raw_item = np.asarray(raw_user), np.asarray(raw_item)
        if len(raw_user) == 0:
            raise RecError(f"dataset {name!r} has no interactions")
        if len(raw_user) != len(raw_item):
            raise RecError("user and item arrays differ in length")
        order = np.arange(len(raw_user)) if order is None else np.asarray(order)
        _, first_user, user = np.unique(raw_user, return_index=True, return_inverse=True)
        _, first_item, item = np.unique(raw_item, return_index=True, return_inverse=True)
        user = np.argsort(np.argsort(first_user, kind="stable"), kind="stable")[user]  # ids by first appearance
        item = np.argsort(np.argsort(first_item, kind="stable"), kind="stable")[item] + 1
        sort = np.lexsort((np.arange(len(user)), order, user))  # by user, then order, then file row
        user, item = user[sort].astype(np.int64), item[sort].astype(np.int64)
        return cls(user, item, positions_within_users(user), int(user.max()) + 1, int(item.max()), name, source)

    def statistics(self) -> dict:
        n = len(self.user)
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n,
            "density": n / (self.n_users * self.n_items),
            "mean_sequence_length": n / self.n_users,
        }

    def describe(self) -> str:
        s = self.statistics()
        return (f"{self.name}: {s['users']:,} users, {s['items']:,} items, {s['interactions']:,} interactions, "
                f"density {s['density']:.4%}, mean sequence length {s['mean_sequence_length']:.1f} "
                f"(from {self.source})")


def positions_within_users(user: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal user ids (`user` sorted)."""
    starts = np.r_[0, np.flatnonzero(np.diff(user)) + 1]
    lengths = np.diff(np.r_[starts, len(user)])
    return np.arange(len(user)) - np.repeat(starts, lengths)


def make_synthetic(seed: int = 0, n_users: int = 600, n_items: int = 300, n_communities: int = 6,
                   n_topics: int = 12, mean_length: int = 20, follow_prob: float = 0.5) -> Interactions:
    """Synthetic sequences with the structure the methods exploit, generated from `seed`.

    - latent user communities: each community prefers a few topics (Dirichlet(0.1) over `n_topics`);
    - long-tailed item popularity: Zipf weights within each topic;
    - sequential dependency: with probability `follow_prob` the next item is the current item's fixed
      successor, otherwise a fresh item from the user's community topics.
    A user never repeats an item (the next draw is retried among the unseen). A trained model beats
    popularity on it by a wide margin (tests/test_common.py checks it).
    """
    rng = np.random.default_rng(seed)
    topic_of_item = rng.integers(0, n_topics, n_items)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    rng.shuffle(popularity)
    topic_prefs = rng.dirichlet(np.full(n_topics, 0.1), n_communities)             # (C, T)
    community = rng.integers(0, n_communities, n_users)
    item_weight = topic_prefs[community][:, topic_of_item] * popularity             # (U, I)
    successor = rng.permutation(n_items)
    lengths = np.clip(rng.geometric(1.0 / (mean_length - 4), n_users) + 4, 5, n_items // 2)

    seen = np.zeros((n_users, n_items), dtype=bool)
    sequences = np.full((n_users, lengths.max()), -1)
    current = np.full(n_users, -1)
    for t in range(lengths.max()):  # vectorised over users; a loop over time steps only
        active = np.flatnonzero(lengths > t)
        weights = item_weight[active] * ~seen[active]
        cumulative = np.cumsum(weights, axis=1)
        fresh = (cumulative < rng.random(len(active))[:, None] * cumulative[:, -1:]).sum(1)
        follow = successor[current[active]]
        use_follow = (current[active] >= 0) & (rng.random(len(active)) < follow_prob) & \
            ~seen[active, follow]
        chosen = np.where(use_follow, follow, np.minimum(fresh, n_items - 1))
        sequences[active, t] = chosen
        seen[active, chosen] = True
        current[active] = chosen
    user = np.repeat(np.arange(n_users), lengths)
    item = sequences[sequences >= 0]
    return Interactions.from_raw(user, item, name="synthetic", source=f"make_synthetic(seed={seed})")


# ----------------------------------------------------------------------------------------------------------
# 3. Splits
# ----------------------------------------------------------------------------------------------------------
SPLITS = ("loo", "ratio", "user")


@dataclass
class EvalRows:
    """One evaluation part (valid or test): a row per evaluated user or sequence.

    query:     (R,) user ids for general backbones, or (R, L) right-padded input sequences
    targets:   CSR (target_ptr (R+1,), target_items) the row's positives
    masked:    CSR (masked_ptr (R+1,), masked_items) items scored -inf (history); targets are never masked
    """

    query: torch.Tensor
    target_ptr: torch.Tensor
    target_items: torch.Tensor
    masked_ptr: torch.Tensor
    masked_items: torch.Tensor

    def __len__(self):
        return len(self.target_ptr) - 1


@dataclass
class SplitData:
    """A dataset split under one protocol, ready for training and evaluation.

    train_user, train_item: training interactions, chronological per user (general backbones iterate them)
    train_sequences:        (S, L) right-padded inputs, train_targets (S, L) next items (0 = no target),
                            train_sequence_user (S,): every position of a training sequence is an example
    valid, test:            EvalRows
    """

    protocol: str
    n_users: int
    n_items: int
    max_len: int
    sequential: bool
    train_user: torch.Tensor
    train_item: torch.Tensor
    train_sequences: torch.Tensor
    train_targets: torch.Tensor
    train_sequence_user: torch.Tensor
    valid: EvalRows
    test: EvalRows
    statistics: dict = field(default_factory=dict)


def split_dataset(data: Interactions, protocol: str, seed: int, sequential: bool, max_len: int = 50,
                  mask_history: bool = True) -> SplitData:
    """Split `data` by `protocol` and build training examples for a general or a sequential backbone.

    loo   (SASRec, most sequential papers, RecBole `LS`): per user, last item -> test, second-to-last ->
          valid, the rest -> train; a user with 2 items gives train + test, with 1 item train only
          (RecBole's `legal = min(2, n - 1)`).
    ratio (ICPNS, RecBole default `RS` 8:1:1 `RO`): each user's items in a seeded random order, valid and
          test get int(0.1 n) items each, plus one taken from train when 0 < 0.1 n < 1 while train keeps > 1
          (RecBole `_calcu_split_ids`): n = 5 -> 3/1/1, n = 15 -> 13/1/1. General backbones only.
    user  (MDCNS): users shuffled by the seed, int(0.7 U) train, int(0.2 U) valid, the rest test; valid and
          test users predict their last item from the rest; training users contribute every prefix.
          Sequential backbones only (valid/test users are unseen in training).

    Masking at evaluation: general backbones mask the user's training items (training + validation items at
    test time), RecBole's rule. Sequential backbones mask the input sequence when `mask_history` (S3-Rec/MDCNS)
    and nothing but padding otherwise (RecBole's sequential evaluation). Targets are never masked.
    """
    if protocol not in SPLITS:
        raise RecError(f"unknown split {protocol!r}; choose one of {', '.join(SPLITS)}")
    if protocol == "ratio" and sequential:
        raise RecError("--split ratio is for general backbones (mf, lightgcn); use --split loo or user")
    if protocol == "user" and not sequential:
        raise RecError("--split user evaluates users unseen in training, which needs a sequential backbone "
                       "(sasrec, gru4rec, mamba4rec); use --split loo or ratio")
    rng = np.random.default_rng(seed)
    user, item, n_users = data.user, data.item, data.n_users
    length = np.bincount(user, minlength=n_users)
    start = np.r_[0, np.cumsum(length)[:-1]]
    position = data.position
    # part of each interaction: 0 train, 1 valid, 2 test
    if protocol == "loo":
        legal = np.minimum(2, length - 1)[user]
        from_end = length[user] - 1 - position
        part = np.where(from_end < legal, 2 - from_end, 0)
    elif protocol == "ratio":
        n_valid = np.array([int(0.1 * n) for n in range(length.max() + 1)])
        n_test = n_valid.copy()
        n_train = np.arange(length.max() + 1) - n_valid - n_test
        for counts, ratio in ((n_valid, 0.1), (n_test, 0.1)):   # RecBole's rounding, valid first
            bump = (n_train > 1) & (0 < ratio * np.arange(length.max() + 1)) & \
                (ratio * np.arange(length.max() + 1) < 1)
            counts += bump
            n_train -= bump
        rank = np.argsort(np.lexsort((rng.random(len(user)), user)), kind="stable") - start[user]  # random rank
        n_tr, n_va = n_train[length][user], n_valid[length][user]
        part = np.where(rank < n_tr, 0, np.where(rank < n_tr + n_va, 1, 2))
    else:
        order = rng.permutation(n_users)
        n_train_users, n_valid_users = int(0.7 * n_users), int(0.2 * n_users)
        user_part = np.empty(n_users, dtype=np.int64)
        user_part[order] = np.repeat([0, 1, 2], [n_train_users, n_valid_users,
                                                 n_users - n_train_users - n_valid_users])
        part = user_part[user]

    train = part == 0
    train_user, train_item = torch.from_numpy(user[train]), torch.from_numpy(item[train])
    if sequential:
        sequences, targets, sequence_user = training_windows(user[train], item[train], max_len)
    else:
        sequences = targets = torch.zeros(0, max_len, dtype=torch.long)
        sequence_user = torch.zeros(0, dtype=torch.long)

    def rows(p):
        if protocol == "user":   # the last item of each user of part p, predicted from the rest
            users = np.flatnonzero((user_part == p) & (length >= 2))
            inputs = [item[start[u]:start[u] + length[u] - 1] for u in users]
            targets_ = [item[start[u] + length[u] - 1:start[u] + length[u]] for u in users]
        else:
            users = np.unique(user[part == p])
            known = (part < p) | train          # everything before this part (train, + valid at test)
            inputs = np.split(item[known], np.cumsum(np.bincount(user[known], minlength=n_users))[:-1])
            targets_ = np.split(item[part == p], np.cumsum(np.bincount(user[part == p],
                                                                        minlength=n_users))[:-1])
            inputs, targets_ = [inputs[u] for u in users], [targets_[u] for u in users]
        if sequential:
            query = pad_right([s[-max_len:] for s in inputs], max_len)
            masked = [np.setdiff1d(s, t) for s, t in zip(inputs, targets_)] if mask_history else \
                [np.zeros(0, dtype=np.int64)] * len(users)
        else:
            query = torch.from_numpy(users.astype(np.int64))
            masked = [np.setdiff1d(s, t) for s, t in zip(inputs, targets_)]
        target_ptr, target_items = to_csr([np.unique(t) for t in targets_])
        masked_ptr, masked_items = to_csr(masked)
        return EvalRows(query, target_ptr, target_items, masked_ptr, masked_items)

    split = SplitData(protocol, n_users, data.n_items, max_len, sequential, train_user, train_item,
                      sequences, targets, sequence_user, rows(1), rows(2))
    split.statistics = {**data.statistics(), "protocol": protocol, "train_interactions": int(train.sum()),
                        "valid_rows": len(split.valid), "test_rows": len(split.test),
                        "train_examples": int((targets > 0).sum()) if sequential else int(train.sum())}
    if len(split.valid) == 0 or len(split.test) == 0:
        raise RecError(f"the {protocol} split left no validation or test rows: the dataset is too small "
                       f"({data.describe()})")
    return split


def training_windows(user: np.ndarray, item: np.ndarray, max_len: int):
    """Every position of every training sequence as a (prefix -> next item) example, in windows of `max_len`.

    A user's sequence i_1..i_n gives targets i_2..i_n. Sequences longer than max_len + 1 are cut, from the end,
    into windows whose targets do not overlap; the first target of an earlier window sees a shorter prefix
    than RecBole's `MAX_ITEM_LIST_LENGTH` augmentation would give it (documented in the README).
    Returns right-padded inputs (S, L), targets (S, L) with 0 where there is no target, and the user (S,).
    """
    length = np.bincount(user)
    start = np.r_[0, np.cumsum(length)[:-1]]
    n_targets = np.maximum(length - 1, 0)
    n_windows = -(-n_targets // max_len)                          # ceil
    window_user = np.repeat(np.arange(len(length)), n_windows)
    window_rank = positions_within_users(window_user)             # 0 = the window ending at the sequence end
    end = start[window_user] + length[window_user] - window_rank * max_len        # exclusive end of targets
    first_target = np.maximum(end - max_len, start[window_user] + 1)
    offsets = np.arange(max_len)
    target_index = first_target[:, None] + offsets                                 # (S, L)
    valid = target_index < end[:, None]
    safe = np.where(valid, target_index, 0)
    targets = np.where(valid, item[safe], 0)
    inputs = np.where(valid, item[safe - 1], 0)
    return torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(window_user)


def pad_right(sequences, length: int) -> torch.Tensor:
    out = np.zeros((len(sequences), length), dtype=np.int64)
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    if len(sequences):
        mask = np.arange(length) < lengths[:, None]
        out[mask] = np.concatenate(sequences) if lengths.sum() else []
    return torch.from_numpy(out)


def to_csr(lists):
    lengths = np.array([len(x) for x in lists], dtype=np.int64)
    ptr = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    values = np.concatenate(lists).astype(np.int64) if lengths.sum() else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(ptr), torch.from_numpy(values)


# ----------------------------------------------------------------------------------------------------------
# 4. Backbones: one scoring interface
#    queries, item_table = model(inputs)
#      general backbones:    inputs = user ids (B,)              -> queries (B, D)
#      sequential backbones: inputs = right-padded items (B, L)  -> queries (B, D) at each sequence's last item,
#                            or (B, L, D) at every position with every_position=True
#      item_table: (n_items + 1, D), row 0 is padding; score(query, item) = query . item_table[item]
# ----------------------------------------------------------------------------------------------------------
BACKBONES = ("mf", "lightgcn", "sasrec", "gru4rec", "mamba4rec")
SEQUENTIAL_BACKBONES = ("sasrec", "gru4rec", "mamba4rec")


class MF(nn.Module):
    """BPR-MF (Rendle et al., UAI 2009): a user table and an item table."""

    sequential = False

    def __init__(self, n_users: int, n_items: int, dim: int):
        super().__init__()
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=0)
        nn.init.xavier_normal_(self.user_embedding.weight)   # RecBole BPR's init
        nn.init.xavier_normal_(self.item_embedding.weight[1:])

    def forward(self, users):
        return self.user_embedding(users), self.item_embedding.weight   # (B, D), (I+1, D)

    def ego_embeddings(self, users, items):
        """The layer-0 embeddings the L2 penalty applies to (LightGCN paper, Eq. 15)."""
        return self.user_embedding(users), self.item_embedding(items)


class LightGCN(nn.Module):
    """LightGCN (He et al., SIGIR 2020): E^(k+1) = D^-1/2 A D^-1/2 E^(k), final = mean of E^(0..K).

    The normalized adjacency of the user-item training graph is built directly as a sparse COO tensor
    (never dense: LightGCN-PyTorch#1, #15). The padding item is an isolated node.
    """

    sequential = False

    def __init__(self, n_users: int, n_items: int, dim: int, n_layers: int, train_user, train_item):
        super().__init__()
        self.n_users, self.n_layers = n_users, n_layers
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items + 1, dim)
        nn.init.xavier_uniform_(self.user_embedding.weight)   # RecBole / ICPNS init
        nn.init.xavier_uniform_(self.item_embedding.weight)
        self.register_buffer("adjacency", normalized_adjacency(n_users, n_items + 1, train_user, train_item),
                             persistent=False)

    def propagate(self):
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])      # (U+I+1, D)
        layers = [ego]
        for _ in range(self.n_layers):
            layers.append(torch.sparse.mm(self.adjacency, layers[-1]))
        final = torch.stack(layers).mean(0)                                            # mean over K+1 layers
        return final[:self.n_users], final[self.n_users:]

    def forward(self, users):
        user_table, item_table = self.propagate()
        return user_table[users], item_table

    def ego_embeddings(self, users, items):
        return self.user_embedding(users), self.item_embedding(items)


def normalized_adjacency(n_users: int, n_nodes_items: int, train_user, train_item) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the bipartite graph (users first, then items) as a coalesced sparse tensor.
    Duplicate (user, item) pairs count once."""
    n = n_users + n_nodes_items
    pairs = torch.unique(torch.as_tensor(train_user) * n_nodes_items + torch.as_tensor(train_item))
    u, i = pairs // n_nodes_items, pairs % n_nodes_items + n_users
    rows, cols = torch.cat([u, i]), torch.cat([i, u])
    degree = torch.bincount(rows, minlength=n).float()
    inv_sqrt = degree.pow(-0.5)
    values = inv_sqrt[rows] * inv_sqrt[cols]
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n)).coalesce()


class SequentialBackbone(nn.Module):
    """Base of the sequential backbones: `encode` maps right-padded item ids (B, L) to hidden states (B, L, D).
    With right padding, a causal model's state at position t never depends on padding (which comes after)."""

    sequential = True

    def __init__(self, n_items: int, dim: int, max_len: int):
        super().__init__()
        self.max_len = max_len
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=0)

    def forward(self, sequences, every_position: bool = False):
        hidden = self.encode(sequences)                                               # (B, L, D)
        if not every_position:
            last = (sequences > 0).sum(1).clamp(min=1) - 1                            # (B,)
            hidden = hidden[torch.arange(len(sequences), device=hidden.device), last]  # (B, D)
        return hidden, self.item_embedding.weight


class SASRec(SequentialBackbone):
    """SASRec (Kang & McAuley, ICDM 2018), the original block: learned positions, embeddings scaled by sqrt(D),
    Q = LN(x), x = Q + causal-MHA(Q, x, x), x = x + FFN(LN(x)) with a position-wise two-layer ReLU FFN,
    padding positions zeroed after every block, a final LayerNorm."""

    def __init__(self, n_items: int, dim: int, max_len: int, n_layers: int = 2, n_heads: int = 1,
                 dropout: float = 0.2):
        super().__init__(n_items, dim, max_len)
        self.position_embedding = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        self.attention_norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-8) for _ in range(n_layers))
        self.attentions = nn.ModuleList(nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
                                        for _ in range(n_layers))
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-8) for _ in range(n_layers))
        self.ffns = nn.ModuleList(nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout),
                                                nn.Linear(dim, dim), nn.Dropout(dropout))
                                  for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(dim, eps=1e-8)
        for name, parameter in self.named_parameters():   # SASRec.pytorch: xavier_normal on every matrix
            if parameter.dim() > 1:
                nn.init.xavier_normal_(parameter)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def encode(self, sequences):
        L = sequences.shape[1]
        keep = (sequences > 0).unsqueeze(-1)                                           # (B, L, 1)
        x = self.item_embedding(sequences) * self.item_embedding.embedding_dim ** 0.5
        x = self.dropout(x + self.position_embedding.weight[:L]) * keep                # (B, L, D)
        causal = torch.ones(L, L, dtype=torch.bool, device=sequences.device).triu(1)  # True = not allowed
        for attention_norm, attention, ffn_norm, ffn in zip(self.attention_norms, self.attentions,
                                                            self.ffn_norms, self.ffns):
            q = attention_norm(x)
            x = q + attention(q, x, x, attn_mask=causal, need_weights=False)[0]
            x = ffn_norm(x)
            x = (x + ffn(x)) * keep
        return self.final_norm(x)


class GRU4Rec(SequentialBackbone):
    """GRU4Rec (Hidasi et al., ICLR 2016) as in RecBole: embedding dropout, a GRU, a linear map to D."""

    def __init__(self, n_items: int, dim: int, max_len: int, n_layers: int = 1, dropout: float = 0.2):
        super().__init__(n_items, dim, max_len)
        nn.init.xavier_normal_(self.item_embedding.weight[1:])
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(dim, dim, n_layers, batch_first=True)
        self.output = nn.Linear(dim, dim)

    def encode(self, sequences):
        hidden, _ = self.gru(self.dropout(self.item_embedding(sequences)))             # (B, L, D)
        return self.output(hidden)
