"""Tests of icpns.py: the sampler against the official per-user construction, k-means, counts, checkpoints and
end-to-end runs on every backbone."""
import json
import os
import time

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from common import PositiveSets, RecError, fit
import icpns
from icpns import (ICPNSampler, build_parser, community_of_user, in_community_popularity, main,
                   resolve_official_defaults, smoothed_weights)


def official_distribution(community, train_user, train_item, n_items, n_communities, alpha, user, held_out=()):
    """The official construction, literally (`build_user_neg_cache_alias` in Uli-Chen/ICPNS sampler.py): the
    community's counts to the power α, the user's positives zeroed, the rest renormalized; uniform over the
    user's non-positives when nothing is left. Returns p over items 0..I (item 0 = padding, never drawn).
    held_out: (user, item) pairs that join the user's positives (the official `user_positive_item_dict` of the
    whole data), but not the counts."""
    members = [u for u in range(len(community)) if community[u] == community[user]]
    counts = np.zeros(n_items + 1)
    for i in range(1, n_items + 1):
        counts[i] = sum(1 for u in members if any(train_user[e] == u and train_item[e] == i
                                                  for e in range(len(train_user))))
    w = np.power(counts, alpha)
    w[0] = 0.0
    positives = [train_item[e] for e in range(len(train_user)) if train_user[e] == user]
    positives += [i for u, i in held_out if u == user]
    w[positives] = 0.0
    if not w.any():
        w = np.ones(n_items + 1)
        w[0] = 0.0
        w[positives] = 0.0
    return w / w.sum()


def assert_matches(draws, p, what):
    """draws (N,) item ids; p the target distribution: no draw outside the support, chi-square p-value > 1e-3."""
    counts = np.bincount(draws, minlength=len(p))
    support = p > 0
    assert counts[~support].sum() == 0, f"{what}: drew items of probability 0"
    if support.sum() > 1:
        test = chisquare(counts[support], len(draws) * p[support])
        assert test.pvalue > 1e-3, f"{what}: chi-square p = {test.pvalue:.2g}"


def small_case():
    """12 users, 15 items, 3 communities; user 11 alone in community 2 (its community's mass lies entirely in
    its own positives: the fallback); items 14 and 15 never interacted with (count 0)."""
    rng = np.random.default_rng(0)
    community = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2])
    train_user, train_item = [], []
    for u in range(12):
        items = rng.choice(np.arange(1, 14), size=rng.integers(2, 7), replace=False)
        train_user += [u] * len(items)
        train_item += list(items)
    train_user += [3]     # a duplicate pair counts once
    train_item += [train_item[train_user.index(3)]]
    return community, np.array(train_user), np.array(train_item), 15, 3


@pytest.mark.parametrize("alpha", [0.8, 0.0])
def test_sampler_equals_official_per_user_tables(alpha):
    community, train_user, train_item, n_items, K = small_case()
    sampler = ICPNSampler(torch.from_numpy(community), torch.from_numpy(train_user), torch.from_numpy(train_item),
                          n_items, K, alpha)
    generator = torch.Generator().manual_seed(1)
    draws = sampler.sample(torch.arange(12), 6000, generator).numpy()                   # (U, 6000)
    for u in range(12):
        p = official_distribution(community, train_user, train_item, n_items, K, alpha, u)
        assert_matches(draws[u], p, f"user {u}, alpha {alpha}")


