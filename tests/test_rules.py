"""Rules a one-line change could break without moving any other test (tests/mutate.py makes those changes):

1. the defaults every published number depends on, as each method file's docstring and help state them, read
   through the command line (`main` up to `common.prepare`: parsed, resolved and checked, nothing loaded);
2. the history mask when a target repeats an item of its own history, by hand, under every split that has one;
3. the splits on data with empty users, one-item users, repeated items and tied timestamps, against a literal loop;
4. the training loop on scripted validation scores: patience, strict improvement, the best state restored, and
   test evaluated once, on that state.
"""
import math
import os
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import baselines
import common
import icpns
import mdcns
from common import METRICS, Interactions
from generators import random_interactions, sequences_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------------------
# 1. Defaults, as the docstrings and the help state them
# ---------------------------------------------------------------------------------------------------------
class Caught(Exception):
    """Raised in place of common.prepare: the settings are final there, and nothing has been read yet."""


def settings(module, *argv):
    """The settings `module.main(argv)` hands to common.prepare: parsed, the method's own defaults resolved and
    every flag checked. `--dataset ml-1m` unless argv names one, so the real-data defaults apply (the synthetic
    demo has its own)."""
    argv = list(argv) if "--dataset" in argv else ["--dataset", "ml-1m", *argv]
    seen = {}

    def prepare(args, method):
        seen.update(vars(args))
        raise Caught

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "prepare", prepare)
        with pytest.raises(Caught):
            module.main(argv)
    return SimpleNamespace(**seen)


def flat(text: str) -> str:
    return " ".join(text.split())


def stated(text: str, pattern: str) -> tuple:
    """The groups of `pattern` in `text` (whitespace-normalised); fails, naming the pattern, if it is not there."""
    match = re.search(pattern, flat(text))
    assert match, f"the text no longer states /{pattern}/: update the docstring or this test"
    return match.groups()


def help_of(module, dest: str) -> str:
    return common.parser_action(module.build_parser(), dest).help


def test_mdcns_defaults_are_the_published_settings_its_docstring_states():
    doc, s = mdcns.__doc__, settings(mdcns)
    backbone, peer, loss, n, m, alpha_beta, seed = stated(
        doc, r"Published settings \((\w+) self, (\w+) peer, (\w+), N=(\d+), M=(\d+), alpha=beta=([\d.]+), one seed "
             r"(\d+) run each")
    assert (s.backbone, s.peer, s.loss) == (backbone.lower(), peer.lower(), loss.lower())
    assert (s.n_candidates, s.top_m, s.seed) == (int(n), int(m), int(seed))
    assert s.alpha == s.beta == float(alpha_beta)
    gamma, tau = stated(doc, r"Beauty gamma ([\d.]+) tau ([\d.]+);")          # the defaults are the Beauty row
    assert (s.gamma, s.kd_temperature) == (float(gamma), float(tau))
    assert stated(doc, r"Default seed (\d+)\.") == (str(s.seed),)
    # the protocol
    (split,) = stated(doc, r"Protocol \(the file's defaults, the paper's\): `--split ([\w-]+)`")
    ks, metric, nth, patience, epochs = stated(
        doc, r"Recall and NDCG at ([\d/]+); early stopping on validation (\w+@\d+), stopping at the (\d+)th validation "
             r"in a row without improvement as the code \(`--patience (\d+)`; at most (\d+) epochs\)")
    assert (s.split, s.ks, s.valid_metric) == (split, ks.replace("/", ","), metric.lower())
    assert (s.patience, s.epochs) == (int(patience), int(epochs)) and int(nth) == s.patience + 1   # RecBole's rule
    (layers,) = stated(doc, r"\(num_hidden_layers (\d+) for every model\)")
    assert s.layers == int(layers)
    # the same protocol as baselines.py states for MDCNS's baselines
    heads, dim, dropout, max_len = stated(
        baselines.__doc__, r"MDCNS's Table 3 baselines as run_all.sh runs them \(SASRec's defaults: (\d+) heads, D (\d+), "
                           r"dropout ([\d.]+), L (\d+);")
    assert (s.heads, s.dim, s.dropout, s.max_len) == (int(heads), int(dim), float(dropout), int(max_len))
    split, loss, metric = stated(baselines.__doc__, r"--dataset beauty --backbone sasrec --split (\w+) --loss (\w+) "
                                                    r"--valid-metric (\w+@\d+)")
    assert (s.loss, s.split, s.valid_metric) == (loss.lower(), split, metric.lower())


