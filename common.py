"""What no paper owns, shared by mdcns.py, icpns.py and baselines.py.

Part I, what determines a number, in the order a run uses it. A reader who reads only Part I knows everything
that decides a metric:
 1. Interactions and the data a run reads: one in-memory form (user, item, position; items 1..n, 0 = padding),
    the synthetic generator (the offline default), preprocessing (RecBole's order), `load_dataset`.
 2. Splits, one small function per protocol: `loo` (leave-one-out by time), `ratio` (per-user 8:1:1, RecBole's
    rounding), `user` (MDCNS: 70/20/10 of the users), `user-prefixes` (the MDCNS code's LastFM: every prefix of a
    held-out user); the training windows of sequential backbones.
 3. Backbones MF, LightGCN, SASRec and Mamba4Rec behind one scoring interface: `queries, item_table =
    model(inputs)`, an item's score the dot product of the two.
 4. Negatives and losses every method shares: users' training positives, the exact uniform draw (RNS itself),
    alias tables with positives excluded, BPR and BCE, the examples of a batch.
 5. Full-ranking evaluation: `evaluate`, `ranking_metrics` (RecBole's formulas, pessimistic ties).
 6. The training loop: `train_step`, `fit` (epochs, batches, validation, early stopping), `finish` (test once, at
    the best validation epoch; results.json, test_rows.npz, model.pt).
 7. The shared command line: flags, their per-backbone defaults and checks, `prepare`.
Part II, machinery that changes no number:
 8. Fast paths, each equal to what a Part I function states to float rounding (tested): packed and fused
    selective scans (on the CPU Mamba4Rec's scan and causal conv as C++ loops torch builds on first use), sparse
    item scores, a cheaper exact Dropout.
 9. More backbones: Kang's SASRec, GRU4Rec, LinRec, FMLP4Rec, NGCF.
10. The dataset registry, readers, download and cache.
11. Checkpoints, resume, the pace line and --time-budget, --eval-only.
12. More than one process (`torchrun`).
13. Help, errors and provenance.

To use one method elsewhere, copy its file's core section (it needs only torch); to run it as here, copy the
method file with this one.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import datetime
import difflib
import glob
import gzip
import hashlib
import http.client
import io
import functools
import json
import math
import os
import platform
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.request
import warnings
import zipfile
import zlib
import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm


# ==========================================================================================================
# Part I: what determines a number
# ==========================================================================================================


# ----------------------------------------------------------------------------------------------------------
# 1. Interactions and the data a run reads
# ----------------------------------------------------------------------------------------------------------
class RecError(ValueError):
    """A problem with the user's input or settings; the command line prints it as one line, no traceback."""


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
    data_file: str | None = None     # the file(s) read, " + "-joined (results.json's provenance); None if generated
    data_sha256: str | None = None   # sha256 of their bytes, concatenated in that order

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


# ---------------------------------------------------------------- preprocessing
def k_core_filter(user, item, k: int) -> np.ndarray:
    """Boolean mask of the interactions in the k-core: repeatedly drop every interaction whose user or item has
    fewer than k kept interactions, until nothing changes. The result is the largest subset in which every user
    and item has >= k interactions (unique, whatever the removal order). Rows count as given: deduplicate first."""
    user = np.unique(np.asarray(user), return_inverse=True)[1].reshape(-1)
    item = np.unique(np.asarray(item), return_inverse=True)[1].reshape(-1)
    keep = np.ones(len(user), dtype=bool)
    while k > 1:
        user_count = np.bincount(user[keep], minlength=user.max(initial=0) + 1)     # (U,)
        item_count = np.bincount(item[keep], minlength=item.max(initial=0) + 1)     # (I,)
        still = keep & (user_count[user] >= k) & (item_count[item] >= k)
        if still.sum() == keep.sum():
            break
        keep = still
    return keep


def _preprocess(columns: _Columns, name: str, min_rating, k_core: int, time_window) -> tuple[Interactions, str]:
    """Time window, duplicates (first chronological occurrence kept), rating threshold, iterative k-core: in
    RecBole's order. Returns the interactions and a one-line summary of what each step removed."""
    n = len(columns.user)
    user = np.unique(columns.user, return_inverse=True)[1].reshape(-1)
    item = np.unique(columns.item, return_inverse=True)[1].reshape(-1)
    time = columns.time if columns.time is not None else np.zeros(n)
    rows = np.lexsort((np.arange(n), time, user))       # per user, chronological; ties keep file order
    log = [f"{n:,} rows"]

    def step(label: str, keep: np.ndarray) -> np.ndarray:
        if not keep.any():
            raise RecError(f"{name}: the {label} left no interactions (before it: {len(rows):,} interactions, "
                           f"{len(np.unique(user[rows])):,} users, {len(np.unique(item[rows])):,} items)")
        log.append(f"{label} -{int((~keep).sum()):,}")
        return rows[keep]

    if time_window is not None and columns.time is not None:
        rows = step(f"time window [{np.datetime64(time_window[0], 's')}, {np.datetime64(time_window[1], 's')})",
                    (time[rows] >= time_window[0]) & (time[rows] < time_window[1]))
    pair = user[rows].astype(np.int64) * (item.max() + 1) + item[rows]
    first = np.zeros(len(rows), dtype=bool)
    first[np.unique(pair, return_index=True)[1]] = True  # index of the first occurrence in chronological order
    rows = step("duplicate filter", first)
    if min_rating is not None:
        rows = step(f"rating >= {min_rating:g} filter", columns.rating[rows] >= min_rating)
    if k_core > 1:
        rows = step(f"{k_core}-core filter", k_core_filter(user[rows], item[rows], k_core))
    rows = np.sort(rows)                                  # file order: ids are numbered by first appearance
    data = Interactions.from_raw(user[rows], item[rows], None if columns.time is None else time[rows], name=name)
    return data, ", ".join(log) + f" -> {len(rows):,} interactions"


def load_dataset(name_or_path: str, data_dir: str = "data", min_rating: float | None = None,
                 k_core: int | None = None, use_cache: bool = True, cache_dir: str | None = None) -> Interactions:
    """Load a registered dataset (see DATASETS, Part II) or a custom file, preprocessed and cached.

    min_rating / k_core: None = the dataset's default for the file found (DATASETS); an explicit
    min_rating on a file without ratings is an error. use_cache=False (--no-cache) neither reads nor writes the
    cache; cache_dir (--cache-dir): its folder (default: `cache_folder`).
    Prints one line: the file and its format, what each preprocessing step removed, the cache used, and the
    statistics the papers publish for the dataset.
    """
    if os.path.isfile(name_or_path):
        name = os.path.splitext(os.path.basename(name_or_path))[0]
        folder = os.path.dirname(os.path.abspath(name_or_path))
        spec = DatasetSpec("custom file", files=())
        found = [name_or_path], _CUSTOM, None
    elif name_or_path in DATASETS:
        name, spec = name_or_path, DATASETS[name_or_path]
        folder = os.path.join(data_dir, name)
        found = _find_files(spec, folder) or _fetch(spec, name, folder)
    else:
        raise unknown_dataset(name_or_path)
    paths, fmt, member = found
    data_file = " + ".join(paths)   # results.json's provenance, as given: no machine's absolute prefix
    if fmt.published and min_rating is not None:
        raise RecError(f"{name}: {paths[0]} ({fmt.description}) has no ratings, so --min-rating cannot apply; "
                       f"place the official raw file in {folder}/")
    settings = {"min_rating": spec.min_rating if min_rating is None else min_rating,
                "k_core": (0 if fmt.published else spec.k_core) if k_core is None else k_core,
                "time_window": None if fmt.published else spec.time_window}
    stats = [(os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns) for p in paths]
    key = json.dumps({"version": 1, "files": stats, "member": member, "format": fmt.description, **settings})
    cache_name = f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    where = " + ".join(_where(p, member) for p in paths)

    cache_path = os.path.join(cache_folder(folder, name, cache_dir), cache_name)
    paper = "; {:,} users, {:,} items, {:,} interactions in {}".format(*spec.published) if spec.published else ""
    cached = _load_cache(cache_path, name) if use_cache else None
    if cached is not None:
        data, summary = cached
        data.data_file = data_file
        data.data_sha256 = data.data_sha256 or files_sha256(paths)   # caches written before it was stored: ""
        print(f"[data] {name}: {where} ({fmt.description}); {summary}; from cache {cache_path}{paper}")
        return data
    try:
        columns = fmt.read([(p, member) for p in paths])
    except (EOFError, zipfile.BadZipFile, zlib.error, gzip.BadGzipFile) as error:
        raise RecError(f"{where} is truncated or corrupt ({type(error).__name__}: {error}); delete it and run "
                       f"again to download a fresh copy, or replace it by hand") from None
    except UnicodeDecodeError as error:
        raise RecError(f"{where}: not valid text ({error})") from None
    if len(columns.user) == 0:
        raise RecError(f"{name}: {where} holds no interactions")
    if columns.rating is None and min_rating is not None:
        raise RecError(f"{name}: {where} ({fmt.description}) has no rating column, so --min-rating cannot apply")
    data, summary = _preprocess(columns, name, settings["min_rating"] if columns.rating is not None else None,
                                settings["k_core"], settings["time_window"])
    data.source = f"{where} ({fmt.description})"
    data.data_file, data.data_sha256 = data_file, files_sha256(paths)
    cached = _save_cache(os.path.dirname(cache_path), cache_name, data, summary) if use_cache else \
        "not cached (--no-cache)"
    print(f"[data] {name}: {where} ({fmt.description}); {summary}; {cached}{paper}")
    return data


def add_data_arguments(parser) -> None:
    """--min-rating and --k-core; their defaults depend on the dataset and the file found (see the help)."""
    by_value = {}
    for name, spec in DATASETS.items():
        rule = "as published" if not spec.k_core else (
            f"{'all ratings' if spec.min_rating is None else f'rating >= {spec.min_rating:g}'}, {spec.k_core}-core")
        by_value.setdefault(rule, []).append(name)
    defaults = "; ".join(f"{', '.join(names)}: {rule}" for rule, names in by_value.items())
    parser.add_argument("--min-rating", type=float, default=None,
                        help="keep interactions rated >= this (files with ratings only). Default per dataset on "
                             "its official raw file: " + "; ".join(
                                 f"{n}: {s.min_rating:g}" for n, s in DATASETS.items() if s.min_rating is not None)
                             + " (ICPNS); all ratings elsewhere (S3-Rec, SASRec, NGCF). Community files (SASRec, "
                               "S3-Rec, LightGCN) have no ratings: setting it for them is an error")
    parser.add_argument("--k-core", type=int, default=None,
                        help="iterative k-core: drop users and items with fewer than k interactions until none "
                             "is left. Default on official raw files: " + defaults + ". Community preprocessed "
                             "files (SASRec, S3-Rec, LightGCN) are used as published unless this is set; "
                             "0 disables it")
    parser.add_argument("--cache-dir", default=None, metavar="FOLDER",
                        help="where the preprocessed dataset is cached (printed on every load); by default a "
                             "processed/ folder beside the data, or the user's cache folder (~/.cache/negsampling) "
                             "when the data folder is read-only")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the preprocessed cache")


# ----------------------------------------------------------------------------------------------------------
# 2. Splits
# ----------------------------------------------------------------------------------------------------------
SPLITS = ("loo", "ratio", "user", "user-prefixes")


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
    prefix_rows:            the training rows are one per prefix (`--augmented-prefixes`, `training_rows`), a
                            user's in ascending target order; else sequence windows, a user's first one ending
                            at the end of its sequence (`training_windows`)
    valid, test:            EvalRows
    held_out_user/item:     the validation and test interactions (every interaction not in training), read only
                            by `training_positives` for --exclude-held-out
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
    held_out_user: torch.Tensor
    held_out_item: torch.Tensor
    statistics: dict = field(default_factory=dict)
    prefix_rows: bool = False


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
    user-prefixes (the MDCNS code's LastFM files): users in dataset order (no shuffle), the first int(0.8 U)
          train, the next int(0.1 U) valid, the rest test; every prefix of a valid/test user is a row predicting
          its next item, so a user weighs in the metrics by its length - 1 (LastFM: 4,430 / 5,780 rows).

    Masking at evaluation: general backbones mask the user's training items (training + validation items at
    test time), RecBole's rule. Sequential backbones mask the input sequence when `mask_history` (S3-Rec/MDCNS)
    and nothing but padding otherwise (RecBole's sequential evaluation). Targets are never masked.
    """
    if protocol not in SPLITS:
        raise RecError(f"unknown split {protocol!r}; choose one of {', '.join(SPLITS)}")
    if protocol == "ratio" and sequential:
        raise RecError("--split ratio is for general backbones (mf, lightgcn, ngcf); use --split loo or user")
    if protocol.startswith("user") and not sequential:
        raise RecError(f"--split {protocol} evaluates users unseen in training, which needs a sequential backbone "
                       "(sasrec, gru4rec, mamba4rec, linrec, fmlp4rec); use --split loo or ratio")
    user, item, n_users = data.user, data.item, data.n_users
    length = np.bincount(user, minlength=n_users)
    start = np.r_[0, np.cumsum(length)[:-1]]
    rng = np.random.default_rng(seed)
    if protocol == "loo":
        part = loo_parts(user, data.position, length)
    elif protocol == "ratio":
        part = ratio_parts(user, length, start, rng)
    else:
        user_part = user_parts(n_users, shuffled=protocol == "user", rng=rng)
        part = user_part[user]

    train = part == 0
    train_user, train_item = torch.from_numpy(user[train]), torch.from_numpy(item[train])
    if sequential:
        sequences, targets, sequence_user = training_windows(user[train], item[train], max_len)
    else:
        sequences = targets = torch.zeros(0, max_len, dtype=torch.long)
        sequence_user = torch.zeros(0, dtype=torch.long)

    def rows(p):
        if protocol == "user-prefixes":
            return prefix_eval_rows(user[part == p], item[part == p], max_len, mask_history)
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
                      sequences, targets, sequence_user, rows(1), rows(2),
                      torch.from_numpy(user[~train]), torch.from_numpy(item[~train]))
    split.statistics = {**data.statistics(), "protocol": protocol, "train_interactions": int(train.sum()),
                        "valid_rows": len(split.valid), "test_rows": len(split.test),
                        "train_examples": int((targets > 0).sum()) if sequential else int(train.sum())}
    if len(split.valid) == 0 or len(split.test) == 0:
        raise RecError(f"the {protocol} split left no validation or test rows: the dataset is too small "
                       f"({data.describe()})")
    return split


# The part of each interaction under each protocol: 0 train, 1 valid, 2 test (arrays in the data's order).
def loo_parts(user: np.ndarray, position: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Leave-one-out: the last item test, the second-to-last valid; RecBole's legal = min(2, n - 1) held out."""
    legal = np.minimum(2, length - 1)[user]
    from_end = length[user] - 1 - position
    return np.where(from_end < legal, 2 - from_end, 0)


def ratio_parts(user: np.ndarray, length: np.ndarray, start: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """8:1:1 of each user's items in a random order, with RecBole's rounding (`_calcu_split_ids`)."""
    n_valid = np.array([int(0.1 * n) for n in range(length.max() + 1)])
    n_test = n_valid.copy()
    n_train = np.arange(length.max() + 1) - n_valid - n_test
    for counts, ratio in ((n_valid, 0.1), (n_test, 0.1)):   # RecBole's rounding, valid first
        bump = (n_train > 1) & (0 < ratio * np.arange(length.max() + 1)) & (ratio * np.arange(length.max() + 1) < 1)
        counts += bump
        n_train -= bump
    rank = np.argsort(np.lexsort((rng.random(len(user)), user)), kind="stable") - start[user]  # random rank
    n_tr, n_va = n_train[length][user], n_valid[length][user]
    return np.where(rank < n_tr, 0, np.where(rank < n_tr + n_va, 1, 2))


def user_parts(n_users: int, shuffled: bool, rng: np.random.Generator) -> np.ndarray:
    """The part of each user: `user`, users shuffled, 70/20/10; `user-prefixes`, users in file order, 80/10/10
    (the MDCNS code's LastFM files: its logs' 41,251 / 4,430 / 5,780 rows are users 1-872 / 873-981 / 982-1,090
    of LastFM.txt, in file order)."""
    order = rng.permutation(n_users) if shuffled else np.arange(n_users)
    train_share, valid_share = (0.7, 0.2) if shuffled else (0.8, 0.1)
    n_train_users, n_valid_users = int(train_share * n_users), int(valid_share * n_users)
    user_part = np.empty(n_users, dtype=np.int64)
    user_part[order] = np.repeat([0, 1, 2], [n_train_users, n_valid_users, n_users - n_train_users - n_valid_users])
    return user_part


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


def prefix_rows(train_user, train_item, max_len: int):
    """The MDCNS code's training rows (data/enhance.ipynb; also RecBole's prefix augmentation): every prefix of
    every training sequence (length >= 1 before its target) as its own row, the last `max_len` items before the
    target, right-padded. The target sits at the prefix's last position and the rest of the targets row is 0, so
    common's `examples` yields one example per row, queried at its last position. train_user/train_item
    chronological per user (SplitData). Returns sequences (R, L), targets (R, L), users (R,)."""
    user, item = np.asarray(train_user), np.asarray(train_item)
    target = np.flatnonzero(positions_within_users(user) >= 1)                  # (R,) index of each row's target
    first = np.maximum(target - max_len, target - positions_within_users(user)[target])   # (R,) prefix start
    index = first[:, None] + np.arange(max_len)                                  # (R, L)
    inside = index < target[:, None]
    sequences = np.where(inside, item[np.minimum(index, len(item) - 1)], 0)      # (R, L)
    targets = np.zeros_like(sequences)
    targets[np.arange(len(target)), target - first - 1] = item[target]          # the prefix's last position
    return torch.from_numpy(sequences), torch.from_numpy(targets), torch.from_numpy(user[target])


def prefix_eval_rows(user: np.ndarray, item: np.ndarray, max_len: int, mask_history: bool) -> EvalRows:
    """Every (prefix -> next item) of every sequence as an evaluation row (`--split user-prefixes`): the query is
    the prefix's last `max_len` items, the target the next item, the masked history the whole prefix (the MDCNS
    code masks each row's items[:-1]) minus the target. user/item chronological per user."""
    sequences, targets, _ = prefix_rows(user, item, max_len)                     # (R, L), target at its last slot
    position = positions_within_users(user)
    target = np.flatnonzero(position >= 1)                                       # (R,) index of each row's target
    if mask_history:
        entry_row = np.repeat(np.arange(len(target)), position[target])         # (H,) one entry per prefix item
        history = item[target[entry_row] - position[target][entry_row] + positions_within_users(entry_row)]  # (H,)
        keep = history != item[target][entry_row]                               # a target is never masked
        counts = np.bincount(entry_row[keep], minlength=len(target))
        masked_ptr, masked_items = torch.from_numpy(np.r_[0, np.cumsum(counts)]), torch.from_numpy(history[keep])
    else:
        masked_ptr, masked_items = torch.zeros(len(target) + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return EvalRows(sequences, torch.arange(len(target) + 1), targets.sum(1), masked_ptr, masked_items)


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
# 3. Backbones: MF, LightGCN, SASRec, Mamba4Rec, behind one scoring interface
# ----------------------------------------------------------------------------------------------------------
BACKBONES = ("mf", "lightgcn", "sasrec", "gru4rec", "mamba4rec", "linrec", "fmlp4rec", "ngcf")


SEQUENTIAL_BACKBONES = ("sasrec", "gru4rec", "mamba4rec", "linrec", "fmlp4rec")


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

    In eval mode without grad (evaluation calls forward once per batch of rows) the propagation runs once per
    state of the weights: `cached_propagate`. Training mode and grad mode propagate at every call.
    """

    sequential = False

    def __init__(self, n_users: int, n_items: int, dim: int, n_layers: int, train_user, train_item):
        super().__init__()
        self.n_users, self.n_layers = n_users, n_layers
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items + 1, dim)
        nn.init.xavier_uniform_(self.user_embedding.weight)   # RecBole / ICPNS init
        nn.init.xavier_uniform_(self.item_embedding.weight)
        with warnings.catch_warnings():   # "sparse CSR support is in beta": matmul and its use here are stable
            warnings.simplefilter("ignore")
            adjacency = normalized_adjacency(n_users, n_items + 1, train_user, train_item).to_sparse_csr()
        self.register_buffer("adjacency", adjacency, persistent=False)
        self.propagated = None   # (weights, adjacency, their propagated tables) of cached_propagate

    def propagate_layers(self):
        """E^(0..K) of users (K+1, U, D) and items (K+1, I+1, D); MixGCF's hop mixing reads the layers."""
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])      # (U+I+1, D)
        layers = [ego]
        for _ in range(self.n_layers):
            layers.append(SymmetricSparseMatmul.apply(self.adjacency, layers[-1]))
        stacked = torch.stack(layers)                                                  # (K+1, U+I+1, D)
        return stacked[:, :self.n_users], stacked[:, self.n_users:]

    def propagate(self):
        users, items = self.propagate_layers()
        return users.mean(0), items.mean(0)                                            # mean over K+1 layers

    @torch.no_grad()
    def cached_propagate(self):
        """propagate(), recomputed only when a weight changed (value, dtype or device; the layer-0 tables, and
        NGCF's layer weights) or the adjacency was replaced: any optimizer step, load_state_dict or .to()
        recomputes it. The weights are compared exactly with a copy taken at the last propagation, not through
        their `_version` counters, which fused optimizer steps (e.g. Adam(fused=True)) and writes through `.data`
        leave unchanged. The returned tables are shared between calls: callers must not write into them."""
        weights = torch.cat([parameter.reshape(-1) for parameter in self.parameters()])   # a copy, flat
        cached = self.propagated
        if cached is None or cached[1] is not self.adjacency or cached[0].dtype != weights.dtype or \
                cached[0].device != weights.device or not torch.equal(cached[0], weights):
            self.propagated = (weights, self.adjacency, self.propagate())
        return self.propagated[2]

    def forward(self, users):
        eval_no_grad = not self.training and not torch.is_grad_enabled()
        user_table, item_table = self.cached_propagate() if eval_no_grad else self.propagate()
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
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), check_invariants=True).coalesce()


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


def normal_init_(model: nn.Module, std: float = 0.02):
    """The S3-Rec / RecBole `init_weights` of the sequential backbones: Linear and Embedding weights N(0, std),
    Linear biases 0, LayerNorm weight 1 and bias 0. Other parameters keep their own init."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class ResidualFFN(nn.Module):
    """The position-wise feed-forward block of the S3-Rec code family (MDCNS `modules.Intermediate`):
    LN(x + dropout(W2 GELU(W1 x))), inner size 4 D, no dropout between the two layers."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), Dropout(dropout))
        self.norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x):
        return self.norm(x + self.ffn(x))


class PositionalBackbone(SequentialBackbone):
    """The frame the MDCNS code's `SASRec`, `Linrec` and `FMLPRecModel` share (its `models.py`, S3-Rec style):
    dropout(LN(item embedding + learned position embedding)), then the blocks, each a causal sequence-mixing
    sub-layer followed by `ResidualFFN` (`layers`); init `normal_init_`.

    Positions count back from the last item, which always sits at position max_len - 1: the MDCNS code left-pads
    every row to max_len and numbers the positions from the left edge. With right padding that is position
    max_len - n + t for item t of a row of n items. Note: with every position of a sequence trained in one pass
    (the default), the prefix ending at item j < n - 1 sees its items at positions shifted by n - 1 - j from where
    a row holding only that prefix would put them; `--augmented-prefixes` trains one row per prefix, as the MDCNS
    code. The padding row of the item table is zero (the MDCNS code leaves it random; it never reaches a valid
    position here).

    Everything runs on the real positions only (`Packing`; 84% of Beauty's training positions are padding at
    L = 50): the embeddings, LayerNorms, dropouts and feed-forwards position by position on the packed (P, D),
    the sequence-mixing sub-layers on rows of similar length at a time (`Packing.by_buckets`). Every mixer is
    causal, so with right padding a real position never depends on the padding after it: the real positions come
    out as the same blocks give on the padded (B, L, D) layout, and the padding's hidden states are 0."""

    def __init__(self, n_items: int, dim: int, max_len: int, blocks, dropout: float):
        super().__init__(n_items, dim, max_len)
        self.position_embedding = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = Dropout(dropout)
        self.blocks = nn.ModuleList(blocks)
        normal_init_(self)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def positions(self, sequences):                                                   # (B, L) -> (B, L)
        """Item t of a row of n items sits at position max_len - n + t (the padding's are clamped, unused)."""
        n = (sequences > 0).sum(1, keepdim=True)                                       # (B, 1) items per row
        steps = torch.arange(sequences.shape[1], device=sequences.device)
        return (steps + self.max_len - n).clamp(0, self.max_len - 1)

    def layers(self):
        """The (sequence mixer, ResidualFFN) pairs in order: LinRec's and FMLP4Rec's blocks are such pairs
        (nn.Sequential, the MDCNS code's `LinrecTransformerLayer` / `FMLPLayer`)."""
        return self.blocks

    def encode(self, sequences):
        packing = Packing(sequences)
        x = self.item_embedding(packing.pack(sequences)) + self.position_embedding(packing.pack(
            self.positions(sequences)))                                               # (P, D)
        x = self.dropout(self.norm(x))
        for mixer, ffn in self.layers():
            x = ffn(mixer(x, packing))                                                 # (P, D)
        return packing.unpack(x)                                                       # (B, L, D), 0 at padding


class SASRec(PositionalBackbone):
    """SASRec (Kang & McAuley, ICDM 2018) as the field runs it (S3-Rec, RecBole, and the MDCNS code's
    `models.SASRec` + `modules.Encoder`, the block behind every MDCNS number), `--sasrec-block s3rec`:

        x_0 = Dropout(LN(E[item] + P[position]))             (PositionalBackbone)
        a   = LN(x + Dropout(W_O · MHA(x)))                  causal multi-head attention, dropout on its weights
        x'  = LN(a + Dropout(W_2 · GELU(W_1 a)))             feed-forward of width 4 D, GELU (erf form)

    post-LayerNorm (eps 1e-12), N(0, 0.02) init of every Linear / Embedding weight, zero biases; the query is the
    hidden state at the last item, as there. Padding never reaches a real position (it comes after it, under a
    causal mask); the code's additive -10000 mask is 0 after exp as well. So it runs on the real positions only,
    as `PositionalBackbone` does, the attention on rows of similar length at a time (`CausalSelfAttention`)."""

    def __init__(self, n_items: int, dim: int, max_len: int, n_layers: int = 2, n_heads: int = 2,
                 dropout: float = 0.5):
        blocks = [block for _ in range(n_layers)
                  for block in (CausalSelfAttention(dim, n_heads, dropout), ResidualFFN(dim, dropout))]
        super().__init__(n_items, dim, max_len, blocks, dropout)

    def layers(self):
        """The blocks alternate attention and ResidualFFN (the MDCNS code's `modules.Layer` as two entries)."""
        return zip(self.blocks[0::2], self.blocks[1::2])


