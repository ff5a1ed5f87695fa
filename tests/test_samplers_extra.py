"""Tests of MDCNS's other baselines in baselines.py (MixGCF, MixGCF+, AdaSIR, GNNO, SRNS): each rule on a
hand-checked case and against a literal loop, the distributions they sample (chi-square, fixed seeds), their
draw orders, the state they keep across epochs, and their flags. tests/test_baselines.py runs every sampler end
to end."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

import baselines
from baselines import (MDCNS_SAMPLERS, SRNS_HISTORY, SRNS_MEMORY, AdaSIRPools, GNNOSampler, SRNSMemory,
                       build_parser, dns_mn_negatives, fresh_positions, gnno_hardness,
                       gnno_negatives, hop_mixing_choice, importance_resample, last_example_of_each_user, main,
                       merge_pools, mixgcf_loss, positive_mixing, resolve_sampler_args, srns_criterion,
                       transition_jaccard, user_queries)
from common import (MF, SASRec, Examples, LightGCN, PositiveSets, RecError, bpr_loss, make_synthetic, pad_right,
                    score_items, split_dataset, training_positives, training_rows,
                    uniform_negatives)

P_MIN = 1e-3   # chi-square: a correct sampler fails with probability 1e-3 at a fixed seed (it does not)


def small_split(sequential: bool, seed: int = 0, max_len: int = 50):
    """The synthetic default, shrunk: 120 users x 60 items (leave-one-out)."""
    data = make_synthetic(seed, n_users=120, n_items=60)
    return split_dataset(data, "loo", seed, sequential, max_len)


def small_model(split, backbone: str):
    """An untrained MF or SASRec (D = 8) for `split`, and the split's training positives."""
    torch.manual_seed(0)
    model = MF(split.n_users, split.n_items, 8) if backbone == "mf" else SASRec(split.n_items, 8, split.max_len)
    return model, training_positives(split, "cpu")


def fake_examples(users, n_items, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Examples(torch.randn(len(users), dim, generator=g, dtype=torch.double),
                    torch.randn(n_items + 1, dim, generator=g, dtype=torch.double), users,
                    torch.randint(1, n_items + 1, (len(users),), generator=g))


# ---------------------------------------------------------------------------------------------------------
# MixGCF, MixGCF+
# ---------------------------------------------------------------------------------------------------------
def test_mixing_hand_case():
    """One layer, D = 2: q = (1, 0), e_p = (1, 1), candidates (0.5, 0), (0.2, 5), (-1, 0), α = 0.5. The mixed
    candidates score 0.75, 0.6, 0: hop mixing keeps item 1, the synthetic negative is (0.75, 0.5)."""
    table = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.2, 5.0], [-1.0, 0.0], [1.0, 1.0]])  # item 4 is the positive
    chosen = hop_mixing_choice(torch.tensor([[1.0, 0.0]]), table.unsqueeze(0), torch.tensor([[1, 2, 3]]), 1,
                               torch.Generator().manual_seed(0))
    assert chosen.tolist() == [[1]]
    mixed = positive_mixing(table[4].view(1, 1, 2), table[1].view(1, 1, 2), torch.full((1, 1, 1), 0.5))
    assert torch.allclose(mixed, torch.tensor([[[0.75, 0.5]]]))


@pytest.mark.parametrize("m", [1, 3])
def test_hop_mixing_choice_is_the_best_mixed_candidate_per_layer(m):
    """The literal rule (MixGCF's code): mix every candidate with the positive at each layer, score the mixed
    embeddings with the pooled query, keep the best (MixGCF+: the replayed pick among the top m)."""
    g = torch.Generator().manual_seed(0)
    P, L1, N, I, D = 40, 3, 9, 30, 5
    queries = torch.randn(P, D, generator=g, dtype=torch.double)
    layers = torch.randn(L1, I + 1, D, generator=g, dtype=torch.double)
    candidates = torch.randint(1, I + 1, (P, N), generator=g)
    positives = torch.randint(1, I + 1, (P,), generator=g)
    alpha = torch.rand(P, L1, generator=g, dtype=torch.double)
    chosen = hop_mixing_choice(queries, layers, candidates, m, torch.Generator().manual_seed(7))
    pick = torch.randint(0, m, (P, L1), generator=torch.Generator().manual_seed(7))       # replayed
    for p in range(P):
        for layer in range(L1):
            mixed = [alpha[p, layer] * layers[layer, positives[p]] + (1 - alpha[p, layer]) * layers[layer, n]
                     for n in candidates[p]]
            scores = [float(queries[p] @ e) for e in mixed]
            order = sorted(range(N), key=lambda n: -scores[n])
            assert chosen[p, layer] == candidates[p, order[pick[p, layer]]]


