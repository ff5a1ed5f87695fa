"""common.py: splits, metrics, backbones, sampling plumbing, the training loop. Each test fails when its rule
breaks; slow literal versions of the rules are the oracles."""
import argparse
import copy
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

import common
from common import Interactions, RecError
from generators import random_interactions


# ---------------------------------------------------------------------------------------------- interactions
def test_from_raw_sorts_by_time_stably_and_remaps_ids():
    data = Interactions.from_raw(["b", "a", "b", "b"], [10, 20, 30, 10], order=[5, 1, 5, 2])
    # user "b" appears first -> 0; items by first appearance: 10 -> 1, 20 -> 2, 30 -> 3
    assert data.user.tolist() == [0, 0, 0, 1]
    assert data.item.tolist() == [1, 1, 3, 2]   # b: t=2 (10), t=5 (10, file row 0), t=5 (30, file row 2)
    assert data.position.tolist() == [0, 1, 2, 0]
    assert (data.n_users, data.n_items) == (2, 3)


def test_statistics():
    data = Interactions.from_raw([0, 0, 1], [1, 2, 1])
    s = data.statistics()
    assert s == {"users": 2, "items": 2, "interactions": 3, "density": 0.75, "mean_sequence_length": 1.5}


# ---------------------------------------------------------------------------------------------- splits
def recbole_split_counts(n, ratios=(0.8, 0.1, 0.1)):
    """RecBole's `_calcu_split_ids`, transcribed literally."""
    cnt = [int(ratios[i] * n) for i in range(len(ratios))]
    cnt[0] = n - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[i] * n < 1:
            cnt[i] += 1
            cnt[0] -= 1
    return cnt


def parts_by_user(data, split, sequential=False):
    """(train, valid, test) item sets per user, read back from a SplitData."""
    train = {u: set() for u in range(data.n_users)}
    for u, i in zip(split.train_user.tolist(), split.train_item.tolist()):
        train[u].add(i)
    out = []
    for rows in (split.valid, split.test):
        sets = {}
        for r in range(len(rows)):
            items = rows.target_items[rows.target_ptr[r]:rows.target_ptr[r + 1]].tolist()
            sets[int(rows.query[r])] = set(items)
        out.append(sets)
    return train, out[0], out[1]


def test_ratio_split_follows_recbole_rounding_and_never_leaks():
    # one-item and empty users: RecBole's rounding keeps them whole in training
    data = random_interactions(seed=1, n_users=60, max_len=25, one_item_users=3, empty_users=2)
    split = common.split_dataset(data, "ratio", seed=3, sequential=False)
    train, valid, test = parts_by_user(data, split)
    for u in range(data.n_users):
        n = int((data.user == u).sum())
        expected = recbole_split_counts(n)
        got = [len(train[u]), len(valid.get(u, ())), len(test.get(u, ()))]
        assert got == expected, (n, got, expected)
        assert not (train[u] & valid.get(u, set())) and not (train[u] & test.get(u, set()))
        assert not (valid.get(u, set()) & test.get(u, set()))
        assert train[u] | valid.get(u, set()) | test.get(u, set()) == set(data.item[data.user == u].tolist())
    assert recbole_split_counts(5) == [3, 1, 1] and recbole_split_counts(15) == [13, 1, 1]


def test_ratio_split_is_seeded():
    data = random_interactions(seed=2)
    a = common.split_dataset(data, "ratio", seed=7, sequential=False)
    b = common.split_dataset(data, "ratio", seed=7, sequential=False)
    c = common.split_dataset(data, "ratio", seed=8, sequential=False)
    assert torch.equal(a.train_item, b.train_item)
    assert not torch.equal(a.test.target_items, c.test.target_items)


def test_ratio_split_masks_train_then_train_and_valid():
    # repeats: some held-out items are also training items of their user, and a target is never masked
    data = random_interactions(seed=4, n_users=30, max_len=25, repeats=True)
    split = common.split_dataset(data, "ratio", seed=0, sequential=False)
    train, valid, test = parts_by_user(data, split)
    assert any(test[u] & train[u] for u in test)                      # the case occurs
    for rows, known in ((split.valid, lambda u: train[u]), (split.test, lambda u: train[u] | valid.get(u, set()))):
        for r in range(len(rows)):
            u = int(rows.query[r])
            masked = set(rows.masked_items[rows.masked_ptr[r]:rows.masked_ptr[r + 1]].tolist())
            targets = set(rows.target_items[rows.target_ptr[r]:rows.target_ptr[r + 1]].tolist())
            assert masked == known(u) - targets


def test_loo_split_is_chronological_with_recbole_rule_for_short_users():
    # one-item and empty users: the short-user rule's cases; two-item users come by chance (asserted)
    data = random_interactions(seed=5, n_users=50, max_len=6, one_item_users=4, empty_users=3)
    split = common.split_dataset(data, "loo", seed=0, sequential=False)
    train, valid, test = parts_by_user(data, split)
    assert {0, 1, 2} <= {int((data.user == u).sum()) for u in range(data.n_users)}
    for u in range(data.n_users):
        seq = data.item[data.user == u].tolist()
        if not seq:
            assert not train[u] and u not in valid and u not in test
        elif len(seq) == 1:
            assert train[u] == {seq[0]} and u not in valid and u not in test
        elif len(seq) == 2:
            assert train[u] == {seq[0]} and u not in valid and test[u] == {seq[1]}
        else:
            assert train[u] == set(seq[:-2]) and valid[u] == {seq[-2]} and test[u] == {seq[-1]}


