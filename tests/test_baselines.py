"""Tests of baselines.py: the samplers' rules (never a training positive, the target distributions, DNS's
argmax, DNS(M,N)'s uniform pick in the top M, the generator's draw order), the per-position loss of sequential
backbones, and every sampler x backbone end to end on the synthetic default."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from baselines import (MDCNS_SAMPLERS, SAMPLERS, build_parser, dns_mn_negatives, dns_negatives, UniformWarmUp, main,
                       make_sampler, negative_sampler, pns_negatives, popularity_weights, resolve_sampler_args)
from common import (GRU4Rec, AliasTable, Examples, KangSASRec, Mamba4Rec, PositiveSets, RecError, make_synthetic,
                    pad_right, score_items, split_dataset, standard_loss, training_positives, training_windows,
                    uniform_negatives)

P_MIN = 1e-3   # chi-square: a correct sampler fails with probability 1e-3 at a fixed seed (it does not)


def skewed_problem(n_users=240, n_items=40, seed=0):
    """Training interactions with Zipf-skewed histories; every 8th user has seen all items but one, every 8th
    (offset 1) all but three, and user 2 the most popular half of the catalogue."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 1.2
    users, items = [], []
    for u in range(n_users):
        if u % 8 == 0:
            chosen = np.delete(np.arange(1, n_items + 1), u % n_items)
        elif u % 8 == 1:
            chosen = rng.choice(n_items, n_items - 3, replace=False) + 1
        elif u == 2:
            chosen = np.arange(1, n_items // 2 + 1)
        else:
            chosen = rng.choice(n_items, rng.integers(1, n_items // 2), replace=False,
                                p=popularity / popularity.sum()) + 1
        users.append(np.full(len(chosen), u))
        items.append(chosen)
    user, item = torch.from_numpy(np.concatenate(users)), torch.from_numpy(np.concatenate(items))
    return PositiveSets(user, item, n_users, n_items), item


def fake_examples(users, n_items, dim=8, seed=0):
    """Examples with fixed random queries and item table (no model): what a sampler sees in a step."""
    g = torch.Generator().manual_seed(seed)
    return Examples(torch.randn(len(users), dim, generator=g), torch.randn(n_items + 1, dim, generator=g),
                    users, torch.ones_like(users))


def sampler(name, positives, train_item, k=1, n_candidates=10, m=3, alpha=0.5):
    return make_sampler(name, positives, k, train_item, alpha, n_candidates, m)


# ---------------------------------------------------------------------------------------------------------
# The rules every sampler obeys
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SAMPLERS)
def test_never_a_training_positive(name):
    positives, train_item = skewed_problem()
    users = torch.arange(positives.n_users).repeat(20)                                   # (P,)
    negatives = sampler(name, positives, train_item, k=4)(fake_examples(users, positives.n_items),
                                                          torch.Generator().manual_seed(1))
    assert negatives.shape == (len(users), 4)
    assert bool(((negatives >= 1) & (negatives <= positives.n_items)).all())
    assert not bool(positives.contains(users.unsqueeze(1), negatives).any())
    almost_full = users % 8 == 0                          # one item left: it must be the only answer
    assert bool((negatives[almost_full] == (users[almost_full] % positives.n_items + 1).unsqueeze(1)).all())


@pytest.mark.parametrize("name", SAMPLERS)
def test_user_with_every_item_is_an_error(name):
    n_items = 6
    user = torch.tensor([0] * n_items + [1, 1])
    item = torch.tensor(list(range(1, n_items + 1)) + [1, 2])
    positives = PositiveSets(user, item, 2, n_items)
    with pytest.raises(RecError, match="every item"):
        sampler(name, positives, item, n_candidates=4, m=2)(fake_examples(torch.tensor([1, 0]), n_items),
                                                            torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("k", [1, 3])
def test_shapes_dtypes_devices_and_replay(name, k):
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        positives, train_item = skewed_problem(n_users=50)
        positives.to(device)
        users = torch.arange(50, device=device).repeat(3)
        ex = fake_examples(users, positives.n_items)
        ex = Examples(ex.queries.to(device), ex.item_table.to(device), users, ex.positives.to(device))
        draw = sampler(name, positives, train_item, k=k)
        first = draw(ex, torch.Generator(device).manual_seed(5))
        assert first.shape == (len(users), k) and first.dtype == torch.long and first.device == users.device
        assert torch.equal(first, draw(ex, torch.Generator(device).manual_seed(5)))   # same generator, same
        assert not torch.equal(first, draw(ex, torch.Generator(device).manual_seed(6)))


# ---------------------------------------------------------------------------------------------------------
# RNS and PNS match their target distributions
# ---------------------------------------------------------------------------------------------------------
def frequencies(draws, n_items):
    return np.bincount(draws.flatten().numpy(), minlength=n_items + 1)


def test_rns_is_uniform_over_non_positives():
    positives, train_item = skewed_problem()
    g = torch.Generator().manual_seed(3)
    for user in (1, 2, 5):   # all but three, the most popular half, a short Zipf history
        draws = uniform_negatives(positives, torch.full((20000,), user), 3, g)            # (20000, 3)
        free = ~positives.dense_mask(torch.tensor([user]))[0]                             # (I+1,)
        observed = frequencies(draws, positives.n_items)
        assert observed[~free.numpy()].sum() == 0
        expected = np.full(int(free.sum()), draws.numel() / int(free.sum()))
        assert chisquare(observed[free.numpy()], expected).pvalue > P_MIN


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.1])
def test_pns_follows_training_popularity_over_non_positives(alpha):
    positives, train_item = skewed_problem()
    weights = popularity_weights(train_item, positives.n_items, alpha)                   # (1, I+1)
    table = AliasTable(weights)
    g = torch.Generator().manual_seed(4)
    for user in (2, 3, 9):   # 2 holds the popular half: most alias draws are rejected
        draws = pns_negatives(weights, table, positives, torch.full((20000,), user), 3, g)
        free = ~positives.dense_mask(torch.tensor([user]))[0]
        target = (weights[0] * free).numpy()
        observed = frequencies(draws, positives.n_items)
        support = target > 0
        assert observed[~support].sum() == 0
        expected = target[support] / target.sum() * draws.numel()
        assert chisquare(observed[support], expected).pvalue > P_MIN