class CausalSelfAttention(nn.Module):
    """The attention sub-layer of the S3-Rec / RecBole SASRec (the MDCNS code's `modules.SelfAttention`):
    LN(x + Dropout(W_O · softmax(q k^T / sqrt(D/H) + causal mask) v)), dropout on the attention weights too."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.attention_dropout = n_heads, dropout
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.output = nn.Linear(dim, dim)
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x, packing: "Packing"):                                          # (P, D) packed
        """x: the real positions of `packing`'s rows. The attention runs on rows of similar length together,
        each bucket as wide as its longest row (`Packing.by_buckets`): a row attends within itself, so this is
        the attention over all L positions without the padding's cost (on Beauty's training rows ~4% of it)."""
        D, H = x.shape[1], self.n_heads
        qkv = torch.cat([self.query(x), self.key(x), self.value(x)], 1)                # (P, 3 D)

        def attend(rows):                                                              # (R, W, 3 D) -> (R, W, D)
            R, W = rows.shape[:2]
            q, k, v = (t.reshape(R, W, H, D // H).transpose(1, 2) for t in rows.split(D, -1))  # (R, H, W, D/H)
            # softmax(q k^T / sqrt(D/H) + causal mask) v, dropout on the attention weights (SASRec Eq. 2,
            # S3-Rec form)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                 dropout_p=self.attention_dropout if self.training else 0.0)
            return out.transpose(1, 2).reshape(R, W, D)

        context = packing.by_buckets(attend, qkv)                                      # (P, D)
        return self.norm(x + self.dropout(self.output(context)))                       # post-LN residual


def selective_scan(x, dt, A, B, C, D, lengths=None):
    """The selective scan of Mamba (Gu & Dao 2023, Algorithm 2) with zero-order-hold A and Euler B, in PyTorch:

        h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * x_t,   h_{-1} = 0,   h_t: (Bt, d_inner, d_state)
        y_t = h_t . C_t + D * x_t

    x, dt: (Bt, L, d_inner); A: (d_inner, d_state); B, C: (Bt, L, d_state); D: (d_inner,) -> y: (Bt, L, d_inner).
    lengths (Bt,), optional: rows are right-padded and steps t >= lengths[b] are padding; the recurrence skips
    them (their y is D * x only), which leaves every earlier step exactly as without padding (the scan is causal)
    and skips most of the work on short-sequence data (85% of the positions are padding on Beauty, L = 50).
    Runs in float32 at least (like mamba_ssm's reference scan) and returns x's dtype. On CUDA with the optional
    `mamba_ssm` package installed, its fused kernel `selective_scan_fn` computes the same thing; everywhere else
    `_SelectiveScan` does.
    """
    fused = _fused_scan(x)
    if fused is not None:
        y = fused(*(t.transpose(1, 2).contiguous() for t in (x, dt)), A.float(),
                  *(t.transpose(1, 2).contiguous() for t in (B, C)), D.float()).transpose(1, 2)  # (Bt, L, d)
        if lengths is not None:
            padding = torch.arange(x.shape[1], device=x.device) >= lengths.unsqueeze(1)  # (Bt, L)
            y = torch.where(padding.unsqueeze(-1), x * D, y)
        return y.to(x.dtype)
    Bt, L, d = x.shape
    lengths = torch.full((Bt,), L, device=x.device) if lengths is None else lengths
    x, dt, B, C = (t.reshape(Bt * L, t.shape[-1]) for t in (x, dt, B, C))           # row b's step t at b L + t
    return _scan_rows(x, dt, A, B, C, D, torch.arange(Bt, device=x.device) * L, lengths).view(Bt, L, d)


class MambaBlock(nn.Module):
    """The Mamba block (Gu & Dao 2023; `mamba_ssm.Mamba` with its defaults), without norm or residual:
    in_proj -> (x, z); x -> causal depthwise conv -> SiLU -> selective SSM with input-dependent dt, B, C;
    y * SiLU(z) -> out_proj. Causal: position t only sees positions <= t."""

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, dt_init_floor: float = 1e-4):
        super().__init__()
        self.d_inner, self.d_state, self.dt_rank = expand * dim, d_state, math.ceil(dim / 16)
        self.in_proj = nn.Linear(dim, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, dim, bias=False)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.dt_init = (dt_min, dt_max, dt_init_floor)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self):
        """mamba_ssm's special inits: A = -(1..d_state) per channel (S4D-real), D = 1, dt_proj weight
        U(+-dt_rank^-1/2), dt_proj bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max]."""
        dt_min, dt_max, floor = self.dt_init
        states = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.A_log.device)
        self.A_log.copy_(torch.log(states).expand_as(self.A_log))                     # (d_inner, d_state)
        self.D.fill_(1.0)
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        device = self.dt_proj.bias.device
        dt = torch.exp(torch.rand(self.d_inner, device=device) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))                    # inverse of softplus

    def causal_conv(self, x, packing: Packing):
        """The depthwise causal conv1d, on packed positions: x'_t = b + sum_k w_k x_{t-k}, k < d_conv, with
        x_{t-k} = 0 before the row's first step (the conv's left zero padding). x (P, d_inner). `_CausalConv`."""
        return _CausalConv.apply(x, self.conv1d.weight[:, 0], self.conv1d.bias,
                                 *packing.same_row_masks(self.conv1d.kernel_size[0], x.dtype))

    def conv_silu(self, x, packing: Packing):
        """SiLU(causal_conv(x)): on the CPU in float32 / float64 one C++ pass (`_CompiledConvSiLU`) where it could
        be built, else `causal_conv` and F.silu."""
        if _compiled_mamba_for(x) is not None:
            return _CompiledConvSiLU.apply(x, self.conv1d.weight[:, 0], self.conv1d.bias, packing.step)
        return F.silu(self.causal_conv(x, packing))

    def forward(self, hidden, packing: Packing):                                       # (P, D) packed
        """hidden: the real positions of `packing`'s rows, packed (see `Packing`)."""
        x, z = self.in_proj(hidden).chunk(2, dim=-1)                                   # 2 x (P, d_inner)
        x = self.conv_silu(x, packing)                                                 # (P, d_inner)
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))                                              # (P, d_inner)
        y = packed_selective_scan(x, dt, -torch.exp(self.A_log.float()), B, C, self.D, packing)  # (P, d_inner)
        return self.out_proj(y * F.silu(z))                                            # (P, D)


class _CausalConv(torch.autograd.Function):
    """`MambaBlock.causal_conv` with a hand-written backward: y = b + w_0 x + sum_{k>=1} w_k (m_k x_{t-k}), each tap
    one in-place addcmul_ on the shifted rows (x[:-k] feeds y[k:]), m_k = [x_{t-k} is in t's row] from
    `Packing.same_row_masks`; backward dLoss/dx_{t-k} += w_k m_k g_t, dLoss/dw_k = sum_t m_k g_t x_{t-k},
    dLoss/db = sum_t g_t. The same sums as autograd's graph of padded copies, mask and weight products, in a third
    of the kernels and without the copies: 2.5 -> 1.6 ms a Beauty layer, forward + backward (bench/README.md)."""

    @staticmethod
    def forward(ctx, x, weight, bias, *masks):                    # weight (d_inner, d_conv), as Conv1d's [:, 0]
        w = weight.flip(1)                                                             # w[:, k] multiplies x_{t-k}
        y = torch.addcmul(bias, x, w[:, 0])                                            # b + w_0 x_t, (P, d_inner)
        for k, mask in enumerate(masks, 1):
            y[k:].addcmul_(x[:-k] * mask, w[:, k])                                     # + w_k m_k x_{t-k}
        ctx.save_for_backward(x, w, *masks)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, w, *masks = ctx.saved_tensors
        gx, gw = g * w[:, 0], torch.empty_like(w)                                      # dLoss/dx_t from tap 0
        gw[:, 0] = (g * x).sum(0)
        for k, mask in enumerate(masks, 1):
            gm = g[k:] * mask                                                          # m_k g_t
            gx[:-k].addcmul_(gm, w[:, k])                                              # dLoss/dx_{t-k} += w_k m_k g_t
            gw[:, k] = (gm * x[:-k]).sum(0)                                            # dLoss/dw_k
        return gx, gw.flip(1), g.sum(0), *(None for _ in masks)


class MambaLayer(nn.Module):
    """One Mamba4Rec layer: LN(dropout(Mamba(x)) [+ x if several layers]), then the position-wise FFN
    LN(x + dropout(W2 dropout(GELU(W1 x)))) with inner size 4 D; on the packed real positions (`Packing`)."""

    def __init__(self, dim: int, d_state: int, d_conv: int, expand: int, dropout: float, residual: bool):
        super().__init__()
        self.residual = residual
        self.mamba = MambaBlock(dim, d_state, d_conv, expand)
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), Dropout(dropout),
                                 nn.Linear(4 * dim, dim), Dropout(dropout))
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x, packing: Packing):                                           # (P, D) packed
        y = self.dropout(self.mamba(x, packing))
        x = self.norm(y + x if self.residual else y)
        return self.ffn_norm(x + self.ffn(x))


class Mamba4Rec(SequentialBackbone):
    """Mamba4Rec (Liu et al., arXiv 2403.03900) as in its official RecBole code: embedding -> dropout ->
    LayerNorm, then n_layers MambaLayer (residual around the Mamba block only when n_layers > 1). No positional
    embedding: the causal conv and the scan carry the order. The selective scan is `selective_scan` (pure PyTorch;
    mamba-ssm's CUDA kernel if installed and on CUDA). Everything runs on the real positions only (`Packing`);
    the hidden state of a padding position is 0 (nothing reads it: queries sit at real positions).

    Init as the official code's and the MDCNS code's `self.apply(init_weights)`: every Linear / Embedding weight
    N(0, 0.02), biases 0, LayerNorm 1 / 0; the conv keeps PyTorch's default, A_log and D keep Mamba's. That apply
    also reaches the Mamba block's dt_proj, so dt starts at softplus(~0) = 0.69 rather than Mamba's log-uniform
    [0.001, 0.1]: the init behind the published numbers, kept. Note: the MDCNS code left-pads, so its scan runs
    over the padding row (N(0, 0.02), LayerNorm'ed to full scale) before the first item; right padding keeps the
    padding after the last item, where it changes nothing."""

    def __init__(self, n_items: int, dim: int, max_len: int, n_layers: int = 2, dropout: float = 0.5,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2):
        super().__init__(n_items, dim, max_len)
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.layers = nn.ModuleList(MambaLayer(dim, d_state, d_conv, expand, dropout, residual=n_layers > 1)
                                    for _ in range(n_layers))
        normal_init_(self)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def encode(self, sequences):
        packing = Packing(sequences)
        x = self.norm(self.dropout(self.item_embedding(packing.pack(sequences))))      # (P, D)
        for layer in self.layers:
            x = layer(x, packing)
        return packing.unpack(x)                                                       # (B, L, D), 0 at padding


def build_backbone(name: str, split: SplitData, args) -> nn.Module:
    """The backbone `name` with the defaults of `BACKBONE_DEFAULTS` unless a flag overrides them."""
    if name not in BACKBONES:
        raise RecError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if (name in SEQUENTIAL_BACKBONES) != split.sequential:
        raise RecError(f"the split was built for a {'sequential' if split.sequential else 'general'} backbone, "
                       f"not {name}")
    dim, layers, dropout = args.dim, args.layers, args.dropout
    if name == "mf":
        return MF(split.n_users, split.n_items, dim)
    if name == "lightgcn":
        return LightGCN(split.n_users, split.n_items, dim, layers, split.train_user, split.train_item)
    if name == "sasrec":
        block = SASRec if args.sasrec_block == "s3rec" else KangSASRec
        return block(split.n_items, dim, split.max_len, layers, args.heads, dropout)
    if name == "gru4rec":
        return GRU4Rec(split.n_items, dim, split.max_len, layers, dropout)
    if name == "linrec":
        if dim % args.heads:
            raise RecError(f"--dim {dim} is not a multiple of --heads {args.heads} (LinRec splits D into heads)")
        return LinRec(split.n_items, dim, split.max_len, layers, args.heads, dropout)
    if name == "fmlp4rec":
        return FMLP4Rec(split.n_items, dim, split.max_len, layers, dropout)
    if name == "ngcf":
        return NGCF(split.n_users, split.n_items, dim, layers, dropout, split.train_user, split.train_item)
    return Mamba4Rec(split.n_items, dim, split.max_len, layers, dropout)


# Per-backbone defaults of the flags left unset (None) on the command line, with their sources.
BACKBONE_DEFAULTS = {
    "mf":        dict(dim=64, layers=0, dropout=0.0, heads=1, max_len=50, reg_weight=0.0),   # RecBole BPR
    "lightgcn":  dict(dim=64, layers=3, dropout=0.0, heads=1, max_len=50, reg_weight=1e-4),  # LightGCN paper
    "sasrec":    dict(dim=64, layers=2, dropout=0.5, heads=2, max_len=50, reg_weight=0.0),   # S3-Rec, MDCNS code
    "sasrec-kang": dict(dim=50, layers=2, dropout=0.2, heads=1, max_len=200, reg_weight=0.0),  # SASRec ml-1m
    "gru4rec":   dict(dim=64, layers=1, dropout=0.2, heads=1, max_len=50, reg_weight=0.0),   # RecBole GRU4Rec
    "mamba4rec": dict(dim=64, layers=2, dropout=0.5, heads=1, max_len=50, reg_weight=0.0),   # MDCNS code
    "linrec":    dict(dim=64, layers=2, dropout=0.5, heads=2, max_len=50, reg_weight=0.0),   # MDCNS main.py
    "fmlp4rec":  dict(dim=64, layers=2, dropout=0.5, heads=1, max_len=50, reg_weight=0.0),   # MDCNS main.py
    "ngcf":      dict(dim=64, layers=3, dropout=0.1, heads=1, max_len=50, reg_weight=1e-5),  # ICPNS NGCF.yaml
}


# ----------------------------------------------------------------------------------------------------------
# 4. Negatives and losses
# ----------------------------------------------------------------------------------------------------------
DENSE_NEGATIVES_MAX = 2 ** 25   # users x items up to which PositiveSets keeps the dense table of non-positives


