"""Per-row test results (test_rows.npz) and the paired, seed-stratified bootstrap of results/aggregate.py."""
import contextlib
import io
import os
import sys

import numpy as np
import pytest

import baselines

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results"))
import aggregate  # noqa: E402


def short_run(sampler, seed, out_dir):
    with contextlib.redirect_stdout(io.StringIO()):
        return baselines.main(["--sampler", sampler, "--backbone", "sasrec", "--epochs", "1", "--quiet", "--dim", "8",
                               "--max-len", "10", "--seed", str(seed), "--out-dir", str(out_dir)])


def test_every_run_writes_its_test_rows_whose_means_are_its_test_metrics(tmp_path):
    result = short_run("rns", 1, tmp_path / "rns")
    with np.load(tmp_path / "rns" / "test_rows.npz") as rows:
        assert sorted(rows.files) == sorted(["fingerprint"] + [f"{m}@{k}" for m in ("recall", "ndcg")
                                                               for k in result["config"]["ks"]])
        for name in set(rows.files) - {"fingerprint"}:
            assert len(rows[name]) == result["data"]["test_rows"]
            assert rows[name].mean() == pytest.approx(result["test"][name], abs=1e-12)
        fingerprint = str(rows["fingerprint"])
    short_run("dns", 1, tmp_path / "dns")            # another method, the same seed: the same test rows
    with np.load(tmp_path / "dns" / "test_rows.npz") as rows:
        assert str(rows["fingerprint"]) == fingerprint


def test_bootstrap_of_a_constant_difference_is_that_constant_with_the_smallest_p():
    estimate, low, high, p = aggregate.stratified_bootstrap([np.full(50, 0.25), np.full(30, 0.25)], resamples=999)
    assert (estimate, low, high) == (0.25, 0.25, 0.25)
    assert p == 1 / 1000


def test_two_identical_methods_give_an_interval_containing_zero():
    rows = np.random.default_rng(3).random(200)
    estimate, low, high, p = aggregate.stratified_bootstrap([rows - rows, rows - rows])
    assert estimate == 0 and low <= 0 <= high and p == 1
    # ... and so do two methods whose rows are a permutation of the same values (no real difference)
    other = np.random.default_rng(4).permutation(rows)
    estimate, low, high, p = aggregate.stratified_bootstrap([rows - other])
    assert low <= 0 <= high and p > 0.05


def test_bootstrap_interval_matches_the_normal_theory_of_a_known_case():
    """400 rows, 300 differences of +1 and 100 of -1: mean 0.5, population variance 0.75, so the mean's standard
    error is sqrt(0.75 / 400) = 0.0433 and the 95 % interval about 0.5 -+ 1.96 * 0.0433 = [0.415, 0.585]; two
    strata of it: the mean of the two means, standard error divided by sqrt(2)."""
    d = np.array([1.0] * 300 + [-1.0] * 100)
    estimate, low, high, p = aggregate.stratified_bootstrap([d])
    assert estimate == 0.5
    assert low == pytest.approx(0.5 - 1.96 * 0.0433, abs=0.01) and high == pytest.approx(0.5 + 1.96 * 0.0433,
                                                                                          abs=0.01)
    assert p == 1 / 10_001
    estimate, low, high, _ = aggregate.stratified_bootstrap([d, d - 0.5])   # seed means 0.5 and 0.0
    assert estimate == 0.25
    assert high - low == pytest.approx(2 * 1.96 * 0.0433 / 2 ** 0.5, rel=0.1)


def fake_run(folder, method, seed, values, fingerprint="f", config=None):
    os.makedirs(folder, exist_ok=True)
    run = {"method": method, "seed": seed, "backbone": "sasrec", "dataset": "beauty",
           "config": {"split": "user", **(config or {})}, "path": os.path.join(folder, "results.json")}
    np.savez_compressed(os.path.join(folder, "test_rows.npz"), fingerprint=np.array(fingerprint),
                        **{"recall@10": np.asarray(values, float), "ndcg@10": np.asarray(values, float) / 2})
    return run


def test_paired_pairs_rows_of_the_same_seed_and_split_only(tmp_path):
    a = [fake_run(tmp_path / "a1", "mdcns", 1, [1, 0, 1]), fake_run(tmp_path / "a2", "mdcns", 2, [1, 1, 1]),
         fake_run(tmp_path / "a3", "mdcns", 3, [0, 0, 0], fingerprint="other split")]
    b = [fake_run(tmp_path / "b1", "dnsmn", 1, [0, 0, 1]), fake_run(tmp_path / "b2", "dnsmn", 2, [1, 0, 0]),
         fake_run(tmp_path / "b3", "dnsmn", 3, [1, 1, 1])]
    estimate, low, high, p, seeds = aggregate.paired(a, b, "recall@10", resamples=200)
    assert seeds == [1, 2]                                   # seed 3's rows are another split's: not paired
    assert estimate == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert aggregate.paired(a[2:], b[2:], "recall@10") is None


def test_ablation_and_peer_runs_are_rows_of_their_own():
    run = {"method": "mdcns", "backbone": "sasrec", "config": {"peer": "mamba4rec", "distillation": True}}
    assert aggregate.method_variant(run) == "mdcns"
    run["config"] = {"peer": "mamba4rec", "distillation": False, "divergence": False}
    assert aggregate.method_variant(run) == "mdcns-no-cd-dr"
    run["config"] = {"peer": "gru4rec"}
    assert aggregate.method_variant(run) == "mdcns-gru4rec-peer"
    assert aggregate.method_variant({"method": "mdcns", "backbone": "mamba4rec", "config": {"peer": "sasrec"}}) \
        == "mdcns"


def test_the_ablation_grids_dns_plus_at_the_official_m_is_paired_as_a_row_apart():
    dnsmn = {"method": "dnsmn", "backbone": "sasrec", "config": {"top_m": 10}}
    assert aggregate.paired_row({**dnsmn, "grid": "ablation"}) == "dnsmn-m10"
    assert aggregate.paired_row({**dnsmn, "grid": "table3-paired"}) == "dnsmn"
    assert aggregate.paired_row({"method": "mdcns", "backbone": "sasrec", "grid": "ablation",
                                 "config": {"distillation": False}}) == "mdcns-no-cd"


def test_a_bpr_row_is_set_beside_table_5_and_a_bce_row_beside_table_3():
    key = ("beauty", "user", "sasrec", "table5")
    bpr, bce = [{"config": {"loss": "bpr"}}], [{"config": {"loss": "bce"}}]
    assert aggregate.paper_cell(key, "rns", bpr)["recall@10"] == 0.0657                     # Table 5
    assert aggregate.paper_cell(key, "rns", bce)["recall@10"] == 0.0612                     # Table 3
    assert aggregate.paper_cell(key, "mixgcf", bpr)["recall@10"] == 0.0550                  # no Table 5 row
    assert aggregate.paper_table(key, "mdcns", bpr) == "Table 5"
    assert aggregate.paper_table(("sports", "user", "linrec", "table4"), "mdcns", bce) == "Table 4"