@pytest.mark.parametrize("alpha", [0.8, 0.0])
def test_held_out_exclusion_equals_the_official_whole_data_dictionary(alpha):
    """--exclude-held-out: held-out items join each user's positives (never drawn), not the counts."""
    community, train_user, train_item, n_items, K = small_case()
    rng = np.random.default_rng(1)
    held_out = [(u, int(i)) for u in range(12)
                for i in rng.choice(np.setdiff1d(np.arange(1, 14), train_item[train_user == u]), 2, replace=False)]
    held_user, held_item = (torch.tensor(column) for column in zip(*held_out))
    excluded = PositiveSets(torch.cat([torch.from_numpy(train_user), held_user]),
                            torch.cat([torch.from_numpy(train_item), held_item]), 12, n_items)
    sampler = ICPNSampler(torch.from_numpy(community), torch.from_numpy(train_user), torch.from_numpy(train_item),
                          n_items, K, alpha, positives=excluded)
    draws = sampler.sample(torch.arange(12), 6000, torch.Generator().manual_seed(5)).numpy()   # (U, 6000)
    for u in range(12):
        p = official_distribution(community, train_user, train_item, n_items, K, alpha, u, held_out)
        assert not np.isin(draws[u], [i for v, i in held_out if v == u]).any()
        assert_matches(draws[u], p, f"user {u}, alpha {alpha}, held-out items excluded")


def test_fallback_to_uniform_over_non_positives():
    community, train_user, train_item, n_items, K = small_case()
    sampler = ICPNSampler(torch.from_numpy(community), torch.from_numpy(train_user), torch.from_numpy(train_item),
                          n_items, K, 0.8)
    draws = sampler.sample(torch.tensor([11]), 20000, torch.Generator().manual_seed(2)).numpy()[0]
    expected = np.ones(n_items + 1)
    expected[0] = 0
    expected[train_item[train_user == 11]] = 0
    assert_matches(draws, expected / expected.sum(), "user 11 (fallback)")


def test_user_holding_most_of_the_mass_is_exact_and_does_not_loop():
    # 500 members all interacted with items 1..5; items 6..20 once each. User 0 holds items 1..5: 99.4% of the
    # community's mass (α = 1) lies in its positives, so rejection alone would need ~170 rounds per draw.
    n_items, members = 20, 500
    train_user = np.repeat(np.arange(members), 5)
    train_item = np.tile(np.arange(1, 6), members)
    train_user = np.r_[train_user, np.arange(1, 16)]
    train_item = np.r_[train_item, np.arange(6, 21)]
    community = torch.zeros(members, dtype=torch.long)
    sampler = ICPNSampler(community, torch.from_numpy(train_user), torch.from_numpy(train_item), n_items, 1, 1.0)
    start = time.perf_counter()
    draws = sampler.sample(torch.zeros(20000, dtype=torch.long), 1, torch.Generator().manual_seed(3))
    assert time.perf_counter() - start < 5.0
    expected = np.r_[np.zeros(6), np.ones(15)] / 15
    assert_matches(draws.numpy().ravel(), expected, "user 0 (99.4% of the mass in its positives)")


def test_communities_recover_well_separated_blobs_and_are_seeded():
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[10.0, 0, 0, 0], [0, 10.0, 0, 0], [0, 0, 10.0, 0], [-10.0, -10.0, 0, 5]])
    truth = torch.arange(4).repeat_interleave(50)
    x = centers[truth] + torch.randn(200, 4, generator=generator)
    for padding in (False, True):   # the zero-vector pseudo-user joins the input but not the output
        labels = community_of_user(x, 4, 1, cluster_padding_user=padding)
        assert labels.shape == (200,) and labels.dtype == torch.long
        pairs = set(zip(truth.tolist(), labels.tolist()))
        assert len(pairs) == 4 and len({label for _, label in pairs}) == 4    # a bijection blob <-> cluster
    # overlapping points: the seed decides the clustering, and the same seed repeats it
    noise = torch.randn(300, 8, generator=generator)
    assert torch.equal(community_of_user(noise, 8, 5), community_of_user(noise, 8, 5))
    assert not torch.equal(community_of_user(noise, 8, 5), community_of_user(noise, 8, 6))
    with pytest.raises(RecError, match="lower --communities"):
        community_of_user(x[:3], 5, 0)


def test_in_community_counts_equal_a_naive_loop():
    community, train_user, train_item, n_items, K = small_case()
    counts = in_community_popularity(torch.from_numpy(community), torch.from_numpy(train_user),
                                     torch.from_numpy(train_item), K, n_items).numpy()
    naive = np.zeros((K, n_items + 1))
    for k in range(K):
        for i in range(n_items + 1):
            naive[k, i] = len({u for u, j in zip(train_user, train_item) if j == i and community[u] == k})
    assert np.array_equal(counts, naive)


