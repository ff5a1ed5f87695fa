"""run_all.sh and results/aggregate.py: the grid lists what it would run, and the tables say what the runs hold."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "results"))
import aggregate  # noqa: E402


def fake_run(folder, method, seed, ndcg20, dataset="beauty", split="user", backbone="sasrec", pretrain=None,
             batch_size=128):
    """A results.json with the keys common.finish writes (only those aggregate reads are meaningful)."""
    metrics = {f"{m}@{k}": ndcg20 for m in ("recall", "ndcg", "mrr", "hit", "precision") for k in (5, 10, 20)}
    run = {"method": method, "dataset": dataset, "backbone": backbone, "seed": seed,
           "config": {"split": split, "backbone": backbone, "ks": [5, 10, 20], "valid_metric": "ndcg@20",
                      "patience": 30, "eval_every": 1, "epochs": 2, "mask_history": True, "min_rating": None,
                      "k_core": None, "dim": 64, "layers": 2, "heads": 2, "max_len": 50, "dropout": 0.5,
                      "loss": "bce", "lr": 1e-3, "batch_size": batch_size},
           "data": {"users": 10, "items": 20, "interactions": 100},
           "history": [{"epoch": e, "seconds": float(e), "valid": metrics} for e in (1, 2)],
           "epoch_seconds": [1.0, 3.0], "test": metrics}
    if pretrain is not None:
        run["pretrain"] = {"record": {"epoch_seconds": pretrain}}
    path = os.path.join(folder, f"{method}-{seed}")
    os.makedirs(path)
    with open(os.path.join(path, "results.json"), "w") as f:
        json.dump(run, f)


def test_aggregate_mean_std_paper_values_and_epochs(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    fake_run(runs, "rns", 1, 0.10)
    fake_run(runs, "rns", 2, 0.20)
    fake_run(runs, "icpns", 1, 0.30, pretrain=[5.0, 5.0, 5.0], batch_size=130)
    sys.argv = ["aggregate.py", "--runs", str(runs), "--out", str(out), "--no-plots"]
    aggregate.main()
    text = (out / "RESULTS.md").read_text()
    rns = next(line for line in text.splitlines() if line.startswith("| RNS |"))
    assert "| 2 |" in rns and "0.1500 ± 0.0707 (paper 0.0435)" in rns           # NDCG@20, MDCNS Table 3
    assert rns.endswith("| 2.00 | 2 |")                                            # median s/epoch, epochs run
    icpns = next(line for line in text.splitlines() if line.startswith("| ICPNS |"))
    assert "paper" not in icpns and "0.3000" in icpns and icpns.endswith("| 3 + 2 |")
    assert "epochs actually run 2–5" in text                                      # ICPNS: 3 pre-training + 2
    assert "MDCNS paper, Table 3" in text
    assert ("Backbone sasrec (D = 64, layers 2, heads 2, L = 50, dropout 0.5); BCE loss, Adam lr 0.001, "
            "128/130 sequences per batch.") in text                                    # distinct values, joined


def test_run_all_dry_run_lists_the_quick_grid(tmp_path):
    (tmp_path / "quick" / "synthetic-user-sasrec-rns-s1").mkdir(parents=True)
    (tmp_path / "quick" / "synthetic-user-sasrec-rns-s1" / "results.json").write_text("{}")
    result = subprocess.run(["bash", os.path.join(ROOT, "run_all.sh"), "--quick", "--dry-run", "--runs",
                             str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    todo = [line for line in lines if line.startswith("todo")]
    assert [line for line in lines if line.startswith("done")] == [
        f"done  {tmp_path}/quick/synthetic-user-sasrec-rns-s1"]                       # resumable: skipped
    assert len(todo) == 6 and sum("mdcns.py" in line for line in todo) == 1
    assert all("--pretrain-epochs" not in line for line in todo if "icpns.py" not in line)


def test_run_all_rejects_an_unknown_option():
    result = subprocess.run(["bash", os.path.join(ROOT, "run_all.sh"), "--bogus"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: unknown option --bogus")


def test_aggregate_reads_runs_with_and_without_provenance(tmp_path):
    """results.json gained command, versions, git_commit, data_file, data_sha256; the committed older runs in
    results/runs lack them, and both kinds go into one table."""
    from baselines import main
    runs, out = tmp_path / "runs", tmp_path / "out"
    fake_run(runs, "rns", 1, 0.10, dataset="synthetic", split="user")
    new = main(["--backbone", "sasrec", "--split", "user", "--epochs", "1", "--dim", "16", "--quiet",
                "--valid-metric", "ndcg@20", "--out-dir", str(runs / "rns-2")])
    assert "git_commit" in new and "data_sha256" in new
    sys.argv = ["aggregate.py", "--runs", str(runs), "--out", str(out), "--no-plots"]
    aggregate.main()
    rns = next(line for line in (out / "RESULTS.md").read_text().splitlines() if line.startswith("| RNS |"))
    assert "| 2 |" in rns                                                          # both seeds in one row
