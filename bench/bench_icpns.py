"""Benchmark: ICPNS sampler build time, memory and negatives per second, ours (one alias table per community +
rejection + exact masked finish, icpns.ICPNSampler) against the official construction (one alias table per user,
built by a Python loop, drawn by a Python loop; Uli-Chen/ICPNS `recbole_gnn/sampler.py`), written literally here.

Two synthetic cases of realistic shape (Zipf item popularity, long-tailed user lengths, random communities):
  ml-1m size:  6,040 users x 3,416 items, ~1M interactions (both samplers built and timed)
  large:       1M users x 100k items, ~10M interactions (ours built and timed; the per-user tables are not
               built: their size is computed exactly and their build time projected from a sample of users)

    python bench/bench_icpns.py                 # both cases, a few minutes on one core
    python bench/bench_icpns.py --skip-large
    python bench/bench_icpns.py --smoke         # a 300-user case only: the script runs, in seconds

Memory is counted in bytes of the arrays each sampler keeps (the users' positive sets, which both need and RNS
pre-training already holds, are listed apart). Times are wall-clock on one thread.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
from scipy.sparse import csr_matrix

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from icpns import ICPNSampler  # noqa: E402


def synthetic(n_users: int, n_items: int, n_interactions: int, n_communities: int, seed: int = 0):
    """Distinct (user, item) training pairs with Zipf(0.9) item popularity and lognormal user lengths, and a
    random community per user."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    shape = rng.lognormal(0, 1, n_users)
    draws = n_interactions
    for _ in range(3):   # duplicates are dropped: rescale the number of draws to approach the target
        lengths = np.maximum(5, shape / shape.sum() * draws).astype(np.int64)
        user = np.repeat(np.arange(n_users), lengths)
        item = rng.choice(np.arange(1, n_items + 1), size=len(user), p=popularity / popularity.sum())
        key = np.unique(user * (n_items + 1) + item)
        draws = int(draws * n_interactions / len(key))
    community = rng.integers(0, n_communities, n_users)
    return key // (n_items + 1), key % (n_items + 1), community


# ------------------------------------------------------------------------------------------------------------
# The official construction, literally: counts by a sparse matrix, then one Vose alias table per user
# ------------------------------------------------------------------------------------------------------------
def official_counts(user, item, community, n_users, n_items, n_communities, alpha):
    """Each user's positives (a dict built by a loop) and the smoothed community weights (a sparse matrix)."""
    user_pos = {}
    for u, i in zip(user.tolist(), item.tolist()):
        user_pos.setdefault(u, []).append(i)
    matrix = csr_matrix((np.ones(len(user), dtype=np.float32), (user, item)), shape=(n_users, n_items + 1))
    weights = np.zeros((n_communities, n_items + 1), dtype=np.float32)
    for k in range(n_communities):
        weights[k] = np.power(np.asarray(matrix[community == k].sum(0)).ravel(), alpha)
    return user_pos, weights


def official_user_tables(user_pos, weights, community, n_items, users):
    """One Vose alias table (q, J, items) per user over its community's weights with its positives zeroed."""
    cache = {}
    for u in users:
        w = weights[community[u]].copy()
        w[user_pos.get(u, [])] = 0.0
        valid = np.flatnonzero(w)
        if len(valid) == 0:
            w = np.ones(n_items + 1, dtype=np.float32)
            w[0] = 0.0
            w[user_pos.get(u, [])] = 0.0
            valid = np.flatnonzero(w)
        q = w[valid] / w[valid].sum() * len(valid)
        J = np.zeros(len(valid), dtype=np.int32)
        small = [i for i, x in enumerate(q) if x < 1.0]
        large = [i for i, x in enumerate(q) if x >= 1.0]
        while small and large:
            s, l = small.pop(), large.pop()
            J[s] = l
            q[l] = q[l] + q[s] - 1.0
            (small if q[l] < 1.0 else large).append(l)
        cache[u] = (q.astype(np.float32), J, valid.astype(np.int32))
    return cache


def official_sample(cache, users, rng):
    """One negative per user, a Python loop over the batch (`sample_from_cached_distribution`)."""
    kk = rng.integers(0, 1 << 30, size=len(users))
    uu = rng.random(len(users)).astype(np.float32)
    out = np.empty(len(users), dtype=np.int64)
    for n, u in enumerate(users):
        q, J, items = cache[u]
        k = kk[n] % len(q)
        out[n] = items[k] if uu[n] < q[k] else items[J[k]]
    return out