class PositiveSets:
    """Each user's training items as a sorted CSR on the model's device, with exact uniform sampling of the
    items a user has NOT interacted with.

    Uniform sampling needs no rejection: with the user's positives p_0 < p_1 < ... (items 1..n), a_j = p_j - 1 - j
    counts the non-positives below p_j, so the r-th non-positive (r = 0, 1, ...) is r + 1 + #{j : a_j <= r}.
    Every draw is exact; one of two structures answers it, by size:
    - users x items <= DENSE_NEGATIVES_MAX: `free` (U, I), the r-th non-positive of each user at column r (int16
      when the items fit, else int32; the columns from the user's number of non-positives on are 0, never read).
      A draw is one gather.
    - larger catalogues: `below_key`, the sorted keys user * (n + 1) + a_j. A draw is one binary search,
      O(log |positives|), whatever the user's history size.
    The other one is None. Membership (`contains`, the rejection step of PNS and ICPNS) likewise: a gather in
    `is_positive` (U, I+1) bool in the dense regime, a binary search in the sorted keys otherwise.
    """

    def __init__(self, user, item, n_users: int, n_items: int, device="cpu"):
        user, item = torch.as_tensor(user).cpu(), torch.as_tensor(item).cpu()
        if len(item) and not (1 <= int(item.min()) and int(item.max()) <= n_items):
            raise RecError(f"item id {int(item.min()) if int(item.min()) < 1 else int(item.max())} is outside "
                           f"1..{n_items}: item ids run 1..n_items and 0 is padding (shift 0-based ids by 1)")
        if len(user) and not (0 <= int(user.min()) and int(user.max()) < n_users):
            raise RecError(f"user id {int(user.min()) if int(user.min()) < 0 else int(user.max())} is outside "
                           f"0..{n_users - 1}")
        self.n_users, self.n_items = n_users, n_items
        key = torch.unique(user * (n_items + 1) + item)                     # sorted, duplicates removed
        users_sorted, items_sorted = key // (n_items + 1), key % (n_items + 1)
        count = torch.bincount(users_sorted, minlength=n_users)                                   # (U,)
        ptr = torch.cat([torch.zeros(1, dtype=torch.long), count.cumsum(0)])                      # (U+1,)
        self.count, self.ptr = count.to(device), ptr.to(device)
        self.key = key.to(device)                                                                 # (E,)
        self.items = items_sorted.to(device)
        below = items_sorted - 1 - (torch.arange(len(key)) - ptr[users_sorted])                  # a_j in [0, n)
        self.free, self.below_key, self.is_positive = None, None, None
        if n_users * n_items <= DENSE_NEGATIVES_MAX:
            is_positive = torch.zeros(n_users * (n_items + 1), dtype=torch.bool)                 # (U * (I+1),)
            is_positive[key] = True
            self.is_positive = is_positive.view(n_users, n_items + 1).to(device)                 # (U, I+1)
            # #{j : a_j <= r} at (user, r): a 1 at each (user, a_j), summed along r
            free = torch.zeros(n_users, n_items, dtype=torch.int32)                               # (U, I)
            free.view(-1).index_add_(0, users_sorted * n_items + below, torch.ones(len(key), dtype=torch.int32))
            r = torch.arange(n_items, dtype=torch.int32)                                          # (I,)
            free.cumsum_(1).add_(r + 1)                                                           # the r-th item
            free.masked_fill_(r >= (n_items - count).unsqueeze(1), 0)                             # past the last
            small = n_items <= torch.iinfo(torch.int16).max
            self.free = free.to(torch.int16 if small else torch.int32).to(device)
        else:
            self.below_key = (users_sorted * (n_items + 1) + below).to(device)                    # sorted

    def to(self, device):
        for name in ("count", "ptr", "key", "items", "free", "below_key", "is_positive"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        return self

    def contains(self, users, items):
        """Boolean tensor: is items[...] a training positive of users[...] (broadcast)."""
        query = users * (self.n_items + 1) + items
        if self.is_positive is not None:
            return self.is_positive.view(-1)[query]
        index = torch.searchsorted(self.key, query).clamp(max=len(self.key) - 1)
        return self.key[index] == query

    def dense_mask(self, users):
        """(B, I+1) bool, True at the users' positives and at the padding item."""
        if self.is_positive is not None:                                   # dense regime: rows of the mask
            mask = self.is_positive[users]                                  # (B, I+1), a copy
            mask[:, 0] = True
            return mask
        mask = torch.zeros(len(users), self.n_items + 1, dtype=torch.bool, device=users.device)
        starts, counts = self.ptr[users], self.count[users]
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
        offsets = torch.arange(int(counts.sum()), device=users.device) - \
            torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        mask[rows, self.items[torch.repeat_interleave(starts, counts) + offsets]] = True
        mask[:, 0] = True
        return mask

    def check_can_sample(self, users):
        full = self.count[users] >= self.n_items
        if bool(full.any()):
            raise RecError(f"user {int(users[full][0])} has interacted with every item, so no negative exists; "
                           "drop such users (e.g. with --k-core) or use a larger catalogue")


def uniform_negatives(positives: PositiveSets, users, k: int, generator: torch.Generator):
    """RNS (Rendle et al., BPR 2009): k items per user, uniform over the items the user has not interacted
    with in training, drawn independently (with replacement). Also the candidate pool of DNS and MDCNS (Eq. 2).
    users (B,) -> (B, k)."""
    positives.check_can_sample(users)
    n_free = (positives.n_items - positives.count[users]).unsqueeze(1)                        # (B, 1)
    u = torch.rand(len(users), k, generator=generator, device=users.device)
    r = (u * n_free).long().clamp(max=n_free - 1)                                            # (B, k) in [0, free)
    if positives.free is not None:                          # dense table: free[user, r] is the r-th non-positive
        index = (users * positives.n_items).unsqueeze(1) + r                                 # (B, k) into free
        return positives.free.view(-1).index_select(0, index.view(-1)).view_as(r).long()     # (B, k)
    base = (users * (positives.n_items + 1)).unsqueeze(1)                                    # (B, 1)
    below = torch.searchsorted(positives.below_key, base + r, right=True) - positives.ptr[users].unsqueeze(1)
    return r + 1 + below                                                                     # (B, k)


class AliasTable:
    """Walker's alias method for G categorical distributions over items 0..I at once (O(1) per draw).
    weights (G, I+1), non-negative, each row with positive mass."""

    def __init__(self, weights: torch.Tensor):
        weights = weights.double().cpu()
        G, n = weights.shape
        scaled = (weights / weights.sum(1, keepdim=True) * n).numpy().copy()   # mean 1 per row
        accept = np.ones((G, n))
        alias = np.tile(np.arange(n), (G, 1))
        for g in range(G):   # Vose's construction, O(n) per distribution (G is the number of distributions)
            small = list(np.flatnonzero(scaled[g] < 1.0))
            large = list(np.flatnonzero(scaled[g] >= 1.0))
            while small and large:
                s, l = small.pop(), large.pop()
                accept[g, s], alias[g, s] = scaled[g, s], l
                scaled[g, l] -= 1.0 - scaled[g, s]
                (small if scaled[g, l] < 1.0 else large).append(l)
        self.accept = torch.from_numpy(accept).float()                          # (G, I+1)
        self.alias = torch.from_numpy(alias).long()                             # (G, I+1)
        self.n = n

    def to(self, device):
        self.accept, self.alias = self.accept.to(device), self.alias.to(device)
        return self

    def draw(self, rows, k: int, generator: torch.Generator):
        """rows (B,) distribution indices -> (B, k) items."""
        device = rows.device
        column = torch.randint(0, self.n, (len(rows), k), generator=generator, device=device)
        coin = torch.rand(len(rows), k, generator=generator, device=device)
        rows = rows.unsqueeze(1).expand(-1, k)
        keep = coin < self.accept[rows, column]
        return torch.where(keep, column, self.alias[rows, column])


def weighted_negatives(weights: torch.Tensor, table: AliasTable, group_of_user, positives: PositiveSets,
                       users, k: int, generator: torch.Generator, rounds: int = 4):
    """k negatives per user from p(i | u) ∝ weights[group_of_user[u], i] over the items i the user has not
    interacted with; uniform over those items when the user's positives hold all of the group's mass (the
    ICPNS official fallback). PNS is the one-group case, ICPNS one group per community.

    Exact: `rounds` of rejection from the group's alias table (an accepted draw has exactly the conditional
    law), then every unfinished draw is finished by a masked multinomial over the user's non-positive items,
    which is the same law. Users whose positives hold most of the mass thus never loop.
    weights (G, I+1) with weights[:, 0] = 0; users (B,) -> (B, k).
    """
    positives.check_can_sample(users)
    groups = group_of_user[users]                                                              # (B,)
    out = torch.zeros(len(users), k, dtype=torch.long, device=users.device)
    todo = torch.ones(len(users), k, dtype=torch.bool, device=users.device)
    for _ in range(rounds):
        draw = table.draw(groups, k, generator)                                                # (B, k)
        accept = todo & ~positives.contains(users.unsqueeze(1), draw) & (draw > 0)
        out = torch.where(accept, draw, out)
        todo &= ~accept
    rows = todo.any(1).nonzero().squeeze(1)
    if len(rows):
        masked = weights[groups[rows]].double() * ~positives.dense_mask(users[rows])           # (R, I+1)
        empty = masked.sum(1) == 0
        masked[empty] = (~positives.dense_mask(users[rows][empty])).double()                   # fallback: uniform
        draws = torch.multinomial(masked, k, replacement=True, generator=generator)            # (R, k)
        out[rows] = torch.where(todo[rows], draws, out[rows])
    return out


def score_items(queries, item_table, items):
    """Dot-product scores of candidate items: queries (P, D), items (P, N) -> (P, N), differentiable in queries and
    item_table. `_ItemScores` computes them, and their gradients, as sparse matrix products: the values equal those
    of gathering all (P, N, D) rows at once, and their gradients, to float rounding (tests/test_backbones_extra.py)."""
    return _ItemScores.apply(queries, item_table, items)


def bpr_loss(positive_scores, negative_scores):
    """BPR (Rendle et al., 2009): mean of -log sigmoid(s+ - s-); positive_scores broadcast against negatives."""
    return -F.logsigmoid(positive_scores - negative_scores).mean()


def bce_loss(positive_scores, negative_scores):
    """Binary cross-entropy with one positive and its negatives (SASRec): -log s(s+) - mean log(1 - s(s-))."""
    return -(F.logsigmoid(positive_scores).mean() + F.logsigmoid(-negative_scores).mean())


LOSSES = {"bpr": bpr_loss, "bce": bce_loss}


@dataclass
class Examples:
    """A training batch flattened to examples: one per (user, positive) pair for general backbones, one per
    position of each sequence with a target (> 0; 0 is padding) for sequential ones. That equals prefix
    augmentation, up to dropout, only where a position's output ignores where its row ends (Kang's SASRec,
    GRU4Rec, Mamba4Rec); the s3rec-family blocks count positions back from a row's last item (PositionalBackbone)."""

    queries: torch.Tensor      # (P, D)
    item_table: torch.Tensor   # (I+1, D)
    users: torch.Tensor        # (P,) whose training positives a negative must avoid
    positives: torch.Tensor    # (P,) target items


def examples(model: nn.Module, batch) -> Examples:
    """Run `model` on a batch from `training_batches` and flatten it into per-example queries."""
    if model.sequential:
        sequences, targets, users = batch
        queries, item_table = model(sequences, every_position=True)                   # (B, L, D)
        keep = targets > 0                                                              # (B, L)
        position_users = users.unsqueeze(1).expand_as(targets)[keep]                   # (P,)
        return Examples(queries[keep], item_table, position_users, targets[keep])
    users, items = batch
    queries, item_table = model(users)
    return Examples(queries, item_table, users, items)


def training_batches(split: SplitData, batch_size: int, generator: torch.Generator, device, first: int = 0):
    """One epoch of shuffled batches: interactions (users, items) for general backbones (interaction-uniform,
    RecBole's convention), sequence windows (sequences, targets, users) for sequential ones. `first`: the batch to
    start from (a resumed epoch); the epoch's order is drawn in full all the same."""
    if split.sequential:
        tensors = (split.train_sequences, split.train_targets, split.train_sequence_user)
    else:
        tensors = (split.train_user, split.train_item)
    order = torch.randperm(len(tensors[0]), generator=generator)
    for start in range(first * batch_size, len(order), batch_size):
        index = order[start:start + batch_size]
        yield tuple(t[index].to(device) for t in tensors)


def standard_loss(negatives_fn, loss_name: str, reg_weight: float = 0.0):
    """The batch loss of a method that only changes how negatives are drawn:
    negatives_fn(examples, generator) -> (P, k) item ids; loss = BPR or BCE over (positive, negatives)
    + the L2 penalty of general backbones."""
    loss_fn = LOSSES[loss_name]

    def batch_loss(model, batch, generator):
        ex = examples(model, batch)
        negatives = negatives_fn(ex, generator)                                          # (P, k)
        positive_scores = (ex.queries * ex.item_table[ex.positives]).sum(-1, keepdim=True)  # (P, 1)
        negative_scores = score_items(ex.queries, ex.item_table, negatives)              # (P, k)
        loss = loss_fn(positive_scores, negative_scores)
        if reg_weight and not model.sequential:
            users, items = model.ego_embeddings(ex.users, torch.cat([ex.positives, negatives.flatten()]))
            loss = loss + reg_weight * 0.5 * (users.pow(2).sum() + items.pow(2).sum()) / len(ex.users)
        return loss

    return batch_loss


def training_positives(split: SplitData, device, exclude_held_out: bool = False) -> PositiveSets:
    """Every user's training items (what no negative may be), on `device`.

    exclude_held_out (--exclude-held-out): also every user's validation and test items, what the official ICPNS
    pipeline does (RecBole-GNN's `user_positive_item_dict` is built from the whole data before the split). That
    leaks held-out labels into training; it exists only to reproduce that pipeline, and says so on stderr. Under
    the user split, training users have no held-out items: nothing changes."""
    user, item = split.train_user, split.train_item
    if exclude_held_out and split.protocol == "user":
        print("warning: --exclude-held-out changes nothing under --split user: training users have no validation "
              "or test items", file=sys.stderr)
    elif exclude_held_out:
        print("warning: --exclude-held-out: negatives also avoid each user's validation and test items, which leaks "
              "held-out labels into training; it exists only to reproduce the official ICPNS pipeline",
              file=sys.stderr)
        user, item = torch.cat([user, split.held_out_user]), torch.cat([item, split.held_out_item])
    return PositiveSets(user, item, split.n_users, split.n_items, device)


def pretrain_uniform(args, split: SplitData, model: nn.Module, stage: str = "pretrain",
                     epochs_after: int = 0) -> dict:
    """Train `model` with one uniform negative per positive and BPR, with validation early stopping: ICPNS's
    pre-training stage (epochs_after: `fit`'s); baselines.py's RNS trains with --loss instead. Negatives avoid
    training items only, whatever --exclude-held-out says (the official pre-training uses RecBole's uniform
    sampler, which does)."""
    positives = training_positives(split, args.device)

    def uniform(ex, generator):   # RNS: one uniform non-interacted item per example
        return uniform_negatives(positives, ex.users, 1, generator)

    return fit(args, split, model, standard_loss(uniform, "bpr", args.reg_weight), stage=stage,
               epochs_after=epochs_after)


# ----------------------------------------------------------------------------------------------------------
# 5. Full-ranking evaluation
# ----------------------------------------------------------------------------------------------------------
METRICS = ("recall", "ndcg", "mrr", "hit", "precision")


def ranking_metric_sums(scores: torch.Tensor, positives: torch.Tensor, ks) -> dict:
    """Per-metric SUMS over the rows of `scores` (use `ranking_metrics` for means)."""
    n_targets = positives.sum(1)                                                         # (B,)
    most = max(int(n_targets.max()), 1) if len(n_targets) else 1
    target_scores = torch.topk(scores.masked_fill(~positives, -float("inf")), most, dim=1).values  # (B, T)
    return metric_sums(scores.masked_fill(positives, -float("inf")), target_scores, n_targets, ks)


def metric_sums(other_scores: torch.Tensor, target_scores: torch.Tensor, n_targets: torch.Tensor, ks) -> dict:
    """The sums over the rows of `metric_rows`."""
    return {name: values.sum().item() for name, values in metric_rows(other_scores, target_scores, n_targets,
                                                                       ks).items()}


def metric_rows(other_scores: torch.Tensor, target_scores: torch.Tensor, n_targets: torch.Tensor, ks) -> dict:
    """Each row's metrics (B,) from the scores of the non-targets (B, I), targets excluded (-inf), and the
    targets' scores in descending order (B, T), of which the first n_targets (B,) of each row are real.

    Tie policy (pessimistic): a target never gains from a tie. Among items with equal scores, every
    non-target ranks before every target, so the rank of a target is 1 + #{non-targets scoring >= it} +
    #{targets ranked before it}. A constant model therefore scores (almost) zero, not 100%
    (mlcommons/training_policies#131).
    """
    ks = [int(k) for k in ks]
    n_items = other_scores.shape[1]
    if max(ks) > n_items:
        raise RecError(f"K={max(ks)} is larger than the number of items ({n_items})")
    K, T, device = max(ks), target_scores.shape[1], other_scores.device
    top_others = torch.topk(other_scores, K, dim=1).values.flip(1)                       # (B, K) ascending
    # #{non-targets scoring >= the target}, capped at K (a capped count already means rank > K): K minus the
    # target's left insertion point in the ascending top K (the number of top-K scores strictly below it)
    others_above = K - torch.searchsorted(top_others, target_scores)                      # (B, T)
    rank = others_above + torch.arange(1, T + 1, device=device)                           # (B, T), 1-based
    is_target = torch.arange(T, device=device) < n_targets.unsqueeze(1)                   # (B, T)
    rank = torch.where(is_target, rank, torch.full_like(rank, n_items + 1))               # ascending per row
    discount = 1.0 / torch.log2(rank.double() + 1)                                       # (B, T)
    ideal = torch.cumsum(1.0 / torch.log2(torch.arange(2, K + 2, device=device).double()), 0)  # (K,)
    rows = {}
    for k in ks:
        hit = rank <= k                                                                  # (B, T)
        n_hit = hit.sum(1).double()
        first = rank[:, 0]                                                               # best-ranked target
        idcg = ideal[n_targets.clamp(min=1, max=k) - 1]
        rows[f"recall@{k}"] = n_hit / n_targets.clamp(min=1)
        rows[f"ndcg@{k}"] = (discount * hit).sum(1) / idcg
        rows[f"mrr@{k}"] = torch.where(first <= k, 1.0 / first.double(), 0.0)
        rows[f"hit@{k}"] = (n_hit > 0).double()
        rows[f"precision@{k}"] = n_hit / k
    return rows


def ranking_metrics(scores: torch.Tensor, positives: torch.Tensor, ks) -> dict:
    """Recall, NDCG, MRR, Hit and Precision at each K in `ks`, averaged over the rows, with RecBole's formulas
    (recbole/evaluator/metrics.py) and the pessimistic tie policy of `ranking_metric_sums`.

    scores:    float (rows x items); masked entries (padding, history) are -inf
    positives: bool, same shape; every row must hold at least one positive
    Returns {"recall@K", "ndcg@K", "mrr@K", "hit@K", "precision@K"} as unrounded floats.

    recall@K = hits in top K / |targets|; ndcg@K = sum_{hits} 1/log2(rank+1) / sum_{i<=min(|targets|,K)}
    1/log2(i+1); mrr@K = 1/rank of the first hit (0 if beyond K); hit@K = 1[any hit]; precision@K = hits / K.
    """
    if scores.shape != positives.shape or positives.dtype != torch.bool:
        raise RecError("ranking_metrics needs scores and a bool positives tensor of the same shape")
    if not bool(positives.any(1).all()):
        raise RecError("every row passed to ranking_metrics needs at least one positive")
    sums = ranking_metric_sums(scores, positives, ks)
    return {name: value / len(scores) for name, value in sums.items()}


@torch.no_grad()
def evaluate(model: nn.Module, rows: EvalRows, ks, batch_size: int = 1024, masked_score: float = -float("inf"),
             per_row: bool = False):
    """Full ranking of all items for every row of `rows` on the model's device, in batches of rows.
    Padding scores -inf, the row's masked (history) items `masked_score` (-inf: excluded; the MDCNS code's
    baselines use 0); the metrics are means over the rows. With per_row=True it returns (means, values): values
    {metric@K: float64 numpy array (R,)}, each row's metric in the order of `rows` (the paired comparisons of
    results/aggregate.py), whose means are the means to float rounding.

    Under torchrun the batches are dealt round-robin to the processes (batch b to rank b mod W), each batch's metric
    sums are all-reduced (one process computed each, the others add zeros: exact) and every process adds them up in
    batch order, as one process does: the metrics equal one process's to the last bit (tests/test_distributed.py).
    Evaluation spreads over W processes once there are at least W batches (`--eval-batch-size`)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    names = [f"{m}@{int(k)}" for k in ks for m in METRICS]                               # metric_sums' order
    starts = range(0, len(rows), batch_size)
    sums = torch.zeros(len(starts), len(names), dtype=torch.float64, device=device)      # (batches, metrics)
    values = torch.zeros(len(rows) if per_row else 0, len(names), dtype=torch.float64, device=device)
    for b in range(rank(), len(starts), world_size()):
        start, end = starts[b], min(starts[b] + batch_size, len(rows))
        queries, item_table = model(rows.query[start:end].to(device))
        scores = queries @ item_table.T                                                  # (B, I+1)
        scores[:, 0] = -float("inf")
        masked_rows, masked_items = csr_slice(rows.masked_ptr, rows.masked_items, start, end)
        scores[masked_rows.to(device), masked_items.to(device)] = masked_score
        target_rows, target_items = csr_slice(rows.target_ptr, rows.target_items, start, end)
        target_rows, target_items = target_rows.to(device), target_items.to(device)
        n_targets = rows.target_ptr[start + 1:end + 1] - rows.target_ptr[start:end]          # (B,)
        column = torch.arange(len(target_rows)) - torch.repeat_interleave(
            rows.target_ptr[start:end] - rows.target_ptr[start], n_targets)                  # slot within row
        target_scores = torch.full((end - start, int(n_targets.max())), -float("inf"), device=device)
        target_scores[target_rows, column.to(device)] = scores[target_rows, target_items]    # (B, T)
        target_scores = target_scores.sort(dim=1, descending=True).values
        scores[target_rows, target_items] = -float("inf")                                   # non-targets only
        batch_rows = metric_rows(scores, target_scores, n_targets.to(device), ks)
        sums[b] = torch.tensor([batch_rows[name].sum().item() for name in names], dtype=torch.float64)
        if per_row:
            values[start:end] = torch.stack([batch_rows[name] for name in names], 1)
    model.train(was_training)
    totals = dict.fromkeys(names, 0.0)
    for batch_sums in all_reduce_sum(sums).tolist():                                     # in batch order
        for name, value in zip(names, batch_sums):
            totals[name] += value
    means = {name: value / len(rows) for name, value in totals.items()}
    if not per_row:
        return means
    values = all_reduce_sum(values).cpu().numpy()                    # each row computed by one rank, zeros elsewhere
    return means, {name: values[:, i] for i, name in enumerate(names)}


def csr_slice(ptr, values, start: int, end: int):
    """(row - start, value) pairs of rows start..end-1 of a CSR."""
    counts = ptr[start + 1:end + 1] - ptr[start:end]
    rows = torch.repeat_interleave(torch.arange(end - start), counts)
    return rows, values[ptr[start]:ptr[end]]


# ----------------------------------------------------------------------------------------------------------
# 6. The training loop: fit, train_step, finish
# ----------------------------------------------------------------------------------------------------------
def batch_examples(batch, sequential: bool) -> int:
    """The training examples of a batch of `training_batches`: its targets (sequential) or its rows."""
    return int((batch[1] > 0).sum()) if sequential else len(batch[0])


def train_step(model: nn.Module, optimizer, batch_loss, batch, generator: torch.Generator, sequential: bool,
               received: list) -> tuple[float, bool]:
    """One Adam step on a global batch of `training_batches`. Returns the batch's loss and whether to stop now (a
    signal noted in `received`, by any rank: the same answer everywhere). No step is taken when the loss is not
    finite (the caller raises).

    One process: batch_loss on the batch, backward, step.
    Under torchrun: this rank keeps the rows of its users (`owns`), P_r of the batch's P examples, and
    backpropagates (P_r / P) * its loss. Every batch_loss here is a mean over its batch's examples, so the ranks'
    terms add up to the global batch's mean and their gradients, summed, to its gradient (exact up to float
    rounding, tests/test_distributed.py), whatever the split. A rank whose share is empty still calls batch_loss
    (samplers count their steps, ICPNS's reclustering is collective) and contributes no gradient.

    Why a manual all-reduce and not DistributedDataParallel: DDP syncs the gradients of parameters reached through
    the wrapped module's forward, while here parameters are also reached outside it: MixGCF propagates
    LightGCN/NGCF layers itself (`propagate_layers`), the L2 term reads `ego_embeddings`, MDCNS's peer runs beside
    its pair's forward. Summing every gradient of the optimizer's parameters after backward is exact for all of
    them, and one flat buffer is one all-reduce per step (it also carries the loss and the stop flag). A parameter
    without a gradient on every rank stays without one, so Adam skips it as one process would. DDP would overlap
    the reduction with backward; on the CPU the reduction is a small part of a step (bench/README.md)."""
    if world_size() == 1:
        loss = batch_loss(model, batch, generator)
        if not torch.isfinite(loss):
            return loss.item(), bool(received)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item(), bool(received)
    users = batch[2] if sequential else batch[0]
    shard = tuple(t[owns(users)] for t in batch)
    share = batch_examples(shard, sequential) / batch_examples(batch, sequential)          # P_r / P
    optimizer.zero_grad(set_to_none=True)
    if share > 0:
        loss = share * batch_loss(model, shard, generator)
        loss.backward()
    else:   # no row of the batch is this rank's: batch_loss runs all the same, its (empty) result is dropped
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # e.g. torch's note on a standard deviation over no example
            batch_loss(model, shard, generator)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    flags = [p.grad is not None for p in parameters] + [loss.item() if share > 0 else 0.0, bool(received)]
    flat = all_reduce_sum(torch.cat([p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel())
                                     for p in parameters] + [torch.tensor(flags, device=parameters[0].device)]))
    grads, summed = flat[:-len(flags)], flat[-len(flags):].tolist()
    global_loss, stop = summed[-2], summed[-1] > 0
    if not math.isfinite(global_loss):
        return global_loss, stop
    for p, grad, has_grad in zip(parameters, grads.split([p.numel() for p in parameters]), summed):
        p.grad = grad.view_as(p) if has_grad else None
    optimizer.step()
    return global_loss, stop


@dataclass
class Loop:
    """Where `fit` is: `epoch` epochs done, then `step` batches of the next one (their loss sum and seconds); the
    validations so far, the best one and the number since it (`stale`). A checkpoint keeps it as a dict."""
    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    seconds: float = 0.0
    history: list = field(default_factory=list)
    epoch_seconds: list = field(default_factory=list)
    best_score: float = -1.0
    best_epoch: int = 0
    best_valid: dict | None = None
    stale: int = 0


def fit(args, split: SplitData, model: nn.Module, batch_loss, stage: str = "train", keep: dict | None = None,
        epochs_after: int = 0, on_epoch_start=None) -> dict:
    """Train `model` with Adam, validating every --eval-every epochs, until --epochs, until --valid-metric has not
    improved for more than --patience validations, or at the last validation that fits --time-budget; restore the
    best state. The test set is not touched here. A fresh optimizer every call.

    batch_loss(model, batch, generator) -> scalar loss: a mean over the examples of a batch of `training_batches`.
    on_epoch_start(model, epoch, generator): before the first batch of every epoch (1-based; not when a resumed run
        goes on with an epoch it had begun), with the samplers' generator.
    stage, keep, epochs_after: checkpoints, --resume, torchrun, the pace and the ETA: `TrainingRun`.
    Returns the record of the run: history, best_epoch, valid (best metrics), epoch_seconds, stopped_by.
    """
    run = TrainingRun(args, split, model, stage, keep, epochs_after)
    loop = run.loop
    with deferred_signals() as received:
        while run.stop_reason() is None:
            epoch = loop.epoch + 1
            model.train()
            batches = run.epoch_batches(epoch)
            if on_epoch_start is not None and loop.step == 0:
                on_epoch_start(model, epoch, run.sample_generator)
            for batch in batches:
                loss, stop_now = train_step(model, run.optimizer, batch_loss, batch, run.sample_generator,
                                            split.sequential, received)
                if not math.isfinite(loss):
                    raise run.diverged(loss, epoch)
                loop.loss_sum, loop.step = loop.loss_sum + loss, loop.step + 1
                run.batch_done()
                if stop_now:
                    raise run.interrupted(received)
            mean_loss = run.end_epoch(epoch)
            line = f"{stage} epoch {epoch:3d}  loss {mean_loss:.4f}  {loop.epoch_seconds[-1]:.1f}s"
            if epoch % args.eval_every == 0 or epoch == args.epochs:
                valid = evaluate(model, split.valid, args.ks, args.eval_batch_size)
                loop.history.append({"stage": stage, "epoch": epoch, "loss": mean_loss,
                                     "seconds": sum(loop.epoch_seconds), "valid": valid})
                line += "  valid " + "  ".join(f"{m}@{k} {valid[f'{m}@{k}']:.4f}" for m in ("recall", "ndcg")
                                               for k in args.ks)
                if from_main(lambda: valid[args.valid_metric] > loop.best_score):   # rank 0 decides (torchrun)
                    loop.best_score, loop.best_epoch, loop.best_valid = valid[args.valid_metric], epoch, valid
                    loop.stale, run.best_state = 0, {k: v.detach().clone() for k, v in model.state_dict().items()}
                    line += "  *"
                else:
                    loop.stale += 1
                run.save()
            print(line + run.eta(epoch), flush=True)
            if stop_requested(received):
                raise run.interrupted(received)
    return run.finished()


def finish(args, split: SplitData, model: nn.Module, record: dict, extra: dict | None = None) -> dict:
    """Evaluate the restored best model on test once; write model.pt (the best state and the settings that rebuild
    it) and results.json (with the run's provenance), each atomically; drop the checkpoint; print the summary.
    Under torchrun every rank evaluates (its share) and returns the result; rank 0 alone writes."""
    start = time.perf_counter()
    test, test_rows = evaluate(model, split.test, args.ks, args.eval_batch_size, per_row=True)
    if split.sequential and args.mask_history:
        # the MDCNS code's baselines score the history 0 instead of -inf (Neg_samples_*/trainers.py, full sort):
        # recorded beside the real test metrics, to measure what that does to a published baseline row
        extra = {**(extra or {}), "test_history_masked_to_zero": evaluate(model, split.test, args.ks,
                                                                          args.eval_batch_size, masked_score=0.0)}
    result = {"method": args.method, "dataset": args.dataset, "backbone": args.backbone, "seed": args.seed,
              "config": run_config(args), "data": split.statistics, **record, "test": test,
              "train_seconds": sum(record["epoch_seconds"]), "eval_seconds": time.perf_counter() - start,
              **(extra or {}), **provenance(args)}
    path = os.path.join(args.out_dir, "results.json")
    if is_main():
        if not args.eval_only:
            save_atomically({"method": args.method, "config": run_config(args), "best_epoch": record["best_epoch"],
                             "valid": record["valid"], "state_dict": model.state_dict(),
                             "script": os.path.basename(args.command[0]), "stopped_by": record["stopped_by"]},
                            os.path.join(args.out_dir, "model.pt"))
        save_test_rows(test_rows, split.test, os.path.join(args.out_dir, TEST_ROWS_FILE))
        save_json(result, path)
        for finished in (checkpoint_path(args), os.path.join(args.out_dir, "run.json")):
            if os.path.exists(finished) and not args.eval_only:
                os.remove(finished)
    print(f"best epoch {record['best_epoch']}  test " + "  ".join(
        f"{m}@{k} {test[f'{m}@{k}']:.4f}" for m in ("recall", "ndcg", "mrr") for k in args.ks))
    print(f"wrote {path}" + ("" if args.eval_only else " and model.pt"))
    return result


TEST_ROWS_FILE = "test_rows.npz"


def rows_fingerprint(rows: EvalRows) -> str:
    """sha256 of an evaluation part's targets (CSR): two runs whose test rows share it evaluated the same rows in
    the same order, so their per-row results pair."""
    digest = hashlib.sha256()
    for part in (rows.target_ptr, rows.target_items):
        digest.update(part.cpu().numpy().astype(np.int64).tobytes())
    return digest.hexdigest()


def save_test_rows(values: dict, rows: EvalRows, path: str):
    """test_rows.npz beside results.json: each test row's recall@K and ndcg@K (float64, the split's row order)
    and the rows' fingerprint; written atomically."""
    arrays = {name: value for name, value in values.items() if name.split("@")[0] in ("recall", "ndcg")}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        np.savez_compressed(f, fingerprint=np.array(rows_fingerprint(rows)), **arrays)
    os.replace(path + ".tmp", path)


# ----------------------------------------------------------------------------------------------------------
# 7. The shared command line
# ----------------------------------------------------------------------------------------------------------
DEFAULT_BATCH_SIZE = {"general": 2048, "sequential": 128}   # examples per step when --batch-size is not given


_UNSET = object()   # a flag not given on the command line (CommandLine.parse_args)


def base_parser(description: str, script: str | None = None) -> CommandLine:
    """The flags every method file shares. Flags left at None take the backbone's or dataset's default.
    script: the method file (its __file__): the usage, results.json's `command` and the resume hint name it."""
    parser = CommandLine(description, script or sys.argv[0])
    data = parser.add_argument_group("data and protocol")
    data.add_argument("--dataset", default="synthetic",
                      help="'synthetic' (generated from --seed, offline), a registered dataset name "
                           f"({', '.join(sorted(DATASETS))}), or a path to a CSV/TSV file user,item[,rating[,ts]]")
    data.add_argument("--data-dir", default="data", help="where datasets are found or downloaded to, one "
                      "folder per dataset (data/<name>/ by default)")
    add_data_arguments(data)
    data.add_argument("--split", default="loo", choices=SPLITS,
                      help="loo: leave-one-out by time (SASRec); ratio: per-user random 8:1:1 (RecBole/ICPNS, "
                           "general backbones); user: 70/20/10 of the users (MDCNS, sequential backbones); "
                           "user-prefixes: 80/10/10 of the users in dataset order, every prefix of a valid/test "
                           "user evaluated (the MDCNS code's LastFM files)")
    data.add_argument("--mask-history", default=True, action=argparse.BooleanOptionalAction,
                      help="sequential evaluation: score the input sequence's items -inf (S3-Rec/MDCNS); "
                           "--no-mask-history reproduces RecBole's sequential evaluation")
    data.add_argument("--max-len", type=int, default=None, help="sequence length L of sequential backbones")
    model = parser.add_argument_group("backbone")
    model.add_argument("--backbone", default="mf", choices=BACKBONES, help="the model being trained")
    model.add_argument("--sasrec-block", default="s3rec", choices=("s3rec", "kang"),
                       help="s3rec: the post-LN block of S3-Rec / RecBole / the MDCNS code (GELU feed-forward of "
                            "4 D, N(0, 0.02) init); kang: SASRec's original block (ReLU feed-forward of D, xavier "
                            "init), whose defaults are the sasrec-kang row: SASRec's ml-1m setting")
    model.add_argument("--dim", type=int, default=None, help="embedding size D")
    model.add_argument("--layers", type=int, default=None,
                       help="LightGCN propagation layers / SASRec attention blocks / GRU layers / Mamba layers")
    model.add_argument("--heads", type=int, default=None, help="SASRec / LinRec attention heads (must divide --dim)")
    model.add_argument("--dropout", type=float, default=None, help="dropout of sequential backbones, in [0, 1)")
    model.add_argument("--reg-weight", type=float, default=None,
                       help="L2 weight on the batch's layer-0 embeddings, 1/2 sum ||e||^2 / B; general backbones only")
    train = parser.add_argument_group("training and evaluation")
    train.add_argument("--loss", default="bpr", choices=sorted(LOSSES), help="pairwise BPR or pointwise BCE")
    train.add_argument("--epochs", type=int, default=200, help="maximum training epochs")
    train.add_argument("--batch-size", type=int, default=None,
                       help=f"examples per step: training interactions for mf/lightgcn (default "
                            f"{DEFAULT_BATCH_SIZE['general']}), sequences for sequential backbones (default "
                            f"{DEFAULT_BATCH_SIZE['sequential']})")
    train.add_argument("--augmented-prefixes", action="store_true",
                       help="sequential backbones: train on one row per prefix (its last --max-len items), as the "
                            "MDCNS code and RecBole do, instead of every position of a sequence in one pass; about "
                            "examples/sequences times the forward cost (~8x on Beauty)")
    train.add_argument("--examples-per-batch", type=int, default=None,
                       help="sequential backbones: size the batch in training examples (the MDCNS code's 1024) "
                            "instead of rows; sets --batch-size unless it is given")
    train.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    train.add_argument("--seed", type=int, default=2020, help="seeds python, numpy, torch and every sampler")
    train.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                       help="auto = cuda when available")
    train.add_argument("--eval-every", type=int, default=1, help="validate every E epochs")
    train.add_argument("--time-budget", default=None, metavar="DURATION",
                       help="wall time the command may take, e.g. 2h, 90m, 1h30m: training stops at the last "
                            "validation that fits, the best state is restored and evaluated, results.json says "
                            "stopped_by \"time-budget\"; counted from the start of this command (a --resume gets its "
                            "own)")
    train.add_argument("--patience", type=int, default=10,
                       help="P: stop once --valid-metric has not improved for more than P validations in a row "
                            "(RecBole's stopping_step; P = 10 stops at the 11th)")
    train.add_argument("--valid-metric", default="ndcg@10", help="early-stopping metric, e.g. ndcg@10, recall@20")
    train.add_argument("--ks", default="5,10,20", help="cut-offs K of every metric, comma-separated")
    train.add_argument("--eval-batch-size", type=int, default=1024, help="rows ranked at once")
    train.add_argument("--out-dir", default=None,
                       help="where results.json, model.pt, run.json and the checkpoint go; checked for writing "
                            "before anything else (default: runs/<method>-<dataset>-<backbone>-<seed>-<time>/)")
    train.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in --out-dir from its checkpoint.pt, with the run's own "
                            "flags (the interrupted run prints the command); ends with exactly the uninterrupted "
                            "run's results")
    train.add_argument("--eval-only", default=None, metavar="PATH",
                       help="no training: evaluate a saved model.pt, or the best state so far in a run's "
                            "checkpoint.pt, rebuilt from its own settings, on their split and write results.json")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument("--exclude-held-out", action="store_true",
                       help="negatives and candidate pools also avoid each user's validation and test items: a leak "
                            "of held-out labels into training, only to reproduce the official ICPNS pipeline "
                            "(RecBole-GNN's user_positive_item_dict); no effect under --split user")
    synthetic_defaults(parser, max_len=20, epochs=10)
    return parser


# Settings that do not change a run's results: --resume accepts them changed, --eval-only keeps the command line's.
WHERE_AND_HOW = ("out_dir", "data_dir", "quiet", "eval_only", "time_budget", "cache_dir", "no_cache")


def run_config(args) -> dict:
    """The settings of a run: every flag, resolved, and `world_size`, the number of processes that trained it
    (results.json's `config`)."""
    return {k: v for k, v in vars(args).items()
            if k not in ("method", "command", "resume", "data_file", "data_sha256", "deadline", "run_file")}