def test_mixgcfmn_picks_uniformly_within_the_top_m_only():
    g = torch.Generator().manual_seed(1)
    rows, repeats, N, M, I = 10, 600, 12, 4, 40
    queries = torch.randn(rows, 4, generator=g, dtype=torch.double).repeat(repeats, 1)       # (P, D)
    table = torch.randn(I + 1, 4, generator=g, dtype=torch.double)
    candidates = torch.stack([torch.randperm(I, generator=g)[:N] + 1 for _ in range(rows)]).repeat(repeats, 1)
    chosen = hop_mixing_choice(queries, table.unsqueeze(0), candidates, M, g)[:, 0]         # (P,)
    scores = queries @ table.T                                                               # (P, I+1)
    rank = (scores.gather(1, candidates) > scores.gather(1, chosen.unsqueeze(1))).sum(1)     # 0 = the best
    counts = np.bincount(rank.numpy(), minlength=N)
    assert counts[M:].sum() == 0
    assert chisquare(counts[:M]).pvalue > P_MIN


def literal_mixgcf(model, users, items, positives, n_candidates, m, reg_weight, seed):
    """MixGCF's step written out: propagate with the dense normalised adjacency, replay the draws, loop over
    examples and layers."""
    g = torch.Generator().manual_seed(seed)
    candidates = uniform_negatives(positives, users, n_candidates, g)
    alpha = torch.rand(len(users), model.n_layers + 1, 1, generator=g)
    pick = torch.randint(0, m, (len(users), model.n_layers + 1), generator=g)
    A = model.adjacency.to_dense()
    layer = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
    layers = [layer]
    for _ in range(model.n_layers):
        layers.append(A @ layers[-1])
    U = model.n_users
    user_final = torch.stack(layers).mean(0)[:U]
    losses, synthetic_0 = [], []
    for p in range(len(users)):
        q = user_final[users[p]]
        picked = []
        for k, E in enumerate(layers):
            items_k = E[U:]
            mixed = [alpha[p, k] * items_k[items[p]] + (1 - alpha[p, k]) * items_k[n] for n in candidates[p]]
            order = sorted(range(n_candidates), key=lambda n: -float(q.detach() @ mixed[n].detach()))
            picked.append(mixed[order[pick[p, k]]])
        synthetic_0.append(picked[0])
        positive = torch.stack([E[U:][items[p]] for E in layers]).mean(0)
        losses.append(bpr_loss(q @ positive, q @ torch.stack(picked).mean(0)))
    reg = (model.user_embedding.weight[users].pow(2).sum() + model.item_embedding.weight[items].pow(2).sum() +
           torch.stack(synthetic_0).pow(2).sum()) / 2 / len(users)
    return torch.stack(losses).mean() + reg_weight * reg


