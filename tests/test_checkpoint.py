"""Checkpoints, --resume, model.pt, --eval-only and results.json's provenance.

A run stopped by SIGTERM and resumed with --resume must end with exactly the metrics of the uninterrupted run: the
tests stop each method file's runs at chosen batches (a SIGTERM sent to this process when the batch is drawn, so the
stop point is exact) and compare every validation, the best epoch and the test metrics. One test stops a real
subprocess and runs the resume command it prints.
"""
import contextlib
import hashlib
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import baselines
import common
import icpns
import mdcns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--quiet", "--dim", "16", "--max-len", "20"]
RUNS = {   # method file, flags: tiny synthetic runs of a few seconds
    "baselines": (baselines.main, ["--sampler", "dnsmn", "--backbone", "sasrec", "--candidates", "20",
                                   "--epochs", "3", *TINY]),
    **{sampler: (baselines.main, ["--sampler", sampler, "--backbone", "sasrec", "--candidates", "40", "--epochs", "3",
                                  *TINY]) for sampler in ("adasir", "gnno", "srns")},   # a state across steps
    "warm-up": (baselines.main, ["--sampler", "dns", "--backbone", "sasrec", "--uniform-epochs", "1",
                                 "--epochs", "3", *TINY]),                            # the epoch across a resume
    "icpns": (icpns.main, ["--backbone", "mf", "--batch-size", "4096", "--epochs", "3", "--pretrain-epochs", "3",
                           "--recluster-every", "1",
                           *TINY]),
    "mdcns": (mdcns.main, ["--peer", "gru4rec", "--layers", "1", "--n-candidates", "20", "--top-m", "2",
                           "--epochs", "2", *TINY]),
}


def quietly(main, argv):
    with contextlib.redirect_stdout(io.StringIO()):
        return main(argv)


def stop_at(monkeypatch, batch: int):
    """SIGTERM to this process as training batch number `batch` (counted over the whole run) is drawn."""
    batches, count = common.training_batches, itertools.count(1)

    def counted(*args, **kwargs):
        for item in batches(*args, **kwargs):
            if next(count) == batch:
                os.kill(os.getpid(), signal.SIGTERM)
            yield item

    monkeypatch.setattr(common, "training_batches", counted)


def outcome(result: dict) -> dict:
    """Everything a run computes, without its timings."""
    out = {"test": result["test"], "valid": result["valid"], "best_epoch": result["best_epoch"],
           "history": [(h["stage"], h["epoch"], h["loss"], h["valid"]) for h in result["history"]]}
    if "peer" in result:
        out["peer"] = result["peer"]
    if "communities" in result:
        out["communities"] = result["communities"]["sizes"]
        out["reclusterings"] = [(r["before_epoch"], r["sizes"]) for r in result["reclusterings"]]
        record = result["pretrain"]["record"]
        out["pretrain"] = (record["best_epoch"], [(h["epoch"], h["loss"], h["valid"]) for h in record["history"]])
    return out


def stopped_and_resumed(monkeypatch, main, argv, batches):
    """Stop the run at each batch of `batches` in turn (each counted from the start of its call: the first run, then
    the resumed ones), then let it finish."""
    for batch in batches:
        stop_at(monkeypatch, batch)
        with pytest.raises(common.Interrupted) as stopped:
            quietly(main, argv + (["--resume"] if batch != batches[0] else []))
        monkeypatch.undo()
        assert stopped.value.signum == signal.SIGTERM and "resume with:" in str(stopped.value)
        out_dir = argv[argv.index("--out-dir") + 1]
        assert os.path.isfile(os.path.join(out_dir, "checkpoint.pt"))
        assert not os.path.exists(os.path.join(out_dir, "results.json"))
    return quietly(main, argv + ["--resume"])