def resolve_args(args, method: str):
    """Fill per-backbone defaults, check every flag, pick the device, check --out-dir and what it holds: all before
    any data is read. Every problem is a RecError (one line, exit 2). Under torchrun, joins the process group
    (`init_distributed`) once the flags are known to be good. Returns args (modified)."""
    args.world_size = world_size()
    start = time.perf_counter()
    if args.resume and args.eval_only:
        raise RecError("--resume continues a training run; --eval-only trains nothing: use one of them")
    if args.eval_only:
        method = adopt_saved_settings(args)
    kang = args.backbone == "sasrec" and args.sasrec_block == "kang"
    defaults = BACKBONE_DEFAULTS["sasrec-kang" if kang else args.backbone]
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    sequential = args.backbone in SEQUENTIAL_BACKBONES
    if not sequential and (args.augmented_prefixes or args.examples_per_batch is not None):
        raise RecError("--augmented-prefixes and --examples-per-batch are for sequential backbones "
                       f"({', '.join(SEQUENTIAL_BACKBONES)}), not {args.backbone}")
    if args.batch_size is None and not (sequential and args.examples_per_batch):   # else set from the rows
        args.batch_size = DEFAULT_BATCH_SIZE["sequential" if sequential else "general"]
    check_flags(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise RecError("--device cuda was asked for but CUDA is not available here; use --device cpu")
    args.device = "cuda" if args.device == "auto" and torch.cuda.is_available() else \
        ("cpu" if args.device == "auto" else args.device)
    init_distributed(args)
    args.method = method
    if args.out_dir is None:
        stamp = from_main(time.strftime, "%Y%m%d-%H%M%S")   # one folder for all the processes of a torchrun
        name = os.path.basename(args.dataset).replace(".", "_")
        args.out_dir = os.path.join("runs", f"{method}-{name}-{args.backbone}-{args.seed}-{stamp}")
    from_main(check_out_dir, args)
    if args.cache_dir and not args.no_cache and args.dataset != "synthetic":
        from_main(check_writable, args.cache_dir, "--cache-dir")
    args.deadline = start + duration_seconds(args.time_budget) if args.time_budget else None
    # a fresh run's run.json: its command and settings as given, written with its first checkpoint (TrainingRun.save)
    args.run_file = None if args.resume or args.eval_only else \
        {"command": args.command, "method": method, "config": run_config(args)}
    return args


def seed_everything(seed: int):
    """One seeding block: python, numpy, torch (CPU and CUDA). Under torchrun each process's torch stream (dropout)
    is its own (`rank_seed`); the models start from rank 0's weights (`fit`)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(rank_seed(seed))


def prepare(args, method: str):
    """Resolve and check the flags, seed, load and split the data. Returns (args, split)."""
    args = resolve_args(args, method)
    git_commit()   # read now: the commit of the code that runs, even if the checkout moves before the run ends
    seed_everything(args.seed)
    if args.dataset == "synthetic":
        data = make_synthetic(args.seed)
    else:
        with machine_leader_first():   # one download and one cache write per machine
            data = load_dataset(args.dataset, args.data_dir, min_rating=args.min_rating, k_core=args.k_core,
                                use_cache=not args.no_cache, cache_dir=args.cache_dir)
    args.data_file, args.data_sha256 = data.data_file, data.data_sha256
    print(data.describe())
    split = split_dataset(data, args.split, args.seed, args.backbone in SEQUENTIAL_BACKBONES, args.max_len,
                          args.mask_history)
    s = split.statistics
    print(f"split {args.split}: {s['train_examples']:,} training examples, {s['valid_rows']:,} validation rows, "
          f"{s['test_rows']:,} test rows; full ranking over {split.n_items:,} items, "
          + (("input history masked" if args.mask_history else "history not masked (RecBole)") if split.sequential
             else "training items masked (training + validation items at test)"))
    if max(args.ks) > split.n_items:
        raise RecError(f"K={max(args.ks)} is larger than the number of items ({split.n_items})")
    if split.sequential:
        split = training_rows(args, split)
    return args, split


def training_rows(args, split: SplitData) -> SplitData:
    """The sequential training rows and the batch size: every position of each sequence window in one pass
    (default), or one row per prefix with `--augmented-prefixes`; `--examples-per-batch` sets the batch (in rows)
    to about that many examples when `--batch-size` is not given."""
    if args.augmented_prefixes:
        sequences, targets, users = prefix_rows(split.train_user, split.train_item, split.max_len)
        split = dataclasses.replace(split, train_sequences=sequences, train_targets=targets,
                                    train_sequence_user=users, prefix_rows=True)
    n_rows, n_examples = len(split.train_sequences), int((split.train_targets > 0).sum())
    if args.batch_size is None:
        args.batch_size = max(1, round(args.examples_per_batch * n_rows / n_examples))
    split.statistics.update(train_rows=n_rows, augmented_prefixes=args.augmented_prefixes)
    print(f"training rows: {n_rows:,} {'prefixes' if args.augmented_prefixes else 'sequence windows'}, "
          f"{n_examples:,} examples; {args.batch_size} rows per batch (~{args.batch_size * n_examples / n_rows:.0f} "
          "examples)")
    return split


# ==========================================================================================================
# Part II: machinery that changes no number
# ==========================================================================================================


# ----------------------------------------------------------------------------------------------------------
# 8. Fast paths: each computes what a Part I function states, to float rounding (tested)
# ----------------------------------------------------------------------------------------------------------
class SymmetricSparseMatmul(torch.autograd.Function):
    """A @ X for a symmetric sparse A that needs no gradient: the backward is A @ grad, so autograd never
    transposes A (torch.sparse.mm's backward re-sorts A^T every step; this is ~4x faster on CPU)."""

    @staticmethod
    def forward(ctx, A, X):
        ctx.A = A
        return A @ X

    @staticmethod
    def backward(ctx, grad):
        return None, ctx.A @ grad


@lru_cache(maxsize=None)
def _bernoulli_draws_uniform_doubles() -> bool:
    """Whether this build's CPU `bernoulli_(p)` (what nn.Dropout draws its mask with) is `rand(float64) < p`: the
    same uniforms from the same generator, consumed alike. It is where PyTorch takes its default kernel (ATen's
    `bernoulli_scalar_kernel`: every non-Intel CPU, and builds without MKL); on Intel CPUs it takes MKL's, whose
    masks differ. Checked once on a private generator rather than guessed from the vendor."""
    draws = [torch.Generator().manual_seed(7) for _ in range(2)]
    mask = torch.empty(1031).bernoulli_(0.3, generator=draws[0]).bool()
    same = torch.equal(mask, torch.rand(1031, dtype=torch.float64, generator=draws[1]) < 0.3)
    return same and torch.equal(draws[0].get_state(), draws[1].get_state())


class Dropout(nn.Dropout):
    """nn.Dropout with the same masks, values and gradients, drawn ~2.5x faster on the CPU. Where PyTorch's CPU
    `bernoulli_` is `rand(float64) < 1 - p` (`_bernoulli_draws_uniform_doubles`), its per-element kernel costs
    ~12 ns an element against ~4.5 ns for `torch.rand` (Mamba4Rec's seven dropouts took its forward on a Beauty
    batch from 31 to 24 ms, bench/README.md). So the mask is drawn by `torch.rand` and then used exactly as ATen's
    CPU dropout uses it (noise = mask / (1 - p), output = input * noise). Everywhere else (CUDA, MKL's kernel, a
    non-contiguous input, inplace=True) it is nn.Dropout."""

    def forward(self, x):
        p = self.p
        if not (self.training and 0 < p < 1 and x.numel() and x.device.type == "cpu" and x.is_contiguous()
                and not self.inplace and _bernoulli_draws_uniform_doubles()):
            return super().forward(x)
        noise = (torch.rand(x.shape, dtype=torch.float64, device=x.device) < 1 - p).to(x.dtype).div_(1 - p)
        return x * noise


class Packing:
    """The real positions of right-padded item rows (B, L): each row's steps up to its last item (at least
    step 0, which forward() reads of an empty row), row after row, as `x[real]` for the (B, L) mask of them.
    Mamba4Rec and the `PositionalBackbone`s (SASRec, LinRec, FMLP4Rec) compute on these P positions only, packed
    (P, ...): their position-wise layers, dropouts and LayerNorms directly; Mamba4Rec's causal conv
    (`MambaBlock.causal_conv`) and scan (`packed_selective_scan`) on the packed rows; the attentions and FMLP's
    filter on rows of similar length (`by_buckets`). On Beauty (L = 50) 84% of the training positions are
    padding. A causal model's real positions never depend on the padding after them, so they come out as in the
    sequence layout (B, L, ...), which `unpack` restores with 0 at the padding."""

    def __init__(self, sequences):
        steps = torch.arange(1, sequences.shape[1] + 1, device=sequences.device)
        self.lengths = ((sequences > 0) * steps).amax(1).clamp(min=1)                  # (B,) real steps per row
        self.index = (steps <= self.lengths.unsqueeze(1)).view(-1).nonzero().squeeze(1)  # (P,) in B * L, row-major
        self.starts = self.lengths.cumsum(0) - self.lengths                            # (B,) row b's step 0 in P
        self.shape = tuple(sequences.shape)
        self.step = self.index % self.shape[1]                                         # (P,) t of each position
        self._masks = {}                                                               # same_row_masks

    def same_row_masks(self, taps: int, dtype) -> list:
        """For k = 1 .. taps - 1: (P - k, 1) of dtype, 1 where position p + k (step t) and p (its x_{t-k} in the
        packed order) are in the same row, i.e. t >= k; 0 where p belongs to the row before. Computed once per
        batch and dtype, read by every layer's causal conv (`MambaBlock.causal_conv`)."""
        key = taps, dtype
        if key not in self._masks:
            self._masks[key] = [(self.step[k:] >= k).to(dtype).unsqueeze(1) for k in range(1, taps)]
        return self._masks[key]

    def pack(self, t):                                                                 # (B, L, ...) -> (P, ...)
        return t.reshape(-1, *t.shape[2:]).index_select(0, self.index)

    def unpack(self, t):                                                               # (P, ...) -> (B, L, ...)
        flat = t.new_zeros(self.shape[0] * self.shape[1], *t.shape[1:])
        return flat.index_copy(0, self.index, t).view(*self.shape, *t.shape[1:])

    @functools.cached_property
    def buckets(self):
        """The rows grouped by length, up to 8, 9-16, 17-32, ... steps, each bucket as `where` (rows, W), the
        packed position of step t of each row, and `real` (rows, W), whether t is a real step; W is the bucket's
        longest row. Steps past a row's length point at its step 0: a causal model's real steps never read
        them. Computed once per batch, read by every attention layer."""
        buckets, low, cap = [], 0, 8
        while low < self.shape[1]:
            rows = ((self.lengths > low) & (self.lengths <= cap)).nonzero().squeeze(1)   # (rows,)
            if len(rows):
                lengths = self.lengths[rows]
                steps = torch.arange(int(lengths.max()), device=self.index.device)
                real = steps < lengths.unsqueeze(1)                                       # (rows, W)
                buckets.append((self.starts[rows].unsqueeze(1) + steps * real, real))    # where (rows, W)
            low, cap = cap, 2 * cap
        return buckets

    def by_buckets(self, fn, x):                                                       # (P, *C) -> (P, *C')
        """fn, a causal map of rows (R, W, *C) -> (R, W, *C') (step t reads steps <= t only), on the packed rows
        x (P, *C), one bucket of `buckets` at a time: its rows gathered to (R, W, *C), their real steps written
        back in packed order. The steps past a row's length (copies of its step 0) never reach a real step."""
        if not self.buckets:                                                           # no rows: P = 0
            return fn(x.unsqueeze(1))[:, 0]                                            # zero rows of one step
        positions = torch.cat([where[real] for where, real in self.buckets])           # (P,) each position once
        outputs = torch.cat([fn(x[where])[real] for where, real in self.buckets])      # (P, *C'), bucket order
        return outputs.new_empty(outputs.shape).index_put((positions,), outputs)      # back in packed order


def packed_selective_scan(x, dt, A, B, C, D, packing: Packing):
    """`selective_scan` of `packing`'s rows, packed: x, dt (P, d_inner), B, C (P, d_state) at its real positions
    -> y (P, d_inner). On the PyTorch path no padding is filled, read or written (Mamba4Rec's case); mamba_ssm's
    kernel takes the sequence layout, so there the rows are unpacked around it."""
    if _fused_scan(x) is not None:
        x, dt, B, C = map(packing.unpack, (x, dt, B, C))
        return packing.pack(selective_scan(x, dt, A, B, C, D, packing.lengths))
    return _scan_rows(x, dt, A, B, C, D, packing.starts, packing.lengths)


def _scan_rows(x, dt, A, B, C, D, starts, lengths):
    """The selective scan of rows stored along dim 0 of x, dt (N, d_inner), B, C (N, d_state): row b's step t at
    starts[b] + t for t < lengths[b]; y (N, d_inner) is D x at the positions no row covers. On the CPU the compiled
    loop `_CompiledScan` where it could be built, else (and on CUDA without mamba_ssm) `_SelectiveScan`."""
    work = torch.promote_types(x.dtype, torch.float32)
    inputs = [t.to(work) for t in (x, dt, A, B, C, D)]
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    scan = _CompiledScan if _compiled_mamba_for(inputs[0]) is not None else _SelectiveScan
    return scan.apply(*inputs, starts, lengths, keep).to(x.dtype)


def _fused_scan(x):
    """mamba_ssm's fused CUDA `selective_scan_fn` where it applies (x on CUDA, not float64), else None."""
    return _mamba_ssm_selective_scan() if x.is_cuda and x.dtype != torch.float64 else None


@lru_cache(maxsize=None)
def _mamba_ssm_selective_scan():
    """mamba_ssm's fused CUDA `selective_scan_fn` if the package is installed, else None (it is optional)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return None
    return selective_scan_fn


_LOG2E = 1 / math.log(2)


class _SelectiveScan(torch.autograd.Function):
    """`selective_scan` as a PyTorch loop (on CUDA without mamba_ssm; on the CPU where `_CompiledScan`, the same
    loop in C++, could not be built or NEGSAMPLING_MAMBA=pytorch), with a hand-written backward: the adjoint
    recurrence run backwards in time,

        G_t = C_t gy_t + exp(dt_{t+1} A) G_{t+1}      (dLoss/dh_t, (d_inner, d_state) per row)
        dLoss/d(dt_t A) = G_t exp(dt_t A) h_{t-1},    dLoss/d(dt_t B_t x_t) = G_t.

    Why a loop over time steps and not a parallel scan: on a CPU thread the loop is not latency-bound but
    bound by memory traffic and by PyTorch's per-call overhead, and every parallel form does more of both. A
    chunked parallel scan needs exp(S_t - S_s) for every pair s <= t of a chunk (S = cumsum(dt A), kept as
    differences so that no exponent is positive), i.e. T/2 times the exps of the loop for chunks of T steps:
    the SSD/Mamba-2 matmul factorisation exp(S_t) exp(-S_s) needs a scalar A per head and overflows otherwise;
    Mamba-1's A differs per (channel, state). Measured at the project's shapes (batch 128, L = 50,
    d_inner = 128, d_state = 16, forward + backward, one thread; bench/bench_scan.py), chunks of 2 or 5 steps
    through autograd cost ~40x this loop. What makes the loop fast instead (2.4x the blocked loop it replaced
    in bench/bench_scan.py, ~9x with Beauty's padding):
    - rows in groups of ~2^17 / (d_inner d_state) (64 at d = 128, n = 16), each run through all steps with its
      state h updated in place, so the per-step tensors (512 KB) stay in the L2 cache;
    - padding packed away: positions are stored step-major with the rows in decreasing length, so the rows
      still running at step t are a prefix of those at t - 1 and each step works on a contiguous slice of
      only the real positions (torch.nn.utils.rnn's PackedSequence layout);
    - (rows, d_state, d_inner) layout: every broadcast runs along the contiguous d_inner, and the four
      contractions are batched matmuls in their fast orientation ((1, k) @ (k, m));
    - the states h_t are the only (.., d_state, d_inner) tensors kept for the backward (Bt L d_inner d_state
      floats, only the real positions' with padding), one tensor per group: 26 MB at L = 50, below glibc's 32 MB mmap
      threshold, so it is reused instead of page-faulted afresh on every call (that costs ~3x the time of
      filling it); exp(dt A) is recomputed: keeping it as well doubled the page faults and cost more than the
      exps (measured). Without gradients (evaluation) no state is kept at all;
    - exp(dt A) as exp2(dt A log2 e): PyTorch's CPU exp2 is ~2.7x cheaper than its exp (float rounding apart,
      the same number), and the exps are most of the arithmetic;
    - a group's last steps of at most `tail_rows` rows (the batch's few long rows: on Beauty ~35 steps of 1-8 rows)
      run as its tail (`tail`): there each kernel's launch costs more than its work, so everything but the
      recurrence itself (exp(dt A), dt B x, C . h, and in the backward the four contractions and W) is computed
      once over all the tail's positions and each step is one addcmul_ (the scan 2-10% cheaper on Beauty).
    Tried and slower here (bench/README.md): every non-recurrent product done once per row group on all its
    positions instead of step by step (fewer, larger kernels; but they leave the L2 cache); the whole batch as
    one group.
    """

    group_elements = 1 << 17   # rows per group x d_state x d_inner: one 512 KB float32 buffer
    tail_rows = 8              # a group's last steps of at most this many rows run as its tail (`tail`)

    @staticmethod
    def schedule(starts, lengths, group_rows: int):
        """Where each step of each row group lives, for rows b of lengths[b] steps stored from starts[b] on along
        dim 0 of x. Returns index (P,): the rows' (row, step) positions in x, step-major, rows in decreasing length
        within a step (the packed layout); and for each group of `group_rows` consecutive packed rows, one (packed
        slice, slice of the group's states) per step until its longest row ends."""
        L = int(lengths.max()) if len(lengths) else 0
        order = torch.argsort(lengths, descending=True, stable=True)                  # (Bt,) longest first
        steps = torch.arange(L, device=lengths.device)
        running = lengths[order].unsqueeze(0) > steps.unsqueeze(1)                    # (L, Bt)
        index = (starts[order].unsqueeze(0) + steps.unsqueeze(1))[running]            # (P,) step-major
        counts = running.sum(1)                                                       # rows running per step
        starts, counts = (counts.cumsum(0) - counts).tolist(), counts.tolist()
        groups = []
        for first in range(0, counts[0] if L else 0, group_rows):
            steps_of_group, kept = [], 0
            for start, count in zip(starts, counts):
                rows = min(count, first + group_rows) - first
                if rows <= 0:
                    break
                steps_of_group.append((slice(start + first, start + first + rows), slice(kept, kept + rows)))
                kept += rows
            groups.append(steps_of_group)
        return index, groups

    @staticmethod
    def tail(steps, tail_rows: int, device):
        """The last steps of a group's `steps` (from `schedule`) that run at most `tail_rows` rows (the few long
        rows of a batch), or None: `first`, the index of its first step; `where` (T,), their packed positions in
        step order (the order of their states in the group's buffer); `span`, their slice of that buffer; `steps`,
        (slice in the T positions, rows) per step; `skip`, how many of the T are at the group's step 0 (no
        previous state: 0 unless first = 0); `previous` (T - skip,), the buffer position of each one's h_{t-1}."""
        first = next((i for i, (_, k) in enumerate(steps) if k.stop - k.start <= tail_rows), len(steps))
        if first == len(steps):
            return None
        where, previous, local, start = [], [], [], steps[first][1].start
        for i in range(first, len(steps)):
            (r, k), rows = steps[i], steps[i][1].stop - steps[i][1].start
            where.extend(range(r.start, r.stop))
            local.append((slice(k.start - start, k.stop - start), rows))
            if i:
                previous.extend(range(steps[i - 1][1].start, steps[i - 1][1].start + rows))
        as_tensor = functools.partial(torch.tensor, dtype=torch.long, device=device)
        return types.SimpleNamespace(first=first, where=as_tensor(where), span=slice(start, steps[-1][1].stop),
                                     steps=local, skip=0 if first else local[0][1], previous=as_tensor(previous))

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, starts, lengths, keep):
        N, d = x.shape
        n = A.shape[1]
        index, groups = _SelectiveScan.schedule(starts, lengths, max(1, _SelectiveScan.group_elements // A.numel()))
        xp, dtp = (t.reshape(N, 1, d).index_select(0, index) for t in (x, dt))         # (P, 1, d) packed
        Bp = B.reshape(N, n, 1).index_select(0, index)                                 # (P, n, 1)
        Cp = C.reshape(N, 1, n).index_select(0, index)                                 # (P, 1, n)
        At = A.T.contiguous()                                                          # (n, d)
        A2 = At * _LOG2E                                                               # exp(dt A) = 2^(dt A log2 e)
        dtx = dtp * xp
        yp = xp.new_empty(len(index), 1, d)
        tails = [_SelectiveScan.tail(steps, _SelectiveScan.tail_rows, x.device) for steps in groups]
        states = []                                   # per group: h_t of every step, (steps x rows, n, d)
        for steps, tail in zip(groups, tails):
            rows0 = steps[0][1].stop
            decay = xp.new_empty(rows0, n, d)
            kept = xp.new_empty(steps[-1][1].stop, n, d) if keep else xp.new_empty(rows0, n, d)
            h = None
            for r, k in steps[:tail.first if tail else len(steps)]:
                rows = k.stop - k.start
                out = kept[k] if keep else kept[:rows]                                 # without a backward, in place
                if h is None:
                    torch.mul(dtx[r], Bp[r], out=out)                                  # h_0 = dt B x
                else:
                    a = torch.mul(dtp[r], A2, out=decay[:rows]).exp2_()                # exp(dt_t A), (rows, n, d)
                    torch.mul(h[:rows], a, out=out).addcmul_(dtx[r], Bp[r])            # h_t = a h_{t-1} + dt B x
                h = out
                torch.bmm(Cp[r], h, out=yp[r])                                         # C_t . h_t, (rows, 1, d)
            if tail:                          # the steps of few rows: everything but the recurrence at once
                where = tail.where
                hs = kept[tail.span] if keep else xp.new_empty(len(where), n, d)       # (T, n, d)
                torch.mul(dtx[where], Bp[where], out=hs)                               # dt B x of every tail step
                a = torch.mul(dtp[where], A2).exp2_()                                  # exp(dt A), (T, n, d)
                for k, rows in tail.steps:
                    if h is not None:
                        hs[k].addcmul_(a[k], h[:rows])                                 # h_t = dt B x + a h_{t-1}
                    h = hs[k]
                yp.index_copy_(0, where, torch.bmm(Cp[where], hs))                    # C_t . h_t, (T, 1, d)
            if keep:
                states.append(kept)
        y = (x * D).index_add_(0, index, yp.view(-1, d))                               # D x + C . h, (N, d)
        if keep:
            ctx.save_for_backward(x, xp, dtp, At, Bp, Cp, D, index, *states)
            ctx.groups, ctx.tails = groups, tails
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        x, xp, dtp, At, Bp, Cp, D, index, *states = ctx.saved_tensors
        N, d = x.shape
        n, P = At.shape[0], len(index)
        A2 = At * _LOG2E
        gyp = gy.reshape(N, 1, d).index_select(0, index)                               # (P, 1, d)
        dtx = dtp * xp
        Bq, Cq = Bp.transpose(1, 2), Cp.transpose(1, 2)                                # (P, 1, n), (P, n, 1)
        gBp, gCp = xp.new_empty(P, 1, n), xp.new_empty(P, 1, n)                        # packed, (P, 1, n)
        gdtx, gdtp = xp.new_empty(P, 1, d), xp.new_empty(P, 1, d)                      # packed, (P, 1, d)
        gAt = torch.zeros_like(At)
        for steps, kept, tail in zip(ctx.groups, states, ctx.tails):
            rows0 = steps[0][1].stop
            G, decay = xp.new_empty(rows0, n, d), xp.new_empty(rows0, n, d)
            gA_rows = xp.new_zeros(rows0, n, d)                                        # sum over steps of W dt
            running = 0                          # rows of G that hold exp(dt_{t+1} A) G_{t+1} from step t + 1
            if tail:                          # the steps of few rows: everything but the recurrence at once
                where, hs = tail.where, kept[tail.span]                                # (T,), h_t (T, n, d)
                Gs = torch.mul(Cq[where], gyp[where])                                  # C_t gy_t, (T, n, d)
                a = torch.mul(dtp[where], A2).exp2_()                                  # exp(dt_t A), (T, n, d)
                for (k, rows), (k_next, rows_next) in zip(tail.steps[-2::-1], tail.steps[:0:-1]):
                    Gs[k][:rows_next].addcmul_(a[k_next], Gs[k_next])                  # G_t += exp(dt A) G_{t+1}
                gBp.index_copy_(0, where, torch.bmm(dtx[where], Gs.transpose(1, 2)))  # sum_d G dt x
                gdtx.index_copy_(0, where, torch.bmm(Bq[where], Gs))                   # sum_n G B
                gCp.index_copy_(0, where, torch.bmm(gyp[where], hs.transpose(1, 2)))   # sum_d h gy
                Ga = Gs.mul_(a)[tail.skip:]                                            # exp(dt_t A) G_t, t > 0
                if tail.first:
                    G[:tail.steps[0][1]] = Ga[tail.steps[0][0]]                        # carried to the head's end
                    running = tail.steps[0][1]
                W = Ga.mul_(kept.index_select(0, tail.previous))                       # dLoss/d(dt_t A), t > 0
                gAt += W.mul(dtp[where[tail.skip:]]).sum(0)                            # dLoss/dA += W dt
                gdtp_tail = xp.new_zeros(len(where), 1, d)                             # h_{-1} = 0: none at t = 0
                torch.sum(W.mul_(At), 1, keepdim=True, out=gdtp_tail[tail.skip:])      # dLoss/ddt: sum_n W A ...
                gdtp.index_copy_(0, where, gdtp_tail)
            for i in range(len(steps) - 1 if not tail else tail.first - 1, -1, -1):
                r, k = steps[i]
                rows = k.stop - k.start
                G[running:rows].zero_()                                                # rows whose end is here
                Gt = G[:rows].addcmul_(Cq[r], gyp[r])                                  # G_t, (rows, n, d)
                torch.bmm(dtx[r], Gt.transpose(1, 2), out=gBp[r])                      # sum_d G dt x
                torch.bmm(Bq[r], Gt, out=gdtx[r])                                      # dLoss/d(dt x) = sum_n G B
                torch.bmm(gyp[r], kept[k].transpose(1, 2), out=gCp[r])                 # sum_d h gy
                if i == 0:
                    gdtp[r] = 0                                                        # h_{-1} = 0: no decay term
                    continue
                a = torch.mul(dtp[r], A2, out=decay[:rows]).exp2_()                    # exp(dt_t A)
                Gt.mul_(a)                                                             # carried to step t - 1
                W = torch.mul(Gt, kept[steps[i - 1][1]][:rows], out=a)                 # dLoss/d(dt_t A)
                gA_rows[:rows].addcmul_(W, dtp[r])                                     # dLoss/dA += W dt
                torch.sum(W.mul_(At), 1, keepdim=True, out=gdtp[r])                    # dLoss/ddt: sum_n W A ...
                running = rows
            gAt += gA_rows.sum(0)
        gdtx, gdtp = gdtx.view(P, d), gdtp.view(P, d).addcmul_(gdtx.view(P, d), xp.view(P, d))  # ... + x sum_n G B
        gx = (gy * D).index_add_(0, index, gdtx * dtp.view(P, d))                      # (N, d)
        gdt = x.new_zeros(N, d).index_copy_(0, index, gdtp)
        gB, gC = (x.new_zeros(N, n).index_copy_(0, index, g.view(P, n)) for g in (gBp, gCp))
        return gx, gdt, gAt.T, gB, gC, (gy * x).sum(0), None, None, None


# Mamba4Rec's two loops over positions in C++, each equal to its PyTorch form to float rounding (tests/test_mamba.py):
# - the selective scan (`_CompiledScan`): the recurrence of `selective_scan`'s docstring and the adjoint of
#   `_SelectiveScan`'s, a row at a time with its state (d_state x d_inner floats) in the L1 cache, every inner loop
#   along the channels (vectorised by the compiler). Nothing of size (positions, d_state, d_inner) is kept: the
#   backward recomputes a row's states h_t and decays exp(dt_t A) into a buffer of one row (<= 2 L d_state d_inner
#   floats, in the L2 cache), then runs back through them, as mamba_ssm's CUDA kernel recomputes rather than stores.
#   Rows run in parallel over torch's threads; dLoss/dA is summed per thread, then added up;
# - the causal conv and the SiLU after it (`_CompiledConvSiLU`): `_CausalConv`'s sums, one pass over the positions,
#   the channels split over torch's threads.
_MAMBA_CPP = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

template <typename T>
static void forward_rows(const T* __restrict__ x, const T* __restrict__ dt, const T* __restrict__ At,
                         const T* __restrict__ B, const T* __restrict__ C, const T* __restrict__ D,
                         const int64_t* starts, const int64_t* lengths, int64_t first, int64_t last, int64_t d,
                         int64_t n, T* __restrict__ y) {
  std::vector<T> h(n * d), u(d), acc(d);
  for (int64_t b = first; b < last; ++b) {
    std::fill(h.begin(), h.end(), T(0));                                  // h_{-1} = 0
    for (int64_t t = 0; t < lengths[b]; ++t) {
      const int64_t p = starts[b] + t;
      const T* xp = x + p * d; const T* dtp = dt + p * d;
      for (int64_t c = 0; c < d; ++c) { u[c] = dtp[c] * xp[c]; acc[c] = D[c] * xp[c]; }
      for (int64_t k = 0; k < n; ++k) {
        const T Bk = B[p * n + k], Ck = C[p * n + k];
        T* hk = h.data() + k * d; const T* Ak = At + k * d;
#pragma omp simd
        for (int64_t c = 0; c < d; ++c) {
          const T v = std::exp(dtp[c] * Ak[c]) * hk[c] + u[c] * Bk;       // h_t = exp(dt A) h_{t-1} + dt B x
          hk[c] = v;
          acc[c] += Ck * v;                                               // y_t = C_t . h_t + D x_t
        }
      }
      std::copy(acc.begin(), acc.end(), y + p * d);
    }
  }
}

template <typename T>
static void backward_rows(const T* __restrict__ gy, const T* __restrict__ x, const T* __restrict__ dt,
                          const T* __restrict__ At, const T* __restrict__ B, const T* __restrict__ C,
                          const T* __restrict__ D, const int64_t* starts, const int64_t* lengths, int64_t first,
                          int64_t last, int64_t d, int64_t n, int64_t L, T* __restrict__ gx, T* __restrict__ gdt,
                          T* __restrict__ gAt, T* __restrict__ gB, T* __restrict__ gC) {
  // one row's states h_{-1} .. h_{L-1} and decays exp(dt_t A), recomputed as the forward computed them
  std::vector<T> H((L + 1) * n * d, T(0)), decay(L * n * d), G(n * d), sGB(d), sWA(d), u(d);
  for (int64_t b = first; b < last; ++b) {
    for (int64_t t = 0; t < lengths[b]; ++t) {
      const int64_t p = starts[b] + t;
      const T* xp = x + p * d; const T* dtp = dt + p * d;
      for (int64_t c = 0; c < d; ++c) u[c] = dtp[c] * xp[c];
      for (int64_t k = 0; k < n; ++k) {
        const T Bk = B[p * n + k];
        const T* hprev = H.data() + (t * n + k) * d; T* hk = H.data() + ((t + 1) * n + k) * d;
        T* ak = decay.data() + (t * n + k) * d; const T* Ak = At + k * d;
#pragma omp simd
        for (int64_t c = 0; c < d; ++c) {
          ak[c] = std::exp(dtp[c] * Ak[c]);
          hk[c] = ak[c] * hprev[c] + u[c] * Bk;                           // h_t = exp(dt A) h_{t-1} + dt B x
        }
      }
    }
    std::fill(G.begin(), G.end(), T(0));
    for (int64_t t = lengths[b] - 1; t >= 0; --t) {
      const int64_t p = starts[b] + t;
      const T* xp = x + p * d; const T* dtp = dt + p * d; const T* gyp = gy + p * d;
      std::fill(sGB.begin(), sGB.end(), T(0)); std::fill(sWA.begin(), sWA.end(), T(0));
      for (int64_t c = 0; c < d; ++c) u[c] = dtp[c] * xp[c];
      for (int64_t k = 0; k < n; ++k) {
        const T Bk = B[p * n + k], Ck = C[p * n + k];
        T* Gk = G.data() + k * d; const T* Ak = At + k * d; const T* Hk = H.data() + ((t + 1) * n + k) * d;
        const T* ak = decay.data() + (t * n + k) * d; T* gAk = gAt + k * d;
        T sB = 0, sC = 0;
        if (t > 0) {
          const T* Hprev = Hk - n * d;                                    // h_{t-1}
#pragma omp simd reduction(+:sB, sC)
          for (int64_t c = 0; c < d; ++c) {
            const T g = Gk[c] + Ck * gyp[c];                              // G_t = C_t gy_t + exp(dt_{t+1} A) G_{t+1}
            sB += g * u[c]; sC += gyp[c] * Hk[c]; sGB[c] += g * Bk;       // sum_d G dt x, sum_d gy h, sum_n G B
            const T Ga = g * ak[c];                                       // carried to t - 1
            const T W = Ga * Hprev[c];                                    // dLoss/d(dt_t A)
            gAk[c] += W * dtp[c]; sWA[c] += W * Ak[c];
            Gk[c] = Ga;
          }
        } else {                                                          // h_{-1} = 0: no decay term
#pragma omp simd reduction(+:sB, sC)
          for (int64_t c = 0; c < d; ++c) {
            const T g = Gk[c] + Ck * gyp[c];
            sB += g * u[c]; sC += gyp[c] * Hk[c]; sGB[c] += g * Bk;
          }
        }
        gB[p * n + k] = sB; gC[p * n + k] = sC;
      }
      for (int64_t c = 0; c < d; ++c) {
        gx[p * d + c] = sGB[c] * dtp[c] + gyp[c] * D[c];
        gdt[p * d + c] = sWA[c] + sGB[c] * xp[c];
      }
    }
  }
}

static int64_t grain(const torch::Tensor& lengths) {                     // ~8 rows' work per task at least
  return std::max<int64_t>(1, lengths.size(0) / std::max<int64_t>(1, 8 * at::get_num_threads()));
}

torch::Tensor scan_forward(torch::Tensor x, torch::Tensor dt, torch::Tensor A, torch::Tensor B, torch::Tensor C,
                           torch::Tensor D, torch::Tensor starts, torch::Tensor lengths) {
  const int64_t d = x.size(1), n = A.size(1);
  auto At = A.t().contiguous();
  auto y = x * D;                                                         // D x where no row runs
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "scan_forward", [&] {
    at::parallel_for(0, lengths.size(0), grain(lengths), [&](int64_t first, int64_t last) {
      forward_rows<scalar_t>(x.data_ptr<scalar_t>(), dt.data_ptr<scalar_t>(), At.data_ptr<scalar_t>(),
                             B.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(), D.data_ptr<scalar_t>(),
                             starts.data_ptr<int64_t>(), lengths.data_ptr<int64_t>(), first, last, d, n,
                             y.data_ptr<scalar_t>());
    });
  });
  return y;
}

std::vector<torch::Tensor> scan_backward(torch::Tensor gy, torch::Tensor x, torch::Tensor dt, torch::Tensor A,
                                         torch::Tensor B, torch::Tensor C, torch::Tensor D, torch::Tensor starts,
                                         torch::Tensor lengths) {
  const int64_t d = x.size(1), n = A.size(1), L = lengths.numel() ? lengths.max().item<int64_t>() : 0;
  auto At = A.t().contiguous();
  auto gx = gy * D, gdt = torch::zeros_like(dt), gB = torch::zeros_like(B), gC = torch::zeros_like(C);
  auto gAt = torch::zeros({at::get_num_threads(), n, d}, x.options());   // one partial sum per thread
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "scan_backward", [&] {
    at::parallel_for(0, lengths.size(0), grain(lengths), [&](int64_t first, int64_t last) {
      backward_rows<scalar_t>(gy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), dt.data_ptr<scalar_t>(),
                              At.data_ptr<scalar_t>(), B.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(),
                              D.data_ptr<scalar_t>(), starts.data_ptr<int64_t>(), lengths.data_ptr<int64_t>(), first,
                              last, d, n, L, gx.data_ptr<scalar_t>(), gdt.data_ptr<scalar_t>(),
                              gAt[at::get_thread_num()].data_ptr<scalar_t>(), gB.data_ptr<scalar_t>(),
                              gC.data_ptr<scalar_t>());
    });
  });
  return {gx, gdt, gAt.sum(0).t(), gB, gC, (gy * x).sum(0)};
}
// u_p = silu(s_p), s_p = b + sum_{k < taps, k <= step_p} w_k x_{p-k}: the depthwise causal conv on packed rows (a
// position's x_{t-k} is the one k positions before it, in its row while k <= its step t), then SiLU.
template <typename T>
static void conv_rows(const T* __restrict__ x, const T* __restrict__ wk_major, const T* __restrict__ bias,
                      const int64_t* step, int64_t P, int64_t d, int64_t taps, int64_t c0, int64_t c1,
                      T* __restrict__ s, T* __restrict__ u) {             // channels c0 .. c1 - 1
  for (int64_t p = 0; p < P; ++p) {
    T* sp = s + p * d;
    std::copy(bias + c0, bias + c1, sp + c0);
    for (int64_t k = 0; k <= std::min<int64_t>(step[p], taps - 1); ++k) {
      const T* xk = x + (p - k) * d; const T* w = wk_major + k * d;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) sp[c] += w[c] * xk[c];
    }
    T* up = u + p * d;
#pragma omp simd
    for (int64_t c = c0; c < c1; ++c) up[c] = sp[c] / (T(1) + std::exp(-sp[c]));      // SiLU
  }
}

template <typename T>
static void conv_rows_backward(const T* __restrict__ gu, const T* __restrict__ x, const T* __restrict__ wk_major,
                               const T* __restrict__ s, const int64_t* step, int64_t P, int64_t d, int64_t taps,
                               int64_t c0, int64_t c1, T* __restrict__ gx, T* __restrict__ gw, T* __restrict__ gb,
                               T* __restrict__ gs) {                      // channels c0 .. c1 - 1
  for (int64_t p = 0; p < P; ++p) {
    const T* sp = s + p * d; const T* gup = gu + p * d; T* g = gs + p * d;
#pragma omp simd
    for (int64_t c = c0; c < c1; ++c) {
      const T sigmoid = T(1) / (T(1) + std::exp(-sp[c]));
      g[c] = gup[c] * sigmoid * (T(1) + sp[c] * (T(1) - sigmoid));                      // SiLU'(s) = s(1 + s(1 - s))
      gb[c] += g[c];
    }
    for (int64_t k = 0; k <= std::min<int64_t>(step[p], taps - 1); ++k) {
      const T* xk = x + (p - k) * d; const T* w = wk_major + k * d;
      T* gxk = gx + (p - k) * d; T* gwk = gw + k * d;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) { gxk[c] += w[c] * g[c]; gwk[c] += g[c] * xk[c]; }
    }
  }
}