@pytest.mark.parametrize("m", [1, 2])
def test_mixgcf_loss_on_lightgcn_equals_the_literal_step(m):
    torch.manual_seed(0)
    user = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 3])
    item = torch.tensor([1, 2, 3, 2, 4, 5, 6, 1, 7, 3])
    positives = PositiveSets(user, item, 4, 8)
    model = LightGCN(4, 8, 4, 2, user, item)
    batch = (torch.tensor([0, 1, 2, 3, 2]), torch.tensor([1, 4, 6, 7, 5]))
    fast = mixgcf_loss(positives, 4, m, "bpr", reg_weight=0.1)(model, batch, torch.Generator().manual_seed(3))
    fast_grads = torch.autograd.grad(fast, [model.user_embedding.weight, model.item_embedding.weight])
    slow = literal_mixgcf(model, *batch, positives, 4, m, 0.1, seed=3)
    slow_grads = torch.autograd.grad(slow, [model.user_embedding.weight, model.item_embedding.weight])
    assert torch.allclose(fast, slow, atol=1e-6)
    for a, b in zip(fast_grads, slow_grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_mixgcf_loss_on_one_layer_backbones_mixes_the_item_table():
    """MF: the single layer is the embedding table; the loss equals BPR against α e_p + (1 - α) e_n*."""
    torch.manual_seed(1)
    user, item = torch.tensor([0, 0, 1, 2]), torch.tensor([1, 2, 3, 4])
    positives = PositiveSets(user, item, 3, 6)
    model = MF(3, 6, 4)
    users, items = torch.tensor([0, 1, 2]), torch.tensor([2, 3, 4])
    fast = mixgcf_loss(positives, 5, 1, "bpr")(model, (users, items), torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    candidates = uniform_negatives(positives, users, 5, g)
    alpha = torch.rand(3, 1, 1, generator=g)[:, 0]                                         # (P, 1)
    q, E = model.user_embedding.weight[users], model.item_embedding.weight
    best = candidates.gather(1, (q.unsqueeze(1) * E[candidates]).sum(-1).argmax(1, keepdim=True)).squeeze(1)
    synthetic = alpha * E[items] + (1 - alpha) * E[best]
    assert torch.allclose(fast, bpr_loss((q * E[items]).sum(-1), (q * synthetic).sum(-1)), atol=1e-6)


def test_mixgcfplus_at_bpr_is_dns_mn_with_the_margin_scaled_by_one_minus_alpha():
    """At BPR, s_p - <q, α e_p + (1 - α) e_n> = (1 - α)(s_p - s_n), and the top M of the mixed scores are the top
    M of s_n: MixGCF+ is DNS(M, N) on the raw scores with the margin scaled by 1 - α (grid mixgcfplus-bpr)."""
    torch.manual_seed(2)
    user, item = torch.tensor([0, 0, 1, 2]), torch.tensor([1, 2, 3, 4])
    positives = PositiveSets(user, item, 3, 9)
    model = MF(3, 9, 4)
    users, items = torch.tensor([0, 1, 2, 1]), torch.tensor([2, 3, 4, 3])
    fast = mixgcf_loss(positives, 6, 3, "bpr")(model, (users, items), torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    candidates = uniform_negatives(positives, users, 6, g)                                 # (P, N)
    alpha = torch.rand(4, 1, 1, generator=g)[:, 0, 0]                                     # (P,)
    pick = torch.randint(0, 3, (4, 1), generator=g)                                       # (P, 1) among the top 3
    q, E = model.user_embedding.weight, model.item_embedding.weight
    raw = (q[users].unsqueeze(1) * E[candidates]).sum(-1)                                 # s_n, (P, N)
    negative = candidates.gather(1, raw.topk(3, dim=1).indices.gather(1, pick)).squeeze(1)   # DNS(3, 6)'s pick
    margin = (1 - alpha) * ((q[users] * E[items]).sum(-1) - (q[users] * E[negative]).sum(-1))
    assert torch.allclose(fast, -torch.nn.functional.logsigmoid(margin).mean(), atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# AdaSIR
# ---------------------------------------------------------------------------------------------------------
def test_importance_resampling_hand_case():
    """Proposals a, b, b with scores 0, ln 2, ln 2 (D = 1): each draw is a with probability 1/5, b with 4/5;
    proposals 1, 2, 3 with scores 0, ln 2, ln 3: probabilities 1/6, 2/6, 3/6."""
    table = torch.tensor([[0.0], [0.0], [math.log(2)], [math.log(3)]])
    g = torch.Generator().manual_seed(0)
    for proposals, expected in (([1, 2, 2], {1: 1 / 5, 2: 4 / 5}), ([1, 2, 3], {1: 1 / 6, 2: 2 / 6, 3: 3 / 6})):
        draws = importance_resample(torch.ones(1, 1), table, torch.tensor([proposals]), 30000, g)  # (1, 30000)
        counts = np.bincount(draws[0].numpy(), minlength=4)
        items = sorted(expected)
        assert counts.sum() == counts[items].sum()
        assert chisquare(counts[items], [expected[i] * 30000 for i in items]).pvalue > P_MIN


def test_merge_pools_picks_each_slot_uniformly_from_old_and_new():
    old, new = torch.arange(0, 5).repeat(4000, 1), torch.arange(5, 10).repeat(4000, 1)      # (R, S)
    merged = merge_pools(old, new, torch.Generator().manual_seed(1))
    slot = torch.randint(0, 10, (4000, 5), generator=torch.Generator().manual_seed(1))      # replayed
    assert torch.equal(merged, torch.cat([old, new], 1).gather(1, slot))
    assert chisquare(np.bincount(merged.flatten().numpy(), minlength=10)).pvalue > P_MIN


@pytest.mark.parametrize("backbone", ["mf", "sasrec"])
def test_adasir_pools_refresh_every_epoch_and_serve_uniform_draws(backbone):
    split = small_split(backbone == "sasrec")
    model, positives = small_model(split, backbone)
    pools = AdaSIRPools(positives, split, 20, 4, batch_size=32)
    pools.new_epoch(model, 1, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)                                                      # replay epoch 1
    queries, table = user_queries(model, split, pools.users, 32)
    first = importance_resample(queries, table, uniform_negatives(positives, pools.users, 20, g), 4, g)
    assert torch.equal(pools.pool[pools.users], first)
    pools.new_epoch(model, 2, torch.Generator().manual_seed(5))                             # epoch 2 merges
    g = torch.Generator().manual_seed(5)
    new = importance_resample(queries, table, uniform_negatives(positives, pools.users, 20, g), 4, g)
    assert torch.equal(pools.pool[pools.users], merge_pools(first, new, g))
    users = pools.users.repeat(50)
    negatives = pools(Examples(None, None, users, None), torch.Generator().manual_seed(6))   # (P, 1)
    slot = torch.randint(0, 4, (len(users), 1), generator=torch.Generator().manual_seed(6))
    assert torch.equal(negatives, pools.pool[users].gather(1, slot))
    assert not bool(positives.contains(users.unsqueeze(1), negatives).any())
    assert chisquare(np.bincount(slot.flatten().numpy(), minlength=4)).pvalue > P_MIN


@pytest.mark.parametrize("max_len, prefixes", [(200, False), (4, False), (4, True)])
def test_user_queries_are_the_last_training_position_in_eval_mode(max_len, prefixes):
    """One window per user, several windows per user, and one row per prefix (--augmented-prefixes)."""
    split = small_split(True, max_len=max_len)
    if prefixes:
        split = training_rows(SimpleNamespace(augmented_prefixes=True, batch_size=8), split)
    torch.manual_seed(0)
    model = SASRec(split.n_items, 8, split.max_len, dropout=0.5)
    model.train()
    users = torch.tensor([3, 7, 11])
    queries, table = user_queries(model, split, users, batch_size=2)
    assert model.training
    model.eval()
    for u, q in zip(users.tolist(), queries):
        history = split.train_item[split.train_user == u].numpy()
        expected, _ = model(pad_right([history[:-1][-max_len:]], max_len))  # predicts the last training item
        assert torch.allclose(q, expected[0], atol=1e-6)
    assert torch.equal(table, model.item_embedding.weight) and table is not model.item_embedding.weight


# ---------------------------------------------------------------------------------------------------------
# GNNO
# ---------------------------------------------------------------------------------------------------------
def test_transition_jaccard_hand_case():
    """One sequence 1 2 3 4 5, window 3: N(1) = {2,3,4}, N(2) = {1,3,4,5}, N(3) = {1,2,4,5}, N(5) = {2,3,4}.
    J(1,2) = |{3,4}| / |{1..5}| = 0.4, J(2,3) = 3/5, J(1,5) = 1; item 6 never in training: 0."""
    J = transition_jaccard(torch.zeros(5, dtype=torch.long), torch.tensor([1, 2, 3, 4, 5]), 6, block=2)
    assert J.shape == (7, 7) and J.dtype == torch.float32
    assert J[1, 2] == pytest.approx(0.4) and J[2, 3] == pytest.approx(0.6) and J[1, 5] == pytest.approx(1.0)
    assert J[1, 1] == 1.0 and float(J[6].abs().sum() + J[:, 6].abs().sum() + J[0].abs().sum()) == 0.0
    assert torch.equal(J, J.T)


def test_transition_jaccard_equals_literal_neighbourhoods():
    rng = np.random.default_rng(0)
    n_items, window = 15, 3
    lengths = rng.integers(1, 9, 12)
    user = np.repeat(np.arange(12), lengths)
    item = rng.integers(1, n_items + 1, lengths.sum())                    # repeats included (self-loops)
    J = transition_jaccard(torch.from_numpy(user), torch.from_numpy(item), n_items, window, block=4)
    neighbours = [set() for _ in range(n_items + 1)]
    for u in range(12):
        seq = item[user == u]
        for k in range(1, window + 1):
            for a, b in zip(seq[:-k], seq[k:]):
                neighbours[a].add(b)
                neighbours[b].add(a)
    for i in range(n_items + 1):
        for j in range(n_items + 1):
            union = len(neighbours[i] | neighbours[j])
            expected = len(neighbours[i] & neighbours[j]) / union if union else 0.0
            assert J[i, j] == pytest.approx(expected, abs=1e-6)


def test_gnno_hardness_schedule():
    assert [gnno_hardness(e) for e in (1, 2, 11)] == pytest.approx([0.05, 0.06, 0.15])
    assert gnno_hardness(36) == pytest.approx(0.4) and gnno_hardness(100) == pytest.approx(0.4)


def gnno_problem():
    """8 users x 12 items; J with values above and below h = 0.3; target 2's every non-positive of user 1 is
    above h (the uniform rule)."""
    n_items = 12
    g = torch.Generator().manual_seed(0)
    J = torch.rand(n_items + 1, n_items + 1, generator=g) * 0.6
    J[:, 0] = 0
    user = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1] + list(range(2, 8)))
    item = torch.tensor([1, 2, 3, 1, 2, 3, 4, 5, 6, 7, 8] + list(range(1, 7)))
    J[2, 9:] = 0.5                                                       # user 1's non-positives 9..12
    return J, PositiveSets(user, item, 8, n_items)


@pytest.mark.parametrize("rounds", [8, 1, 0])
def test_gnno_negatives_follow_exp_overlap_below_the_hardness(rounds):
    """rounds = 0 exercises the multinomial alone, 1 mostly the multinomial, 8 mostly the rejection rounds."""
    J, positives = gnno_problem()
    h, n = 0.3, 20000
    g = torch.Generator().manual_seed(1)
    for user, target in ((0, 5), (1, 11), (3, 4), (1, 2)):
        draws = gnno_negatives(J, positives, torch.tensor([user]), torch.tensor([target]), h, n, g, rounds=rounds)
        allowed = ~positives.dense_mask(torch.tensor([user]))[0]
        weights = torch.where((J[target] <= h) & allowed, J[target].double().exp(), torch.zeros((), dtype=torch.double))
        if weights.sum() == 0:                                           # (1, 2): uniform over the non-positives
            weights = allowed.double()
        counts = np.bincount(draws[0].numpy(), minlength=J.shape[1])
        support = (weights > 0).numpy()
        assert counts[~support].sum() == 0
        expected = (weights[support] / weights.sum() * n).numpy()
        assert chisquare(counts[support], expected).pvalue > P_MIN


def test_gnno_sampler_pools_uniform_and_gnno_candidates_then_dns_mn():
    split = small_split(True)
    positives = training_positives(split, "cpu")
    sampler = GNNOSampler(positives, split, 16, 3)
    sampler.new_epoch(None, 4, None)
    assert sampler.hardness == pytest.approx(gnno_hardness(4))
    users = torch.unique(split.train_user)[:30].repeat(2)
    ex = fake_examples(users, split.n_items)
    ex.positives = split.train_item[torch.searchsorted(split.train_user, users)]            # a real target each
    used = torch.Generator().manual_seed(8)
    negatives = sampler(ex, used)
    g = torch.Generator().manual_seed(8)                                                     # replay
    uniform = uniform_negatives(positives, users, 16 - baselines.GNNO_NEGATIVES, g)
    hard = gnno_negatives(sampler.jaccard, positives, users, ex.positives, sampler.hardness,
                          baselines.GNNO_NEGATIVES, g)
    pool = torch.cat([uniform, hard], 1)                                                     # (P, N)
    expected = dns_mn_negatives(score_items(ex.queries, ex.item_table, pool), pool, 3, 1, g)
    assert torch.equal(negatives, expected)
    assert torch.equal(used.get_state(), g.get_state())                                     # nothing else drawn
    assert not bool(positives.contains(users.unsqueeze(1), negatives).any())


# ---------------------------------------------------------------------------------------------------------
# SRNS
# ---------------------------------------------------------------------------------------------------------
def test_srns_criterion_hand_case():
    """D = 1, query 1, positive item 3 scores 0 now and in each of 3 snapshots. Items 1 and 2 both score 0 now
    (P_pos = 0.5); in the snapshots item 1 scores 0, 0, 0 (std 0), item 2 scores -1, 0, 1. With α_t = 2 the
    criterion is 0.5 for item 1 and 0.5 + 2 std(σ(-1), 0.5, σ(1)) for item 2, which is chosen."""
    table_now = torch.tensor([[0.0], [0.0], [0.0], [0.0]])
    history = [(torch.ones(1, 1), torch.tensor([[0.0], [0.0], [s], [0.0]])) for s in (-1.0, 0.0, 1.0)]
    got = srns_criterion(torch.ones(1, 1), table_now, torch.tensor([[1, 2]]), torch.tensor([3]), history,
                         torch.tensor([0]), 2.0)
    sig = 1 / (1 + np.exp(-np.array([-1.0, 0.0, 1.0])))
    assert got[0, 0] == pytest.approx(0.5) and got[0, 1] == pytest.approx(0.5 + 2 * sig.std())
    assert int(got.argmax()) == 1


def test_srns_criterion_equals_the_literal_formula():
    g = torch.Generator().manual_seed(0)
    P, S1, U, I, D, T = 12, 5, 4, 20, 3, 4
    queries, table = torch.randn(P, D, generator=g, dtype=torch.double), torch.randn(I + 1, D, generator=g,
                                                                                       dtype=torch.double)
    items, targets = torch.randint(1, I + 1, (P, S1), generator=g), torch.randint(1, I + 1, (P,), generator=g)
    users = torch.randint(0, U, (P,), generator=g)
    history = [(torch.randn(U, D, generator=g, dtype=torch.double), torch.randn(I + 1, D, generator=g,
                                                                                  dtype=torch.double))
               for _ in range(T)]
    got = srns_criterion(queries, table, items, targets, history, users, 0.7)
    for p in range(P):
        for s in range(S1):
            now = 1 / (1 + math.exp(-float(queries[p] @ table[items[p, s]] - queries[p] @ table[targets[p]])))
            past = [1 / (1 + math.exp(-float(q[users[p]] @ t[items[p, s]] - q[users[p]] @ t[targets[p]])))
                    for q, t in history]
            assert float(got[p, s]) == pytest.approx(now + 0.7 * float(np.std(past)), abs=1e-9)


def test_fresh_positions_are_distinct_new_and_uniform():
    memory = torch.tensor([[0, 3, 5]]).repeat(6000, 1)                                       # (R, S1)
    fresh = fresh_positions(memory, 10, 2, torch.Generator().manual_seed(0))                 # (R, 2)
    assert bool((fresh[:, 0] != fresh[:, 1]).all())
    assert not bool((fresh.unsqueeze(2) == memory.unsqueeze(1)).any())
    counts = np.bincount(fresh.flatten().numpy(), minlength=10)
    assert counts[[0, 3, 5]].sum() == 0
    assert chisquare(counts[[1, 2, 4, 6, 7, 8, 9]]).pvalue > P_MIN


def test_last_example_of_each_user():
    assert last_example_of_each_user(torch.tensor([4, 2, 4, 9, 2, 2])).tolist() == [5, 2, 3]


@pytest.mark.parametrize("backbone", ["mf", "sasrec"])
def test_srns_step_picks_the_criterion_argmax_then_keeps_the_top_s1(backbone):
    split = small_split(backbone == "sasrec")
    model, positives = small_model(split, backbone)
    memory = SRNSMemory(positives, split, 50, batch_size=32)
    for epoch in (1, 2, 3):
        memory.new_epoch(model, epoch, torch.Generator().manual_seed(epoch))
    assert len(memory.history) == 3 and memory.alpha_t == baselines.SRNS_ALPHA
    sets = memory.variance_sets[memory.users]
    assert not bool(positives.contains(memory.users.unsqueeze(1), sets).any())
    users = memory.users[:25].repeat(2)
    ex = fake_examples(users, split.n_items, dim=8)
    ex = Examples(ex.queries.float(), ex.item_table.float(), users, ex.positives)
    before = memory.memory.clone()
    items = memory.variance_sets[users].gather(1, before[users])                              # (P, S1)
    negatives = memory(ex, torch.Generator().manual_seed(9))
    criterion = srns_criterion(ex.queries, ex.item_table, items, ex.positives, memory.history, users,
                               memory.alpha_t)
    assert torch.equal(negatives, items.gather(1, criterion.argmax(1, keepdim=True)))
    g = torch.Generator().manual_seed(9)                                                      # replay the update
    last = last_example_of_each_user(users)
    fresh = fresh_positions(before[users[last]], 50, SRNS_MEMORY, g)
    positions = torch.cat([before[users[last]], fresh], 1)
    scores = (ex.queries[last].unsqueeze(1) * ex.item_table[memory.variance_sets[users[last]].gather(1, positions)]
              ).sum(-1)
    for r, u in enumerate(users[last].tolist()):   # the kept positions are S1 of them with the S1 best scores
        kept = memory.memory[u]
        assert set(kept.tolist()) <= set(positions[r].tolist()) and len(set(kept.tolist())) == SRNS_MEMORY
        kept_scores = (ex.queries[last[r]] * ex.item_table[memory.variance_sets[u][kept]]).sum(-1)
        assert torch.allclose(kept_scores.sort().values, scores[r].sort().values[-SRNS_MEMORY:], atol=1e-6)
    untouched = torch.ones(split.n_users, dtype=torch.bool)
    untouched[users] = False
    assert torch.equal(memory.memory[untouched], before[untouched])


def test_srns_keeps_the_last_t_snapshots_and_warms_up():
    split = small_split(False)
    model = MF(split.n_users, split.n_items, 4)
    memory = SRNSMemory(training_positives(split, "cpu"), split, 40, batch_size=64)
    alphas = []
    for epoch in range(1, 8):
        with torch.no_grad():
            model.item_embedding.weight.add_(1.0)                        # a different table every epoch
        memory.new_epoch(model, epoch, torch.Generator().manual_seed(epoch))
        alphas.append(memory.alpha_t)
    assert len(memory.history) == SRNS_HISTORY
    assert torch.allclose(memory.history[-1][1], model.item_embedding.weight)
    assert torch.allclose(memory.history[0][1], model.item_embedding.weight - (SRNS_HISTORY - 1))
    assert alphas == [0.0] + [baselines.SRNS_ALPHA] * 6                 # warm-up of 1 epoch


# ---------------------------------------------------------------------------------------------------------
# Epochs, command line, end to end
# ---------------------------------------------------------------------------------------------------------
def resolved(*argv):
    return resolve_sampler_args(build_parser().parse_args(list(argv)))


def test_flag_defaults_are_the_mdcns_codes():
    assert {s: resolved("--sampler", s).candidates for s in MDCNS_SAMPLERS} == \
        {"mixgcf": 100, "mixgcfmn": 100, "adasir": 200, "gnno": 100, "srns": 500}
    assert {s: resolved("--sampler", s).top_m for s in MDCNS_SAMPLERS} == \
        {"mixgcf": None, "mixgcfmn": 5, "adasir": None, "gnno": 5, "srns": None}


@pytest.mark.parametrize("argv", [["--sampler", "srns", "--negatives", "2"], ["--sampler", "adasir", "--top-m", "2"],
                                  ["--sampler", "mixgcf", "--top-m", "2"], ["--sampler", "gnno", "--candidates", "10"],
                                  ["--sampler", "srns", "--candidates", "39"],
                                  ["--sampler", "mixgcfmn", "--candidates", "4", "--top-m", "5"]])
def test_flag_errors(argv):
    with pytest.raises(RecError):
        main(argv + ["--quiet", "--epochs", "1"])