@pytest.mark.parametrize("name, batches", [
    ("baselines", [10]),         # mid-epoch 2 (7 batches per epoch)
    ("baselines", [7, 8]),       # the last batch of epoch 1, then the first of epoch 3: stopped twice
    ("adasir", [10]),            # mid-epoch 2: the pools of epoch 2's start must come back
    ("gnno", [10]),
    ("srns", [10]),              # memories, variance sets and the score history
    ("warm-up", [5, 10]),        # in uniform epoch 1, then mid-epoch 2 (DNS): the resumed epoch must be 2
    ("icpns", [4]),              # pre-training, mid-epoch 2 (3 batches per epoch, 3 epochs)
    ("icpns", [14]),             # fine-tuning epoch 2, after its reclustering
    ("mdcns", [3]),              # mid-epoch 1 of 2
])
def test_a_stopped_run_resumed_equals_the_uninterrupted_run(monkeypatch, tmp_path, name, batches):
    main, argv = RUNS[name]
    whole = quietly(main, argv + ["--out-dir", str(tmp_path / "whole")])
    resumed = stopped_and_resumed(monkeypatch, main, argv + ["--out-dir", str(tmp_path / "cut")], batches)
    assert outcome(resumed) == outcome(whole)
    saved = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert outcome(saved) == outcome(json.loads((tmp_path / "whole" / "results.json").read_text()))
    assert sorted(os.listdir(tmp_path / "cut")) == sorted(os.listdir(tmp_path / "whole"))   # no checkpoint left