def test_alpha_zero_is_uniform_and_zero_counts_are_never_drawn():
    counts = torch.tensor([[0.0, 3, 0, 1, 5], [0.0, 0, 2, 2, 0]])
    uniform = smoothed_weights(counts, 0.0)
    assert torch.equal(uniform, torch.tensor([[0.0, 1, 1, 1, 1], [0.0, 1, 1, 1, 1]]))    # 0^0 = 1
    smoothed = smoothed_weights(counts, 0.8)
    assert torch.equal(smoothed == 0, counts == 0)
    assert torch.all(smoothed_weights(counts, 0.8, epsilon=1e-4)[:, 1:] > 0)
    # drawn: community 0 never yields item 2 (count 0) for a user whose only positive is item 4
    sampler = ICPNSampler(torch.zeros(2, dtype=torch.long), torch.tensor([0, 1, 1, 1]), torch.tensor([4, 1, 3, 4]),
                          5, 1, 0.8)
    draws = sampler.sample(torch.tensor([0]), 5000, torch.Generator().manual_seed(4))
    assert set(draws.unique().tolist()) == {1, 3}                                   # items 2, 5 have count 0


def run(tmp_path, name, *flags):
    return main(["--epochs", "1", "--pretrain-epochs", "1", "--quiet", "--device", "cpu",
                 "--out-dir", str(tmp_path / name), *flags])


def test_mismatched_pretrained_checkpoint_is_an_error(tmp_path):
    run(tmp_path, "mf", "--backbone", "mf")
    checkpoint = str(tmp_path / "mf" / "pretrained.pt")
    result = run(tmp_path, "reuse", "--backbone", "mf", "--pretrained", checkpoint)   # same data: loads
    assert result["pretrain"]["loaded_from"] == os.path.abspath(checkpoint)
    with pytest.raises(RecError, match="holds a mf backbone, not lightgcn"):
        run(tmp_path, "x", "--backbone", "lightgcn", "--pretrained", checkpoint)
    with pytest.raises(RecError, match="shape"):
        run(tmp_path, "x", "--backbone", "mf", "--dim", "32", "--pretrained", checkpoint)
    with pytest.raises(RecError, match="other training interactions"):
        run(tmp_path, "x", "--backbone", "mf", "--split", "loo", "--pretrained", checkpoint)
    with pytest.raises(RecError, match="no such file"):
        run(tmp_path, "x", "--backbone", "mf", "--pretrained", str(tmp_path / "missing.pt"))


def test_official_defaults_per_backbone_and_explicit_flags_win():
    def resolved(*argv):
        args = resolve_official_defaults(build_parser().parse_args(["--dataset", "ml-100k", *argv]))   # no demo
        return (args.communities, args.alpha, args.batch_size, args.pretrain_patience, args.epochs, args.patience,
                args.lr, args.finetune_lr, args.pretrain_epochs, args.eval_every)
    assert resolved("--backbone", "lightgcn") == (8, 0.8, 4096, 100, 200, 200, 1e-3, 1e-3, 1000, 1)  # LightGCN.yaml
    assert resolved("--backbone", "mf") == (64, 0.1, 40960, 20, 500, 20, 1e-3, 1e-3, 1000, 1)          # BPR.yaml
    assert resolved("--backbone", "sasrec")[:3] == (8, 0.8, None)             # LightGCN's; common's batch
    assert resolved("--backbone", "mf", "--communities", "4", "--epochs", "3", "--batch-size", "64")[:5] == \
        (4, 0.1, 64, 20, 3)


