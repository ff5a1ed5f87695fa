"""Random interaction logs for the split and evaluation tests, with knobs for the cases the rules are about.

A generator that can never produce the case a rule is about makes a test that cannot fail: with its defaults
`random_log` gives distinct items per user and distinct timestamps, so no target repeats a history item and no
two events tie. Each knob switches one case on:
- repeats:        a user may interact with an item several times (a target can repeat an item of its history);
- time_ties:      timestamps from {0, 1, 2}, so events tie and the file order decides (Interactions.from_raw);
- one_item_users: the first `one_item_users` users have exactly one interaction;
- empty_users:    that many extra user ids without any interaction, spread over the id range (the first and the
                  last id among them), as `Interactions` allows and the splits must tolerate.
With no knob set the draws are those this generator always made, so older tests keep their data.
"""
import numpy as np

from common import Interactions


def random_log(seed=0, n_users=40, n_items=30, max_len=12, repeats=False, time_ties=False, one_item_users=0):
    """Raw (users, items, times) lists, one user after the other, in file order; items 0..n_items-1."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        n = rng.integers(1, max_len + 1)
        if u < one_item_users:
            n = 1
        chosen = rng.choice(n_items, n, replace=repeats)
        users += [u] * n
        items += list(chosen)
        times += list(rng.integers(0, 3, n) if time_ties else rng.permutation(n))
    return users, items, times


def random_interactions(seed=0, n_users=40, n_items=30, max_len=12, repeats=False, time_ties=False,
                        one_item_users=0, empty_users=0):
    """`random_log` read by Interactions.from_raw (ids by first appearance, each user's events sorted by time,
    ties in file order), then `empty_users` ids without interactions inserted (n_users grows by that many)."""
    data = Interactions.from_raw(*random_log(seed, n_users, n_items, max_len, repeats, time_ties, one_item_users))
    if not empty_users:
        return data
    total = data.n_users + empty_users
    empty = np.unique(np.linspace(0, total - 1, empty_users).round().astype(np.int64))
    assert len(empty) == empty_users, "too many empty users for the id range"
    new_id = np.setdiff1d(np.arange(total), empty)                          # the real users' ids, in order
    return Interactions(new_id[data.user], data.item, data.position, total, data.n_items, data.name, data.source)


def sequences_of(data):
    """Each user's items in chronological order (an empty list for a user without interactions)."""
    return [data.item[data.user == u].tolist() for u in range(data.n_users)]