def test_mdcns_deviation_defaults_are_the_ones_its_docstring_states():
    """The 'Deviations' list names each default: teacher mean, KD support with the positive, mu resolved per KD
    reduction (the weight check_args fills in), every position in one pass at ~1024 examples per batch."""
    doc, s = mdcns.__doc__, settings(mdcns)
    assert stated(doc, r"Default (\w+); `--teacher (\w+)`") == (s.teacher, "sum")
    stated(doc, r"Default with the positive; `--no-kd-positive`")
    assert s.kd_positive is True and settings(mdcns, "--no-kd-positive").kd_positive is False
    factor, batch, mu = stated(doc, r"KD as a per-example mean with mu = ([\d.]+) x (\d+) = ([\d.]+)\.")
    assert float(mu) == pytest.approx(float(factor) * int(batch))
    assert s.kd_reduction == "mean" and s.kd_weight == pytest.approx(float(mu))
    (literal,) = stated(doc, r"`--kd-reduction sum --kd-weight ([\d.]+)` is C literally")
    assert settings(mdcns, "--kd-reduction", "sum").kd_weight == float(literal)
    assert settings(mdcns, "--kd-weight", "1").kd_weight == 1.0                  # a given weight is kept
    mean_mu, sum_mu = stated(help_of(mdcns, "kd_weight"),
                             r"Default ([\d.]+) = [\d.]+ x \d+ with --kd-reduction mean .*, ([\d.]+) with "
                             r"--kd-reduction sum")
    assert (float(mean_mu), float(sum_mu)) == (float(mu), float(literal))
    (examples,) = stated(doc, r"Default: every position of every training sequence in one pass .*?~(\d+) "
                              r"examples per batch")
    assert s.augmented_prefixes is False and s.examples_per_batch == int(examples)
    assert (s.distillation, s.divergence, s.multi_source) == (True, True, True)
    # --peer: "mamba4rec as in the paper; sasrec when --backbone is mamba4rec"
    default_peer, other_peer, backbone = stated(help_of(mdcns, "peer"),
                                                r"default: (\w+) as in the paper; (\w+) when --backbone is (\w+)")
    assert s.peer == default_peer and settings(mdcns, "--backbone", backbone).peer == other_peer


@pytest.mark.parametrize("name, backbone", [("LightGCN", "lightgcn"), ("MF", "mf"), ("NGCF", "ngcf")])
def test_icpns_defaults_are_the_official_configs_its_docstring_states(name, backbone):
    doc, s = icpns.__doc__, settings(icpns, "--backbone", backbone)
    communities, alpha, batch, pretrain_patience, epochs, patience = stated(
        doc, name + r" \([^)]*\): K = (\d+), α = ([\d.]+), batch (\d+), pre-training patience (\d+), (\d+) "
                    r"fine-tuning epochs with patience (\d+)")
    assert (s.communities, s.alpha, s.batch_size) == (int(communities), float(alpha), int(batch))
    assert (s.pretrain_patience, s.epochs, s.patience) == (int(pretrain_patience), int(epochs), int(patience))
    seed, lr, finetune_lr, pretrain_epochs, metric = stated(
        doc, r"Both configs: seed (\d+), Adam at `--lr` ([\d.e-]+) for pre-training \(learning_rate\) and a fresh "
             r"Adam at `--finetune-lr` ([\d.e-]+) for fine-tuning \(finetune_lr\), at most (\d+) pre-training "
             r"epochs, validation (\w+@\d+) after every epoch")
    assert (s.seed, s.lr, s.finetune_lr, s.pretrain_epochs) == (int(seed), float(lr), float(finetune_lr),
                                                                int(pretrain_epochs))
    assert (s.valid_metric, s.eval_every) == (metric.lower(), 1)
    assert stated(doc, r"random 8:1:1 split \(`--split (\w+)`") == (s.split,)
    assert ",".join(stated(doc, r"Recall, NDCG and MRR @(\d+) \(and @(\d+)\)")) == s.ks
    (demo_backbone,) = stated(doc, r"`python icpns.py` \(synthetic, (\w+)\)")
    assert settings(icpns, "--dataset", "synthetic").backbone == demo_backbone.lower()
    # the deviations' defaults: epsilon unused (0), the padding pseudo-user clustered, no reclustering
    stated(doc, r"the config's `epsilon: [\d.]+` is never used there\. `--epsilon ε` > 0 smooths")
    stated(doc, r"`--cluster-padding-user` \(default\)")
    stated(doc, r"`--recluster-every E` rebuilds .*?; off by default")
    assert (s.epsilon, s.cluster_padding_user, s.recluster_every) == (0.0, True, 0)