// w (d, taps): w[:, k] multiplies x_{t-k} (Conv1d's weight[:, 0] flipped)
std::vector<torch::Tensor> conv_forward(torch::Tensor x, torch::Tensor w, torch::Tensor bias, torch::Tensor step) {
  const int64_t P = x.size(0), d = x.size(1), taps = w.size(1);
  auto wk_major = w.t().contiguous();
  auto s = torch::empty_like(x), u = torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_forward", [&] {
    at::parallel_for(0, d, 16, [&](int64_t c0, int64_t c1) {             // channels are independent
      conv_rows<scalar_t>(x.data_ptr<scalar_t>(), wk_major.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(),
                          step.data_ptr<int64_t>(), P, d, taps, c0, c1, s.data_ptr<scalar_t>(),
                          u.data_ptr<scalar_t>());
    });
  });
  return {u, s};
}

std::vector<torch::Tensor> conv_backward(torch::Tensor gu, torch::Tensor x, torch::Tensor w, torch::Tensor bias,
                                         torch::Tensor step, torch::Tensor s) {
  const int64_t P = x.size(0), d = x.size(1), taps = w.size(1);
  auto wk_major = w.t().contiguous();
  auto gx = torch::zeros_like(x), gw = torch::zeros({taps, d}, x.options()), gb = torch::zeros_like(bias);
  auto gs = torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_backward", [&] {
    at::parallel_for(0, d, 16, [&](int64_t c0, int64_t c1) {
      conv_rows_backward<scalar_t>(gu.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), wk_major.data_ptr<scalar_t>(),
                                   s.data_ptr<scalar_t>(), step.data_ptr<int64_t>(), P, d, taps, c0, c1,
                                   gx.data_ptr<scalar_t>(), gw.data_ptr<scalar_t>(), gb.data_ptr<scalar_t>(),
                                   gs.data_ptr<scalar_t>());
    });
  });
  return {gx, gw.t(), gb};
}

"""


@lru_cache(maxsize=None)
def _compiled_mamba():
    """`_MAMBA_CPP` built as a torch extension (once per machine and source: torch caches the build, ~40 s the
    first time), or None where it cannot be built (no C++ compiler or Python headers) or NEGSAMPLING_MAMBA=pytorch
    asks for the PyTorch forms (`_SelectiveScan`, `_CausalConv`) instead. They agree to float rounding
    (tests/test_mamba.py)."""
    if os.environ.get("NEGSAMPLING_MAMBA") == "pytorch":
        return None
    # the vector instructions of PyTorch's own CPU kernels on this machine and the source's hash in the build's
    # name: a cache shared by machines of different CPUs, or by checkouts of different versions, never runs (or
    # rebuilds over) a build made for another
    capability = torch.backends.cpu.get_cpu_capability()
    vector_flags = {"AVX512": ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma"],
                    "AVX2": ["-mavx2", "-mfma"]}.get(capability, [])
    name = f"negsampling_mamba_{capability.lower()}_{hashlib.sha256(_MAMBA_CPP.encode()).hexdigest()[:10]}"
    try:
        from torch.utils.cpp_extension import get_default_build_root, load_inline
        if not glob.glob(os.path.join(get_default_build_root(), "*", name, f"{name}.so")):   # torch's cache layout
            print(f"building Mamba4Rec's C++ loops for this machine (once; ~1 min): {name}", file=sys.stderr)
        with contextlib.redirect_stdout(sys.stderr):
            return load_inline(name, cpp_sources=_MAMBA_CPP,
                               functions=["scan_forward", "scan_backward", "conv_forward", "conv_backward"],
                               extra_cflags=["-O3", "-ffast-math", "-fopenmp-simd", *vector_flags], verbose=False)
    except Exception as error:   # any failure to build: the PyTorch forms do the same computation
        warnings.warn(f"Mamba4Rec's C++ loops could not be built ({type(error).__name__}); using their PyTorch "
                      f"forms, which compute the same (set NEGSAMPLING_MAMBA=pytorch to skip the attempt)")
        return None


def _compiled_mamba_for(t):
    """`_compiled_mamba()` where its loops take t (a float32 / float64 CPU tensor), else None."""
    return _compiled_mamba() if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) else None


class _CompiledScan(torch.autograd.Function):
    """`_SelectiveScan`'s forward and backward as `_MAMBA_CPP`'s two loops (CPU tensors only): ~3x cheaper on
    Mamba4Rec's Beauty batches (bench/README.md), the same sums to float rounding. Only the inputs are saved: the
    backward recomputes the states."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, starts, lengths, keep):
        inputs = [t.contiguous() for t in (x, dt, A, B, C, D)] + [t.long().contiguous() for t in (starts, lengths)]
        if keep:
            ctx.save_for_backward(*inputs)
        return _compiled_mamba().scan_forward(*inputs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        return (*_compiled_mamba().scan_backward(gy.contiguous(), *ctx.saved_tensors), None, None, None)


class _CompiledConvSiLU(torch.autograd.Function):
    """SiLU(`_CausalConv`) as `_MAMBA_CPP`'s conv loops (CPU, float32 / float64): one pass over the packed positions
    each way, `Packing.step` telling which taps are in the row; ~1 ms a Beauty layer cheaper (bench/README.md)."""

    @staticmethod
    def forward(ctx, x, weight, bias, step):                      # weight (d_inner, d_conv), as Conv1d's [:, 0]
        x, w = x.contiguous(), weight.flip(1).contiguous()                             # w[:, k] multiplies x_{t-k}
        u, s = _compiled_mamba().conv_forward(x, w, bias.contiguous(), step)
        ctx.save_for_backward(x, w, bias, step, s)
        return u

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gu):
        gx, gw, gb = _compiled_mamba().conv_backward(gu.contiguous(), *ctx.saved_tensors)
        return gx, gw.flip(1), gb, None


class _ItemScores(torch.autograd.Function):
    """s[p, n] = queries[p] . item_table[items[p, n]] as sparse matrix products, nothing of size (P, N, D) ever
    gathered. The candidates are the pattern of a CSR matrix M (P x I+1) whose row p holds the columns items[p, :]
    (duplicates allowed); its crow_indices are p N, free, since the candidates come grouped by row.
    - forward: s = queries @ item_table^T sampled at M's pattern (`torch.sparse.sampled_addmm`: one dot product per
      candidate, 3.5x cheaper than gathering the rows and a batched matmul; the dot's summation order is the
      kernel's, so the scores move by float rounding from a gather's). It refuses rows with more entries than
      columns (N > I+1, only tiny item tables): those are scored by the gather.
    - backward, M's values the incoming gradient g: dLoss/dqueries = M @ item_table (row p: sum_n g[p, n]
      item_table[items[p, n]]) and dLoss/ditem_table = M^T @ queries (row i: the sum over the (p, n) with
      items[p, n] = i of g[p, n] queries[p]), M^T's CSR built from a stable sort of the items. Each output row sums
      the same terms in the same order as autograd's gather backward (its sum over n, its serial `index_add_`):
      equal to float rounding (autograd's batched matmul may group the sum over n otherwise), the item table's
      gradient on CPU bit for bit. The block-wise gather and `index_add_` this replaces cost ~2x as much
      (bench/README.md).
    The patterns (int32 indices where they fit: the CPU kernels run 1.3-2x faster on them than on int64) are kept
    for the last `items` tensor (`_patterns`): MDCNS's two models score the same candidates."""

    @staticmethod
    def forward(ctx, queries, item_table, items):
        ctx.save_for_backward(queries, item_table, items)
        P, N = items.shape
        if P * N == 0:
            return queries.new_zeros(P, N)
        if N > len(item_table):    # more candidates a row than items (tiny tables): sampled_addmm refuses, gather
            return torch.einsum("pd,pnd->pn", queries,
                                item_table.index_select(0, items.reshape(-1)).view(P, N, -1))
        crow, columns = _patterns(items, len(item_table)).rows
        pattern = _sparse_csr(crow, columns, queries.new_zeros(P * N), (P, len(item_table)))
        return torch.sparse.sampled_addmm(pattern, queries, item_table.T, beta=0.0).values().view(P, N)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):                                                                       # (P, N)
        queries, item_table, items = ctx.saved_tensors
        P, N = items.shape
        grad_queries = grad_table = None
        if P * N == 0:
            return (torch.zeros_like(queries) if ctx.needs_input_grad[0] else None,
                    torch.zeros_like(item_table) if ctx.needs_input_grad[1] else None, None)
        patterns, values = _patterns(items, len(item_table)), grad.reshape(-1)
        if ctx.needs_input_grad[0]:
            crow, columns = patterns.rows
            grad_queries = _csr_matmul(_sparse_csr(crow, columns, values, (P, len(item_table))), item_table)
        if ctx.needs_input_grad[1]:
            crow, columns, order = patterns.transposed
            transposed = _sparse_csr(crow, columns, values.index_select(0, order), (len(item_table), P))
            grad_table = _csr_matmul(transposed, queries)                                           # (I+1, D)
        return grad_queries, grad_table, None


class _CandidatePatterns:
    """The CSR patterns of M (P x n_items) for the candidates items (P, N), N > 0, and of its transpose.
    `rows`: (crow_indices (P+1,), col_indices (P N,)) of M, row p's columns items[p, :]. `transposed`, on first
    use: M^T's (crow_indices (n_items+1,), col_indices (P N,), order (P N,)), order the entry of M each entry of
    M^T comes from: M's entries by item, then by (p, n), a stable sort (of int32 ids, twice as fast as int64)."""

    def __init__(self, items, n_items: int):
        self.items, self.n_items = items, n_items
        P, N = items.shape
        self.dtype = torch.int32 if max(P * N, n_items) < 2 ** 31 else torch.long
        self.rows = (torch.arange(0, P * N + 1, N, dtype=self.dtype, device=items.device),
                     items.reshape(-1).to(self.dtype))

    @functools.cached_property
    def transposed(self):
        order = torch.argsort(self.rows[1], stable=True)
        crow = order.new_zeros(self.n_items + 1, dtype=self.dtype)
        torch.cumsum(torch.bincount(self.rows[1], minlength=self.n_items), 0, out=crow[1:])
        return crow, order.div(self.items.shape[1], rounding_mode="floor").to(self.dtype), order   # column: p


def _patterns(items, n_items: int) -> _CandidatePatterns:
    """`_CandidatePatterns` of items, kept for the last `items` tensor while its data are unchanged: the key is its
    pointer, version, shape, strides and device, and the cache holds the tensor itself, so no other tensor can take
    its memory while its pointer is the key."""
    key = (items.data_ptr(), items._version, items.shape, items.stride(), items.device, n_items)
    last = _patterns.last                                          # one read: another thread may replace it
    if last is None or last[0] != key:
        last = _patterns.last = key, _CandidatePatterns(items, n_items)
    return last[1]


_patterns.last = None


def _csr_matmul(sparse, dense):
    """sparse (CSR) @ dense as `addmm` with beta = 0 into a fresh tensor: PyTorch's `@` zero-fills a result, computes
    into a temporary and copies it over, twice the time (1.0 against 2.0 ms for an item table's gradient)."""
    out = dense.new_empty(sparse.shape[0], dense.shape[1])
    return torch.addmm(out, sparse, dense, beta=0.0, out=out)      # beta = 0: out's (uninitialised) values unread


def _sparse_csr(crow_indices, col_indices, values, size):
    """torch.sparse_csr_tensor without its invariant checks (the callers build valid ones) and its one-time
    "beta state" warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow_indices, col_indices, values, size, check_invariants=False)


# ----------------------------------------------------------------------------------------------------------
# 9. More backbones: Kang's SASRec, GRU4Rec, LinRec, FMLP4Rec, NGCF
# ----------------------------------------------------------------------------------------------------------
class KangSASRec(SequentialBackbone):
    """SASRec's original block (Kang & McAuley, ICDM 2018; SASRec.pytorch), `--sasrec-block kang`: learned
    positions counted from the first item, embeddings scaled by sqrt(D), Q = LN(x), x = Q + causal-MHA(Q, x, x),
    x = x + FFN(LN(x)) with a position-wise two-layer ReLU FFN of width D, padding positions zeroed after every
    block, a final LayerNorm, xavier-normal init. SASRec's own ml-1m protocol; not the block behind the MDCNS
    paper's numbers (see `SASRec`)."""

    def __init__(self, n_items: int, dim: int, max_len: int, n_layers: int = 2, n_heads: int = 1,
                 dropout: float = 0.2):
        super().__init__(n_items, dim, max_len)
        self.position_embedding = nn.Embedding(max_len, dim)
        self.dropout = Dropout(dropout)
        self.attention_norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-8) for _ in range(n_layers))
        self.attentions = nn.ModuleList(nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
                                        for _ in range(n_layers))
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-8) for _ in range(n_layers))
        self.ffns = nn.ModuleList(nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), Dropout(dropout),
                                                nn.Linear(dim, dim), Dropout(dropout))
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
    """GRU4Rec (Hidasi et al., ICLR 2016) as in RecBole and the MDCNS code: embedding dropout, a GRU without
    biases, a linear map to D; xavier-normal item embeddings, xavier-uniform GRU weights of the first layer, the
    rest PyTorch's defaults. Note: the MDCNS code left-pads, so its GRU steps over the padding row (xavier-normal,
    never trained) before the first item; right padding keeps the padding after the last item."""

    def __init__(self, n_items: int, dim: int, max_len: int, n_layers: int = 1, dropout: float = 0.2):
        super().__init__(n_items, dim, max_len)
        nn.init.xavier_normal_(self.item_embedding.weight[1:])
        self.dropout = Dropout(dropout)
        self.gru = nn.GRU(dim, dim, n_layers, bias=False, batch_first=True)
        nn.init.xavier_uniform_(self.gru.weight_ih_l0)
        nn.init.xavier_uniform_(self.gru.weight_hh_l0)
        self.output = nn.Linear(dim, dim)

    def encode(self, sequences):
        hidden, _ = self.gru(self.dropout(self.item_embedding(sequences)))             # (B, L, D)
        return self.output(hidden)