def test_pns_counts_training_interactions_only():
    train_item = torch.tensor([1, 1, 1, 2, 4, 4])   # item 3 only in valid/test, item 5 nowhere
    weights = popularity_weights(train_item, 5, 0.5)
    assert torch.allclose(weights, torch.tensor([[0.0, 3 ** 0.5, 1.0, 0.0, 2 ** 0.5, 0.0]], dtype=torch.double))
    assert torch.equal(popularity_weights(train_item, 5, 0.0), torch.tensor([[0.0, 1, 1, 0, 1, 0]]).double())


# ---------------------------------------------------------------------------------------------------------
# --exclude-held-out: never a validation or test item with the flag, the same laws over the larger exclusion
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ratio_split():
    """A ratio split with each user's held-out items as a (U, I+1) mask read from the validation/test rows."""
    split = split_dataset(make_synthetic(0, n_users=80, n_items=40, mean_length=12), "ratio", 0, sequential=False)
    held_out = torch.zeros(split.n_users, split.n_items + 1, dtype=torch.bool)
    for rows in (split.valid, split.test):
        counts = rows.target_ptr[1:] - rows.target_ptr[:-1]
        held_out[rows.query.repeat_interleave(counts), rows.target_items] = True
    return split, held_out


def examples_with_fixed_queries(users, n_items, dim=8, seed=0):
    """Examples whose query depends on the user only (DNS's law is then fixed per user)."""
    g = torch.Generator().manual_seed(seed)
    queries = torch.randn(int(users.max()) + 1, dim, generator=g)
    return Examples(queries[users], torch.randn(n_items + 1, dim, generator=g), users, torch.ones_like(users))