def test_icpns_sequential_backbones_take_lightgcns_config_and_commons_batch():
    (batch,) = stated(icpns.__doc__, r"Sequential backbones have no official config: LightGCN's values, batch (\d+) "
                                     r"sequences")
    lightgcn, s = settings(icpns, "--backbone", "lightgcn"), settings(icpns, "--backbone", "sasrec", "--split", "loo")
    names = ("communities", "alpha", "pretrain_patience", "epochs", "patience")
    assert [getattr(s, n) for n in names] == [getattr(lightgcn, n) for n in names]
    assert s.batch_size is None and common.DEFAULT_BATCH_SIZE["sequential"] == int(batch)   # set by prepare


def test_baselines_defaults_are_the_ones_the_docstrings_and_help_state():
    s = settings(baselines)
    assert stated(baselines.__doc__, r"`--split (\w+)` \(default; leave-one-out by time\)") == (s.split,)
    patience, stops_at = stated(help_of(baselines, "patience"), r"P = (\d+) stops at the (\d+)th")
    assert s.patience == int(patience) == int(stops_at) - 1
    (alpha,) = stated(help_of(baselines, "pns_alpha"), r"\(default ([\d.]+), ICPNS's recommended PNS setting")
    assert settings(baselines, "--sampler", "pns").pns_alpha == float(alpha)
    candidates = dict(zip(("dns", "dnsmn", "mixgcf", "adasir", "gnno", "srns"), map(int, stated(
        help_of(baselines, "candidates"),
        r"dns (\d+) scored candidates .*; dnsmn (\d+) .*; mixgcf, mixgcfmn (\d+) candidates to mix .*; adasir "
        r"(\d+) proposals .*; gnno (\d+) candidates, .*; srns (\d+), the variance set"))))
    candidates["mixgcfmn"] = candidates["mixgcf"]
    assert stated(baselines.SRNSMemory.__doc__, r"N = (\d+) as MDCNS runs SRNS") == (str(candidates["srns"]),)
    (top_m,) = stated(help_of(baselines, "top_m"), r"dnsmn, mixgcfmn, gnno \(default (\d+);")
    stated(baselines.UniformWarmUp.__doc__, r"every released log of it sets 0, this file's default")
    for sampler, n in candidates.items():
        resolved = settings(baselines, "--sampler", sampler)
        assert resolved.candidates == n, sampler
        assert resolved.top_m == (int(top_m) if sampler in ("dnsmn", "mixgcfmn", "gnno") else None), sampler
        assert resolved.uniform_epochs == 0 and resolved.negatives == 1


def test_the_synthetic_demo_defaults_are_the_readmes():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    epochs, mdcns_epochs, max_len, pretrain_epochs = stated(
        readme, r"`--dataset synthetic` \(the default\) has its own defaults, each stated in `--help` and "
                r"overridden by any flag you give: (\d+) epochs \(MDCNS: (\d+)\), L = (\d+), (\d+) ICPNS "
                r"pre-training epochs")
    demo = {module: settings(module, "--dataset", "synthetic") for module in (baselines, icpns, mdcns)}
    assert [demo[m].epochs for m in (baselines, icpns, mdcns)] == [int(epochs), int(epochs), int(mdcns_epochs)]
    assert {demo[m].max_len for m in demo} == {int(max_len)} and demo[icpns].pretrain_epochs == int(pretrain_epochs)