def test_loo_sequential_inputs_and_history_mask():
    # repeats: some test targets repeat an item of their history, which stays unmasked
    data = random_interactions(seed=6, n_users=20, max_len=10, repeats=True)
    assert any(seq[-1] in seq[:-1] for seq in (data.item[data.user == u].tolist() for u in range(data.n_users)))
    for mask_history in (True, False):
        split = common.split_dataset(data, "loo", seed=0, sequential=True, max_len=4, mask_history=mask_history)
        row = 0
        for u in range(data.n_users):
            seq = data.item[data.user == u].tolist()
            if len(seq) < 2:
                continue
            query = split.test.query[row].tolist()
            history = seq[:-1]
            assert [i for i in query if i] == history[-4:]
            target = split.test.target_items[split.test.target_ptr[row]:split.test.target_ptr[row + 1]].tolist()
            assert target == [seq[-1]]
            masked = split.test.masked_items[split.test.masked_ptr[row]:split.test.masked_ptr[row + 1]].tolist()
            assert set(masked) == (set(history) - {seq[-1]} if mask_history else set())
            row += 1


def test_user_split_sizes_and_disjoint_users():
    data = random_interactions(seed=7, n_users=101, max_len=8)
    split = common.split_dataset(data, "user", seed=1, sequential=True, max_len=5)
    train_users = set(split.train_user.tolist())
    assert len(train_users) == int(0.7 * 101)
    assert split.statistics["valid_rows"] + split.statistics["test_rows"] <= 101 - 70
    # every interaction of a training user is in training; validation and test users predict their last item
    for u in train_users:
        assert (split.train_user == u).sum() == (data.user == u).sum()
    for rows in (split.valid, split.test):
        for r in range(len(rows)):
            inputs = [i for i in rows.query[r].tolist() if i]
            target = rows.target_items[rows.target_ptr[r]].item()
            matches = [u for u in range(data.n_users)
                       if data.item[data.user == u].tolist()[-1] == target
                       and data.item[data.user == u].tolist()[:-1][-5:] == inputs]
            assert matches and not set(matches) <= train_users


def eval_rows_as_lists(rows):
    """(query without padding, targets, sorted masked set) per row."""
    return [([i for i in rows.query[r].tolist() if i],
             rows.target_items[rows.target_ptr[r]:rows.target_ptr[r + 1]].tolist(),
             sorted(set(rows.masked_items[rows.masked_ptr[r]:rows.masked_ptr[r + 1]].tolist())))
            for r in range(len(rows))]


def test_user_prefixes_split_by_hand():
    # 10 users in dataset order: users 0-7 train (int(0.8 * 10)), user 8 valid (int(0.1 * 10)), user 9 test
    users = [u for u in range(8) for _ in range(3)] + [8, 8, 8] + [9, 9, 9, 9]
    items = [7, 8, 9] * 8 + [1, 2, 3] + [4, 5, 4, 6]        # user 9 repeats item 4: a target is never masked
    data = Interactions.from_raw(users, [str(i) for i in items])   # ids by first appearance: 7 8 9 1 2 3 4 5 6
    name = {1: 7, 2: 8, 3: 9, 4: 1, 5: 2, 6: 3, 7: 4, 8: 5, 9: 6}  # our id -> the item written above
    for seed in (0, 1):                                     # no shuffle: the seed does not move users
        split = common.split_dataset(data, "user-prefixes", seed=seed, sequential=True, max_len=2)
        assert split.train_user.unique().tolist() == list(range(8))
        named = [[([name[i] for i in q], [name[i] for i in t], sorted(name[i] for i in m)) for q, t, m in
                  eval_rows_as_lists(rows)] for rows in (split.valid, split.test)]
        assert named[0] == [([1], [2], [1]), ([1, 2], [3], [1, 2])]
        assert named[1] == [([4], [5], [4]), ([4, 5], [4], [5]), ([5, 4], [6], [4, 5])]   # query: last 2 items
    no_mask = common.split_dataset(data, "user-prefixes", seed=0, sequential=True, max_len=2, mask_history=False)
    assert no_mask.test.masked_items.numel() == 0 and len(no_mask.test.masked_ptr) == 4


def test_user_prefixes_rows_equal_a_literal_loop():
    # repeats: some rows' targets are items of their own prefix, which stay unmasked
    data = random_interactions(seed=5, n_users=57, max_len=9, repeats=True)
    split = common.split_dataset(data, "user-prefixes", seed=0, sequential=True, max_len=4)
    sequences = [data.item[data.user == u].tolist() for u in range(data.n_users)]
    first_valid, first_test = int(0.8 * 57), int(0.8 * 57) + int(0.1 * 57)
    assert any(seq[k] in seq[:k] for seq in sequences[first_valid:] for k in range(1, len(seq)))   # the case
    for rows, part in ((split.valid, sequences[first_valid:first_test]), (split.test, sequences[first_test:])):
        expected = [(seq[:k][-4:], [seq[k]], sorted(set(seq[:k]) - {seq[k]}))
                    for seq in part for k in range(1, len(seq))]
        assert eval_rows_as_lists(rows) == expected
    assert int((split.train_targets > 0).sum()) == sum(len(s) - 1 for s in sequences[:first_valid])