class LinearAttention(nn.Module):
    """LinRec's L2-normalized linear attention (Liu et al., SIGIR 2023) as in the MDCNS code's
    `LinrecAttention`, made causal, followed by the output projection, dropout and LN(x + .):

        Q' = rho_row(ELU(Q)),  K' = rho(ELU(K))          each query / key row scaled to unit L2 norm, per head
        original:  A = Q' (K'^T V) / sqrt(d_h)           over every position of the (left-padded) input
        here:      A_t = Q'_t (sum_{s<=t} K'_s^T V_s) / sqrt(d_h) = sum_{s<=t} (Q'_t . K'_s) V_s / sqrt(d_h)

    The causal sum is computed as (Q' K'^T, kept for s <= t) V: the same numbers as the running (d_h, d_h) sums,
    and cheaper at L = 50 (L^2 d_h vs L d_h^2 per head, and no (L, d_h, d_h) tensor to keep for the backward).
    Q', K', V and everything after the sum are position-wise; on packed positions the sum runs on rows of
    similar length at a time (`Packing.by_buckets`), each bucket as wide as its longest row."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.query, self.key, self.value, self.output = (nn.Linear(dim, dim) for _ in range(4))
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x, packing: Packing | None = None):                              # (B, L, D) or (P, D)
        """x: rows (B, L, D), or with `packing` the packed real positions (P, D) of its rows (`Packing`)."""
        D = x.shape[-1]
        d_h = D // self.n_heads

        def heads(t):
            return t.unflatten(-1, (self.n_heads, d_h))                               # (..., h, d_h)

        q = F.normalize(F.elu(heads(self.query(x))), dim=-1)                          # Q' = rho_row(ELU(Q))
        k = F.normalize(F.elu(heads(self.key(x))), dim=-1)                            # K' = rho(ELU(K))
        qkv = torch.cat([q, k, heads(self.value(x))], -1)                              # (..., h, 3 d_h)

        def attend(rows):                                               # (R, W, h, 3 d_h) -> (R, W, h, d_h)
            q, k, v = rows.transpose(1, 2).split(d_h, -1)                              # (R, h, W, d_h) each
            weights = (q @ k.transpose(-1, -2)).tril()                                 # (R, h, W, W): s <= t
            # A_t = sum_{s<=t} (Q'_t . K'_s) V_s / sqrt(d_h)
            return (weights @ v / math.sqrt(d_h)).transpose(1, 2)                      # (R, W, h, d_h)

        attended = attend(qkv) if packing is None else packing.by_buckets(attend, qkv)
        return self.norm(x + self.dropout(self.output(attended.flatten(-2))))


class LinRec(PositionalBackbone):
    """LinRec (Liu et al., "Linear Attention Mechanism for Long-term Sequential Recommender Systems", SIGIR 2023)
    as the MDCNS code's `Linrec` (MDCNS Table 4): `PositionalBackbone` with n_layers blocks of `LinearAttention`
    then `ResidualFFN` (its `LinrecTransformerLayer`); its attention dropout is never applied there either.

    Causality: the original attention is not causal and has no padding mask: every position attends to every
    position of the left-padded input, padding included (the mask argument is ignored). The MDCNS and LinRec
    trainers read only the last position of each prefix, so nothing leaks there. This project trains every
    position of a right-padded window at once (`examples`); there the original attention would let position t
    see its own target (the input at t + 1). So the attention is made causal (`LinearAttention`). Consequences:
    one block at position t equals the original block at the last position of the prefix i_1..i_t with no
    padding (tests/test_backbones_extra.py); with stacked blocks, the original's lower blocks also mix later items
    of the same prefix into earlier positions, ours never do; the original's left padding (non-zero after the
    LayerNorm) enters its sums, ours never does; positions count back from the last item as with left
    padding, but in one pass the earlier prefixes of a window see theirs shifted (`PositionalBackbone`); one
    pass per window instead of one per prefix. Being causal, it runs on the real positions only
    (`PositionalBackbone`), as the same blocks on the padded layout give them (tests/test_backbones_extra.py)."""

    def __init__(self, n_items: int, dim: int, max_len: int, n_layers: int = 2, n_heads: int = 2,
                 dropout: float = 0.5):
        blocks = [nn.Sequential(LinearAttention(dim, n_heads, dropout), ResidualFFN(dim, dropout))
                  for _ in range(n_layers)]
        super().__init__(n_items, dim, max_len, blocks, dropout)


class CausalFilter(nn.Module):
    """FMLP-Rec's learnable filter (Zhou et al., WWW 2022) as the MDCNS code's `FilterLayer`, made
    causal, followed by dropout and LN(x + .). W is complex, (max_len // 2 + 1, D), init N(0, 0.02^2) per part.

        original:  X~ = irfft(rfft(X, ortho) * W, ortho) over the L = max_len positions
                      = the circular convolution of X with w = irfft(W, n=max_len) (max_len taps, per channel)
        here:      X~_t = sum_{j=0..t} w_j X_{t-j}           the same taps, convolved linearly (no wrap-around)

    At the last position of a full-length sequence both are the same sum; the original's other positions take
    terms from later positions (wrap-around), which is what would leak under per-position training. The linear
    convolution is a product with the lower-triangular Toeplitz matrix of the taps, (L, L) per channel: later
    positions contribute exact zeros (FFTs of length 2L give the same sum, but only up to rounding, ~1e-6 in
    float32, so an earlier output would move slightly with a later item). On packed positions it runs on rows
    of similar length at a time (`Packing.by_buckets`), each bucket as wide as its longest row."""

    def __init__(self, dim: int, max_len: int, dropout: float):
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.randn(max_len // 2 + 1, dim, 2) * 0.02)    # W as (real, imag) pairs
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-12)

    def taps(self):
        """w = irfft(W, n=max_len): the filter in the time domain, (max_len, D); w_j weighs the item j steps back."""
        return torch.fft.irfft(torch.view_as_complex(self.weight), n=self.max_len, dim=0)

    def forward(self, x, packing: Packing | None = None):                              # (B, L, D) or (P, D)
        """x: rows (B, L, D) with L <= max_len, or with `packing` the packed real positions (P, D) of its rows
        (`Packing`). The taps depend on the lag t - s only, so rows W steps wide take the top-left (W, W) of the
        Toeplitz matrix: the first W taps."""
        L = x.shape[1] if packing is None else packing.shape[1]
        lag = torch.arange(L, device=x.device)
        lag = lag[:, None] - lag[None, :]                                              # (L, L): t - s
        toeplitz = self.taps().T[:, lag.clamp(min=0)] * (lag >= 0)                     # (D, L, L): w_{t-s}, s <= t

        def convolve(rows):                                                            # (R, W, D) -> (R, W, D)
            W = rows.shape[1]
            # sum_{j<=t} w_j x_{t-j}, channel by channel: (D, R, W) @ (D, W, W)^T; contiguous, as CPU bmm copies
            # strided inputs matrix by matrix (an einsum of the same product was ~10% slower on Beauty's batches)
            by_channel = rows.permute(2, 0, 1).contiguous() @ toeplitz[:, :W, :W].transpose(1, 2)   # (D, R, W)
            return by_channel.permute(1, 2, 0)                                         # (R, W, D)

        filtered = convolve(x) if packing is None else packing.by_buckets(convolve, x)
        return self.norm(x + self.dropout(filtered))


class FMLP4Rec(PositionalBackbone):
    """FMLP-Rec (Zhou et al., "Filter-enhanced MLP is All You Need for Sequential Recommendation", WWW 2022) as
    the MDCNS code's `FMLPRecModel` (MDCNS Table 4): `PositionalBackbone` with n_layers blocks of `CausalFilter`
    then `ResidualFFN` (its `FMLPLayer`). The filter is learned over a fixed max_len (`--max-len`), so
    sequences may be shorter (the first taps are used) but not longer.

    Causality: the original filter is a circular convolution over all max_len positions of the left-padded
    input, so it is not causal, and padding (non-zero after the LayerNorm) enters it. FMLP-Rec's and the MDCNS
    trainers read only the last position of each prefix, where the circular sum covers the prefix and its
    padding only: nothing leaks there. Trained at every position of a right-padded window at once (this
    project's `examples`), the wrap-around would hand position t its own target. So the filter is applied as a
    causal linear convolution with the same taps (`CausalFilter`). Consequences: one block at position t equals
    the original block at the last position of the prefix i_1..i_t left-padded with zero vectors
    (tests/test_backbones_extra.py); with stacked blocks, the original's lower blocks mix the whole prefix into
    every position (through the wrap-around), ours mix only earlier positions; padding never enters; positions
    count back from the last item as with left padding, but in one pass the earlier prefixes of a window see
    theirs shifted (`PositionalBackbone`); one pass per window instead of one per prefix. Being causal, it runs
    on the real positions only (`PositionalBackbone`), the filter on rows of similar length, as the same blocks
    on the padded layout give them (tests/test_backbones_extra.py)."""

    def __init__(self, n_items: int, dim: int, max_len: int, n_layers: int = 2, dropout: float = 0.5):
        blocks = [nn.Sequential(CausalFilter(dim, max_len, dropout), ResidualFFN(dim, dropout))
                  for _ in range(n_layers)]
        super().__init__(n_items, dim, max_len, blocks, dropout)


class NGCF(LightGCN):
    """NGCF (Wang et al., "Neural Graph Collaborative Filtering", SIGIR 2019) as RecBole-GNN's `NGCF` (the copy the
    ICPNS code runs): LightGCN's graph L = D^-1/2 A D^-1/2 (no self-loops), tables, evaluation cache and L2 term,
    with the paper's propagation rule, Eq. (7), with biases, then message dropout and row L2-normalization:

        E^(l) = normalize(dropout(LeakyReLU_0.2((L + I) E^(l-1) W1 + b1 + (L E^(l-1) * E^(l-1)) W2 + b2)))
        final = E^(0) || E^(1) || ... || E^(K)                   Eq. (9): concatenation, D (K + 1) wide

    Init xavier_normal on the embeddings and on W1, W2, biases 0 (RecBole). Defaults of RecBole-GNN's and the ICPNS
    code's NGCF.yaml: three layers of 64, message dropout 0.1, no node dropout (node dropout is not implemented),
    reg_weight 1e-5. Deviations: the L2 term is the shared ½‖e⁰‖²/B on layer-0 embeddings (RecBole-GNN: the
    unsquared norm of the final embeddings); the original TensorFlow code applies LeakyReLU to the two terms
    separately, RecBole-GNN and we to their sum, as Eq. (7) writes it."""

    def __init__(self, n_users: int, n_items: int, dim: int, n_layers: int, dropout: float, train_user,
                 train_item):
        super().__init__(n_users, n_items, dim, n_layers, train_user, train_item)
        self.sum_transforms = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_layers))       # W1, b1
        self.product_transforms = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_layers))   # W2, b2
        self.message_dropout = Dropout(dropout)
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_normal_(parameter)
            else:
                nn.init.zeros_(parameter)

    def propagate(self):
        E = torch.cat([self.user_embedding.weight, self.item_embedding.weight])        # E^(0): (U+I+1, D)
        layers = [E]
        for W1, W2 in zip(self.sum_transforms, self.product_transforms):
            side = SymmetricSparseMatmul.apply(self.adjacency, E)                      # L E^(l-1)
            E = F.leaky_relu(W1(side + E) + W2(side * E), 0.2)                         # Eq. (7)
            E = F.normalize(self.message_dropout(E), dim=1)
            layers.append(E)
        final = torch.cat(layers, 1)                                                   # Eq. (9): (U+I+1, D(K+1))
        return final[:self.n_users], final[self.n_users:]


# ----------------------------------------------------------------------------------------------------------
# 10. The dataset registry, readers, download and cache
# ----------------------------------------------------------------------------------------------------------
# `load_dataset(name)` looks in <data_dir>/<name>/ and its immediate subfolders for the accepted files, in this
# priority: the official raw file, the official archive, a RecBole atomic `*.inter`, then the community's
# preprocessed files. When none is there it downloads the official file (checksum verified when one is
# published) or says where the data comes from (Yelp's licence, the papers' Health and KuaiRand).
# `load_dataset("path/to/file.csv")` reads a custom `user,item[,rating[,timestamp]]` file. Each load prints the
# statistics the papers publish for the dataset (`DatasetSpec.published`) beside what it read. The same table,
# with terms of use, is in the README.
#
# name         official file (auto download)          community files            default on raw files  follows
# ml-100k      ml-100k.zip (GroupLens md5)             RecBole ml-100k.inter      rating >= 3, 10-core  ICPNS
# ml-1m        ml-1m.zip (GroupLens md5)               SASRec ml-1m.txt           rating >= 3, 10-core  ICPNS
# beauty       reviews_Beauty_5.json.gz (SNAP)         S3-Rec Beauty.txt          all, 5-core           S3-Rec, MDCNS
# sports       reviews_Sports_and_Outdoors_5.json.gz   S3-Rec Sports_and_...txt   all, 5-core           S3-Rec, MDCNS
# toys         reviews_Toys_and_Games_5.json.gz        S3-Rec Toys_and_Games.txt  all, 5-core           S3-Rec, MDCNS
# video-games  reviews_Video_Games_5.json.gz           SASRec Video.txt           all, 5-core           S3-Rec recipe
# yelp         by hand (Yelp licence): review .json    S3-Rec Yelp.txt            2019, all, 5-core     S3-Rec
# lastfm       hetrec2011-lastfm-2k.zip (sha256)       S3-Rec LastFM.txt,         all taggings, 5-core  S3-Rec, MDCNS
#                                                      LightGCN data1/test1.txt
# gowalla      loc-gowalla_totalCheckins.txt.gz        LightGCN train/test.txt    all, 10-core          NGCF, LightGCN
# steam        steam_reviews.json.gz (UCSD)            SASRec Steam.txt           all, 5-core           SASRec
# yelp2018     by hand (Yelp licence)                  LightGCN train/test.txt    as published          NGCF, LightGCN
# amazon-book  LightGCN train/test.txt (GitHub)        (the same)                 as published          NGCF, LightGCN
# health       by hand (release not named by MDCNS)    Health.txt (MDCNS code)    all, 5-core           MDCNS
# kuairand     by hand (kuairand.com)                  KuaiRand.txt (MDCNS code)  all, 5-core           MDCNS
#
# Preprocessing, in RecBole's order (`Dataset._data_filtering`): each user's rows sorted by time (stable: equal
# timestamps, and files without time, keep file order); the time window (yelp: 2019); duplicates: the first
# (chronological) occurrence of each (user, item) pair is kept, later ones dropped; the rating threshold; the
# iterative k-core on users and items. Community files (SASRec, S3-Rec, LightGCN) are used as published by
# default: no rating, no further k-core, only the duplicate rule (S3-Rec's Yelp.txt loses its 11,830 repeats);
# an explicit --k-core filters them too. LightGCN's train and test files are concatenated (train lines, then
# test lines, in file order) and their split is not kept: the project re-splits. Ids are numbered by first
# appearance in the file. The result is cached in one folder, printed on every load (`cache_folder`): --cache-dir
# when given, else processed/ beside the data (<data_dir>/<name>/processed/, or beside a custom file), or, when
# that folder is not writable or has no write permission bits (a shared read-only copy), the user's cache
# $XDG_CACHE_HOME/negsampling/<name>/ (default ~/.cache/negsampling/<name>/); --no-cache neither reads nor writes
# it. A cache file is <name>-<key>.npz, the key hashing each source file's path, size and modification time with
# every preprocessing setting.
@dataclass
class _Columns:
    """What a reader returns: one entry per interaction row, in file order."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray | None = None   # float64
    time: np.ndarray | None = None     # float64 seconds (or the file's unit: only the order matters)


@dataclass(frozen=True)
class FileFormat:
    description: str                           # printed on every load
    read: Callable[[list], _Columns]           # read([(path, zip member or None), ...])
    published: bool = False                    # a community file, already preprocessed: used as published


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset: where its files come from, how to read them, how to preprocess them by default."""

    title: str
    files: tuple            # accepted local files, in priority order: ((file names or globs), FileFormat, member)
    downloads: tuple = ()   # ((url, file name, sha256, md5), ...) fetched into <data_dir>/<name>/ if nothing is found
    min_rating: float | None = None  # default threshold, applied to files that have ratings
    k_core: int = 0                  # default k-core, applied to files that are not already preprocessed
    time_window: tuple | None = None  # default [start, end) in unix seconds, for raw files with timestamps
    follows: str = ""       # the paper whose preprocessing the defaults reproduce
    terms: str = ""         # the owner's terms of use, printed before a download
    manual: str = ""        # where to get the files by hand when there is no download
    published: tuple = ()   # (users, items, interactions, source): the statistics a paper reports for it


# ---------------------------------------------------------------- readers: file -> _Columns (file order)
def _open_text(path: str, member: str | None, encoding: str):
    if member is not None:  # archive members used here are small (ratings.dat: 24 MB), read whole
        with zipfile.ZipFile(path) as archive:
            if member not in archive.namelist():
                raise RecError(f"{path} has no member {member}; delete it and run again to download a fresh copy")
            return io.StringIO(archive.read(member).decode(encoding))
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding=encoding)
    return open(path, encoding=encoding)


def _line_chunks(path: str, member: str | None, encoding: str, chunk_bytes: int = 1 << 24):
    """Yield (1-based line numbers, lines) of the non-blank lines, about `chunk_bytes` of text at a time."""
    with _open_text(path, member, encoding) as f:
        first = 1
        while lines := f.readlines(chunk_bytes):
            stripped = [line.rstrip("\r\n") for line in lines]
            nonblank = np.fromiter((bool(line.strip()) for line in stripped), bool, len(stripped))
            yield np.arange(first, first + len(lines))[nonblank], [s for s, k in zip(stripped, nonblank) if k]
            first += len(lines)


def _where(path: str, member: str | None) -> str:
    return f"{path} [{member}]" if member else path


def _first_bad(values, numbers, convert, where: str, what: str):
    """Slow path, only after a vectorised conversion failed: name the first offending line."""
    for value, number in zip(values, numbers):
        try:
            convert(value)
        except (ValueError, TypeError):
            raise RecError(f"{where}, line {number}: {what} {str(value)!r} is not valid") from None
    raise RecError(f"{where}: could not read the {what} column")


def _is_number(text) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _to_float(values, numbers, where: str, what: str) -> np.ndarray:
    try:
        return np.asarray(values).astype(np.float64)
    except (ValueError, TypeError):
        _first_bad(values, numbers, float, where, what)


def _to_seconds(values, numbers, where: str) -> np.ndarray:
    """Unix timestamps as they are; ISO dates and date-times ('2019-01-01 10:00:00', '...T23:55:27Z') as seconds."""
    values = np.asarray(values)
    if values.dtype.kind in "iuf":
        return values.astype(np.float64)
    if _is_number(values[0]):
        return _to_float(values, numbers, where, "timestamp")
    try:
        return _as_date(values).astype(np.int64).astype(np.float64)
    except ValueError:
        _first_bad(values, numbers, _as_date, where, "timestamp")


def _as_date(values) -> np.ndarray:
    return np.asarray(np.char.rstrip(np.asarray(values, dtype=str), "Z")).astype("datetime64[s]")  # UTC


def _split(lines: list, sep: str | None) -> list:
    if sep == ",":
        return list(csv.reader(lines))  # honours quoted fields
    return [line.split(sep) for line in lines]  # sep None: runs of whitespace


def _read_delimited(sources, sep: str | None, n_fields: int, columns: dict, skip_header: int = 0,
                    encoding: str = "utf-8") -> _Columns:
    """Rows of exactly `n_fields` fields; `columns` maps user/item/rating/time to field indices."""
    parts = {name: [] for name in columns}
    for path, member in sources:
        where, skip = _where(path, member), skip_header
        for numbers, lines in _line_chunks(path, member, encoding):
            numbers, lines = numbers[skip:], lines[skip:]
            skip = 0
            if sep in ("\t", "::"):  # fast path for the official files: one split for the whole chunk
                lengths = np.char.count(np.array(lines), sep) + 1
                rows = sep.join(lines).split(sep)
            else:
                rows = _split(lines, sep)
                lengths = np.fromiter(map(len, rows), np.int64, len(rows))
            bad = np.flatnonzero(lengths != n_fields)
            if bad.size:
                raise RecError(f"{where}, line {numbers[bad[0]]}: expected {n_fields} fields separated by "
                               f"{sep or 'whitespace'!r}, found {lengths[bad[0]]}: {lines[bad[0]][:80]!r}")
            if not rows:
                continue
            table = np.char.strip(np.array(rows, dtype=str)).reshape(len(lines), n_fields)  # (rows, fields)
            for name, column in columns.items():
                values = table[:, column]
                if name == "rating":
                    values = _to_float(values, numbers, where, "rating")
                elif name == "time":
                    values = _to_seconds(values, numbers, where)
                parts[name].append(values)
    return _Columns(**{name: np.concatenate(p) if p else np.array([]) for name, p in parts.items()})


def _read_bytes(path: str, member: str | None) -> bytes:
    if member is not None:
        with zipfile.ZipFile(path) as archive:
            return archive.read(member)
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        return f.read()


def _read_user_items(sources, piece_bytes: int = 1 << 23) -> _Columns:
    """Lines `user item item ...` (S3-Rec, LightGCN) or `user item` (SASRec): the same rule reads both. Ids are
    non-negative integers; a line with a user and no item (LightGCN: a user without test items) adds nothing.
    Parsed from the bytes, vectorised, in pieces of whole lines (ml-1m.txt's million lines: about a second)."""
    users, items = [], []
    for path, member in sources:
        data, start, first_line = _read_bytes(path, member), 0, 1
        while start < len(data):
            end = data.find(b"\n", start + piece_bytes) + 1 or len(data)             # cut after a newline
            user, item = _user_items_from_bytes(data[start:end], _where(path, member), first_line)
            users.append(user)
            items.append(item)
            first_line += data.count(b"\n", start, end)
            start = end
    return _Columns(*(np.concatenate(p) if p else np.array([], dtype=np.int64) for p in (users, items)))


def _user_items_from_bytes(data: bytes, where: str, first_line: int) -> tuple:
    b = np.frombuffer(data, dtype=np.uint8)                                          # (bytes,)
    newlines = np.flatnonzero(b == ord("\n"))
    token = ~np.isin(b, np.frombuffer(b" \t\r\n", dtype=np.uint8))                   # (bytes,) inside a token
    bad = np.flatnonzero(token & ((b < ord("0")) | (b > ord("9"))))
    if bad.size:
        begin = data.rfind(b"\n", 0, bad[0]) + 1
        text = data[begin:begin + 80].split(b"\n")[0].decode("latin-1")
        raise RecError(f"{where}, line {first_line + np.searchsorted(newlines, bad[0])}: expected integer ids "
                       f"`user item ...`, found {text!r}")
    start = np.flatnonzero(token & ~np.r_[False, token[:-1]])                      # (T,) first byte of each token
    if not start.size:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    digits = (b[token] - ord("0")).astype(np.int64)                                # (D,) the tokens' bytes
    owner = np.cumsum(np.r_[0, np.diff(np.flatnonzero(token)) > 1])                 # (D,) token of each digit
    length = np.bincount(owner)                                                     # (T,)
    if length.max() > 18:
        raise RecError(f"{where}: an id has more than 18 digits")
    place = np.cumsum(length)[owner] - 1 - np.arange(len(digits))                   # (D,) power of ten
    value = np.add.reduceat(digits * 10 ** place, np.cumsum(length) - length)       # (T,)
    line = np.searchsorted(newlines, start)                                         # (T,) line of each token
    opens = np.r_[True, line[1:] != line[:-1]]                                      # (T,) a line's first token
    return value[opens][np.cumsum(opens) - 1][~opens], value[~opens]                # users, items


def _read_json_lines(sources, user: str, item: str, rating: str | None = None, time: str | None = None) -> _Columns:
    """One record per line: JSON, or a Python dict literal (the Steam files and Amazon 2014 metadata use those)."""
    fields = [f for f in (user, item, rating, time) if f]
    parts = {f: [] for f in fields}
    for path, member in sources:
        parse = None
        for numbers, lines in _line_chunks(path, member, "utf-8"):
            if parse is None:
                parse = json.loads if lines[0].lstrip().startswith("{\"") else ast.literal_eval
            values = {f: [] for f in fields}
            for number, line in zip(numbers, lines):
                try:
                    record = parse(line)
                    for f in fields:
                        values[f].append(record[f])
                except (ValueError, SyntaxError, KeyError, TypeError) as error:
                    raise RecError(f"{_where(path, member)}, line {number}: not a record with fields {fields} "
                                   f"({type(error).__name__}: {error})") from None
            parts[user].append(np.array(values[user], dtype=str))
            parts[item].append(np.array(values[item], dtype=str))
            if rating:
                parts[rating].append(_to_float(values[rating], numbers, path, "rating"))
            if time:
                parts[time].append(_to_seconds(values[time], numbers, path))
    joined = {f: np.concatenate(p) if p else np.array([]) for f, p in parts.items()}
    return _Columns(joined[user], joined[item], joined.get(rating), joined.get(time))


def _read_recbole(sources) -> _Columns:
    """RecBole atomic `.inter`: tab-separated, header `user_id:token item_id:token [rating:float] [timestamp:float]`
    in any column order (RecBole's docs, "Atomic files")."""
    (path, member), = sources
    with _open_text(path, member, "utf-8") as f:
        header = [field.split(":")[0] for field in f.readline().rstrip("\r\n").split("\t")]
    wanted = {"user": "user_id", "item": "item_id", "rating": "rating", "time": "timestamp"}
    if "user_id" not in header or "item_id" not in header:
        raise RecError(f"{path}, line 1: a RecBole .inter header needs user_id and item_id, found {header}")
    columns = {name: header.index(field) for name, field in wanted.items() if field in header}
    return _read_delimited(sources, "\t", len(header), columns, skip_header=1)


_HEADER_NAMES = {"user", "users", "userid", "user_id", "uid"}


def _read_custom(sources) -> _Columns:
    """A user's file `user,item[,rating[,timestamp]]`.

    Separator: the first of `::`, tab, comma found on the first line, else whitespace (a later line without it is
    then reported by its own line number).
    Header: the first line is a header when its first field is a user column name (user, user_id, userid, uid,
    with an optional RecBole `:type`) or one of its fields is not a number where the second line has one.
    Text is UTF-8, or Latin-1 when it is not valid UTF-8 (MovieLens files). Timestamps: unix numbers or ISO dates.
    """
    try:
        return _read_custom_encoded(sources, "utf-8")
    except UnicodeDecodeError:
        return _read_custom_encoded(sources, "latin-1")


def _read_custom_encoded(sources, encoding: str) -> _Columns:
    (path, member), = sources
    with _open_text(path, member, encoding) as f:
        head = [line.rstrip("\r\n") for line in f.readlines(1 << 16) if line.strip()][:20]
    if not head:
        raise RecError(f"{path}: the file is empty")
    sep = next((s for s in ("::", "\t", ",") if s in head[0]), None)
    first = [field.strip() for field in _split(head[:1], sep)[0]]
    second = [field.strip() for field in _split(head[1:2], sep)[0]] if len(head) > 1 else first
    header = first[0].split(":")[0].lower() in _HEADER_NAMES or any(
        not _is_number(a) and _is_number(b) for a, b in zip(first, second))
    if len(first) < 2:
        raise RecError(f"{path}, line 1: expected at least `user{sep or ' '}item`, found {head[0][:80]!r}")
    names = ("user", "item", "rating", "time")[:len(first)]  # further columns are read but not used
    return _read_delimited(sources, sep, len(first), {name: i for i, name in enumerate(names)},
                           skip_header=int(header), encoding=encoding)


# ---------------------------------------------------------------- the registry
def _movielens(sep: str, description: str) -> FileFormat:
    return FileFormat(description, partial(_read_delimited, sep=sep, n_fields=4, encoding="latin-1",
                                           columns={"user": 0, "item": 1, "rating": 2, "time": 3}))


_ML100K = _movielens("\t", "official MovieLens u.data (tab: user item rating timestamp)")


_ML1M = _movielens("::", "official MovieLens ratings.dat (UserID::MovieID::Rating::Timestamp)")


_AMAZON = FileFormat("official Amazon 2014 reviews (JSON lines: reviewerID, asin, overall, unixReviewTime)",
                     partial(_read_json_lines, user="reviewerID", item="asin", rating="overall", time="unixReviewTime"))


_YELP = FileFormat("official Yelp reviews (JSON lines: user_id, business_id, stars, date)",
                   partial(_read_json_lines, user="user_id", item="business_id", rating="stars", time="date"))


_STEAM = FileFormat("official Steam reviews (Python-literal lines: username, product_id, date)",
                    partial(_read_json_lines, user="username", item="product_id", time="date"))


_HETREC = FileFormat("official HetRec 2011 user_taggedartists-timestamps.dat (tab: userID artistID tagID timestamp)",
                     partial(_read_delimited, sep="\t", n_fields=4, skip_header=1,
                             columns={"user": 0, "item": 1, "time": 3}))


_GOWALLA = FileFormat("official SNAP Gowalla check-ins (tab: user, time, latitude, longitude, location)",
                      partial(_read_delimited, sep="\t", n_fields=5, columns={"user": 0, "item": 4, "time": 1}))


_RECBOLE = FileFormat("RecBole atomic .inter", _read_recbole)


_SEQUENCES = FileFormat("SASRec `user item` / S3-Rec `user item item ...` lines, chronological, as published",
                        _read_user_items, published=True)


_LIGHTGCN = FileFormat("LightGCN train.txt + test.txt (`user item item ...`, no time), as published",
                       _read_user_items, published=True)


_LIGHTGCN_LASTFM = FileFormat("LightGCN lastfm data1.txt + test1.txt (tab: user item weight, no time), as published",
                              partial(_read_delimited, sep="\t", n_fields=3, columns={"user": 0, "item": 1}),
                              published=True)


_CUSTOM = FileFormat("custom user,item[,rating[,timestamp]] file", _read_custom)


_GROUPLENS_TERMS = ("GroupLens: research use only; no redistribution; no commercial use without permission; "
                    "acknowledge it and cite Harper & Konstan, ACM TiiS 2015")


_AMAZON_TERMS = ("Amazon 2014 reviews (McAuley, UCSD): no formal licence, research use only, do not redistribute; "
                 "cite He & McAuley WWW 2016 and McAuley et al. SIGIR 2015")


_YELP_TERMS = ("Yelp Dataset License: personal, educational and academic use only; no redistribution; "
               "download it yourself after accepting the licence")


_SNAP_AMAZON = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"


_LIGHTGCN_DATA = "https://raw.githubusercontent.com/kuandeng/LightGCN/master/Data/"


_MDCNS_TABLE_2 = "MDCNS (Li et al., SIGIR 2026), Table 2"


_LIGHTGCN_TABLE_1 = "LightGCN (He et al., SIGIR 2020), Table 1"


def _mdcns_files(file_name: str) -> str:
    return (f"Put a RecBole atomic .inter file of it (what the official MDCNS code's MDCNS_Code/data/data_process.py "
            f"reads) or its `user item item ...` lines, one per user in time order (what that script writes), as "
            f"{file_name}")


def _amazon(category: str, community: str, follows: str, title: str, published: tuple = ()) -> DatasetSpec:
    archive = f"reviews_{category}_5.json.gz"
    return DatasetSpec(
        title, files=(((archive,), _AMAZON, None), (("*.inter",), _RECBOLE, None), ((community,), _SEQUENCES, None)),
        downloads=((_SNAP_AMAZON + archive, archive, None, None),), k_core=5, follows=follows, terms=_AMAZON_TERMS,
        published=published)


DATASETS = {
    "ml-100k": DatasetSpec(
        "MovieLens 100K", files=((("u.data",), _ML100K, None), (("ml-100k.zip",), _ML100K, "ml-100k/u.data"),
                                 (("*.inter",), _RECBOLE, None)),
        downloads=(("https://files.grouplens.org/datasets/movielens/ml-100k.zip", "ml-100k.zip",
                    "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
                    "0e33842e24a9c977be4e0107933c0723"),),
        min_rating=3, k_core=10, terms=_GROUPLENS_TERMS,
        follows="ICPNS (RecBole yaml: rating in [3,inf), users and items in [10,inf))"),
    "ml-1m": DatasetSpec(
        "MovieLens 1M", files=((("ratings.dat",), _ML1M, None), (("ml-1m.zip",), _ML1M, "ml-1m/ratings.dat"),
                               (("*.inter",), _RECBOLE, None), (("ml-1m.txt",), _SEQUENCES, None)),
        downloads=(("https://files.grouplens.org/datasets/movielens/ml-1m.zip", "ml-1m.zip",
                    "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
                    "c4d9eecfca2ab87c1945afe126590906"),),
        min_rating=3, k_core=10, terms=_GROUPLENS_TERMS,
        follows="ICPNS (RecBole: 6,034 users, 3,124 items, 834,449 interactions); SASRec's ml-1m.txt "
                "(all ratings, items >= 5) as published"),
    "beauty": _amazon("Beauty", "Beauty.txt", "S3-Rec / MDCNS (all ratings, iterative 5-core)", "Amazon Beauty 2014",
                      (22363, 12101, 198502, _MDCNS_TABLE_2)),
    "sports": _amazon("Sports_and_Outdoors", "Sports_and_Outdoors.txt", "S3-Rec / MDCNS (all ratings, 5-core)",
                      "Amazon Sports and Outdoors 2014", (35598, 18357, 296337, _MDCNS_TABLE_2)),
    "toys": _amazon("Toys_and_Games", "Toys_and_Games.txt", "S3-Rec / MDCNS (all ratings, 5-core)",
                    "Amazon Toys and Games 2014", (19412, 11924, 167597, _MDCNS_TABLE_2)),
    # Note: ICPNS uses ml-100k, ml-1m, yelp and beauty (its RecBole configs) and publishes no statistics of them.
    # Note: SASRec's Video.txt was built from the full review file with a single-pass 5 filter; from the official
    # 5-core file we apply S3-Rec's recipe (iterative 5-core), so the raw-file statistics differ from SASRec's.
    "video-games": _amazon("Video_Games", "Video.txt", "S3-Rec's recipe on the 5-core file (SASRec's Video.txt "
                           "as published)", "Amazon Video Games 2014"),
    "yelp": DatasetSpec(
        "Yelp Open Dataset (2019 reviews)",
        files=((("yelp_academic_dataset_review.json",), _YELP, None), (("*.inter",), _RECBOLE, None),
               (("Yelp.txt",), _SEQUENCES, None)),
        k_core=5, time_window=(1546300800, 1577836800), terms=_YELP_TERMS,  # [2019-01-01, 2020-01-01) UTC
        follows="S3-Rec (reviews dated 2019, all ratings, iterative 5-core); ICPNS's yaml uses rating >= 3, "
                "10-core: pass --min-rating 3 --k-core 10",
        manual="Yelp requires accepting its Dataset License: get the dataset from https://www.yelp.com/dataset, "
               "extract yelp_academic_dataset_review.json"),
    "lastfm": DatasetSpec(
        "Last.fm HetRec 2011 (lastfm-2k)",
        files=((("user_taggedartists-timestamps.dat",), _HETREC, None),
               (("hetrec2011-lastfm-2k.zip",), _HETREC, "user_taggedartists-timestamps.dat"),
               (("*.inter",), _RECBOLE, None), (("LastFM.txt",), _SEQUENCES, None),
               (("data1.txt", "test1.txt"), _LIGHTGCN_LASTFM, None)),
        downloads=(("https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
                    "hetrec2011-lastfm-2k.zip",
                    # pinned by third-party projects (omnirec and others), not published by GroupLens
                    "6738f48195667ff03caaab4d32ca9a3133d8cc026b7c3cdaf6ce1010e913c59c", None),),
        k_core=5, follows="S3-Rec / MDCNS (first tagging time of each user-artist pair, iterative 5-core)",
        terms="HetRec 2011: non-commercial use; cite Cantador, Brusilovsky & Kuflik, HetRec 2011, and Last.fm",
        published=(1090, 3646, 52551, _MDCNS_TABLE_2)),
    "gowalla": DatasetSpec(
        "Gowalla check-ins (SNAP)",
        files=((("loc-gowalla_totalCheckins.txt.gz",), _GOWALLA, None), (("*.inter",), _RECBOLE, None),
               (("train.txt", "test.txt"), _LIGHTGCN, None)),
        downloads=(("https://snap.stanford.edu/data/loc-gowalla_totalCheckins.txt.gz",
                    "loc-gowalla_totalCheckins.txt.gz", None, None),),
        k_core=10, follows="NGCF / LightGCN (10-core; their split: 29,858 users, 40,981 items, 1,027,370)",
        terms="SNAP: research use; cite Cho, Myers & Leskovec, KDD 2011 (and NGCF/LightGCN for the split)",
        published=(29858, 40981, 1027370, _LIGHTGCN_TABLE_1)),
    "steam": DatasetSpec(
        "Steam reviews (UCSD, SASRec)",
        files=((("steam_reviews.json.gz",), _STEAM, None), (("*.inter",), _RECBOLE, None),
               (("Steam.txt",), _SEQUENCES, None)),
        downloads=(("https://cseweb.ucsd.edu/~wckang/steam_reviews.json.gz", "steam_reviews.json.gz", None, None),),
        k_core=5, follows="SASRec (users and items with >= 5 reviews; applied iteratively here)",
        terms="UCSD (McAuley lab): research use; cite Kang & McAuley ICDM 2018"),
    "yelp2018": DatasetSpec(
        "Yelp2018 (NGCF / LightGCN split)", files=((("train.txt", "test.txt"), _LIGHTGCN, None),),
        follows="NGCF / LightGCN (10-core upstream; 31,668 users, 38,048 items, 1,561,406)", terms=_YELP_TERMS,
        manual="this Yelp derivative is distributed only inside github.com/kuandeng/LightGCN (Data/yelp2018/) under "
               "Yelp's Dataset License: after accepting it, save train.txt and test.txt",
        published=(31668, 38048, 1561406, _LIGHTGCN_TABLE_1)),
    "amazon-book": DatasetSpec(
        "Amazon-Book (NGCF / LightGCN split)", files=((("train.txt", "test.txt"), _LIGHTGCN, None),),
        downloads=((_LIGHTGCN_DATA + "amazon-book/train.txt", "train.txt", None, None),
                   (_LIGHTGCN_DATA + "amazon-book/test.txt", "test.txt", None, None)),
        follows="NGCF / LightGCN (10-core upstream; 52,643 users, 91,599 items, 2,984,108)", terms=_AMAZON_TERMS,
        published=(52643, 91599, 2984108, _LIGHTGCN_TABLE_1)),
    "health": DatasetSpec(
        "Amazon Health and Personal Care (MDCNS)",
        files=((("Health.txt",), _SEQUENCES, None), (("*.inter",), _RECBOLE, None)),
        k_core=5, follows="MDCNS (iterative 5-core on users and items)",
        terms="Amazon review data (McAuley lab, UCSD): research use only, do not redistribute",
        manual="MDCNS's Health is Amazon's Health and Personal Care reviews, 5-core (Li et al., SIGIR 2026, Table 2: "
               "66,519 users, 28,237 items, 485,163 interactions); the paper does not name the Amazon release and "
               "its official code (github.com/Lyz103/SIGIR26-MDCNS) ships no Health file. "
               + _mdcns_files("Health.txt"),
        published=(66519, 28237, 485163, _MDCNS_TABLE_2)),
    "kuairand": DatasetSpec(
        "KuaiRand (MDCNS)",
        files=((("KuaiRand.txt",), _SEQUENCES, None), (("*.inter",), _RECBOLE, None)),
        k_core=5, follows="MDCNS (randomly exposed videos, iterative 5-core on users and items)",
        terms="see https://kuairand.com; cite Gao et al., KuaiRand, CIKM 2022",
        manual="MDCNS's KuaiRand is the log of randomly exposed videos of KuaiRand (Gao et al., CIKM 2022, "
               "https://kuairand.com), 5-core (Li et al., SIGIR 2026, Table 2: 18,642 users, 7,566 items, 231,471 "
               "interactions); the official MDCNS code (github.com/Lyz103/SIGIR26-MDCNS) ships no KuaiRand file. "
               + _mdcns_files("KuaiRand.txt"),
        published=(18642, 7566, 231471, _MDCNS_TABLE_2)),
}


# ---------------------------------------------------------------- download
def download(url: str, destination_path: str, sha256: str | None = None, md5: str | None = None) -> str:
    """Fetch `url` to `destination_path` with a progress bar. The bytes go to `<destination>.part` and are renamed
    only when complete (Content-Length reached) and matching the checksums, so an interrupted, truncated or
    corrupted download never leaves a file that a later run would trust."""
    folder, file_name = os.path.split(os.path.abspath(destination_path))
    os.makedirs(folder, exist_ok=True)
    partial_path = destination_path + ".part"
    digests = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}
    by_hand = f"download it by hand and save it as {file_name} in {folder}/"
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial_path, "wb") as out:
            expected_size, received = response.length, 0  # Content-Length, None when the server sends none
            with tqdm(total=expected_size, unit="B", unit_scale=True, desc=file_name) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    for digest in digests.values():
                        digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if expected_size is not None and received != expected_size:
            raise http.client.IncompleteRead(b"", expected_size - received)
        for algorithm, expected in (("sha256", sha256), ("md5", md5)):
            actual = digests[algorithm].hexdigest()
            if expected is not None and actual != expected.lower():
                raise RecError(f"checksum mismatch for {url}: {algorithm} {actual}, expected {expected}; the "
                               f"download was discarded. If the owner has changed the file, {by_hand}")
        os.replace(partial_path, destination_path)
    except (OSError, http.client.HTTPException) as error:  # URLError, HTTPError, timeouts, IncompleteRead
        raise RecError(f"could not download {url} ({type(error).__name__}: {error}); {by_hand}") from None
    finally:
        if os.path.exists(partial_path):
            os.remove(partial_path)
    return destination_path