@pytest.mark.parametrize("name", SAMPLERS)
def test_exclude_held_out_never_draws_a_held_out_item(name, ratio_split):
    split, held_out = ratio_split
    users = torch.unique(split.train_user).repeat(30)                                    # (P,)
    ex = fake_examples(users, split.n_items)
    for exclude in (False, True):
        positives = training_positives(split, "cpu", exclude)
        negatives = sampler(name, positives, split.train_item, k=4)(ex, torch.Generator().manual_seed(7))
        hits = int(held_out[users.unsqueeze(1), negatives].sum())                          # (P, 4) gather
        assert not bool(training_positives(split, "cpu").contains(users.unsqueeze(1), negatives).any())
        assert (hits == 0) if exclude else (hits > 0), (name, exclude, hits)      # without it: drawn as any


def law_over_free_items(name, free, weights, scores, n_candidates):
    """The exact law of one negative over the items `free` (I+1,) bool: RNS uniform, PNS ∝ weights, DNS the best of
    n_candidates uniform draws with replacement, P(rank r from the bottom) = (r/n)^N - ((r-1)/n)^N."""
    p = np.zeros(len(free))
    items = np.flatnonzero(free)
    if name == "rns":
        p[items] = 1.0 / len(items)
    elif name == "pns":
        p[items] = weights[items] / weights[items].sum()
    else:
        ranked = items[np.argsort(scores[items], kind="stable")]                          # ascending score
        r = np.arange(1, len(items) + 1) / len(items)
        p[ranked] = r ** n_candidates - (r - 1 / len(items)) ** n_candidates
    return p


@pytest.mark.parametrize("name", ["rns", "pns", "dns"])
def test_exclude_held_out_keeps_each_law_over_the_larger_exclusion(name, ratio_split):
    """Without the flag the law is the old one over the non-training items; with it, the same law over the items
    neither trained on nor held out. Chi-square per user, bins of expected count < 5 merged."""
    split, held_out = ratio_split
    for exclude in (False, True):
        positives = training_positives(split, "cpu", exclude)
        g = torch.Generator().manual_seed(8)
        for user in (3, 17, 42):
            users = torch.full((6000,), user)
            ex = examples_with_fixed_queries(users, split.n_items)
            draws = sampler(name, positives, split.train_item, k=2, alpha=0.5)(ex, g)        # (6000, 2)
            free = ~training_positives(split, "cpu").dense_mask(torch.tensor([user]))[0]     # (I+1,)
            if exclude:
                free &= ~held_out[user]
            scores = (ex.queries[0] @ ex.item_table.T).numpy()                               # (I+1,)
            weights = (torch.bincount(split.train_item, minlength=split.n_items + 1).double() ** 0.5).numpy()
            p = law_over_free_items(name, free.numpy(), weights, scores, 10)
            observed = frequencies(draws, split.n_items)
            assert observed[p == 0].sum() == 0
            expected = p * draws.numel()
            big = expected >= 5
            observed_bins = np.r_[observed[big], observed[~big & (p > 0)].sum()]
            expected_bins = np.r_[expected[big], expected[~big & (p > 0)].sum()]
            keep = expected_bins > 0
            assert chisquare(observed_bins[keep], expected_bins[keep]).pvalue > P_MIN, (name, exclude, user)


# ---------------------------------------------------------------------------------------------------------
# DNS and DNS(M,N)
# ---------------------------------------------------------------------------------------------------------
def test_dns_is_the_argmax_of_each_pool():
    g = torch.Generator().manual_seed(0)
    P, k, N, n_items = 60, 3, 7, 30
    queries, table = torch.randn(P, 4, generator=g).double(), torch.randn(n_items + 1, 4, generator=g).double()
    candidates = torch.randint(1, n_items + 1, (P, k * N), generator=g)
    expected = torch.empty(P, k, dtype=torch.long)
    for p in range(P):                     # the literal rule: for each pool, the candidate of highest score
        for j in range(k):
            pool = candidates[p, j * N:(j + 1) * N].tolist()
            expected[p, j] = max(pool, key=lambda item: float(queries[p] @ table[item]))
    assert torch.equal(dns_negatives(score_items(queries, table, candidates), candidates, k), expected)