def test_exclude_held_out_fine_tunes_at_finetune_lr_and_reuses_the_clean_pretraining(tmp_path, capsys, monkeypatch):
    clean = run(tmp_path, "clean", "--backbone", "mf", "--lr", "0.01")
    assert clean["config"]["exclude_held_out"] is False and "leaks" not in capsys.readouterr().err
    learning_rates = []
    monkeypatch.setattr(icpns, "fit",
                        lambda args, *rest, **kw: learning_rates.append(args.lr) or fit(args, *rest, **kw))
    leak = run(tmp_path, "leak", "--backbone", "mf", "--exclude-held-out", "--finetune-lr", "0.002",
               "--pretrained", str(tmp_path / "clean" / "pretrained.pt"))
    assert "leaks held-out labels into training" in capsys.readouterr().err
    assert leak["config"]["exclude_held_out"] is True and learning_rates == [0.002]   # fine-tuning's Adam
    assert leak["pretrain"]["valid"] == pytest.approx(clean["pretrain"]["record"]["valid"])   # the same model


@pytest.mark.parametrize("backbone, flags", [
    ("mf", ()),
    ("lightgcn", ("--layers", "2", "--recluster-every", "1", "--epochs", "2", "--no-cluster-padding-user")),
    ("sasrec", ("--split", "user", "--max-len", "20")),     # valid/test users have no training items
    ("gru4rec", ("--split", "loo", "--max-len", "20")),
])
def test_end_to_end(tmp_path, backbone, flags):
    result = run(tmp_path, backbone, "--backbone", backbone, *flags)
    users_in_training = 420 if "user" in flags else 600                                  # user split: 70%
    assert sum(result["communities"]["sizes"]) == users_in_training and result["data"]["users"] == 600
    assert len(result["communities"]["sizes"]) == (64 if backbone == "mf" else 8)   # official K per backbone
    assert 0 <= result["test"]["ndcg@10"] <= 1 and result["pretrain"]["record"]["best_epoch"] == 1
    assert os.path.isfile(tmp_path / backbone / "pretrained.pt")
    with open(tmp_path / backbone / "results.json") as f:
        assert json.load(f)["method"] == "icpns"
    if "--recluster-every" in flags:
        assert [r["before_epoch"] for r in result["reclusterings"]] == [2]


# ---------------------------------------------------------------------------------------------------------
# The core in a training loop of someone else's: copied out of the file (torch only), or imported
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["copied section", "import icpns"])
def test_core_trains_a_loop_of_its_own(source, copied_core, trains_with):
    """Two communities with their own favourite items, an MF of the loop's own, the loop's own exact draw (a
    masked multinomial) and BPR: no common.py. The loss falls."""
    core = copied_core(icpns.__file__) if source == "copied section" else icpns
    U, I = 40, 20
    g = torch.Generator().manual_seed(0)
    community = torch.arange(U) % 2                                                         # (U,)
    user = torch.arange(U).repeat_interleave(4)                                             # (E,)
    item = 1 + community[user] * 10 + torch.randint(0, 10, (len(user),), generator=g)      # 1..10 or 11..20
    seen = torch.zeros(U, I + 1, dtype=torch.bool)
    seen[user, item] = True
    seen[:, 0] = True

    def draw(weights, group_of_user, users, k, generator):       # p ∝ weights over the unseen items, exactly
        rows = weights[group_of_user[users]] * ~seen[users]                                 # (B, I+1)
        rows = torch.where(rows.sum(1, keepdim=True) > 0, rows, (~seen[users]).double())   # the fallback
        return torch.multinomial(rows, k, replacement=True, generator=generator)

    weights = core.smoothed_weights(core.in_community_popularity(community, user, item, 2, I), 0.8)
    trains_with(lambda queries, item_table: core.icpns_negatives(weights, community, user, 1, g, draw=draw),
                user, item, seen)


def test_core_rejects_ids_outside_the_contract():
    community = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="outside 1..4"):
        in_community_popularity(community, torch.tensor([0, 1]), torch.tensor([0, 2]), 1, 4)   # 0-based items
    with pytest.raises(ValueError, match="outside 0..2"):
        in_community_popularity(community, torch.tensor([0, 3]), torch.tensor([1, 2]), 1, 4)
    with pytest.raises(ValueError, match="without training interactions"):
        icpns.icpns_negatives(torch.ones(1, 5), torch.tensor([0, -1, 0]), torch.tensor([1]), 1, torch.Generator(),
                              draw=None)