# ---------------------------------------------------------------- local files and cache
def _find_files(spec: DatasetSpec, folder: str):
    """The first accepted file set, by the spec's priority, in `folder` or one of its subfolders (name order)."""
    if not os.path.isdir(folder):
        return None
    subfolders = sorted(e.path for e in os.scandir(folder) if e.is_dir() and e.name != "processed")
    for names, fmt, member in spec.files:
        for directory in [folder] + subfolders:
            paths = [sorted(glob.glob(os.path.join(glob.escape(directory), name))) for name in names]
            if all(paths):
                return [p[0] for p in paths], fmt, member
    return None


def cache_folder(folder: str, name: str, cache_dir: str | None = None) -> str:
    """The one folder of a dataset's processed cache: `cache_dir` (--cache-dir) when given; else processed/ in the
    data's folder when it is writable and not marked read-only (root may write anywhere, but a shared data folder
    without write bits stays untouched); else the user's cache folder."""
    if cache_dir:
        return cache_dir
    writable = os.path.isdir(folder) and os.access(folder, os.W_OK) and os.stat(folder).st_mode & 0o222
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(folder, "processed") if writable else os.path.join(base, "negsampling", name)


def _save_cache(folder: str, file_name: str, data: Interactions, summary: str) -> str:
    """Atomic write (temporary file, then rename) into `folder`; what the load line says about it."""
    temporary = None
    try:
        os.makedirs(folder, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(handle, "wb") as f:
            np.savez(f, user=data.user, item=data.item, n_users=data.n_users, n_items=data.n_items,
                     source=data.source, summary=summary, data_sha256=data.data_sha256 or "")
        os.replace(temporary, os.path.join(folder, file_name))
        return "cached to " + os.path.join(folder, file_name)
    except OSError as error:   # the data was read all the same: say so and go on
        if temporary is not None and os.path.exists(temporary):
            os.remove(temporary)
        return f"not cached: {folder} cannot be written ({error.strerror or error}); choose another --cache-dir"


def _load_cache(path: str, name: str):
    if not os.path.exists(path):
        return None
    with np.load(path, allow_pickle=False) as z:
        user = z["user"]
        data = Interactions(user, z["item"], positions_within_users(user), int(z["n_users"]), int(z["n_items"]), name,
                            str(z["source"]), data_sha256=str(z["data_sha256"]) if "data_sha256" in z.files else "")
        return data, str(z["summary"])


def unknown_dataset(name: str) -> RecError:
    """The error for a --dataset that is neither registered nor a file, with the closest registered name."""
    close = difflib.get_close_matches(name.lower(), DATASETS, n=1)
    return RecError(f"unknown dataset {name!r} and no such file" + (f"; did you mean {close[0]!r}?" if close else "")
                    + f" Known datasets: {', '.join(DATASETS)}; or give the path of a user,item[,rating[,timestamp]] "
                      f"CSV/TSV file")


def files_sha256(paths) -> str:
    """sha256 of the files' bytes, concatenated in order (`cat a b | sha256sum`): the provenance of a dataset."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def _fetch(spec: DatasetSpec, name: str, folder: str):
    """Download the official files into `folder` (skipping those already there), or say where to get them."""
    accepted = ", ".join(" + ".join(names) for names, _, _ in spec.files)
    if not spec.downloads:
        raise RecError(f"{name}: no data file in {folder}/. {spec.manual} into {folder}/ "
                       f"(accepted files, by priority: {accepted}). Terms: {spec.terms}")
    for url, file_name, sha256, md5 in spec.downloads:
        destination = os.path.join(folder, file_name)
        if not os.path.exists(destination):
            print(f"[data] downloading {spec.title} from {url}; terms of use: {spec.terms}")
            try:
                download(url, destination, sha256=sha256, md5=md5)
            except RecError as error:
                raise RecError(f"{name}: {error} (files accepted in {folder}/, by priority: {accepted})") from None
    return _find_files(spec, folder)


# ----------------------------------------------------------------------------------------------------------
# 11. Checkpoints, resume and --eval-only
# ----------------------------------------------------------------------------------------------------------
# ---------------------------------------------------------------- checkpoints
class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the run at a clean point; the message says how to resume. Exit 128 + signum."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def checkpoint_path(args) -> str:
    return os.path.join(args.out_dir, "checkpoint.pt")


def save_atomically(obj, path: str):
    """torch.save into a temporary file of the same folder (made if needed), then a rename: a reader never sees half
    a file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save(obj, f)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def save_json(obj, path: str):
    """json.dump into a temporary file beside `path` (its folder made if needed), then a rename."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)


PER_RANK = ("sample_generator", "rng", "keep")   # what each process of a torchrun keeps for itself in a checkpoint


def save_checkpoint(shared: dict, own: dict, path: str):
    """Write a checkpoint (atomically): `shared`, the same on every process, and `own`, this process's (PER_RANK).
    Under torchrun rank 0 gathers every rank's `own` and writes each entry as a list by rank, with `world_size`."""
    if world_size() == 1:
        save_atomically({**shared, **own}, path)
        return
    parts = [None] * world_size() if is_main() else None
    dist.gather_object(_on_cpu(own), parts, dst=0)
    if is_main():
        save_atomically({**shared, "world_size": world_size(),
                         **{name: [part[name] for part in parts] for name in own}}, path)


def load_torch_file(path: str, named: str, what: str, then: str = "") -> object:
    """torch.load (weights only, onto the CPU) of a file this project wrote, or one RecError line: `named` (how the
    user gave the path), what the file should have been, and what to do (`then`)."""
    if not os.path.isfile(path):
        raise RecError(f"{named}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:   # unpickling errors come in many types; all mean "not a usable file"
        raise RecError(f"{named} is not a readable {what} ({type(error).__name__}: {error}){then}") from None


def read_checkpoint(args, missing_ok: bool = False) -> dict | None:
    """<out-dir>/checkpoint.pt, as `fit` writes it (None when there is none and missing_ok). Under torchrun rank 0
    reads it and every rank receives it, with this rank's own entries (PER_RANK) in place of the lists."""
    path = checkpoint_path(args)

    def load():
        if missing_ok and not os.path.isfile(path):
            return None
        return load_torch_file(path, path, "checkpoint", "; start the run again without --resume")

    checkpoint = from_main(load)
    written_by = checkpoint.get("world_size", 1) if checkpoint is not None else None   # one process: unlisted
    if checkpoint is not None and written_by != world_size():
        raise RecError(f"{path} was written by {written_by} process(es), this run has {world_size()}; resume it "
                       f"with as many (torchrun --nproc_per_node)")
    if checkpoint is not None and "world_size" in checkpoint:
        checkpoint.update({name: checkpoint[name][rank()] for name in PER_RANK})
    return checkpoint


def rng_states() -> dict:
    """The global random states: python, numpy (its key as int64), torch CPU and CUDA."""
    name, key, position, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": (name, torch.from_numpy(key.astype(np.int64)), position,
                                                   has_gauss, gauss),
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(states: dict):
    random.setstate(states["python"])
    name, key, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])


