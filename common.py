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