def test_the_stop_points_fall_where_the_tests_say(tmp_path):
    """The batch counts behind the stop points above (a changed default would silently move them)."""
    args, split = common.prepare(common.base_parser("t").parse_args(
        ["--backbone", "sasrec", *TINY, "--out-dir", str(tmp_path / "s")]), "rns")
    assert -(-len(split.train_sequences) // args.batch_size) == 7
    args, split = common.prepare(common.base_parser("t").parse_args(
        ["--backbone", "mf", "--split", "ratio", "--batch-size", "4096", "--seed", "2026", *TINY,
         "--out-dir", str(tmp_path / "m")]), "icpns")
    assert -(-len(split.train_user) // args.batch_size) == 3


def test_sigterm_to_a_real_run_prints_the_resume_command_and_it_finishes_the_run(tmp_path):
    argv = ["--sampler", "rns", "--backbone", "sasrec", "--epochs", "5", *TINY]
    out_dir = str(tmp_path / "cut")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "baselines.py", *argv, "--out-dir", out_dir], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("train epoch   1"):
            process.send_signal(signal.SIGTERM)
            break
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    notice, last = stderr.splitlines()
    assert notice == "SIGTERM: finishing the current step, then saving a checkpoint (send it again to stop at once)"
    assert last.startswith("interrupted by SIGTERM: train stopped after")
    command = re.search(r"resume with: (.*)$", stderr).group(1)
    resumed = subprocess.run(command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    whole = quietly(baselines.main, argv + ["--out-dir", str(tmp_path / "whole")])
    with open(os.path.join(out_dir, "results.json")) as f:
        assert outcome(json.load(f)) == outcome(whole)


@pytest.mark.parametrize("signals", [(signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGTERM)])
def test_the_same_signal_twice_stops_at_once(tmp_path, monkeypatch, signals):
    """Ctrl-C twice stops at once; Ctrl-C then run_all.sh's SIGTERM still waits for the step and saves."""
    main, argv = RUNS["baselines"]
    batches = common.training_batches

    def signalled(*args, **kwargs):
        for item in batches(*args, **kwargs):
            for signum in signals:
                os.kill(os.getpid(), signum)
            yield item

    monkeypatch.setattr(common, "training_batches", signalled)
    with pytest.raises(common.Interrupted) as stopped:
        quietly(main, argv + ["--out-dir", str(tmp_path)])
    if signals[0] == signals[1]:
        assert "SIGTERM again: stopped at once" in str(stopped.value)
        assert not (tmp_path / "checkpoint.pt").exists()               # stopped before any step: nothing saved
    else:
        assert "train stopped after 0 epochs and 1 batches" in str(stopped.value)
        assert stopped.value.signum == signal.SIGINT and (tmp_path / "checkpoint.pt").exists()


def test_resume_refuses_what_would_not_continue_the_same_run(tmp_path, monkeypatch):
    main, argv = RUNS["baselines"]
    out = ["--out-dir", str(tmp_path / "run")]
    with pytest.raises(common.RecError, match="no folder"):
        quietly(main, argv + out + ["--resume"])
    stop_at(monkeypatch, 2)
    with pytest.raises(common.Interrupted):
        quietly(main, argv + out)
    monkeypatch.undo()
    with pytest.raises(common.RecError, match="holds the checkpoint of an unfinished run: add --resume"):
        quietly(main, argv + out)
    with pytest.raises(common.RecError, match=r"other settings.*--lr 0.01 \(the run's: 0.001\)"):
        quietly(main, argv + out + ["--resume", "--lr", "0.01"])
    with pytest.raises(common.RecError, match="needs --out-dir"):
        quietly(main, argv + ["--resume"])
    # a run started before a flag existed did not record it: off (here --uniform-epochs 0) resumes it, on does not
    run_file = tmp_path / "run" / "run.json"
    saved = json.loads(run_file.read_text())
    del saved["config"]["uniform_epochs"]
    run_file.write_text(json.dumps(saved))
    with pytest.raises(common.RecError, match=r"--uniform-epochs 2 \(the run's: None\)"):
        quietly(main, argv + out + ["--resume", "--uniform-epochs", "2"])
    quietly(main, argv + out + ["--resume", "--eval-batch-size", "1024"])      # the same value: accepted
    with pytest.raises(common.RecError, match="the run has finished"):
        quietly(main, argv + out + ["--resume"])


@pytest.mark.parametrize("name", ["baselines", "icpns", "mdcns"])
def test_model_pt_rebuilds_the_model_and_eval_only_gives_its_metrics(tmp_path, name):
    main, argv = RUNS[name]
    trained = quietly(main, argv + ["--out-dir", str(tmp_path / "run")])
    model_file = str(tmp_path / "run" / "model.pt")
    saved = torch.load(model_file, weights_only=True)
    assert saved["config"] == trained["config"] and saved["best_epoch"] == trained["best_epoch"]
    if name == "mdcns":
        assert any(key.startswith("peer.") for key in saved["state_dict"])                 # the peer is saved too
    # flags that change the model are taken from model.pt, not from the command line
    evaluated = quietly(main, ["--eval-only", model_file, "--dim", "8", "--seed", "7", "--quiet",
                               "--out-dir", str(tmp_path / "eval")])
    assert evaluated["test"] == trained["test"] and evaluated["valid"] == trained["valid"]
    assert evaluated["config"]["eval_only"] == model_file and evaluated["history"] == []
    if name == "mdcns":
        assert evaluated["peer"]["test"] == trained["peer"]["test"]
    written = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert written["test"] == trained["test"] and not (tmp_path / "eval" / "model.pt").exists()


def test_eval_only_rejects_a_model_of_another_script(tmp_path):
    quietly(baselines.main, RUNS["baselines"][1] + ["--out-dir", str(tmp_path / "run")])
    with pytest.raises(common.RecError, match="written by another script"):
        quietly(icpns.main, ["--eval-only", str(tmp_path / "run" / "model.pt"), "--out-dir", str(tmp_path / "e")])
    with pytest.raises(common.RecError, match="no such file"):
        quietly(baselines.main, ["--eval-only", str(tmp_path / "missing.pt"), "--out-dir", str(tmp_path / "e")])


def test_provenance_keys(tmp_path, monkeypatch):
    result = quietly(baselines.main, ["--backbone", "mf", "--epochs", "1", *TINY, "--out-dir", str(tmp_path / "s")])
    assert result["command"][0].endswith("baselines.py") and result["command"][1:3] == ["--backbone", "mf"]
    assert set(result["versions"]) == {"python", "torch", "numpy"}
    assert result["machine"]["cores"] == os.cpu_count() and result["machine"]["gpu"] is None   # CPU run
    assert result["machine"]["torch_threads"] == torch.get_num_threads() and result["machine"]["cpu"]
    assert result["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()   # e.g. AVX2, AVX512
    assert result["data_file"] is None and result["data_sha256"] is None                     # synthetic
    inside = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert result["git_commit"] == (inside.stdout.strip() if inside.returncode == 0 else None)
    csv = tmp_path / "mine.csv"
    rows = [f"{u},{i},5" for u in range(30) for i in range((u * 7) % 11, (u * 7) % 11 + 12)]
    csv.write_text("user,item,rating\n" + "\n".join(rows) + "\n")
    for run in ("first", "from-cache"):
        result = quietly(baselines.main, ["--dataset", str(csv), "--data-dir", str(tmp_path / "data"), "--epochs",
                                          "1", "--ks", "1,5", "--valid-metric", "ndcg@5", *TINY,
                                          "--out-dir", str(tmp_path / run)])
        assert result["data_file"] == str(csv)
        assert result["data_sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    written = json.loads((tmp_path / "from-cache" / "results.json").read_text())
    assert {"command", "versions", "machine", "git_commit", "data_file", "data_sha256"} <= set(written)
    # a relative path is recorded as given, not made absolute: results.json carries no machine's directory
    monkeypatch.chdir(tmp_path)
    quietly(baselines.main, ["--dataset", "mine.csv", "--data-dir", "data", "--epochs", "1", "--ks", "1,5",
                             "--valid-metric", "ndcg@5", *TINY, "--out-dir", "relative"])
    assert json.loads((tmp_path / "relative" / "results.json").read_text())["data_file"] == "mine.csv"
    assert "command" not in written["config"] and "data_sha256" not in written["config"]


def test_progress_lines_carry_an_eta(tmp_path, capsys):
    result = baselines.main(["--backbone", "mf", "--epochs", "3", "--eval-every", "2", *TINY, "--out-dir",
                             str(tmp_path)])
    assert result["stopped_by"] == "epochs"
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train epoch")]
    assert len(lines) == 3 and all(re.search(r"ETA ≤ \d+s$", line) for line in lines[:2])
    assert "valid" in lines[1] and "ETA" not in lines[2]                                    # nothing left


# ---------------------------------------------------------------- the loop's hook, its clock, --time-budget
class FakeClock:
    """common's `time` with a perf_counter that moves only when a training batch is drawn (`clocked_batches`)."""

    def __init__(self, seconds_per_batch: float):
        self.now, self.step = 0.0, seconds_per_batch

    def perf_counter(self):
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


def clocked_batches(monkeypatch, clock: FakeClock, stop_at: int | None = None):
    """Every training batch drawn costs clock.step seconds; SIGTERM as batch `stop_at` (counted over the run) is
    drawn."""
    batches, count = common.training_batches, itertools.count(1)

    def clocked(*args, **kwargs):
        for item in batches(*args, **kwargs):
            clock.now += clock.step
            if next(count) == stop_at:
                os.kill(os.getpid(), signal.SIGTERM)
            yield item

    monkeypatch.setattr(common, "time", clock)
    monkeypatch.setattr(common, "training_batches", clocked)


SASREC = ["--sampler", "rns", "--backbone", "sasrec", "--epochs", "5", *TINY]   # 7 batches per epoch


def epoch_lines(text: str) -> list:
    return [line for line in text.splitlines() if line.startswith("train epoch")]


def test_on_epoch_start_runs_before_each_epochs_first_batch_and_not_again_in_a_resumed_epoch(tmp_path, monkeypatch):
    events = []

    def batch_loss(model, batch, generator):
        events.append("batch")
        return common.examples(model, batch).queries.sum() * 0

    def on_epoch_start(model, epoch, generator):
        assert model.training and generator is not None
        events.append(epoch)

    common.fit(*fit_args(["--out-dir", str(tmp_path / "whole")]), batch_loss, on_epoch_start=on_epoch_start)
    assert events == [1] + ["batch"] * 3 + [2] + ["batch"] * 3 + [3] + ["batch"] * 3
    events.clear()
    stop_at(monkeypatch, 5)                                                   # mid-epoch 2
    cut = ["--out-dir", str(tmp_path / "cut")]
    with pytest.raises(common.Interrupted):
        common.fit(*fit_args(cut), batch_loss, on_epoch_start=on_epoch_start)
    monkeypatch.undo()
    assert events == [1] + ["batch"] * 3 + [2] + ["batch"] * 2               # stopped after batch 5's step
    events.clear()
    common.fit(*fit_args(cut + ["--resume"]), batch_loss, on_epoch_start=on_epoch_start)
    assert events == ["batch"] + [3] + ["batch"] * 3                          # epoch 2 goes on: no second call


def fit_args(argv):
    """(args, split, model) of a small run of 3 epochs of 3 batches, with `argv` (--out-dir, --resume)."""
    args, split = common.prepare(common.base_parser("t").parse_args(
        ["--backbone", "mf", "--split", "ratio", "--batch-size", "4096", "--seed", "2026", "--epochs", "3", *TINY,
         *argv]), "rns")
    return args, split, common.build_backbone("mf", split, args)


def test_the_eta_after_resume_comes_from_whole_batches_timed_since_the_resume(tmp_path, monkeypatch, capsys):
    clock = FakeClock(1.0)                                   # 1 s per batch, validation free: 7 s per epoch
    clocked_batches(monkeypatch, clock, stop_at=10)          # mid-epoch 2: 3 of its 7 batches done
    argv = SASREC + ["--out-dir", str(tmp_path)]
    with pytest.raises(common.Interrupted):
        baselines.main(argv)
    first = epoch_lines(capsys.readouterr().out)
    assert len(first) == 1 and "  7.0s  " in first[0] and first[0].endswith("ETA ≤ 28s")   # 4 epochs left at 7 s
    baselines.main(argv + ["--resume"])
    lines = epoch_lines(capsys.readouterr().out)
    # epoch 2: 3 batches timed before the stop, 4 after: its seconds are 7, and its ETA is 3 epochs of 7 batches
    # at the pace of the 4 batches timed since the resume (not 3 x 4 s, the resumed part of an epoch)
    assert [re.search(r"loss \S+  (\S+)s", line).group(1) for line in lines] == ["7.0"] * 4
    assert [re.search(r"ETA ≤ (\S+)$", line).group(1) for line in lines[:3]] == ["21s", "14s", "7s"]


def test_a_pace_line_says_the_cost_before_the_wait(tmp_path, monkeypatch, capsys):
    clocked_batches(monkeypatch, FakeClock(1.0))
    baselines.main(SASREC + ["--out-dir", str(tmp_path / "short")])
    out = capsys.readouterr().out.splitlines()
    pace = [line for line in out if "pace:" in line]
    assert pace == ["train pace: 7.0s per epoch of 7 batches (7 timed); at most 4 more epochs (--epochs 5; --patience "
                    "10 may stop it sooner): up to 28s of training on this CPU (1 thread)"]
    assert out.index(pace[0]) < out.index(epoch_lines("\n".join(out))[0])   # before the first epoch's line
    # 175 batches per epoch of 10 s each: said after 30 batches, with the hint of a run over an hour
    clocked_batches(monkeypatch, FakeClock(10.0))
    baselines.main(["--backbone", "mf", "--batch-size", "64", "--epochs", "3", *TINY, "--out-dir",
                    str(tmp_path / "long")])
    pace = [line for line in capsys.readouterr().out.splitlines() if "pace:" in line]
    assert len(pace) == 1 and pace[0].startswith("train pace: 29m10s per epoch of 175 batches (30 timed); at most 3 "
                                                 "more epochs (--epochs 3; --patience 10 may stop it sooner): up to "
                                                 "1h27m of training on this CPU (1 thread). Over an hour: for a first "
                                                 "look try --epochs 5 (~2h25m)")


def test_time_budget_stops_at_the_last_validation_that_fits(tmp_path, monkeypatch, capsys):
    clocked_batches(monkeypatch, FakeClock(1.0))             # 7 s per epoch; the budget counts from the start
    result = baselines.main(SASREC + ["--time-budget", "20s", "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert len(epoch_lines(out)) == 2                        # at 14 s the next validation would end at 21 s
    assert "time budget: train stopped after epoch 2, as the next validation would end after --time-budget 20s" in out
    assert result["stopped_by"] == "time-budget" and [h["epoch"] for h in result["history"]] == [1, 2]
    assert json.loads((tmp_path / "results.json").read_text())["stopped_by"] == "time-budget"
    assert "within --time-budget 20s" not in out and "stops it at the last validation that fits" in out
    # the restored state is the best validation's: --eval-only on model.pt gives its metrics
    evaluated = quietly(baselines.main, ["--eval-only", str(tmp_path / "model.pt"), "--out-dir", str(tmp_path / "e")])
    assert evaluated["valid"] == result["history"][result["best_epoch"] - 1]["valid"]
    assert evaluated["stopped_by"] == "time-budget"
    # with room for every epoch, the run ends at --epochs; a budget is a setting a resumed run may change
    ample = baselines.main(SASREC + ["--time-budget", "1h", "--out-dir", str(tmp_path / "all")])
    assert ample["stopped_by"] == "epochs"
    assert "time_budget" in common.WHERE_AND_HOW


@pytest.mark.parametrize("budget", ["2h", "90m", "1h30m", "45s", "1.5h"])
def test_time_budget_durations(budget):
    assert common.duration_seconds(budget) == {"2h": 7200, "90m": 5400, "1h30m": 5400, "45s": 45, "1.5h": 5400}[budget]


@pytest.mark.parametrize("budget", ["", "2", "h", "2 h", "-1h", "1d", "0m"])
def test_bad_time_budgets_are_refused(budget, tmp_path):
    with pytest.raises(common.RecError, match="--time-budget must be"):
        quietly(baselines.main, [f"--time-budget={budget}", "--out-dir", str(tmp_path)])


# ---------------------------------------------------------------- --eval-only on a checkpoint.pt
def test_eval_only_on_a_checkpoint_evaluates_the_best_state_so_far(tmp_path, monkeypatch, capsys):
    main, argv = RUNS["baselines"]
    whole = quietly(main, argv + ["--out-dir", str(tmp_path / "whole")])
    stop_at(monkeypatch, 17)                                                 # mid-epoch 3, after 2 validations
    with pytest.raises(common.Interrupted):
        quietly(main, argv + ["--out-dir", str(tmp_path / "cut")])
    monkeypatch.undo()
    checkpoint = str(tmp_path / "cut" / "checkpoint.pt")
    evaluated = main(["--eval-only", checkpoint, "--quiet", "--out-dir", str(tmp_path / "eval")])
    best = max(whole["history"][:2], key=lambda h: h["valid"]["ndcg@10"])
    assert f"the best state so far of an unfinished run, train epoch {best['epoch']} (2 epochs of train done)" in \
        capsys.readouterr().out
    assert evaluated["best_epoch"] == best["epoch"] and evaluated["valid"] == best["valid"]
    assert evaluated["stopped_by"] is None and evaluated["config"]["eval_only"] == checkpoint
    assert all(evaluated["config"][k] == whole["config"][k] for k in ("sampler", "candidates", "dim", "max_len",
                                                                      "seed"))
    assert os.path.isfile(checkpoint)                                        # the run can still be resumed
    with pytest.raises(common.RecError, match=f"written by another script, baselines.py: evaluate it with python "
                                              f"baselines.py --eval-only {re.escape(checkpoint)}"):
        quietly(icpns.main, ["--eval-only", checkpoint, "--out-dir", str(tmp_path / "e")])


def test_eval_only_refuses_a_checkpoint_without_a_validation_and_files_not_ours(tmp_path, monkeypatch):
    main, argv = RUNS["baselines"]
    stop_at(monkeypatch, 3)                                                  # in epoch 1: nothing validated
    with pytest.raises(common.Interrupted):
        quietly(main, argv + ["--out-dir", str(tmp_path / "cut")])
    monkeypatch.undo()
    with pytest.raises(common.RecError, match="stopped before its first validation"):
        quietly(main, ["--eval-only", str(tmp_path / "cut" / "checkpoint.pt"), "--out-dir", str(tmp_path / "e")])
    torch.save({"state_dict": {}, "epoch": 3}, tmp_path / "foreign.pt")
    with pytest.raises(common.RecError, match="is not a model.pt of this project"):
        quietly(main, ["--eval-only", str(tmp_path / "foreign.pt"), "--out-dir", str(tmp_path / "e")])


# ---------------------------------------------------------------- no stray files
def test_a_run_that_fails_before_training_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(common.RecError, match="unknown dataset"):
        quietly(baselines.main, ["--dataset", "no-such-dataset"])                # the default runs/<run>/
    with pytest.raises(common.RecError, match="larger than the number of items"):   # found once the data is read
        quietly(baselines.main, ["--ks", "400", "--valid-metric", "ndcg@400", "--out-dir", "a/b/c"])
    assert os.listdir(tmp_path) == []
    stop_at(monkeypatch, 2)                                 # stopped in training: what --resume needs stays
    with pytest.raises(common.Interrupted):
        quietly(baselines.main, RUNS["baselines"][1] + ["--out-dir", "run"])
    assert sorted(os.listdir(tmp_path / "run")) == ["checkpoint.pt", "run.json"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["method"] == "dnsmn"