def test_training_windows_cover_every_target_once_like_prefix_augmentation():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 14, size=25)
    user = np.repeat(np.arange(25), lengths)
    item = rng.integers(1, 50, size=len(user))
    inputs, targets, window_user = common.training_windows(user, item, max_len=4)
    seen = []
    for w in range(len(inputs)):
        u = int(window_user[w])
        seq = item[user == u].tolist()
        for t in range(4):
            if targets[w, t] == 0:
                assert inputs[w, t] == 0
                continue
            # the target and its preceding items inside the window are the true next item and prefix
            valid_inputs = inputs[w, :t + 1].tolist()
            seen.append((u, int(targets[w, t])))
            start = [j for j in range(1, len(seq)) if seq[j - len(valid_inputs):j] == valid_inputs
                     and seq[j] == targets[w, t]]
            assert start, (seq, valid_inputs, int(targets[w, t]))
    expected = sorted((u, i) for u in range(25) for i in item[user == u].tolist()[1:])
    assert sorted(seen) == expected


# ---------------------------------------------------------------------------------------------- metrics
def literal_metrics(scores, positives, ks):
    """Sort every row by score descending, placing targets after non-targets among equal scores (the
    pessimistic tie policy), then apply RecBole's formulas one row at a time."""
    out = {f"{m}@{k}": 0.0 for m in common.METRICS for k in ks}
    for s, p in zip(scores.tolist(), positives.tolist()):
        order = sorted(range(len(s)), key=lambda i: (-s[i], p[i]))
        hits = [p[i] for i in order]
        n_pos = sum(p)
        for k in ks:
            h = hits[:k]
            out[f"recall@{k}"] += sum(h) / n_pos
            out[f"precision@{k}"] += sum(h) / k
            out[f"hit@{k}"] += float(any(h))
            first = next((j + 1 for j, x in enumerate(h) if x), None)
            out[f"mrr@{k}"] += 1.0 / first if first else 0.0
            dcg = sum(1.0 / math.log2(j + 2) for j, x in enumerate(h) if x)
            idcg = sum(1.0 / math.log2(j + 2) for j in range(min(n_pos, k)))
            out[f"ndcg@{k}"] += dcg / idcg
    return {name: value / len(scores) for name, value in out.items()}


@pytest.mark.parametrize("seed", range(6))
def test_ranking_metrics_equal_literal_oracle_with_ties_and_masking(seed):
    g = torch.Generator().manual_seed(seed)
    rows, items = 23, 40
    scores = torch.randint(0, 6, (rows, items), generator=g).float()      # many ties
    scores[torch.rand(rows, items, generator=g) < 0.2] = -float("inf")     # masked history
    positives = torch.rand(rows, items, generator=g) < 0.15
    positives[torch.arange(rows), torch.randint(0, items, (rows,), generator=g)] = True
    ks = [1, 3, 5, 10, 20]
    got = common.ranking_metrics(scores, positives, ks)
    expected = literal_metrics(scores, positives, ks)
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name


@pytest.mark.parametrize("seed", range(3))
def test_ranking_metrics_equal_literal_oracle_when_almost_everything_ties(seed):
    """Two score levels, constant rows, masked non-targets, more targets than K and K up to the whole catalogue:
    every target's count of the non-targets scoring >= it sits on a tie."""
    g = torch.Generator().manual_seed(seed)
    rows, items = 31, 12
    scores = torch.randint(0, 2, (rows, items), generator=g).float()
    scores[:4] = 1.0                                                         # constant rows
    positives = torch.rand(rows, items, generator=g) < torch.linspace(0.05, 0.9, rows).unsqueeze(1)
    positives[torch.arange(rows), torch.randint(0, items, (rows,), generator=g)] = True
    scores[(torch.rand(rows, items, generator=g) < 0.3) & ~positives] = -float("inf")   # masked history
    ks = [1, 2, 5, 11, 12]
    got = common.ranking_metrics(scores, positives, ks)
    expected = literal_metrics(scores, positives, ks)
    for name in expected:
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name