def test_dns_mn_picks_uniformly_within_the_top_m_only():
    g = torch.Generator().manual_seed(1)
    rows, repeats, k, N, M, n_items = 20, 400, 2, 12, 4, 50
    queries = torch.randn(rows, 4, generator=g).double().repeat(repeats, 1)               # (P, D)
    table = torch.randn(n_items + 1, 4, generator=g).double()
    candidates = torch.stack([torch.randperm(n_items, generator=g)[:k * N] + 1 for _ in range(rows)])
    candidates = candidates.repeat(repeats, 1)                                            # (P, k·N), distinct
    chosen = dns_mn_negatives(score_items(queries, table, candidates), candidates, M, k, g)   # (P, k)
    scores = (queries[:rows] @ table.T).tolist()                                         # (rows, I+1)
    ranks = np.zeros(N, dtype=np.int64)   # how often the pick is the pool's best, second best, ...
    for p, picks in enumerate(chosen.tolist()):
        for j, pick in enumerate(picks):
            pool = candidates[p, j * N:(j + 1) * N].tolist()
            ranks[sorted(pool, key=lambda item: -scores[p % rows][item]).index(pick)] += 1
    assert ranks[M:].sum() == 0                                                            # never outside
    assert chisquare(ranks[:M]).pvalue > P_MIN                                             # uniform inside


def test_dns_mn_draw_order_is_candidates_then_pick():
    """The contract mdcns.py relies on: N candidates from uniform_negatives, then torch.randint(0, M, (P, k))."""
    positives, train_item = skewed_problem()
    users = torch.arange(positives.n_users)
    ex = fake_examples(users, positives.n_items)
    k, N, M = 2, 9, 3
    g = torch.Generator().manual_seed(11)
    negatives = sampler("dnsmn", positives, train_item, k=k, n_candidates=N, m=M)(ex, g)
    replay = torch.Generator().manual_seed(11)
    candidates = uniform_negatives(positives, users, k * N, replay).view(-1, k, N)          # (P, k, N)
    top = score_items(ex.queries, ex.item_table, candidates.flatten(1)).view(-1, k, N).topk(M).indices
    pick = torch.randint(0, M, (len(users), k), generator=replay)
    assert torch.equal(negatives, candidates.gather(-1, top.gather(-1, pick.unsqueeze(-1))).squeeze(-1))
    assert torch.equal(g.get_state(), replay.get_state())                                  # nothing else drawn


def test_dns_mn_with_m_1_is_dns():
    positives, train_item = skewed_problem()
    users = torch.arange(positives.n_users).repeat(5)
    ex = fake_examples(users, positives.n_items)
    dns = sampler("dns", positives, train_item, k=2, n_candidates=8)(ex, torch.Generator().manual_seed(2))
    dns_1 = sampler("dnsmn", positives, train_item, k=2, n_candidates=8, m=1)(ex, torch.Generator().manual_seed(2))
    assert torch.equal(dns, dns_1)