def nbytes(*tensors):
    """Bytes held by the tensors (None, an absent optional structure, counts 0)."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def mb(n):
    return f"{n / 2**20:,.1f} MB" if n < 2**30 else f"{n / 2**30:,.1f} GB"


def bench_case(name, n_users, n_items, n_interactions, args, build_official=True):
    user, item, community = synthetic(n_users, n_items, n_interactions, args.communities)
    print(f"\n## {name}: {n_users:,} users x {n_items:,} items, {len(user):,} distinct training pairs, "
          f"K = {args.communities}, alpha = {args.alpha}")
    batch = torch.from_numpy(user[np.random.default_rng(1).integers(0, len(user), args.batch)])  # (B,) users

    start = time.perf_counter()
    sampler = ICPNSampler(torch.from_numpy(community), torch.from_numpy(user), torch.from_numpy(item), n_items,
                          args.communities, args.alpha)
    ours_build = time.perf_counter() - start
    ours_bytes = nbytes(sampler.weights, sampler.table.accept, sampler.table.alias, sampler.community)
    positives_bytes = nbytes(*(getattr(sampler.positives, n)
                               for n in ("count", "ptr", "key", "items", "free", "below_key", "is_positive")))
    generator = torch.Generator().manual_seed(0)
    sampler.sample(batch, 1, generator)
    start, repeats = time.perf_counter(), args.repeats
    for _ in range(repeats):
        sampler.sample(batch, 1, generator)
    ours_rate = repeats * len(batch) / (time.perf_counter() - start)
    print(f"ours:     build {ours_build:7.2f} s   tables {mb(ours_bytes)} (+ positive sets {mb(positives_bytes)}, "
          f"shared with RNS)   {ours_rate:,.0f} negatives/s (batches of {len(batch):,})")

    # the official per-user tables hold Σ_u |support of u's community minus u's positives| entries
    support = np.zeros((args.communities, n_items + 1), dtype=bool)
    support[community[user], item] = True
    entries = int((support.sum(1)[community]).sum() - len(user))
    official_bytes = entries * 12  # q float32 + J int32 + item int32 per entry
    start = time.perf_counter()
    user_pos, weights = official_counts(user, item, community, n_users, n_items, args.communities, args.alpha)
    counting = time.perf_counter() - start
    if build_official:
        start = time.perf_counter()
        cache = official_user_tables(user_pos, weights, community, n_items, range(n_users))
        official_build = counting + time.perf_counter() - start
        measured = sum(q.nbytes + J.nbytes + v.nbytes for q, J, v in cache.values())
        assert measured == official_bytes, (measured, official_bytes)
        rng, users = np.random.default_rng(0), batch.numpy()
        start = time.perf_counter()
        for _ in range(max(1, repeats // 4)):
            official_sample(cache, users, rng)
        official_rate = max(1, repeats // 4) * len(users) / (time.perf_counter() - start)
        print(f"official: build {official_build:7.2f} s   tables {mb(official_bytes)}   "
              f"{official_rate:,.0f} negatives/s")
        print(f"ratio:    build x{official_build / ours_build:.0f} faster, memory x{official_bytes / ours_bytes:.0f} "
              f"smaller, sampling x{ours_rate / official_rate:.2f}")
        return {"ours_rate": ours_rate, "official_rate": official_rate}
    else:
        sample_users = np.random.default_rng(2).choice(n_users, args.sample_users, replace=False)
        start = time.perf_counter()
        official_user_tables(user_pos, weights, community, n_items, sample_users)
        per_user = (time.perf_counter() - start) / args.sample_users
        projected = counting + per_user * n_users
        print(f"official: not built. Tables would hold {entries:,} entries = {mb(official_bytes)} "
              f"(x{official_bytes / ours_bytes:,.0f} ours); projected build {projected / 3600:.1f} h "
              f"(counting {counting:.0f} s + {per_user * 1e3:.1f} ms per user, timed on {args.sample_users} users)")
        return {"ours_rate": ours_rate, "official_rate": None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--communities", type=int, default=8, help="K (official 8)")
    parser.add_argument("--alpha", type=float, default=0.8, help="α (official 0.8)")
    parser.add_argument("--batch", type=int, default=4096, help="users per sampling call (official batch 4096)")
    parser.add_argument("--repeats", type=int, default=40, help="sampling calls timed for ours")
    parser.add_argument("--sample-users", type=int, default=100,
                        help="large case: users whose per-user tables are built to project the build time")
    parser.add_argument("--skip-large", action="store_true", help="only the ml-1m-sized case")
    parser.add_argument("--smoke", action="store_true", help="only a 300-user x 200-item case, batches of 256")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.smoke:
        args.batch, args.repeats = 256, 2
        return bench_case("smoke", 300, 200, 6_000, args)
    bench_case("ml-1m size", 6040, 3416, 1_000_000, args)
    if not args.skip_large:
        bench_case("large", 1_000_000, 100_000, 10_000_000, args, build_official=False)


if __name__ == "__main__":
    main()