def test_ranking_metrics_hand_case_and_ties_never_help():
    scores = torch.tensor([[3.0, 2, 2, 1, 0], [1, 1, 1, 1, 1]])
    positives = torch.tensor([[0, 1, 0, 0, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    m = common.ranking_metrics(scores, positives, [2, 3, 5])
    # row 0: target ranks 3 and 5 (item 2 ties item 1 and goes first); row 1: constant scores -> rank 5
    assert m["recall@2"] == 0 and m["hit@2"] == 0
    assert m["recall@3"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["mrr@5"] == pytest.approx((1 / 3 + 1 / 5) / 2)
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg@3"] == pytest.approx((1 / 2) / idcg / 2)
    assert m["precision@5"] == pytest.approx((2 / 5 + 1 / 5) / 2)


def test_ranking_metrics_rejects_bad_input():
    with pytest.raises(RecError, match="larger than the number of items"):
        common.ranking_metrics(torch.zeros(2, 5), torch.ones(2, 5, dtype=torch.bool), [10])
    with pytest.raises(RecError, match="at least one positive"):
        common.ranking_metrics(torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.bool), [1])


@pytest.mark.parametrize("masked_score", [-float("inf"), 0.0])
def test_evaluate_equals_ranking_metrics_and_does_not_depend_on_batch_size(masked_score):
    data = common.make_synthetic(0, n_users=80, n_items=60)
    split = common.split_dataset(data, "ratio", seed=0, sequential=False)
    model = common.MF(split.n_users, split.n_items, 8)
    a = common.evaluate(model, split.test, [5, 10], batch_size=7, masked_score=masked_score)
    b = common.evaluate(model, split.test, [5, 10], batch_size=1000, masked_score=masked_score)
    with torch.no_grad():
        q, table = model(split.test.query)
        scores = q @ table.T
    scores[:, 0] = -float("inf")
    positives = torch.zeros_like(scores, dtype=torch.bool)
    for r in range(len(split.test)):
        masked = split.test.masked_items[split.test.masked_ptr[r]:split.test.masked_ptr[r + 1]]
        scores[r, masked] = masked_score   # the MDCNS code's baselines: history scored 0
        positives[r, split.test.target_items[split.test.target_ptr[r]:split.test.target_ptr[r + 1]]] = True
    c = common.ranking_metrics(scores, positives, [5, 10])
    for name in c:
        assert a[name] == pytest.approx(c[name]) and b[name] == pytest.approx(c[name])


# ---------------------------------------------------------------------------------------------- backbones
@pytest.mark.parametrize("cls", [common.SASRec, common.KangSASRec, common.GRU4Rec])
def test_sequential_backbones_are_causal_and_ignore_padding(cls):
    torch.manual_seed(0)
    model = cls(20, 8, 6).eval()
    seq = torch.tensor([[3, 5, 7, 2, 0, 0]])
    changed = seq.clone()
    changed[0, 3] = 9
    with torch.no_grad():
        a, b = model.encode(seq), model.encode(changed)
        assert torch.allclose(a[:, :3], b[:, :3], atol=1e-6)
        assert not torch.allclose(a[:, 3], b[:, 3])
        # the padding after a row does not matter (nor how much of it), and forward reads the last item
        short = torch.tensor([[3, 5, 7, 0, 0, 0]])
        assert torch.allclose(model.encode(short)[:, :3], model.encode(short[:, :4])[:, :3], atol=1e-6)
        last, _ = model(short)
        assert torch.allclose(last, model.encode(short)[:, 2], atol=1e-6)
        if cls is not common.SASRec:   # positions counted from the first item: a prefix reads as its own row
            assert torch.allclose(model.encode(short)[:, :3], a[:, :3], atol=1e-6)


def literal_s3rec_sasrec(model, items, max_len):
    """The MDCNS code's SASRec.finetune (models.py, modules.Encoder), written out for one sequence: left-pad to
    max_len, positions 0..max_len-1 from the left edge, additive -10000 mask on future and padding keys,
    post-LN attention and GELU(erf) feed-forward layers; the output at the last position. Eval mode."""
    ids = torch.tensor([[0] * (max_len - len(items)) + list(items)])                    # (1, L) left-padded
    ln = lambda x, norm: (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True)
                                                                      + 1e-12) * norm.weight + norm.bias
    x = ln(model.item_embedding.weight[ids] + model.position_embedding.weight[torch.arange(max_len)],
           model.norm)
    allowed = (ids > 0).float()[:, None, None, :] * torch.tril(torch.ones(max_len, max_len))   # (1, 1, L, L)
    mask = (1.0 - allowed) * -10000.0
    for attention, ffn in zip(model.blocks[::2], model.blocks[1::2]):
        H, D = attention.n_heads, x.shape[-1]
        split = lambda t: t.view(1, max_len, H, D // H).permute(0, 2, 1, 3)           # (1, H, L, D/H)
        q, k, v = split(attention.query(x)), split(attention.key(x)), split(attention.value(x))
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // H) + mask, -1)
        context = (probs @ v).permute(0, 2, 1, 3).reshape(1, max_len, D)
        x = ln(attention.output(context) + x, attention.norm)
        w1, w2 = ffn.ffn[0], ffn.ffn[2]
        hidden = w1(x)
        x = ln(w2(hidden * 0.5 * (1.0 + torch.erf(hidden / math.sqrt(2.0)))) + x, ffn.norm)
    return x[0, -1]


def test_s3rec_sasrec_equals_the_mdcns_code_written_out():
    torch.manual_seed(0)
    max_len = 7
    model = common.SASRec(15, 8, max_len, n_layers=2, n_heads=2, dropout=0.5).eval()
    rows = [[4], [3, 9, 1], [2, 5, 7, 11, 14, 6, 3]]
    with torch.no_grad():
        ours, _ = model(common.pad_right([np.array(r) for r in rows], max_len))         # (3, D), right-padded
        for row, got in zip(rows, ours):
            assert torch.allclose(got, literal_s3rec_sasrec(model, row, max_len), atol=1e-5)


def test_packed_s3rec_sasrec_equals_its_blocks_on_the_padded_layout():
    """SASRec.encode computes on the real positions only (Packing); the same blocks on every position of the
    padded rows (the layout before packing) give the same hidden states at every real position, and the same
    gradients. Float64, eval mode (dropout draws differ by construction)."""
    torch.manual_seed(0)
    max_len = 9
    model = common.SASRec(30, 8, max_len, n_layers=2, n_heads=2, dropout=0.5).double().eval()
    sequences = common.pad_right([np.array(r) for r in ([4], [3, 9, 1], [2, 5, 7, 11, 14, 6, 3, 8, 21], [])],
                                 max_len)
    real = torch.zeros(sequences.numel(), dtype=torch.bool)      # the real positions, and an empty row's step 0
    real[common.Packing(sequences).index] = True
    real = real.view(sequences.shape)

    def padded_layout(model):
        everything = common.Packing(torch.ones_like(sequences))                         # all B * L positions
        x = model.item_embedding(sequences) + model.position_embedding(model.positions(sequences))
        x = model.dropout(model.norm(x)).reshape(-1, x.shape[-1])
        for attention, ffn in zip(model.blocks[0::2], model.blocks[1::2]):
            x = ffn(attention(x, everything))
        return x.view(*sequences.shape, -1)                                             # (B, L, D)

    reference = copy.deepcopy(model)
    packed, full = model.encode(sequences), padded_layout(reference)
    assert torch.allclose(packed[real], full[real], atol=1e-12, rtol=0)
    assert not packed[~real].any()                                                      # 0 at the padding
    weights = torch.randn(*packed.shape, dtype=torch.float64)
    (packed[real] * weights[real]).sum().backward()
    (full[real] * weights[real]).sum().backward()
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-10, rtol=0), name


def test_buckets_group_rows_by_length():
    """Rows of 1, 3, 9 and 20 items at L = 20 (and an empty row, whose step 0 Packing keeps): buckets up to 8,
    9-16 and 17-32 steps, each as wide as its longest row."""
    sequences = common.pad_right([np.arange(1, n + 1) for n in (1, 3, 9, 20, 0)], 20)
    packing = common.Packing(sequences)
    assert packing.starts.tolist() == [0, 1, 4, 13, 33]
    (where8, real8), (where16, real16), (where32, real32) = packing.buckets
    assert where8.tolist() == [[0, 0, 0], [1, 2, 3], [33, 33, 33]]                    # rows 0, 1, 4
    assert real8.tolist() == [[True, False, False], [True] * 3, [True, False, False]]
    assert where16.tolist() == [list(range(4, 13))] and bool(real16.all())
    assert where32.tolist() == [list(range(13, 33))] and bool(real32.all())
    covered = torch.cat([w[r] for w, r in packing.buckets])
    assert sorted(covered.tolist()) == list(range(len(packing.index)))               # every position, once


def test_s3rec_sasrec_initialisation():
    torch.manual_seed(0)
    model = common.SASRec(2000, 64, 50, n_layers=2, n_heads=2)
    attention, ffn = model.blocks[:2]
    for weight in (model.item_embedding.weight[1:], model.position_embedding.weight, attention.query.weight,
                   ffn.ffn[0].weight, ffn.ffn[2].weight):
        assert abs(weight.mean().item()) < 2e-3 and weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert not model.item_embedding.weight[0].any()
    assert not attention.query.bias.any() and not ffn.ffn[0].bias.any()
    assert (ffn.ffn[0].weight.shape, ffn.norm.eps, model.norm.eps, len(model.blocks)) == ((256, 64), 1e-12, 1e-12, 4)
    assert torch.equal(attention.norm.weight, torch.ones(64))


def test_lightgcn_zero_layers_is_its_embedding_table():
    user, item = torch.tensor([0, 0, 1, 2]), torch.tensor([1, 2, 2, 3])
    model = common.LightGCN(3, 3, 4, 0, user, item)
    q, table = model(torch.arange(3))
    assert torch.equal(q, model.user_embedding.weight) and torch.equal(table, model.item_embedding.weight)


def test_lightgcn_normalization_equals_dense_formula_and_mean_over_layers():
    user, item = torch.tensor([0, 0, 1, 2, 2, 0]), torch.tensor([1, 2, 2, 3, 1, 1])   # (0, 1) twice
    n_users, n_items = 3, 3
    adjacency = common.normalized_adjacency(n_users, n_items + 1, user, item).to_dense()
    A = torch.zeros(n_users + n_items + 1, n_users + n_items + 1)
    for u, i in zip(user.tolist(), item.tolist()):
        A[u, n_users + i] = A[n_users + i, u] = 1.0
    d = A.sum(1)
    inv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    assert torch.allclose(adjacency, inv[:, None] * A * inv[None, :])
    model = common.LightGCN(n_users, n_items, 4, 2, user, item)
    E0 = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
    dense = inv[:, None] * A * inv[None, :]
    expected = (E0 + dense @ E0 + dense @ dense @ E0) / 3
    q, table = model(torch.arange(3))
    assert torch.allclose(q, expected[:3], atol=1e-6) and torch.allclose(table, expected[3:], atol=1e-6)


def small_lightgcn(seed=0):
    torch.manual_seed(seed)
    data = common.make_synthetic(seed, n_users=60, n_items=40)
    split = common.split_dataset(data, "ratio", seed=0, sequential=False)
    return split, common.LightGCN(split.n_users, split.n_items, 8, 2, split.train_user, split.train_item)


def counting_propagate(model):
    """Make model.propagate count its calls; returns the list of calls."""
    calls, propagate = [], model.propagate
    model.propagate = lambda: calls.append(1) or propagate()
    return calls


def test_lightgcn_eval_propagates_once_per_weight_state_and_equals_the_uncached_tables():
    split, model = small_lightgcn()
    calls = counting_propagate(model)
    users = torch.arange(split.n_users)
    model.eval()
    with torch.no_grad():
        expected = model.propagate()                                      # uncached
        first, second = model(users[:7]), model(users[7:])
        assert torch.equal(first[0], expected[0][:7]) and torch.equal(second[0], expected[0][7:])
        assert torch.equal(first[1], expected[1]) and torch.equal(second[1], expected[1])
    assert len(calls) == 2                                                # the direct call and the first batch
    q, table = model(users)                                               # eval mode with grad: as before
    assert q.requires_grad and table.requires_grad and len(calls) == 3
    model.train()
    with torch.no_grad():
        model(users), model(users)                                        # train mode: every call
    assert len(calls) == 5
    # evaluate, many batches from the cache, equals evaluate propagating at every batch
    cached = common.evaluate(model, split.valid, [5, 10], batch_size=7)
    model.cached_propagate = model.propagate
    assert common.evaluate(model, split.valid, [5, 10], batch_size=7) == cached


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.Adam(p, lr=0.05),
    lambda p: torch.optim.Adam(p, lr=0.05, fused=True),     # leaves the parameters' _version unchanged
    lambda p: torch.optim.SGD(p, lr=0.5, foreach=True),
])
def test_lightgcn_eval_cache_follows_optimizer_steps_and_load_state_dict(make_optimizer):
    split, model = small_lightgcn(1)
    optimizer = make_optimizer(model.parameters())
    users = torch.arange(split.n_users)
    state = {name: value.clone() for name, value in model.state_dict().items()}
    before = common.evaluate(model, split.valid, [5, 10], batch_size=16)
    with torch.no_grad():
        old_queries = model.eval()(users)[0]
    model.train()
    q, table = model(users)
    (q.sum() + table.pow(2).sum()).backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        queries, item_table = model(users)
        fresh = model.propagate()
    assert not torch.equal(queries, old_queries)
    assert torch.equal(queries, fresh[0]) and torch.equal(item_table, fresh[1])
    assert common.evaluate(model, split.valid, [5, 10], batch_size=16) != before
    model.load_state_dict(state)
    assert common.evaluate(model, split.valid, [5, 10], batch_size=16) == before
    with torch.no_grad():
        assert torch.equal(model(users)[0], old_queries)
    model.double()                                                       # dtype (and device) changes
    with torch.no_grad():
        assert model(users)[0].dtype == torch.float64


