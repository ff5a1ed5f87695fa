"""Pinned results: the test metrics and last training loss of short seeded runs, recorded before any speed work.

A speed change must not change results. If one of these fails, the change altered what the code computes (a
different draw order, a different reduction order that flips a DNS argmax, ...): either undo it, or, if the new
numbers are intended, re-record them consciously and say why in the commit message:

    python -c "import tests.test_pinned as t; t.record()"      # from the repository root

Runs: baselines.main for 2 epochs on the synthetic default (seed 2020), D = 16, L = 20, one intra-op thread
(thread count can change float reduction order). MF and LightGCN with RNS and DNS, SASRec with RNS and DNS(M,N).
"""
import contextlib
import io

import pytest
import torch

from baselines import main

BLOCK = {"sasrec": ["--sasrec-block", "kang"]}   # pinned before the s3rec block became the default

RUNS = {   # (backbone, sampler): last epoch's mean training loss and three test metrics
    ("mf", "rns"): dict(loss=0.6928302645683289, ndcg10=0.019307176573722475, recall20=0.09166666666666666,
                        mrr10=0.010764550264550265),
    ("mf", "dns"): dict(loss=0.7050244311491648, ndcg10=0.021740306698274328, recall20=0.09166666666666666,
                        mrr10=0.012083994708994709),
    ("lightgcn", "rns"): dict(loss=0.692740281422933, ndcg10=0.03917310374488371, recall20=0.12166666666666667,
                              mrr10=0.030977513227513225),
    ("lightgcn", "dns"): dict(loss=0.6937889953454336, ndcg10=0.03072798405782944, recall20=0.115,
                              mrr10=0.02328637566137566),
    ("sasrec", "rns"): dict(loss=0.69758312191282, ndcg10=0.029723096787446952, recall20=0.12666666666666668,
                            mrr10=0.01922089947089947),
    ("sasrec", "dnsmn"): dict(loss=1.0088587743895394, ndcg10=0.023122877440271684, recall20=0.11,
                              mrr10=0.012688492063492061),
}


def short_run(backbone: str, sampler: str, out_dir) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        result = main(["--sampler", sampler, "--backbone", backbone, "--epochs", "2", "--quiet", "--dim", "16",
                       "--max-len", "20", "--out-dir", str(out_dir)] + BLOCK.get(backbone, []))
    test = result["test"]
    return dict(loss=result["history"][-1]["loss"], ndcg10=test["ndcg@10"], recall20=test["recall@20"],
                mrr10=test["mrr@10"])


@pytest.mark.parametrize("backbone,sampler", list(RUNS))
def test_pinned_metrics(backbone, sampler, tmp_path):
    got = short_run(backbone, sampler, tmp_path)
    for name, expected in RUNS[(backbone, sampler)].items():
        assert got[name] == pytest.approx(expected, abs=1e-6), (backbone, sampler, name, got[name], expected)


def record():
    """Print the RUNS table from the current code (for a conscious update)."""
    import tempfile
    torch.set_num_threads(1)
    for backbone, sampler in RUNS:
        with tempfile.TemporaryDirectory() as out_dir:
            print(f"    ({backbone!r}, {sampler!r}): {short_run(backbone, sampler, out_dir)},")