# ---------------------------------------------------------------------------------------------------------
# 2. The history mask when a target repeats an item of its history, by hand
# ---------------------------------------------------------------------------------------------------------
def interactions(sequences, n_items=6):
    """Interactions with the items as written (no remapping), one user per list, in order."""
    user = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
    return Interactions(user, np.concatenate(sequences).astype(np.int64), common.positions_within_users(user),
                        len(sequences), n_items)


def rows_by_hand(rows, sequential=True):
    """(input items or user id, targets, the masked items as a sorted set) per row. (user-prefixes rows list a
    repeated history item once per occurrence: masking it twice is masking it.)"""
    query = [[i for i in q if i] for q in rows.query.tolist()] if sequential else rows.query.tolist()
    return [(query[r], rows.target_items[rows.target_ptr[r]:rows.target_ptr[r + 1]].tolist(),
             sorted(set(rows.masked_items[rows.masked_ptr[r]:rows.masked_ptr[r + 1]].tolist())))
            for r in range(len(rows))]


def test_loo_never_masks_a_target_that_repeats_its_history():
    # user 0: 3 5 | 3    user 1: 2 4 2 | 4    user 2: 1 | 1 (two items: train + test only)
    data = interactions([[3, 5, 3], [2, 4, 2, 4], [1, 1]])
    split = common.split_dataset(data, "loo", seed=0, sequential=True, max_len=4)
    assert rows_by_hand(split.valid) == [([3], [5], [3]), ([2, 4], [2], [4])]
    assert rows_by_hand(split.test) == [([3, 5], [3], [5]), ([2, 4, 2], [4], [2]), ([1], [1], [])]
    unmasked = common.split_dataset(data, "loo", seed=0, sequential=True, max_len=4, mask_history=False)
    assert unmasked.valid.masked_items.numel() == unmasked.test.masked_items.numel() == 0
    # general backbones mask the training items (+ validation items at test), never the target
    general = common.split_dataset(data, "loo", seed=0, sequential=False)
    assert rows_by_hand(general.valid, sequential=False) == [(0, [5], [3]), (1, [2], [4])]
    assert rows_by_hand(general.test, sequential=False) == [(0, [3], [5]), (1, [4], [2]), (2, [1], [])]


@pytest.mark.parametrize("seed", [0, 1])
def test_user_split_never_masks_a_target_that_repeats_its_history(seed):
    # 10 users: 7 train, 2 valid, 1 test, shuffled by the seed; every sequence ends on an item it holds already
    data = interactions([[3, 5, 3], [2, 4, 2, 4]] * 5)
    split = common.split_dataset(data, "user", seed=seed, sequential=True, max_len=4)
    rows = rows_by_hand(split.valid) + rows_by_hand(split.test)
    assert len(rows) == 3 and all(row in (([3, 5], [3], [5]), ([2, 4, 2], [4], [2])) for row in rows)


def test_user_prefixes_never_mask_a_target_that_repeats_its_prefix():
    # 10 users in dataset order: 8 train, user 8 valid (3 5 3), user 9 test (2 4 2 4); every prefix is a row
    data = interactions([[1, 2]] * 8 + [[3, 5, 3], [2, 4, 2, 4]])
    split = common.split_dataset(data, "user-prefixes", seed=0, sequential=True, max_len=4)
    assert rows_by_hand(split.valid) == [([3], [5], [3]), ([3, 5], [3], [5])]
    assert rows_by_hand(split.test) == [([2], [4], [2]), ([2, 4], [2], [4]), ([2, 4, 2], [4], [2])]