def test_fits_adam_steps_equal_the_per_parameter_loop_bit_for_bit():
    """common.adam (foreach=True, one multi-tensor kernel per op) takes the same steps as PyTorch's CPU default,
    the loop over parameters, bit for bit: SASRec and Mamba4Rec, three steps of real gradients."""
    torch.manual_seed(0)
    models = torch.nn.ModuleList([common.SASRec(30, 8, 10, n_layers=2, n_heads=2, dropout=0.0),
                                  common.Mamba4Rec(30, 8, max_len=10, n_layers=2, dropout=0.0, d_state=4)])
    reference = copy.deepcopy(models)
    optimizers = common.adam(models.parameters(), 1e-2), torch.optim.Adam(reference.parameters(), lr=1e-2)
    assert optimizers[0].defaults["foreach"] and not optimizers[1].defaults["foreach"]
    items = torch.randint(1, 31, (6, 10), generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        for net, optimizer in zip((models, reference), optimizers):
            optimizer.zero_grad()
            sum((q.pow(2).sum() + table.pow(3).sum()) for q, table in (m(items) for m in net)).backward()
            optimizer.step()
        assert all(torch.equal(a, b) for a, b in zip(models.parameters(), reference.parameters()))


def test_build_backbone_errors():
    data = common.make_synthetic(0, n_users=50, n_items=40)
    split = common.split_dataset(data, "loo", seed=0, sequential=False)
    args = argparse.Namespace(dim=8, layers=1, dropout=0.1, heads=1)
    with pytest.raises(RecError, match="unknown backbone"):
        common.build_backbone("bert", split, args)
    with pytest.raises(RecError, match="general backbone, not sasrec"):
        common.build_backbone("sasrec", split, args)


# ---------------------------------------------------------------------------------------------- sampling
def skewed_positive_sets(n_users=30, n_items=25, seed=0):
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        n = n_items - 1 if u % 7 == 0 else int(rng.integers(1, n_items // 2))   # some users saw all but one
        chosen = rng.choice(np.arange(1, n_items + 1), n, replace=False)
        users += [u] * n
        items += chosen.tolist()
    return torch.tensor(users), torch.tensor(items)


def test_uniform_negatives_exact_uniform_over_non_positives():
    users, items = skewed_positive_sets()
    positives = common.PositiveSets(users, items, 30, 25)
    g = torch.Generator().manual_seed(0)
    query = torch.arange(30).repeat_interleave(2000)
    draws = common.uniform_negatives(positives, query, 3, g)
    assert draws.shape == (len(query), 3) and draws.dtype == torch.long
    assert not positives.contains(query.unsqueeze(1), draws).any() and (draws >= 1).all() and (draws <= 25).all()
    for u in (0, 1, 2, 7):
        pos = set(items[users == u].tolist())
        free = [i for i in range(1, 26) if i not in pos]
        counts = torch.bincount(draws[query == u].flatten(), minlength=26)[free].numpy()
        if len(free) > 1:
            assert stats.chisquare(counts).pvalue > 1e-3
        else:
            assert counts.sum() == 6000


@pytest.mark.parametrize("protocol, sequential", [("ratio", False), ("loo", False), ("loo", True)])
def test_training_positives_add_exactly_the_held_out_items_when_asked(protocol, sequential, capsys):
    data = random_interactions(seed=8, n_users=40, max_len=15)          # no user repeats an item
    split = common.split_dataset(data, protocol, seed=0, sequential=sequential, max_len=5)
    train = {u: set(split.train_item[split.train_user == u].tolist()) for u in range(data.n_users)}
    held_out = {u: set(data.item[data.user == u].tolist()) - train[u] for u in range(data.n_users)}
    if not sequential:   # the same sets read from the validation and test rows
        _, valid, test = parts_by_user(data, split)
        assert held_out == {u: valid.get(u, set()) | test.get(u, set()) for u in range(data.n_users)}
    users = torch.arange(data.n_users)
    clean = common.training_positives(split, "cpu").dense_mask(users)                      # (U, I+1)
    assert capsys.readouterr().err == ""
    leaky = common.training_positives(split, "cpu", exclude_held_out=True).dense_mask(users)
    assert capsys.readouterr().err.count("leaks held-out labels into training") == 1
    for u in range(data.n_users):
        assert set(clean[u].nonzero().flatten().tolist()) - {0} == train[u]
        assert set(leaky[u].nonzero().flatten().tolist()) - {0} == train[u] | held_out[u]


def test_exclude_held_out_changes_nothing_under_the_user_split(capsys):
    split = common.split_dataset(random_interactions(seed=9, n_users=40), "user", seed=0, sequential=True)
    clean, leaky = common.training_positives(split, "cpu"), common.training_positives(split, "cpu", True)
    assert torch.equal(clean.key, leaky.key) and torch.equal(clean.free, leaky.free)
    assert "changes nothing under --split user" in capsys.readouterr().err


def test_uniform_negatives_reproducible_and_full_user_is_an_error():
    users, items = torch.tensor([0, 0, 0, 1]), torch.tensor([1, 2, 3, 1])
    positives = common.PositiveSets(users, items, 2, 3)
    a = common.uniform_negatives(positives, torch.tensor([1, 1]), 4, torch.Generator().manual_seed(3))
    b = common.uniform_negatives(positives, torch.tensor([1, 1]), 4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(RecError, match="every item"):
        common.uniform_negatives(positives, torch.tensor([0]), 1, torch.Generator())


@pytest.mark.parametrize("n_users, n_items", [(30, 25), (4, 40000)])   # int16 and int32 tables
def test_uniform_negatives_dense_table_and_search_draw_the_same_items(monkeypatch, n_users, n_items):
    rng = np.random.default_rng(1)
    users, items = [], []
    for u in range(n_users - 1):                                   # the last user has no positive
        n = n_items - 1 if u % 7 == 0 else int(rng.integers(1, min(n_items, 200)))
        users += [u] * n
        items += rng.choice(np.arange(1, n_items + 1), n, replace=False).tolist()
    users, items = torch.tensor(users + users[:5]), torch.tensor(items + items[:5])   # a few duplicates
    dense = common.PositiveSets(users, items, n_users, n_items)
    monkeypatch.setattr(common, "DENSE_NEGATIVES_MAX", n_users * n_items - 1)
    search = common.PositiveSets(users, items, n_users, n_items)
    assert dense.below_key is None and search.free is None
    assert dense.free.dtype == (torch.int16 if n_items < 2 ** 15 else torch.int32)
    for u in range(n_users):                                       # the table: each user's non-positives, ascending
        free = sorted(set(range(1, n_items + 1)) - set(items[users == u].tolist()))
        assert dense.free[u, :len(free)].tolist() == free
    query = torch.arange(n_users).repeat_interleave(500)
    g_dense, g_search = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    for k in (1, 7):
        a = common.uniform_negatives(dense, query, k, g_dense)
        b = common.uniform_negatives(search, query, k, g_search)
        assert a.dtype == b.dtype == torch.long and torch.equal(a, b)
    assert torch.equal(g_dense.get_state(), g_search.get_state())   # the same random numbers consumed
    # membership: the dense mask and the binary search agree with the literal sets, padding item included
    some_users = torch.randint(0, n_users, (4000,), generator=g_dense)
    some_items = torch.randint(0, n_items + 1, (4000,), generator=g_dense)
    pairs = set(zip(users.tolist(), items.tolist()))
    literal = torch.tensor([(u, i) in pairs for u, i in zip(some_users.tolist(), some_items.tolist())])
    assert dense.is_positive is not None and search.is_positive is None
    assert torch.equal(dense.contains(some_users, some_items), literal)
    assert torch.equal(search.contains(some_users, some_items), literal)
    mask_users = torch.tensor([0, n_users - 1, 3, 0])                 # a repeated user, the one without positives
    literal_mask = torch.zeros(len(mask_users), n_items + 1, dtype=torch.bool)
    for row, u in enumerate(mask_users.tolist()):
        literal_mask[row, items[users == u]] = True
    literal_mask[:, 0] = True
    assert torch.equal(dense.dense_mask(mask_users), literal_mask)
    assert torch.equal(search.dense_mask(mask_users), literal_mask)
    assert not dense.is_positive[:, 0].any()                          # the mask's padding column is not stored


def test_alias_table_matches_its_distribution():
    weights = torch.tensor([[0.0, 1, 2, 3, 4, 0.5], [0.0, 5, 0, 0, 1, 1]], dtype=torch.float64)
    table = common.AliasTable(weights)
    g = torch.Generator().manual_seed(1)
    for row in range(2):
        draws = table.draw(torch.full((20000,), row), 1, g).flatten()
        support = (weights[row] > 0).nonzero().flatten()
        assert set(draws.unique().tolist()) <= set(support.tolist())
        counts = torch.bincount(draws, minlength=6)[support].numpy()
        expected = (weights[row, support] / weights[row].sum() * len(draws)).numpy()
        assert stats.chisquare(counts, expected).pvalue > 1e-3


def test_weighted_negatives_equal_the_renormalized_law_and_fall_back_to_uniform():
    n_items = 8
    weights = torch.tensor([[0.0, 8, 4, 2, 1, 1, 0, 0, 0]]).double()
    # user 0: nothing seen; user 1: holds 95% of the mass; user 2: holds all of it -> uniform over the rest
    users = torch.tensor([1, 1, 1, 2, 2, 2, 2, 2])
    items = torch.tensor([1, 2, 3, 1, 2, 3, 4, 5])
    positives = common.PositiveSets(users, items, 3, n_items)
    table = common.AliasTable(weights)
    group = torch.zeros(3, dtype=torch.long)
    g = torch.Generator().manual_seed(2)
    for u in range(3):
        query = torch.full((6000,), u)
        draws = common.weighted_negatives(weights, table, group, positives, query, 2, g).flatten()
        assert not positives.contains(torch.full_like(draws, u), draws).any()
        w = weights[0].clone()
        w[items[users == u]] = 0
        if w.sum() == 0:
            w = torch.ones(n_items + 1).double()
            w[0] = 0
            w[items[users == u]] = 0
        support = (w > 0).nonzero().flatten()
        assert set(draws.unique().tolist()) <= set(support.tolist())
        counts = torch.bincount(draws, minlength=n_items + 1)[support].numpy()
        if len(support) > 1:
            expected = (w[support] / w.sum() * len(draws)).numpy()
            assert stats.chisquare(counts, expected).pvalue > 1e-3


def test_score_items_equals_advanced_indexing_with_gradients():
    g = torch.Generator().manual_seed(0)
    queries = torch.randn(7, 5, generator=g, requires_grad=True)
    table = torch.randn(12, 5, generator=g, requires_grad=True)
    items = torch.randint(0, 12, (7, 9), generator=g)                      # duplicates within and across rows
    weights = torch.randn(7, 9, generator=g)
    got = common.score_items(queries, table, items)
    (got * weights).sum().backward()
    grads = queries.grad.clone(), table.grad.clone()
    queries.grad, table.grad = None, None
    expected = torch.einsum("pd,pnd->pn", queries, table[items])
    (expected * weights).sum().backward()
    assert torch.equal(got, expected)
    assert torch.allclose(grads[0], queries.grad) and torch.allclose(grads[1], table.grad)


# ---------------------------------------------------------------------------------------------- training loop
def cli_args(*extra):
    parser = common.base_parser("test")
    return parser.parse_args(["--quiet", "--epochs", "2", *extra])


def rns_run(tmp_path, *extra):
    args, split = common.prepare(cli_args("--out-dir", str(tmp_path), *extra), "rns")
    model = common.build_backbone(args.backbone, split, args)
    record = common.pretrain_uniform(args, split, model)
    return common.finish(args, split, model, record)


def test_same_seed_same_metrics_and_results_file(tmp_path):
    a = rns_run(tmp_path / "a", "--backbone", "sasrec", "--max-len", "20", "--dim", "16")
    b = rns_run(tmp_path / "b", "--backbone", "sasrec", "--max-len", "20", "--dim", "16")
    assert a["test"] == b["test"] and a["valid"] == b["valid"]
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    for key in ("method", "dataset", "backbone", "seed", "config", "data", "history", "best_epoch", "valid",
                "test", "epoch_seconds", "train_seconds", "test_history_masked_to_zero"):
        assert key in saved
    assert set(saved["test"]) == {f"{m}@{k}" for m in common.METRICS for k in (5, 10, 20)}


@pytest.mark.parametrize("block", ["s3rec", "kang"])
def test_trained_model_beats_popularity_on_synthetic(block, tmp_path):
    result = rns_run(tmp_path, "--backbone", "sasrec", "--sasrec-block", block, "--epochs", "15", "--max-len", "20",
                     "--dim", "32")
    data = common.make_synthetic(2020)
    split = common.split_dataset(data, "loo", seed=2020, sequential=True, max_len=20)
    popularity = torch.bincount(split.train_item, minlength=split.n_items + 1).float()
    scores = popularity.repeat(len(split.test), 1)
    scores[:, 0] = -float("inf")
    positives = torch.zeros_like(scores, dtype=torch.bool)
    for r in range(len(split.test)):
        scores[r, split.test.masked_items[split.test.masked_ptr[r]:split.test.masked_ptr[r + 1]]] = -float("inf")
        positives[r, split.test.target_items[split.test.target_ptr[r]]] = True
    pop = common.ranking_metrics(scores, positives, [10])
    assert result["test"]["ndcg@10"] > 2 * pop["ndcg@10"]


@pytest.mark.parametrize("flags, message", [
    (["--ks", "5,10,500"], "larger than the number of items"),
    (["--split", "ratio", "--backbone", "sasrec"], "general backbones"),
    (["--split", "user", "--backbone", "mf"], "sequential backbone"),
    (["--valid-metric", "ndcg@7"], "--valid-metric"),
])
def test_bad_flags_are_one_line_errors(tmp_path, flags, message):
    with pytest.raises(RecError, match=message):
        common.prepare(cli_args("--out-dir", str(tmp_path), *flags), "rns")


def test_cuda_without_cuda_is_an_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RecError, match="CUDA"):
        common.prepare(cli_args("--device", "cuda"), "rns")


def test_nan_loss_is_an_error_and_writes_nothing(tmp_path):
    args, split = common.prepare(cli_args("--out-dir", str(tmp_path)), "rns")
    model = common.build_backbone(args.backbone, split, args)

    def nan_loss(model, batch, generator):
        return common.examples(model, batch).queries.sum() * float("nan")

    with pytest.raises(RecError, match="loss became nan"):
        common.fit(args, split, model, nan_loss)
    assert not (tmp_path / "results.json").exists()


def test_lightgcn_gradients_equal_dense_autograd():
    user, item = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([1, 2, 2, 3, 1])
    model = common.LightGCN(3, 3, 4, 2, user, item)
    q, table = model(torch.tensor([0, 2]))
    (q.sum() * 2 + (table ** 2).sum()).backward()
    dense = common.normalized_adjacency(3, 4, user, item).to_dense()
    E0 = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach().requires_grad_()
    final = (E0 + dense @ E0 + dense @ dense @ E0) / 3
    (final[[0, 2]].sum() * 2 + (final[3:] ** 2).sum()).backward()
    assert torch.allclose(model.user_embedding.weight.grad, E0.grad[:3], atol=1e-6)
    assert torch.allclose(model.item_embedding.weight.grad, E0.grad[3:], atol=1e-6)
