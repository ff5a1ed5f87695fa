"""run_all.sh and results/aggregate.py: the grid lists what it would run, and the tables say what the runs hold."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "results"))
import aggregate  # noqa: E402


def fake_run(folder, method, seed, ndcg20, dataset="beauty", split="user", backbone="sasrec", pretrain=None,
             batch_size=128, exclude_held_out=None):
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
    if exclude_held_out is not None:   # runs written before --exclude-held-out existed have no such key
        run["config"]["exclude_held_out"] = exclude_held_out
    path = os.path.join(folder, f"{method}-{seed}{'-leak' * bool(exclude_held_out)}")
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
    assert ("Backbone sasrec (kang block, D = 64, layers 2, heads 2, L = 50, dropout 0.5); BCE loss, Adam lr 0.001, "
            "128/130 sequences per batch.") in text                                    # distinct values, joined


def test_run_all_dry_run_lists_the_quick_grid(tmp_path):
    (tmp_path / "quick" / "synthetic-user-sasrec-rns-s1").mkdir(parents=True)
    (tmp_path / "quick" / "synthetic-user-sasrec-rns-s1" / "results.json").write_text("{}")
    result = subprocess.run(["bash", os.path.join(ROOT, "run_all.sh"), "--quick", "--dry-run", "--runs",
                             str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    todo = [line for line in lines if line.startswith("todo")]
    assert [line for line in lines if line.startswith("done")] == [                   # resumable: skipped
        f"done  python baselines.py --sampler rns --dataset synthetic --data-dir data --split user --backbone sasrec "
        f"--seed 1 --quiet --out-dir {tmp_path}/quick/synthetic-user-sasrec-rns-s1 --epochs 3 --dim 16 --max-len 20"]
    assert len(todo) == 6 and sum("mdcns.py" in line for line in todo) == 1
    assert all("--pretrain-epochs" not in line for line in todo if "icpns.py" not in line)


def quick_rns_run(runs, **config):
    folder = runs / "quick" / "synthetic-user-sasrec-rns-s1"
    folder.mkdir(parents=True)
    config = {"sampler": "rns", "dataset": "synthetic", "split": "user", "backbone": "sasrec", "seed": 1,
              "epochs": 3, "dim": 16, "max_len": 20, **config}
    (folder / "results.json").write_text(json.dumps({"config": config}))


@pytest.mark.parametrize("config, differences", [
    ({}, []),
    ({"epochs": 300, "max_len": 50}, ["--epochs: ran 300, grid 3", "--max-len: ran 50, grid 20"])])
def test_run_all_check_names_the_flags_a_done_run_ran_with_that_its_grid_line_no_longer_gives(
        tmp_path, config, differences):
    quick_rns_run(tmp_path, **config)
    result = subprocess.run(["bash", os.path.join(ROOT, "run_all.sh"), "--quick", "--check", "--runs",
                             str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == (1 if differences else 0), result.stderr
    expected = [f"{tmp_path}/quick/synthetic-user-sasrec-rns-s1: " + "; ".join(differences)] if differences else []
    assert result.stdout.splitlines() == expected + [
        f"1 done runs checked, {len(expected)} ran with flags their grid line no longer gives"]


def test_every_committed_run_ran_with_the_flags_its_grid_line_gives():
    result = subprocess.run(["bash", os.path.join(ROOT, "run_all.sh"), "--check"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_run_all_rejects_an_unknown_option():
    result = subprocess.run(["bash", os.path.join(ROOT, "run_all.sh"), "--bogus"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: unknown option --bogus")


@pytest.mark.parametrize("flag, value", [("--grid", "tabel3"), ("--dataset", "beuaty"), ("--method", "mixgfc")])
def test_run_all_rejects_a_filter_no_grid_line_has(tmp_path, flag, value):
    result = subprocess.run(["bash", os.path.join(ROOT, "run_all.sh"), "--dry-run", "--runs", str(tmp_path), flag,
                             value], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"error: no grid line has {flag[2:]} {value} (see --help for the grids; --dry-run lists " \
                            "the runs)\n"


def test_run_all_leak_grid_names_the_leak_runs_and_reuses_icpns_pretraining(tmp_path):
    result = subprocess.run(["bash", os.path.join(ROOT, "run_all.sh"), "--dry-run", "--grid", "icpns-leak", "--runs",
                             str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    todo = [line for line in result.stdout.splitlines() if line.startswith("todo")]
    assert len(todo) == 2 * 4 * 2 * 3                          # backbones x methods x {clean, leak} x seeds
    leak = [line for line in todo if "--exclude-held-out" in line]
    assert len(leak) == 24 and all("-leak-s" in line for line in leak)
    assert not any("-leak-s" in line for line in todo if line not in leak)
    icpns_leak = [line for line in leak if "icpns.py" in line]
    assert len(icpns_leak) == 6 and all(
        f"--pretrained {tmp_path}/icpns-leak/ml-100k-ratio-{b}-icpns-s{s}/pretrained.pt" in " ".join(icpns_leak)
        for b in ("lightgcn", "mf") for s in (1, 2, 3))
    for line in icpns_leak:                                    # the clean run that writes the checkpoint comes first
        clean = line.split("--pretrained ")[1].split("/pretrained.pt")[0]
        assert todo.index(next(t for t in todo if f"--out-dir {clean} " in t)) < todo.index(line)
    assert not any("--pretrained" in line for line in todo if "baselines.py" in line)


def test_aggregate_held_out_rows_side_by_side_and_one_table_per_grid(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    fake_run(runs / "mdcns-beauty", "rns", 1, 0.50)          # same protocol, an older grid (no suffix)
    for seed, (clean, leak) in enumerate([(0.10, 0.30), (0.20, 0.40)], start=1):
        fake_run(runs / "leak-grid", "rns", seed, clean, exclude_held_out=False)
        fake_run(runs / "leak-grid", "rns", seed, leak, exclude_held_out=True)
    fake_run(runs / "leak-grid", "mdcns", 1, 0.60, exclude_held_out=True)
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "beauty-user-sasrec-leak-grid.md").write_text("NOTE OF THE LEAK GRID")
    sys.argv = ["aggregate.py", "--runs", str(runs), "--out", str(out), "--no-plots"]
    aggregate.main()
    text = (out / "RESULTS.md").read_text()
    sections = text.split("\n## ")[1:]
    assert [section.splitlines()[0] for section in sections] == [
        "beauty · `user` split · sasrec · grid `leak-grid`, with held-out items excluded",
        "beauty · `user` split · sasrec"]                                         # one table per grid
    new, old = sections
    assert "0.5000" in old and "0.1500" not in old and "NOTE OF THE LEAK GRID" not in old
    main_table, side_by_side = new.split("Each method side by side:")
    rows = {line.split(" |")[0]: line for line in main_table.splitlines() if line.startswith("| ")}
    assert "0.1500 ± 0.0707 (paper 0.0435)" in rows["| RNS"]                     # clean: the paper beside it
    assert "0.3500 ± 0.0707" in rows["| RNS (held-out excluded)"] and "paper" not in rows["| RNS (held-out excluded)"]
    assert list(rows)[-3:] == ["| RNS", "| RNS (held-out excluded)", "| MDCNS (held-out excluded)"]
    assert "| RNS | 0.1500 ± 0.0707 | 0.3500 ± 0.0707 | +0.2000 |" in side_by_side        # recall@5 clean, leak, Δ
    assert "| MDCNS | – | 0.6000 | – | – | 0.6000 | – |" in side_by_side and "NOTE OF THE LEAK GRID" in new


def sweep_run(folder, m, valid_by_epoch, test):
    """A dnsplus-sweep results.json: DNS(M, 100) with the given validation NDCG@20 per epoch."""
    run = {"method": "dnsmn", "dataset": "beauty", "backbone": "sasrec", "seed": 42,
           "config": {"top_m": m, "candidates": 100, "valid_metric": "ndcg@20", "epochs": len(valid_by_epoch)},
           "history": [{"epoch": e + 1, "valid": {"ndcg@20": v}} for e, v in enumerate(valid_by_epoch)],
           "epoch_seconds": [1.0] * len(valid_by_epoch), "test": {"ndcg@20": test}}
    os.makedirs(os.path.join(folder, f"m{m}"))
    with open(os.path.join(folder, f"m{m}", "results.json"), "w") as f:
        json.dump(run, f)


def test_dns_plus_m_is_chosen_on_validation_not_test(tmp_path, capsys):
    sweep_run(tmp_path, 1, [0.01, 0.02], test=0.09)       # the best test value: never the choice
    sweep_run(tmp_path, 5, [0.03, 0.02], test=0.01)       # best validation 0.03 at epoch 1
    sweep_run(tmp_path, 10, [0.01, 0.03], test=0.02)      # ties 0.03: the smaller M wins
    runs = aggregate.load_runs(str(tmp_path))
    assert aggregate.best_m(runs) == 5
    table = aggregate.sweep_table(runs)
    assert "| 5 (chosen) | 0.0300 | 1 | 2 | 0.0100 |" in table and "| 10 | 0.0300 | 2 | 2 | 0.0200 |" in table
    for size, printed in ((3, "5\n"), (4, "")):            # nothing until the whole sweep is done
        sys.argv = ["aggregate.py", "--best-m", str(tmp_path), "--dataset", "beauty", "--sweep-size", str(size)]
        aggregate.main()
        assert capsys.readouterr().out == printed


def test_each_sweep_grid_gets_its_table_under_table3(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    fake_run(runs / "table3", "rns", 42, 0.05)
    sweep_run(runs / "dnsplus-sweep", 5, [0.03, 0.02], test=0.01)
    sweep_run(runs / "dnsplus-sweep", 10, [0.01, 0.04], test=0.02)
    sweep_run(runs / "gnno-sweep", 3, [0.02, 0.05], test=0.03)
    sys.argv = ["aggregate.py", "--runs", str(runs), "--out", str(out), "--no-plots"]
    aggregate.main()
    text = (out / "RESULTS.md").read_text()
    assert text.count("\n## ") - text.count("\n## Summary") == 1                      # sweeps are not tables
    assert "| Table 3 | beauty · sasrec | RNS | `table3` | 1 |" in text                 # the summary's one cell
    dns_plus, gnno = text.split("DNS+'s M, chosen on validation (grid `dnsplus-sweep`")[1].split(
        "GNNO's M, chosen on validation (grid `gnno-sweep`")
    assert "| 10 (chosen) | 0.0400 | 2 | 2 | 0.0200 |" in dns_plus and "| 3 (chosen) |" not in dns_plus
    assert "| 3 (chosen) | 0.0500 | 2 | 2 | 0.0300 |" in gnno and "MixGCF+" not in text


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
    hardware = next(line for line in (out / "RESULTS.md").read_text().splitlines() if "Hardware:" in line)
    assert new["machine"]["cpu"] in hardware and "not recorded for 1 run(s)" in hardware      # the old run


def test_official_selection_reads_the_self_model_of_each_section():
    """results/official_selection.py: validation and test lines of MDCNS_Code/main.py's logs, by section, self model
    only (Model 2 and the ensemble are ignored), and the final best-validation test line."""
    import official_selection
    line = "{{'Epoch': {e}, 'HIT@10': '{h}', 'NDCG@10': '0.1', 'NDCG@20': '{n}'}}"
    log = "\n".join([
        "-" * 30 + " Validation for Epoch 0 " + "-" * 30, line.format(e=0, h=0.5, n=0.9),   # a bare line: not read
        "Model 1 (SASRec) Results: " + line.format(e=0, h=0.2, n=0.15),
        "Model 2 (Mamba4Rec) Results: " + line.format(e=0, h=0.3, n=0.30),
        "-" * 30 + " Test for Epoch 0 " + "-" * 30,
        "Model 1 (SASRec) Results: " + line.format(e=0, h=0.19, n=0.12),
        "-" * 30 + " Validation for Epoch 1 " + "-" * 30 + "\rprogress",
        "Model 1 (SASRec) Results: " + line.format(e=1, h=0.21, n=0.14),
        "-" * 30 + " Best Validation Scores for Test " + "-" * 30, line.format(e=0, h=0.19, n=0.12)])
    runs = official_selection.parse_log(log)
    assert {e: m["NDCG@20"] for e, m in runs["valid"].items()} == {0: "0.15", 1: "0.14"}
    assert runs["test"][0]["HIT@10"] == "0.19" and 1 not in runs["test"]
    assert runs["final"] == {"Epoch": 0, "HIT@10": "0.19", "NDCG@10": "0.1", "NDCG@20": "0.12"}
    assert official_selection.validation_curve(runs) == [(1, 0.15), (2, 0.14)]      # epochs from 1, as ours


def test_official_selection_names_dataset_self_model_and_grid_point_of_each_log():
    """The logs read: Table 3's (TEST_KD), Table 4's (EXP2_BCE), Table 5's (EXP2_BPR) and Table 7's
    (Exp6_WeaktoStrong), each named <dataset>-<self>-<peer>_..._l<gamma>_..._kdt<tau>_...; no other folder."""
    import official_selection
    tail = "_a1.0_b1.0_l{}_dwsb1.0_t0.0_k1_N100_kdt{}_kdg0.01.log"
    name = official_selection.NAME
    table3 = name.match("MDCNS_Code/TEST_KD/Sports_and_Outdoors-SASRec-Mamba4Rec" + tail.format(3.0, 1.0))
    table4 = name.match("MDCNS_Code/EXP2_BCE/Beauty-FMLPRecModel-Mamba4Rec" + tail.format(1.5, 0.7))
    table5 = name.match("MDCNS_Code/EXP2_BPR/Beauty-Mamba4Rec-SASRec" + tail.format(3.5, 0.7))
    table7 = name.match("MDCNS_Code/Exp6_WeaktoStrong/LastFM-SASRec-GRU4Rec" + tail.format(3.5, 10.0))
    assert (table3["dataset"], table3["backbone"], table3["gamma"], table3["tau"]) == \
        ("Sports_and_Outdoors", "SASRec", "3.0", "1.0")
    assert (table4["dataset"], table4["backbone"], table4["gamma"], table4["tau"]) == \
        ("Beauty", "FMLPRecModel", "1.5", "0.7")
    assert (table5["folder"], table5["backbone"], table5["peer"]) == ("EXP2_BPR", "Mamba4Rec", "SASRec")
    assert (table7["folder"], table7["dataset"], table7["peer"], table7["tau"]) == \
        ("Exp6_WeaktoStrong", "LastFM", "GRU4Rec", "10.0")
    assert name.match("MDCNS_Code/output/Beauty-SASRec-Mamba4Rec" + tail.format(1.0, 1.0)) is None
    assert ("EXP2_BCE", "Beauty", "Linrec") in official_selection.PUBLISHED          # Table 4 rows have their cell
    assert ("Exp6_WeaktoStrong", "Beauty", "SASRec") in official_selection.PUBLISHED


def test_row_names_give_the_top_m_of_n_of_every_sampler_that_has_one():
    runs = [{"config": {"top_m": 4, "candidates": 100}}, {"config": {"top_m": 4, "candidates": 100}}]
    assert aggregate.row_name(("mixgcfmn", False), runs) == "MixGCF+ (M = 4, N = 100)"
    assert aggregate.row_name(("gnno", False), runs) == "GNNO (M = 4, N = 100)"
    assert aggregate.row_name(("dnsmn", True), runs) == "DNS(M,N) (M = 4, N = 100)" + aggregate.HELD_OUT
    assert aggregate.row_name(("mixgcf", False), runs) == "MixGCF (N = 100)"
    assert aggregate.row_name(("adasir", False), runs) == "AdaSIR"