# ---------------------------------------------------------------------------------------------------------
# 3. Splits on data with empty users, one-item users, repeats and tied timestamps, against a literal loop (the
#    ratio split's per-user counts on such users: tests/test_common.py)
# ---------------------------------------------------------------------------------------------------------
def hard_data(seed=3):
    """Every case at once: 3 empty users (ids 0, the middle one and the last), 4 one-item users, repeated items
    and tied timestamps."""
    data = random_interactions(seed, n_users=47, n_items=12, max_len=9, repeats=True, time_ties=True,
                               one_item_users=4, empty_users=3)
    lengths = [len(s) for s in sequences_of(data)]
    assert lengths[0] == lengths[-1] == 0 and lengths.count(1) >= 4
    assert any(s[-1] in s[:-1] for s in sequences_of(data) if s)
    return data


def literal_row(history, target, max_len, sequential=True, user=None):
    return (history[-max_len:] if sequential else user, [target], sorted(set(history) - {target}))


@pytest.mark.parametrize("sequential", [True, False])
def test_loo_rows_equal_a_literal_loop_on_every_kind_of_user(sequential):
    data, max_len = hard_data(), 4
    split = common.split_dataset(data, "loo", seed=0, sequential=sequential, max_len=max_len)
    valid, test, train = [], [], []
    for u, seq in enumerate(sequences_of(data)):   # RecBole's rule: 1 item: train; 2: train + test; else + valid
        held = min(2, max(len(seq) - 1, 0))
        train += [(u, i) for i in seq[:len(seq) - held]]
        if held == 2:
            valid.append(literal_row(seq[:-2], seq[-2], max_len, sequential, u))
        if held >= 1:
            test.append(literal_row(seq[:-1], seq[-1], max_len, sequential, u))
    assert rows_by_hand(split.valid, sequential) == valid and rows_by_hand(split.test, sequential) == test
    assert list(zip(split.train_user.tolist(), split.train_item.tolist())) == train


def test_user_split_rows_equal_a_literal_loop_on_every_kind_of_user():
    data, max_len = hard_data(), 4
    split = common.split_dataset(data, "user", seed=0, sequential=True, max_len=max_len)
    sequences = sequences_of(data)
    training = set(split.train_user.tolist())
    assert sorted(split.train_item.tolist()) == sorted(i for u in training for i in sequences[u])
    expected = [literal_row(s[:-1], s[-1], max_len) for u, s in enumerate(sequences)
                if u not in training and len(s) >= 2]
    got = rows_by_hand(split.valid) + rows_by_hand(split.test)
    assert sorted(got) == sorted(expected)


def test_user_prefixes_rows_equal_a_literal_loop_on_every_kind_of_user():
    data, max_len = hard_data(), 4
    split = common.split_dataset(data, "user-prefixes", seed=0, sequential=True, max_len=max_len)
    sequences = sequences_of(data)
    n_train, n_valid = int(0.8 * data.n_users), int(0.1 * data.n_users)
    first_test = n_train + n_valid
    for rows, part in ((split.valid, sequences[n_train:first_test]), (split.test, sequences[first_test:])):
        assert rows_by_hand(rows) == [literal_row(s[:k], s[k], max_len) for s in part for k in range(1, len(s))]


# ---------------------------------------------------------------------------------------------------------
# 4. The training loop on scripted validation scores
# ---------------------------------------------------------------------------------------------------------
def scripted(scores, ks):
    """An `evaluate` stand-in: the i-th call returns scores[i] for every metric (so for --valid-metric)."""
    calls = []

    def evaluate(model, rows, ks_, batch_size=1024, masked_score=-math.inf, per_row=False):
        calls.append({"rows": rows, "state": {k: v.clone() for k, v in model.state_dict().items()}})
        value = scores[len(calls) - 1] if len(calls) <= len(scores) else -1.0
        means = {f"{m}@{k}": value for k in ks for m in METRICS}
        return (means, {name: np.full(len(rows), value) for name in means}) if per_row else means

    return evaluate, calls


def moving_loss(model, batch, generator):
    """A loss whose every Adam step moves the batch's embeddings: each epoch ends in a new state."""
    return common.examples(model, batch).queries.pow(2).sum()