def launcher() -> list:
    """How this run was started: the python interpreter, or torchrun with this run's numbers of processes (on
    several machines, HOST:PORT stands for their rendezvous address)."""
    if world_size() == 1:
        return [sys.executable]
    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))
    if per_machine == world_size():
        return ["torchrun", "--standalone", "--nproc_per_node", str(per_machine)]
    return ["torchrun", "--nnodes", str(world_size() // per_machine), "--nproc_per_node", str(per_machine),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", "HOST:PORT"]


def resume_command(command: list, out_dir: str) -> str:
    """The command that continues a run: its own (`args.command`), with --out-dir spelled out and --resume."""
    argv = [a for a in command[1:] if a != "--resume"]
    if not any(a == "--out-dir" or a.startswith("--out-dir=") for a in argv):
        argv += ["--out-dir", out_dir]
    return shlex.join([*launcher(), command[0], *argv, "--resume"])


@contextlib.contextmanager
def deferred_signals():
    """While training, SIGINT and SIGTERM are noted (in the yielded list) and `fit` acts on them after the current
    step; the same signal again (Ctrl-C twice) stops at once, the last checkpoint staying. (run_all.sh follows a
    Ctrl-C with a SIGTERM: that one waits for the step too.) Outside the main thread (where handlers cannot be set)
    nothing changes."""
    received = []

    def note(signum, frame):
        name = signal.Signals(signum).name
        if signum in received:
            raise Interrupted(f"{name} again: stopped at once; the last checkpoint stays (resume with the run's "
                              f"command and --resume)", signum)
        if not received and is_main():   # under torchrun every process gets it: rank 0 says it
            print(f"{name}: finishing the current step, then saving a checkpoint (send it again to stop at once)",
                  file=sys.stderr, flush=True)
        received.append(signum)

    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def duration_seconds(text: str) -> float:
    """The seconds of a duration as --time-budget takes it: 2h, 90m, 45s, 1h30m, 1.5h."""
    match = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", text)
    if not text or match is None:
        raise RecError(f"--time-budget must be a duration such as 2h, 90m or 1h30m, got {text!r}")
    hours, minutes, seconds = (float(part or 0) for part in match.groups())
    return 3600 * hours + 60 * minutes + seconds


def device_words(device) -> str:
    """Where a run computes, in words: 'this CPU (2 threads)', the GPU's name; under torchrun, how many processes."""
    device = torch.device(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"this CPU ({torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''})"
    return where + (f", {world_size()} processes" if world_size() > 1 else "")


PACE_BATCHES = 30   # training batches timed before the pace line


class Pace:
    """The clock of a training stage, timed in this process only (the batches a resumed run trained before its
    interruption were timed by another): training seconds per batch and the seconds after each epoch's batches
    (validation, checkpoint) over the latest 5 epochs. It says the cost once, after the first PACE_BATCHES batches
    (or the first epoch when it is shorter), gives each epoch line its ETA, and tells --time-budget whether the
    next validation still fits."""

    def __init__(self, n_batches: int, deadline: float | None):
        self.n_batches, self.deadline, self.said, self.started, self.trained = n_batches, deadline, False, None, None
        self.epochs = []   # [batches, training seconds, seconds after the batches] of the latest epochs timed here

    def start_epoch(self):
        self.started = time.perf_counter()
        self.epochs = (self.epochs + [[0, 0.0, None]])[-5:]

    def batch_done(self) -> bool:
        """Count a batch; True when the pace line is due (once)."""
        self.epochs[-1][0] += 1
        self.epochs[-1][1] = time.perf_counter() - self.started
        return not self.said and sum(e[0] for e in self.epochs) >= PACE_BATCHES

    def end_epoch(self) -> bool:
        """The epoch's batches are done; True when the pace line is due (an epoch shorter than PACE_BATCHES)."""
        self.trained = time.perf_counter()
        return not self.said and self.epochs[-1][0] > 0

    def per_epoch(self) -> float | None:
        """The seconds of a whole epoch at the latest pace: n_batches batches, and the mean seconds after them
        (None before a batch was timed here)."""
        batches, seconds = sum(e[0] for e in self.epochs), sum(e[1] for e in self.epochs)
        after = [e[2] for e in self.epochs if e[2] is not None]
        if not batches:
            return None
        return seconds / batches * self.n_batches + (sum(after) / len(after) if after else 0.0)

    def eta(self, left: int) -> str:
        """The epoch is over (validated, saved): `left` more epochs at the latest pace."""
        self.epochs[-1][2] = time.perf_counter() - self.trained
        per_epoch = self.per_epoch()
        return f"  ETA ≤ {duration(left * per_epoch)}" if left and per_epoch is not None else ""

    def fits(self, epochs: int) -> bool:
        """Whether `epochs` more epochs, their validation and the test evaluation (about one validation more) end
        within --time-budget; True while nothing is timed here."""
        per_epoch = self.per_epoch()
        return per_epoch is None or time.perf_counter() + epochs * per_epoch + self.epochs[-1][2] <= self.deadline

    def line(self, args, stage: str, epochs_left: int, epochs_after: int) -> str:
        """The cost of the run before the wait: the measured pace, the budget, the worst case here, what to do."""
        per_epoch, timed = self.per_epoch(), sum(e[0] for e in self.epochs)
        worst = epochs_left * per_epoch
        line = (f"{stage} pace: {duration(per_epoch) if per_epoch >= 10 else f'{per_epoch:.1f}s'} per epoch of "
                f"{self.n_batches:,} batch{'es' if self.n_batches > 1 else ''} ({timed} timed); "
                f"at most {epochs_left} more epoch{'s' if epochs_left > 1 else ''} (--epochs {args.epochs}"
                + (f", then {epochs_after} of the next stage" if epochs_after else "")
                + f"; --patience {args.patience} may stop it sooner): up to {duration(worst)} of training on "
                  f"{device_words(args.device)}")
        if self.deadline is not None:
            left = self.deadline - time.perf_counter()
            return line + (f", within --time-budget {args.time_budget}" if worst <= left else
                           f"; --time-budget {args.time_budget} stops it at the last validation that fits, in about "
                           f"{duration(max(left, 0))}")
        if worst > 3600:
            line += (f". Over an hour: for a first look try --epochs 5 (~{duration(5 * per_epoch)}), or a GPU "
                     f"(--device cuda), or several processes (torchrun), or --time-budget")
        return line


def adam(parameters, lr: float) -> torch.optim.Adam:
    """Every method's optimizer: Adam with `foreach=True`, one multi-tensor kernel per update op over all the
    parameters instead of a loop of small ones per parameter. On CPU (where PyTorch's default is that loop) its
    steps equal the loop's bit for bit and cost 1.3x less (bench/README.md, tests/test_common.py); on CUDA it is
    already PyTorch's default."""
    return torch.optim.Adam(parameters, lr=lr, foreach=True)


class TrainingRun:
    """What `fit` needs besides its loop, none of which changes a number: Adam and the random generators, the
    checkpoint and --resume, signals, torchrun's shared decisions, the clock (`Pace`) and why the loop stops.

    stage: the name of this call of `fit` in the run's output and checkpoints (ICPNS: "pretrain", "finetune").
    keep: the method's own state (a dict of tensors and records that it keeps current, e.g. ICPNS's communities),
        saved with every checkpoint for the method to rebuild itself on --resume (`read_checkpoint(args)["keep"]`).
    epochs_after: epochs of the run's later stages, counted in the pace line and the ETA.

    Checkpoints. After every validation, <out-dir>/checkpoint.pt receives (atomically) all the rest of the run
    depends on: the model, the optimizer, where the loop is (`Loop`), the best state, every random state (python,
    numpy, torch, the batch-order and sampler generators), `keep` and the stage; the first one also writes run.json,
    the run's command and settings as `resolve_args` recorded them (`args.run_file`). SIGINT or SIGTERM finishes
    the current step, writes the checkpoint and raises `Interrupted`. With --resume and a checkpoint of this
    `stage`, the loop goes on from the checkpoint and computes exactly what the uninterrupted run computes
    (tests/test_checkpoint.py stops runs and compares).

    Under torchrun (see "more than one process" below): the ranks start from rank 0's weights, each step is
    `train_step` on this rank's share of the global batch, its samplers draw from its own generator
    (`rank_seed(seed + 1)`), rank 0 decides early stopping and --time-budget, a signal to any rank stops all of them
    after the same step, and the checkpoint holds every rank's random states and `keep` (`save_checkpoint`)."""

    def __init__(self, args, split: SplitData, model: nn.Module, stage: str, keep: dict | None, epochs_after: int):
        self.args, self.model, self.stage, self.keep, self.epochs_after = args, model, stage, keep, epochs_after
        self.split = split
        device = torch.device(args.device)
        model.to(device)
        broadcast_parameters(model)
        self.optimizer = adam(model.parameters(), args.lr)
        self.order_generator = torch.Generator().manual_seed(args.seed)   # batch order, on the CPU (every rank's)
        # samplers, on the model's device; under torchrun each rank draws its own (rank 0's stream is one process's)
        self.sample_generator = torch.Generator(device).manual_seed(rank_seed(args.seed + 1))
        rows = len(split.train_sequences) if split.sequential else len(split.train_user)
        self.pace = Pace(-(-rows // args.batch_size), args.deadline)
        self.loop, self.best_state, self.stopped_by, self.bar, self.saved = Loop(), None, None, None, False
        self.epoch_order = self.order_generator.get_state()   # the order generator as the current epoch began
        if args.resume:
            self.resume()

    def resume(self):
        """Continue from the checkpoint of this stage, if there is one (a run stopped in an earlier stage has none)."""
        checkpoint = read_checkpoint(self.args, missing_ok=True)
        if checkpoint is None or checkpoint["stage"] != self.stage:
            return
        if checkpoint["data_sha256"] != self.args.data_sha256:
            raise RecError(f"the data file changed since {checkpoint_path(self.args)} was written (sha256 "
                           f"{checkpoint['data_sha256']}, now {self.args.data_sha256}); the run cannot continue")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.loop, self.best_state = Loop(**checkpoint["loop"]), checkpoint["best_state"]
        self.epoch_order = checkpoint["epoch_order"]
        self.sample_generator.set_state(checkpoint["sample_generator"])
        set_rng_states(checkpoint["rng"])
        print(f"resumed {self.stage} from {checkpoint_path(self.args)}: {self.loop.epoch} epochs and "
              f"{self.loop.step} batches done")

    def save(self):
        args = self.args
        if is_main() and args.run_file and not self.saved:   # a fresh run's run.json, with its first checkpoint
            save_json(args.run_file, os.path.join(args.out_dir, "run.json"))
        self.saved = True
        save_checkpoint({"stage": self.stage, "loop": dataclasses.asdict(self.loop),
                         "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                         "best_state": self.best_state, "epoch_order": self.epoch_order,
                         "data_sha256": args.data_sha256},
                        {"sample_generator": self.sample_generator.get_state(), "rng": rng_states(),
                         "keep": self.keep},
                        checkpoint_path(args))

    def epoch_batches(self, epoch: int):
        """This epoch's batches (from the checkpoint's next one on a resumed run), with its progress bar; starts its
        clock."""
        self.pace.start_epoch()
        self.order_generator.set_state(self.epoch_order)
        args = self.args
        self.bar = tqdm(training_batches(self.split, args.batch_size, self.order_generator, args.device,
                                         first=self.loop.step),
                        total=self.pace.n_batches, initial=self.loop.step, desc=f"{self.stage} epoch {epoch}",
                        leave=False, disable=args.quiet or not is_main())
        return self.bar

    def diverged(self, loss: float, epoch: int) -> RecError:
        error = RecError(f"the loss became {loss} at epoch {epoch}; lower --lr or check the data")
        error.said_by_rank_0 = True   # the loss of the whole batch: every rank raises this
        return error

    def batch_done(self):
        if self.pace.batch_done():
            self.say_pace()

    def say_pace(self):
        left = self.args.epochs - self.loop.epoch + self.epochs_after
        self.pace.said = True
        if left:   # (a one-epoch run has nothing left to announce once its batches are done)
            tqdm.write(self.pace.line(self.args, self.stage, left, self.epochs_after))
            sys.stdout.flush()

    def end_epoch(self, epoch: int) -> float:
        """The epoch's batches are done: its seconds and mean loss; the loop moves to the next epoch."""
        loop = self.loop
        loop.epoch_seconds.append(loop.seconds + time.perf_counter() - self.pace.started)
        mean_loss = loop.loss_sum / max(loop.step, 1)
        loop.epoch, loop.step, loop.loss_sum, loop.seconds = epoch, 0, 0.0, 0.0
        self.epoch_order, self.bar = self.order_generator.get_state(), None
        if self.pace.end_epoch():
            self.say_pace()
        return mean_loss

    def eta(self, epoch: int) -> str:
        """The ETA of the epoch line: the epochs left (this stage's, then the later ones') at the latest pace; an
        upper bound, as early stopping may come first."""
        return self.pace.eta(self.args.epochs - epoch + self.epochs_after)

    def interrupted(self, received: list) -> Interrupted:
        """A signal stopped the run (on any rank): save the checkpoint, say how to resume."""
        if self.bar is not None:   # within an epoch: its seconds so far count when it is resumed
            self.loop.seconds += time.perf_counter() - self.pace.started
            self.bar.close()
        self.save()
        signum = received[0] if received else signal.SIGTERM   # under torchrun another rank may have received it
        return Interrupted(f"{signal.Signals(signum).name}: {self.stage} stopped after {self.loop.epoch} epochs and "
                           f"{self.loop.step} batches, saved to {checkpoint_path(self.args)}; resume with: "
                           f"{resume_command(self.args.command, self.args.out_dir)}", signum)

    def stop_reason(self) -> str | None:
        """Why the loop stops before the next epoch (kept in `stopped_by`): "patience", "epochs", "time-budget" when
        the epoch just validated is the last whose next validation still fits, or None to go on."""
        args, loop = self.args, self.loop
        if loop.stale > args.patience:
            self.stopped_by = "patience"
        elif loop.epoch >= args.epochs:
            self.stopped_by = "epochs"
        elif self.pace.deadline is not None and loop.history and loop.history[-1]["epoch"] == loop.epoch:
            next_validation = min(-(-(loop.epoch + 1) // args.eval_every) * args.eval_every, args.epochs)
            if not from_main(self.pace.fits, next_validation - loop.epoch):   # decided by rank 0, under torchrun
                self.stopped_by = "time-budget"
        return self.stopped_by

    def finished(self) -> dict:
        """Say why the loop stopped, restore the best state; the record of the run."""
        args, loop = self.args, self.loop
        if self.stopped_by == "patience":
            print(f"early stop: {args.valid_metric} has not improved for {loop.stale} validations, more than the "
                  f"patience {args.patience}")
        elif self.stopped_by == "time-budget":
            print(f"time budget: {self.stage} stopped after epoch {loop.epoch}, as the next validation would end "
                  f"after --time-budget {args.time_budget}; the best state (epoch {loop.best_epoch}) is restored")
        self.model.load_state_dict(self.best_state)
        return {"history": loop.history, "best_epoch": loop.best_epoch, "valid": loop.best_valid,
                "epoch_seconds": loop.epoch_seconds, "stopped_by": self.stopped_by}


def read_model_file(path: str) -> dict:
    """What --eval-only evaluates, as `finish` writes a model.pt: method, config, best_epoch, valid, state_dict,
    script, stopped_by (the last two absent from older files). A run's checkpoint.pt (stopped, or still running)
    gives the best state it holds so far, with the settings of the run.json beside it (`checkpoint_as_model`)."""
    saved = load_torch_file(path, f"--eval-only {path}", "model.pt")
    if isinstance(saved, dict) and {"stage", "loop", "best_state"} <= saved.keys():
        return checkpoint_as_model(path, saved)
    if not isinstance(saved, dict) or not {"method", "config", "state_dict"} <= saved.keys():
        raise RecError(f"--eval-only {path} is not a model.pt of this project (no method, config, state_dict)")
    return saved


def checkpoint_as_model(path: str, checkpoint: dict) -> dict:
    """A checkpoint.pt read as a model.pt: its best state so far (`fit`'s, of the stage it was in), with the method,
    settings and script of the run.json that `TrainingRun.save` writes beside it. Adds `stage` and `epochs_done`."""
    run_file = os.path.join(os.path.dirname(path), "run.json")
    try:
        with open(run_file) as f:
            run = json.load(f)
    except (OSError, ValueError) as error:
        raise RecError(f"--eval-only {path} is a checkpoint.pt: its run's settings are in the run.json beside it, "
                       f"which cannot be read ({error})") from None
    if "method" not in run:
        raise RecError(f"--eval-only {path}: its run.json predates --eval-only on checkpoints (it names no method); "
                       f"let the run finish and evaluate its model.pt")
    loop = checkpoint["loop"]
    if checkpoint["best_state"] is None:
        raise RecError(f"--eval-only {path}: the run was stopped before its first validation, so it holds no best "
                       f"state yet; resume it (--resume) past one validation")
    return {"method": run["method"], "config": run["config"], "script": os.path.basename(run["command"][0]),
            "state_dict": checkpoint["best_state"], "best_epoch": loop["best_epoch"], "valid": loop["best_valid"],
            "stage": checkpoint["stage"], "epochs_done": loop["epoch"]}


def adopt_saved_settings(args) -> str:
    """--eval-only: the settings of the saved model's run replace the command line's, except where and how to
    evaluate (WHERE_AND_HOW, --device, --eval-batch-size, the number of processes). Returns the run's method."""
    saved = read_model_file(args.eval_only)
    foreign = saved["config"].keys() - vars(args).keys()
    if foreign:
        script = saved.get("script")
        raise RecError(f"--eval-only {args.eval_only} was written by another script" + (
            f", {script}: evaluate it with python {script} --eval-only {args.eval_only}" if script else
            f" (its settings include {', '.join(_flag(k) for k in sorted(foreign))}); evaluate it with that script"))
    for name, value in saved["config"].items():
        if name not in WHERE_AND_HOW + ("device", "eval_batch_size", "world_size"):
            setattr(args, name, value)
    return saved["method"]


def evaluate_saved(args, split: SplitData, model: nn.Module) -> dict:
    """--eval-only: load the saved state (model.pt, or a checkpoint.pt's best so far) into `model`, built from the
    same settings, and validate it. Returns the record `finish` takes, with no training history; `stopped_by` is
    the saved run's (None for a checkpoint: the run has not stopped)."""
    saved = read_model_file(args.eval_only)
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as error:
        raise RecError(f"--eval-only {args.eval_only} does not fit the model its settings build: "
                       f"{' '.join(str(error).split())}") from None
    model.to(args.device)
    if "stage" in saved:
        done = saved["epochs_done"]
        print(f"loaded {args.eval_only}: the best state so far of an unfinished run, {saved['stage']} epoch "
              f"{saved['best_epoch']} ({done} epoch{'s' if done != 1 else ''} of {saved['stage']} done)")
    else:
        print(f"loaded {args.eval_only} (best epoch {saved['best_epoch']} of its run)")
    return {"history": [], "best_epoch": saved["best_epoch"], "epoch_seconds": [],
            "valid": evaluate(model, split.valid, args.ks, args.eval_batch_size),
            "stopped_by": saved.get("stopped_by")}


# ----------------------------------------------------------------------------------------------------------
# 12. More than one process (torchrun)
# ----------------------------------------------------------------------------------------------------------
# ---------------------------------------------------------------- more than one process (torchrun)
# `python <script>` is one process and nothing here acts. `torchrun --nproc_per_node W <script>` starts W processes
# (ranks 0..W-1, with RANK, LOCAL_RANK and WORLD_SIZE in their environment) that join one process group (NCCL on
# CUDA, each rank on the GPU of its LOCAL_RANK; gloo on the CPU) and share one run:
# - training: every rank draws the same global batch of --batch-size rows (the same order generator) and takes the
#   rows of the users it owns, user % W == rank (`owns`); gradients are summed across the ranks before every step
#   (`train_step`), so the step is one process's on the whole batch. A rank's samplers have their own generator
#   (`fit`) and keep per-user state for its own users only.
# - evaluation: batches of rows dealt round-robin, metric sums all-reduced: one process's metrics (`evaluate`).
# - decisions and files: rank 0 alone reads and writes the run's files (run.json, checkpoint.pt, model.pt,
#   results.json, ICPNS's pretrained.pt), runs ICPNS's k-means and decides early stopping; the others receive its
#   result (`from_main`). Only rank 0 prints. Inputs (the data, --pretrained, --eval-only) are read by every rank:
#   on several machines each needs its copy.
def world_size() -> int:
    """The processes of this run: the process group's size, else torchrun's WORLD_SIZE (1 for `python <script>`)."""
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", 1))


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))


def is_main() -> bool:
    """Rank 0, the process that prints and writes files (True for `python <script>`)."""
    return rank() == 0


def rank_seed(seed: int) -> int:
    """The seed of this process's own random streams (dropout, samplers): `seed` in one process and in rank 0, a
    32-bit seed mixed from (seed, rank) in the other ranks (numpy's SeedSequence). torch's CPU generator keeps only
    the low 32 bits of a seed, so seed + rank * 2^32 would give every rank the same stream."""
    return seed if rank() == 0 else int(np.random.SeedSequence([seed, rank()]).generate_state(1)[0])


def init_distributed(args):
    """Under torchrun (WORLD_SIZE > 1): join the process group, NCCL with --device cuda (this rank on the GPU of its
    LOCAL_RANK), gloo on the CPU; ranks other than 0 print nothing. Sets args.world_size."""
    if world_size() > 1 and not dist.is_initialized():
        if args.device == "cuda":
            local_rank = int(os.environ.get("LOCAL_RANK", 0))
            if local_rank >= torch.cuda.device_count():
                raise RecError(f"torchrun started more processes on this machine than it has GPUs "
                               f"({torch.cuda.device_count()}); lower --nproc_per_node, or use --device cpu")
            torch.cuda.set_device(local_rank)
        # the others may wait long for rank 0 (a first load of a large dataset, k-means, a checkpoint): 1 hour
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo", timeout=datetime.timedelta(hours=1))
        if rank() > 0:
            sys.stdout = open(os.devnull, "w")
    args.world_size = world_size()


def leave_process_group():
    """Under torchrun, destroy the process group once every rank is done with it (`run_cli`). Left to the exit, the
    gloo worker threads may still hold the last collective's tensors while Python finalizes; freeing them then
    takes the GIL, the interpreter ends that thread, and the process aborts: `terminate called without an active
    exception`, SIGABRT, a finished run reported failed (pytorch/pytorch#190489; tests/test_distributed.py)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def owns(users) -> torch.Tensor:
    """Bool mask of the users this rank owns, user % world_size == rank: its rows of every training batch and the
    users of its samplers' per-user state (all of them in one process)."""
    return users % world_size() == rank()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over the ranks (NCCL reduces on the GPU: a CPU tensor goes there and back)."""
    if world_size() == 1:
        return tensor
    moved = tensor.to("cuda" if dist.get_backend() == "nccl" else tensor.device)
    dist.all_reduce(moved)
    return moved.to(tensor.device)


def _on_cpu(value):
    """`value` with every tensor in it (through dicts, lists and tuples) moved to the CPU, to send to another rank."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {key: _on_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(item) for item in value)
    return value


def from_main(fn, *args, **kwargs):
    """fn(*args, **kwargs) computed by rank 0 alone (files, k-means, a decision); every rank returns its result
    (tensors arrive on the CPU) or raises the RecError it raised. One process: fn(*args, **kwargs)."""
    if world_size() == 1:
        return fn(*args, **kwargs)
    outcome, raised = [None, None], None   # (result, error message)
    if rank() == 0:
        try:
            outcome[0] = _on_cpu(fn(*args, **kwargs))
        except RecError as error:
            outcome[1], raised = str(error), error
    dist.broadcast_object_list(outcome, src=0)
    if raised is not None:
        raise raised
    if outcome[1] is not None:
        error = RecError(outcome[1])
        error.said_by_rank_0 = True   # run_cli: rank 0 prints it
        raise error
    return outcome[0]


@contextlib.contextmanager
def machine_leader_first():
    """Under torchrun the first process of each machine (LOCAL_RANK 0) runs the block before the others of that
    machine, which then find what it wrote (a download, the data cache)."""
    leader = int(os.environ.get("LOCAL_RANK", 0)) == 0
    if world_size() > 1 and not leader:
        dist.barrier()
    yield
    if world_size() > 1 and leader:
        dist.barrier()


def broadcast_parameters(model: nn.Module):
    """Every rank's parameters become rank 0's (DistributedDataParallel does the same when it wraps a model)."""
    if world_size() == 1:
        return
    parameters = list(model.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in parameters])
    dist.broadcast(flat, src=0)
    with torch.no_grad():
        for p, value in zip(parameters, flat.split([p.numel() for p in parameters])):
            p.copy_(value.view_as(p))


def stop_requested(received: list) -> bool:
    """Whether any rank noted a signal (`deferred_signals`): the same answer on every rank."""
    if world_size() == 1:
        return bool(received)
    return bool(all_reduce_sum(torch.tensor([float(bool(received))])).item() > 0)


# ----------------------------------------------------------------------------------------------------------
# 13. Help, errors and provenance
# ----------------------------------------------------------------------------------------------------------
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_flags(args):
    """The ranges of the shared flags (a method file checks its own flags the same way before `prepare`)."""
    if args.dataset != "synthetic" and args.dataset not in DATASETS and not os.path.isfile(args.dataset):
        raise unknown_dataset(args.dataset)
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise RecError(f"{_flag(name)} must be a finite number, got {value}")
    try:
        args.ks = sorted({int(k) for k in (args.ks if isinstance(args.ks, list) else str(args.ks).split(","))})
    except ValueError:
        raise RecError(f"--ks must be comma-separated integers, got {args.ks!r}") from None
    if min(args.ks) < 1:
        raise RecError("--ks must be positive")
    metric, _, k = args.valid_metric.partition("@")
    if metric not in METRICS or not k.isdigit() or int(k) not in args.ks:
        raise RecError(f"--valid-metric {args.valid_metric!r} must be one of {', '.join(METRICS)} at a K of "
                       f"--ks ({args.ks})")
    for name in ("epochs", "batch_size", "dim", "eval_every", "max_len", "eval_batch_size", "heads",
                 "examples_per_batch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:   # None: batch_size set from the rows
            raise RecError(f"{_flag(name)} must be at least 1, got {getattr(args, name)}")
    for name in ("patience", "layers", "reg_weight"):
        if getattr(args, name) < 0:
            raise RecError(f"{_flag(name)} must be at least 0, got {getattr(args, name)}")
    if args.k_core is not None and args.k_core < 0:
        raise RecError(f"--k-core must be at least 0 (0 disables it), got {args.k_core}")
    if args.backbone in SEQUENTIAL_BACKBONES and args.layers < 1:
        raise RecError(f"{args.backbone} needs --layers of at least 1, got {args.layers}")
    if args.backbone in ("sasrec", "linrec") and args.dim % args.heads:
        raise RecError(f"--heads {args.heads} must divide --dim {args.dim} (each head gets dim / heads features)")
    if not 0 <= args.dropout < 1:
        raise RecError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.lr <= 0:
        raise RecError(f"--lr must be positive, got {args.lr}")
    if not 0 <= args.seed <= 2 ** 32 - 1:
        raise RecError(f"--seed must be in [0, 2^32 - 1] (numpy's seed range), got {args.seed}")
    if args.time_budget is not None and not duration_seconds(args.time_budget) > 0:
        raise RecError(f"--time-budget must be more than 0, got {args.time_budget}")


class CommandLine(argparse.ArgumentParser):
    """argparse as every script here uses it: a usage error is one `error:` line (exit 2); each flag's help states
    its default once (`_DefaultsHelp`); some flags take other defaults with `--dataset synthetic`
    (`synthetic_defaults`); the parsed namespace keeps the command line (`args.command`: the script, then argv)."""

    def __init__(self, description: str, script: str):
        super().__init__(prog=os.path.basename(script), description=description, formatter_class=_DefaultsHelp)
        self.script = script

    def error(self, message):
        if rank() == 0:   # under torchrun every process parses the same command line: one of them says it
            print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def _check_value(self, action, value):
        """A value outside a flag's choices (--backbone, --sampler, ...): the error names the closest one."""
        if action.choices is not None and value not in action.choices:
            choices = [str(choice) for choice in action.choices]
            close = difflib.get_close_matches(str(value).lower(), choices, n=1)
            self.error(f"argument {'/'.join(action.option_strings)}: invalid choice {value!r}"
                       + (f"; did you mean {close[0]!r}?" if close else "") + f" (choose from {', '.join(choices)})")

    def parse_args(self, args=None, namespace=None):
        argv = list(sys.argv[1:] if args is None else args)
        parsed = super().parse_args(argv, namespace)
        # a second parse into a namespace pre-filled with _UNSET: argparse keeps what it finds there for the flags
        # that are not given, so the flags still _UNSET are the ones left at their defaults
        given = super().parse_args(argv, argparse.Namespace(**{a.dest: _UNSET for a in self._actions}))
        if parsed.dataset == "synthetic":
            for action in self._actions:
                if hasattr(action, "synthetic_default") and getattr(given, action.dest) is _UNSET:
                    setattr(parsed, action.dest, action.synthetic_default)
        parsed.command = [os.path.relpath(self.script), *argv]   # as typed from here: `python <script> ...`
        return parsed


class _DefaultsHelp(argparse.HelpFormatter):
    """Appends each flag's default to its help once: the script's own value, the per-backbone values of a flag left
    at None (from BACKBONE_DEFAULTS, so they cannot drift), and the value `--dataset synthetic` gives it. A help that
    already speaks of its default is left alone, and None is never printed."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS or action.default is False or \
                "default" in text.lower():
            return text   # (a store_true flag is off unless given: no default to state)
        parts = [per_backbone_default(action.dest) if action.default is None else str(action.default)]
        if hasattr(action, "synthetic_default"):
            parts.append(f"{action.synthetic_default} with --dataset synthetic")
        parts = [p for p in parts if p]
        return text + (f" (default: {'; '.join(parts)})".replace("%", "%%") if parts else "")


def _plain(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def per_backbone_default(dest: str) -> str | None:
    """'sasrec 50, others 64': a flag's BACKBONE_DEFAULTS, each value once (None for a flag not in the table)."""
    groups = {}
    for backbone, row in BACKBONE_DEFAULTS.items():
        if dest in row:
            groups.setdefault(row[dest], []).append(backbone)
    if len(groups) <= 1:
        return next(map(_plain, groups), None)
    usual = max(groups, key=lambda value: len(groups[value]))
    return ", ".join([f"{'/'.join(names)} {_plain(value)}" for value, names in groups.items() if value != usual]
                     + [f"others {_plain(usual)}"])


def parser_action(parser: argparse.ArgumentParser, dest: str) -> argparse.Action:
    """The action of the flag stored in `dest` (to reword the help of a shared flag in one script)."""
    return next(action for action in parser._actions if action.dest == dest)


def synthetic_defaults(parser: argparse.ArgumentParser, **values):
    """Defaults that only `--dataset synthetic` takes, so the offline demo finishes in seconds; a flag given on the
    command line wins, and each flag's help states its value."""
    for dest, value in values.items():
        parser_action(parser, dest).synthetic_default = value


def check_writable(folder: str, flag: str):
    """Raise a RecError unless `folder` can be created and written now; the folders this creates go again."""
    created, missing = [], os.path.abspath(folder)   # the folders missing now, deepest first
    while not os.path.exists(missing):
        created, missing = created + [missing], os.path.dirname(missing)
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise RecError(f"{flag} {folder} cannot be created or written ({error.strerror or error}); choose a "
                       f"writable folder") from None
    finally:
        for made in created:
            with contextlib.suppress(OSError):   # not empty: another run writes there too (runs/), or never made
                os.rmdir(made)


def check_out_dir(args):
    """Check that --out-dir can be created and written now, not after hours of training (the folders this creates
    go again: a run writes nothing before it trains, `TrainingRun.save`); then what it holds must fit the command:
    --resume needs the checkpoint of an unfinished run with the same settings (run.json), a fresh run must not
    overwrite one. (Under torchrun rank 0 alone runs this: `resolve_args`.)"""
    out = args.out_dir
    if args.resume and not any(a == "--out-dir" or a.startswith("--out-dir=") for a in args.command):
        raise RecError("--resume needs --out-dir, the folder of the interrupted run")
    if args.resume and not os.path.isdir(out):
        raise RecError(f"--resume: no folder {out}; give the --out-dir of the interrupted run")
    if os.path.exists(out) and not os.path.isdir(out):
        raise RecError(f"--out-dir {out} is an existing file, not a folder; choose another --out-dir")
    check_writable(out, "--out-dir")
    checkpoint, run_file = checkpoint_path(args), os.path.join(out, "run.json")
    if args.resume:
        if not os.path.isfile(checkpoint):
            finished = os.path.isfile(os.path.join(out, "results.json"))
            raise RecError(f"--resume: {out} has no checkpoint.pt" + (
                " but a results.json: the run has finished" if finished else
                ": the run was stopped before its first checkpoint; run it again without --resume"))
        if not os.path.isfile(run_file):
            raise RecError(f"--resume: {out} has a checkpoint.pt but no run.json (the run's settings); start the run "
                           f"again in a new --out-dir")
        with open(run_file) as f:
            saved = json.load(f)
        now, then = run_config(args), saved["config"]
        if now["world_size"] != then["world_size"]:
            raise RecError(f"--resume with {now['world_size']} process(es); the run was started with "
                           f"{then['world_size']}, whose random streams the checkpoint holds: resume it with "
                           f"{then['world_size']} (torchrun --nproc_per_node; 1 = python <script>)")
        # a setting the run did not record is a flag added since: the run had it off (None, 0, False)
        changed = [f"{_flag(k)} {now.get(k)!r} (the run's: {then.get(k)!r})"
                   for k in sorted(now.keys() | then.keys())
                   if k not in WHERE_AND_HOW and now.get(k) != then.get(k) and (k in then or now[k])]
        if changed:
            raise RecError(f"--resume with other settings than the interrupted run's: {'; '.join(changed)}. "
                           f"Resume with the run's own command: {resume_command(saved['command'], out)}")
    elif not args.eval_only:
        if os.path.exists(checkpoint):
            raise RecError(f"{out} holds the checkpoint of an unfinished run: add --resume to continue it, or "
                           f"choose another --out-dir")


def provenance(args) -> dict:
    """What produced a result: the command line, the versions, the machine, the code's commit, the data file and
    its hash."""
    return {"command": args.command,
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
            "machine": machine(args.device), "git_commit": git_commit(), "data_file": args.data_file,
            "data_sha256": args.data_sha256}


def machine(device) -> dict:
    """The hardware a run's seconds were measured on: CPU model, cores, threads torch used, GPU if one ran it; and
    the vector instruction set of PyTorch's CPU kernels (`cpu_capability`: two CPUs that differ in it round some
    sums differently, which moves runs with top-M picks such as DNS+ and MDCNS)."""
    cpu = f"{platform.machine()} CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "gpu": gpu}


@functools.lru_cache(maxsize=None)
def git_commit() -> str | None:
    """The commit checked out where this file lives when first asked (`prepare`, before a run); None outside a
    git checkout or without git."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(__file__)),
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _terminated(signum, frame):
    raise Interrupted("SIGTERM outside training: nothing new was saved. A run that wrote a checkpoint.pt continues "
                      "with its own command and --resume", signum)


def run_cli(main):
    """Run main() as a command. Whatever stops it is one line on stderr: a RecError (bad input, exit 2), an
    interrupt (exit 128 + the signal; SIGTERM outside training stops the run like Ctrl-C) or anything unexpected
    (exit 1). NEGSAMPLING_DEBUG=1 shows the traceback instead. Under torchrun rank 0 says what every rank met (a
    bad setting, an interrupt, what rank 0 decided); another rank's own failure comes as `[rank N] error: ...`."""
    signal.signal(signal.SIGTERM, _terminated)
    try:
        main()
        leave_process_group()   # every rank has finished
        if world_size() > 1:
            end_process(0)
    except (Exception, KeyboardInterrupt) as error:
        if os.environ.get("NEGSAMPLING_DEBUG") == "1":
            raise
        if isinstance(error, RecError):
            line, code = f"error: {error}", 2
        elif isinstance(error, Interrupted):
            line, code = f"interrupted by {error}", 128 + error.signum
        elif isinstance(error, KeyboardInterrupt):
            line, code = ("interrupted by SIGINT outside training: nothing new was saved. A run that wrote a "
                          "checkpoint.pt continues with its own command and --resume"), 130
        else:
            line, code = (f"error: unexpected {type(error).__name__}: {error} (set NEGSAMPLING_DEBUG=1 to see the "
                          f"traceback)"), 1
        shared = isinstance(error, Interrupted) or not dist.is_initialized() or getattr(error, "said_by_rank_0", False)
        if rank() == 0 or not shared:
            print(("" if rank() == 0 else f"[rank {rank()}] ") + " ".join(line.split()), file=sys.stderr)
        if shared:   # every rank stops here (a rank's own failure leaves the others in a collective: none waits)
            leave_process_group()
        end_process(code)


def end_process(code: int):
    """sys.exit(code). Under torchrun, flush and os._exit(code) instead: the interpreter's finalization is skipped,
    so no thread a library leaves alive (gloo's, after `leave_process_group`) can abort a finished rank with
    `terminate called without an active exception` (still 2 suites in ~10 under load with the group destroyed)."""
    if world_size() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