def test_uniform_warm_up_draws_uniform_negatives_then_the_sampler():
    """--uniform-epochs W (the official --start_epoch): epochs 1..W draw exactly RNS's negatives, then DNS's."""
    positives, train_item = skewed_problem()
    users = torch.arange(positives.n_users).repeat(3)
    ex = fake_examples(users, positives.n_items)
    dns = sampler("dns", positives, train_item, k=2, n_candidates=8)
    warm_up = UniformWarmUp(dns, positives, 2, epochs=2)
    for epoch, expected in ((1, "rns"), (2, "rns"), (3, "dns")):
        warm_up.new_epoch(None, epoch, torch.Generator())
        drawn = warm_up(ex, torch.Generator().manual_seed(epoch))
        reference = (uniform_negatives(positives, users, 2, torch.Generator().manual_seed(epoch)) if expected == "rns"
                     else dns(ex, torch.Generator().manual_seed(epoch)))
        assert torch.equal(drawn, reference), epoch
    assert not torch.equal(dns(ex, torch.Generator().manual_seed(1)),
                           uniform_negatives(positives, users, 2, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("name", ["dns", "dnsmn"])
def test_dns_scores_its_pools_without_gradient(name):
    """The pools are scored on detached tensors with autograd off: choosing a negative adds nothing to the graph."""
    seen = []

    def score(queries, item_table, items):
        seen.append((torch.is_grad_enabled(), queries.requires_grad, item_table.requires_grad))
        return score_items(queries, item_table, items)
    ex = Examples(torch.randn(5, 3, requires_grad=True), torch.randn(9, 3, requires_grad=True),
                  torch.arange(5), torch.ones(5, dtype=torch.long))
    draw = lambda users, n, generator: torch.randint(1, 9, (len(users), n), generator=generator)  # noqa: E731
    negative_sampler(name, draw, score=score, n_candidates=4, m=2)(ex, torch.Generator().manual_seed(0))
    assert seen == [(False, False, False)]


def test_a_draw_outside_the_item_table_is_an_error():
    """The contract, checked at the first call: item ids 1..I (0 is padding, I + 1 rows in the item table)."""
    ex = Examples(torch.randn(4, 3), torch.randn(7, 3), torch.arange(4), torch.ones(4, dtype=torch.long))
    for bad in (0, 7):
        draw = lambda users, n, generator: torch.full((len(users), n), bad)   # noqa: E731
        with pytest.raises(ValueError, match=f"item id {bad}, outside 1..6"):
            negative_sampler("rns", draw)(ex, torch.Generator())


# ---------------------------------------------------------------------------------------------------------
# Sequential backbones: every position is a (prefix -> next item) example
# ---------------------------------------------------------------------------------------------------------
# (the s3rec SASRec, LinRec and FMLP4Rec number positions back from a row's last item, so one pass equals explicit
# prefixes only where a position ignores where its row ends: Kang's block, GRU4Rec, Mamba4Rec)
@pytest.mark.parametrize("backbone", ["kang", "gru4rec", "mamba4rec"])
@pytest.mark.parametrize("loss", ["bpr", "bce"])
def test_per_position_loss_equals_explicit_prefixes(backbone, loss):
    torch.manual_seed(0)
    n_items, L = 12, 8
    model = {"kang": lambda: KangSASRec(n_items, 8, L, n_layers=2, n_heads=2),
             "gru4rec": lambda: GRU4Rec(n_items, 8, L),
             "mamba4rec": lambda: Mamba4Rec(n_items, 8, L, n_layers=2)}[backbone]()
    model.eval()
    sequence = np.array([3, 5, 2, 7, 1, 9, 4])
    inputs, targets, users = training_windows(np.zeros(len(sequence), dtype=np.int64), sequence, L)
    negatives = torch.tensor([[6, 8], [10, 11], [12, 1], [8, 6], [2, 3], [11, 7]])         # (P, k) fixed
    per_position = standard_loss(lambda ex, g: negatives, loss)(model, (inputs, targets, users), None)

    prefixes = pad_right([sequence[:t] for t in range(1, len(sequence))], L)              # (P, L)
    queries, item_table = model(prefixes)                                                  # (P, D) last position
    positive_scores = (queries * item_table[torch.from_numpy(sequence[1:])]).sum(-1, keepdim=True)
    negative_scores = score_items(queries, item_table, negatives)
    if loss == "bpr":
        explicit = -torch.nn.functional.logsigmoid(positive_scores - negative_scores).mean()
    else:
        explicit = -(torch.nn.functional.logsigmoid(positive_scores).mean() +
                     torch.nn.functional.logsigmoid(-negative_scores).mean())
    assert torch.allclose(per_position, explicit, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------
EXTRA = {"rns": [], "pns": ["--loss", "bce"], "dns": ["--negatives", "2"],
         "dnsmn": ["--negatives", "2", "--loss", "bce", "--candidates", "20", "--top-m", "3"],
         "mixgcf": ["--candidates", "20"], "mixgcfmn": ["--candidates", "20", "--top-m", "3", "--loss", "bce"],
         "adasir": ["--candidates", "30"], "gnno": ["--candidates", "20", "--top-m", "2", "--loss", "bce"],
         "srns": ["--candidates", "60"]}


@pytest.mark.parametrize("backbone", ["mf", "lightgcn", "sasrec", "gru4rec"])
@pytest.mark.parametrize("name", SAMPLERS + MDCNS_SAMPLERS)
def test_end_to_end(name, backbone, tmp_path):
    """Two epochs: AdaSIR, GNNO and SRNS change their state at the second epoch's start."""
    result = main(["--sampler", name, "--backbone", backbone, "--epochs", "2", "--quiet", "--dim", "16",
                   "--max-len", "20", "--out-dir", str(tmp_path), *EXTRA[name]])
    with open(tmp_path / "results.json") as f:
        written = json.load(f)
    assert written["method"] == name and written["backbone"] == backbone
    assert {"config", "data", "history", "best_epoch", "valid", "test", "epoch_seconds", "train_seconds",
            "eval_seconds"} <= set(written)
    assert written["config"]["sampler"] == name and written["test"] == result["test"]
    assert len(written["history"]) == 2
    assert all(np.isfinite(v) for v in written["test"].values())


def resolved(*argv):
    return resolve_sampler_args(build_parser().parse_args(list(argv)))


def test_flag_defaults_per_sampler():
    assert resolved("--sampler", "pns").pns_alpha == 0.1
    assert resolved("--sampler", "dns").candidates == 10
    args = resolved("--sampler", "dnsmn")
    assert (args.candidates, args.top_m) == (100, 5)
    assert (lambda a: (a.pns_alpha, a.candidates, a.top_m))(resolved("--sampler", "rns")) == (None, None, None)


@pytest.mark.parametrize("argv", [["--sampler", "rns", "--pns-alpha", "1"], ["--sampler", "pns", "--top-m", "2"],
                                  ["--sampler", "dns", "--top-m", "2"], ["--sampler", "dnsmn", "--candidates",
                                                                          "4", "--top-m", "5"],
                                  ["--negatives", "0"], ["--sampler", "rns", "--uniform-epochs", "2"],
                                  ["--sampler", "dns", "--uniform-epochs", "-1"]])
def test_flag_errors(argv):
    with pytest.raises(RecError):
        main(argv + ["--quiet", "--epochs", "1"])


# ---------------------------------------------------------------------------------------------------------
# The core in a training loop of someone else's: copied out of the file (torch only), or imported
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["copied section", "import baselines"])
def test_core_trains_a_loop_of_its_own(source, copied_core, trains_with):
    """DNS(M,N) with an MF, a uniform draw and a scorer of the loop's own and BPR: no common.py. The loss falls."""
    import baselines
    core = copied_core(baselines.__file__) if source == "copied section" else baselines
    U, I = 40, 20
    g = torch.Generator().manual_seed(0)
    user = torch.arange(U).repeat_interleave(4)                                             # (E,)
    item = 1 + (user % 2) * 10 + torch.randint(0, 10, (len(user),), generator=g)           # (E,) 1..20
    seen = torch.zeros(U, I + 1, dtype=torch.bool)
    seen[user, item] = True
    seen[:, 0] = True

    def draw_uniform(users, n, generator):
        return torch.multinomial((~seen[users]).float(), n, replacement=True, generator=generator)

    def score(queries, item_table, items):
        return (queries.unsqueeze(1) * item_table[items]).sum(-1)

    negatives_fn = core.negative_sampler("dnsmn", draw_uniform, score=score, n_candidates=8, m=2)
    trains_with(lambda queries, item_table: negatives_fn(
        SimpleNamespace(queries=queries, item_table=item_table, users=user), g), user, item, seen)