def scripted_fit(monkeypatch, tmp_path, scores, *flags):
    """common.fit on the synthetic data with MF, one batch per epoch, its validations answered by `scores`.
    Returns (record, the calls to evaluate with the model's state at each, the model after fit)."""
    args, split = common.prepare(common.base_parser("t").parse_args(
        ["--quiet", "--batch-size", "100000", "--dim", "4", "--lr", "0.01", "--out-dir", str(tmp_path), *flags]),
        "rns")
    evaluate, calls = scripted(scores, args.ks)
    monkeypatch.setattr(common, "evaluate", evaluate)
    model = common.build_backbone("mf", split, args)
    record = common.fit(args, split, model, moving_loss)
    assert all(call["rows"] is split.valid for call in calls)                      # fit never looks at test
    return record, calls, model


def same_state(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fit_restores_the_state_of_the_best_validation_epoch(monkeypatch, tmp_path):
    record, calls, model = scripted_fit(monkeypatch, tmp_path, [0.1, 0.3, 0.2, 0.25], "--epochs", "4",
                                        "--patience", "10")
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3, 4]
    assert record["best_epoch"] == 2 and record["valid"]["ndcg@10"] == 0.3
    assert not same_state(calls[1]["state"], calls[3]["state"])                     # training moved the model
    assert same_state(model.state_dict(), calls[1]["state"])                       # epoch 2's state, restored


@pytest.mark.parametrize("patience", [0, 1, 3])
def test_patience_stops_at_the_first_validation_more_than_patience_past_the_best(monkeypatch, tmp_path, patience):
    # best at validation 2; every later one is worse: validations 3 .. 3 + patience run, then the loop stops
    record, calls, _ = scripted_fit(monkeypatch, tmp_path, [0.2, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0], "--epochs", "20",
                                    "--patience", str(patience))
    assert len(record["history"]) == len(calls) == 2 + patience + 1 and record["best_epoch"] == 2


def test_an_equal_score_is_no_improvement(monkeypatch, tmp_path):
    # 0.5 again at validations 3, 4 and 5 is 3 validations without improvement, more than the patience 2
    record, calls, model = scripted_fit(monkeypatch, tmp_path, [0.2, 0.5, 0.5, 0.5, 0.5, 0.5], "--epochs", "20",
                                        "--patience", "2")
    assert len(record["history"]) == 5 and record["best_epoch"] == 2
    assert same_state(model.state_dict(), calls[1]["state"])


def test_patience_counts_validations_and_the_last_epoch_is_always_validated(monkeypatch, tmp_path):
    record, _, _ = scripted_fit(monkeypatch, tmp_path, [0.5, 0.4, 0.3], "--epochs", "20", "--eval-every", "3",
                                "--patience", "1")
    assert [h["epoch"] for h in record["history"]] == [3, 6, 9]    # the 2nd stale validation, not the 6th epoch
    record, _, _ = scripted_fit(monkeypatch, tmp_path / "b", [0.1, 0.2], "--epochs", "4", "--eval-every", "3")
    assert [h["epoch"] for h in record["history"]] == [3, 4] and record["best_epoch"] == 4


def test_test_is_evaluated_once_on_the_best_validation_epochs_state(monkeypatch, tmp_path):
    """A whole run (baselines.main): validation scores 0.1, 0.4, 0.2, 0.3; test is evaluated once, after the
    last epoch, on the state the model had when it validated at 0.4 (epoch 2), and is what the run reports."""
    evaluate, calls = scripted([0.1, 0.4, 0.2, 0.3, 0.77], ks=[5, 10, 20])
    monkeypatch.setattr(common, "evaluate", evaluate)
    result = baselines.main(["--backbone", "mf", "--dim", "4", "--epochs", "4", "--patience", "10", "--lr", "0.01",
                             "--quiet", "--out-dir", str(tmp_path)])
    valid_rows = calls[0]["rows"]
    assert [call["rows"] is valid_rows for call in calls] == [True] * 4 + [False]   # test once, after training
    assert not same_state(calls[1]["state"], calls[3]["state"])
    assert same_state(calls[4]["state"], calls[1]["state"])
    assert result["best_epoch"] == 2 and result["valid"]["ndcg@10"] == 0.4 and result["test"]["ndcg@10"] == 0.77
