"""The command line: bad settings refused in one line before any data is read, --out-dir checked at start, help
that states each default once and truly, the synthetic demo's defaults, run_cli's one-line endings, run_all.sh."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import baselines
import common
import icpns
import mdcns
from common import RecError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAINS = {"baselines": baselines.main, "icpns": icpns.main, "mdcns": mdcns.main}


@pytest.fixture
def no_data(monkeypatch):
    """Reading or generating data fails the test: a refusal must come before."""
    def refuse(*args, **kwargs):
        raise AssertionError("data was read before the flags were checked")
    monkeypatch.setattr(common, "make_synthetic", refuse)
    monkeypatch.setattr(common, "load_dataset", refuse)


@pytest.mark.parametrize("script, flags, message", [
    ("baselines", ["--lr", "nan"], "--lr must be a finite number"),
    ("baselines", ["--lr", "-1"], "--lr must be positive"),
    ("baselines", ["--lr", "0"], "--lr must be positive"),
    ("baselines", ["--dropout", "2"], r"--dropout must be in \[0, 1\)"),
    ("baselines", ["--dropout", "-0.5"], r"--dropout must be in \[0, 1\)"),
    ("baselines", ["--dropout", "1"], r"--dropout must be in \[0, 1\)"),
    ("baselines", ["--backbone", "sasrec", "--heads", "3", "--dim", "50"], "--heads 3 must divide --dim 50"),
    ("baselines", ["--seed", "-1"], "--seed must be in"),
    ("baselines", ["--seed", str(2 ** 32)], "--seed must be in"),
    ("baselines", ["--backbone", "sasrec", "--layers", "0"], "sasrec needs --layers of at least 1"),
    ("baselines", ["--backbone", "gru4rec", "--layers", "0"], "gru4rec needs --layers of at least 1"),
    ("baselines", ["--backbone", "lightgcn", "--layers", "-1"], "--layers must be at least 0"),
    ("baselines", ["--reg-weight", "-1"], "--reg-weight must be at least 0"),
    ("baselines", ["--reg-weight", "inf"], "--reg-weight must be a finite number"),
    ("baselines", ["--min-rating", "nan"], "--min-rating must be a finite number"),
    ("baselines", ["--k-core", "-2"], "--k-core must be at least 0"),
    ("baselines", ["--heads", "0"], "--heads must be at least 1"),
    ("baselines", ["--epochs", "0"], "--epochs must be at least 1"),
    ("baselines", ["--eval-every", "0"], "--eval-every must be at least 1"),
    ("baselines", ["--patience", "-1"], "--patience must be at least 0"),
    ("baselines", ["--ks", "5,x"], "--ks must be comma-separated integers"),
    ("baselines", ["--valid-metric", "ndcg@7"], "--valid-metric"),
    ("baselines", ["--sampler", "pns", "--pns-alpha", "nan"], "--pns-alpha must be a finite number"),
    ("baselines", ["--negatives", "0"], "--negatives must be at least 1"),
    ("baselines", ["--eval-only", "model.pt", "--resume"], "use one of them"),
    ("baselines", ["--eval-only", "missing.pt"], "--eval-only missing.pt: no such file"),
    ("icpns", ["--alpha", "-1"], "must be non-negative"),
    ("icpns", ["--epsilon", "inf"], "--epsilon must be a finite number"),
    ("icpns", ["--communities", "0"], "--communities must be at least 1"),
    ("icpns", ["--pretrained", "missing.pt"], "--pretrained missing.pt: no such file"),
    ("mdcns", ["--gamma", "-1"], "--gamma must be at least 0"),
    ("mdcns", ["--beta", "-0.5"], "--beta must be at least 0"),
    ("mdcns", ["--kd-weight", "-1"], "--kd-weight must be at least 0"),
    ("mdcns", ["--kd-temperature", "0"], "--kd-temperature must be positive"),
    ("mdcns", ["--alpha", "nan"], "--alpha must be a finite number"),
    ("mdcns", ["--backbone", "mamba4rec", "--dim", "50", "--heads", "3"], "the sasrec peer shares them"),
    ("mdcns", ["--backbone", "mf"], "MDCNS needs a sequential backbone"),
])
def test_bad_settings_are_refused_before_any_data(no_data, tmp_path, script, flags, message):
    with pytest.raises(RecError, match=message):
        MAINS[script](flags + ["--quiet", "--out-dir", str(tmp_path / "out")])


def test_an_unreadable_model_file_is_refused_before_any_data(no_data, tmp_path):
    (tmp_path / "model.pt").write_bytes(b"not a model")
    with pytest.raises(RecError, match="is not a readable model.pt"):
        baselines.main(["--eval-only", str(tmp_path / "model.pt"), "--out-dir", str(tmp_path / "o")])


def test_too_many_communities_are_refused_before_pretraining(tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("pre-training started")
    monkeypatch.setattr(icpns, "pretrain_uniform", no_training)
    with pytest.raises(RecError, match="--communities 100000 exceeds the 601 users"):
        icpns.main(["--communities", "100000", "--quiet", "--out-dir", str(tmp_path)])


def test_out_dir_is_checked_at_start(no_data, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(RecError, match="is an existing file, not a folder"):
        baselines.main(["--out-dir", str(a_file)])
    with pytest.raises(RecError, match="cannot be created or written"):
        baselines.main(["--out-dir", str(a_file / "below")])
    if os.geteuid() == 0:
        return   # root writes into read-only folders: the last case cannot happen
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o500)
    with pytest.raises(RecError, match="cannot be created or written"):
        baselines.main(["--out-dir", str(read_only)])
    with pytest.raises(RecError, match="cannot be created or written"):
        baselines.main(["--out-dir", str(read_only / "run")])


@pytest.mark.parametrize("script, flags, meant", [
    ("baselines", ["--backbone", "sasrek"], "sasrec"), ("baselines", ["--sampler", "dns+"], "dns"),
    ("baselines", ["--sampler", "SRNS"], "srns"), ("mdcns", ["--peer", "mamba"], "mamba4rec"),
    ("icpns", ["--split", "ratios"], "ratio"),
])
def test_a_mistyped_choice_says_which_one_was_meant(capsys, script, flags, meant):
    with pytest.raises(SystemExit) as stop:
        MAINS[script](flags)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"invalid choice {flags[1]!r}; did you mean {meant!r}? (choose from" in err
    assert err.count("\n") == 1


def test_a_mistyped_dataset_and_an_unwritable_cache_dir_are_refused_before_any_data(no_data, tmp_path):
    with pytest.raises(RecError, match="unknown dataset 'ml1m' and no such file; did you mean 'ml-1m'"):
        baselines.main(["--dataset", "ml1m", "--out-dir", str(tmp_path / "o")])
    (tmp_path / "file").write_text("")
    with pytest.raises(RecError, match="--cache-dir .*file/x cannot be created or written"):
        baselines.main(["--dataset", "ml-1m", "--cache-dir", str(tmp_path / "file" / "x"), "--out-dir",
                        str(tmp_path / "o")])
    assert sorted(os.listdir(tmp_path)) == ["file"]                          # no out-dir left behind


def test_no_cache_and_cache_dir_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = tmp_path / "mine" / "my.csv"
    csv.parent.mkdir()
    csv.write_text("".join(f"{u},{i}\n" for u in range(30) for i in range(u % 7, u % 7 + 12)))
    argv = ["--dataset", str(csv), "--epochs", "1", "--quiet", "--ks", "1,5", "--valid-metric", "ndcg@5"]
    def caches():   # the processed caches (*.npz), not a run's test_rows.npz
        return [p.parent for p in tmp_path.rglob("*.npz") if p.name != common.TEST_ROWS_FILE]

    baselines.main(argv + ["--no-cache", "--out-dir", "a"])
    assert not caches()
    baselines.main(argv + ["--cache-dir", "cache", "--out-dir", "b"])
    assert caches() == [tmp_path / "cache"]
    with pytest.raises(RecError, match="--cache-dir mine/my.csv/x cannot be created or written"):
        baselines.main(argv + ["--cache-dir", "mine/my.csv/x", "--out-dir", "c"])



@pytest.mark.parametrize("script", ["baselines", "icpns", "mdcns"])
def test_help_states_each_default_once_and_never_none(script):
    text = {"baselines": baselines, "icpns": icpns, "mdcns": mdcns}[script].build_parser().format_help()
    assert "(default: None)" not in text
    options = re.split(r"\n  (?=-)", text)                               # one block per option
    for block in options:
        own, _, appended = block.partition("(default:")                 # the formatter appends "(default: ...)"
        assert "(default:" not in appended and not (appended and "default" in own.lower()), block
    block = next(b for b in options if b.startswith("--dim"))
    assert ("(default: 64)" if script == "mdcns" else "(default: sasrec-kang 50, others 64)") in " ".join(block.split())


def test_help_per_script_values():
    help_of = {name: " ".join(module.build_parser().format_help().split())
               for name, module in (("baselines", baselines), ("icpns", icpns), ("mdcns", mdcns))}
    assert "(default: the backbone's official train_batch_size, below)" in help_of["icpns"]
    assert "--batch-size 4096" in help_of["icpns"] and "2048" not in help_of["icpns"]
    assert "default: set from --examples-per-batch" in help_of["mdcns"]
    assert "(default: 300; 4 with --dataset synthetic)" in help_of["mdcns"]
    assert "--pretrain-epochs PRETRAIN_EPOCHS maximum pre-training epochs" in help_of["icpns"]
    assert "(default: 1000; 10 with --dataset synthetic)" in help_of["icpns"]
    assert "(default: sasrec-kang 200, others 50; 20 with --dataset synthetic)" in help_of["baselines"]


def test_synthetic_defaults_yield_to_given_flags():
    parse = baselines.build_parser().parse_args
    assert (parse([]).epochs, parse([]).max_len) == (10, 20)
    assert (parse(["--epochs", "200"]).epochs, parse(["--max-len", "50"]).max_len) == (200, 50)
    assert (parse(["--dataset", "ml-1m"]).epochs, parse(["--dataset", "ml-1m"]).max_len) == (200, None)
    assert icpns.build_parser().parse_args([]).pretrain_epochs == 10
    assert parse(["--lr", "0.01"]).command[1:] == ["--lr", "0.01"]


def test_patience_is_recboles_stopping_step(tmp_path, capsys):
    """Stops at the (P+1)-th validation without improvement, and says so."""
    args, split = common.prepare(common.base_parser("t").parse_args(
        ["--quiet", "--epochs", "8", "--patience", "2", "--out-dir", str(tmp_path)]), "rns")
    model = common.build_backbone("mf", split, args)
    record = common.fit(args, split, model, lambda m, batch, g: common.examples(m, batch).queries.sum() * 0)
    assert len(record["history"]) == 4 and record["stopped_by"] == "patience"   # best at 1, then 3 without improvement
    assert "has not improved for 3 validations, more than the patience 2" in capsys.readouterr().out


def run_cli_output(capsys, main):
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as stop:
            common.run_cli(main)
    finally:
        signal.signal(signal.SIGTERM, handler)
    return stop.value.code, capsys.readouterr().err


def test_run_cli_ends_every_failure_in_one_line(capsys, monkeypatch):
    def bug():
        raise ValueError("something\nwent wrong")

    def bad_input():
        raise RecError("--lr must be positive")

    def interrupt():
        raise KeyboardInterrupt

    code, err = run_cli_output(capsys, bug)
    assert code == 1 and err == ("error: unexpected ValueError: something went wrong (set NEGSAMPLING_DEBUG=1 to "
                                 "see the traceback)\n")
    assert run_cli_output(capsys, bad_input) == (2, "error: --lr must be positive\n")
    code, err = run_cli_output(capsys, interrupt)
    assert code == 130 and err.startswith("interrupted by SIGINT") and err.count("\n") == 1
    monkeypatch.setenv("NEGSAMPLING_DEBUG", "1")
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(ValueError, match="went wrong"):
            common.run_cli(bug)
    finally:
        signal.signal(signal.SIGTERM, handler)


def test_a_usage_error_is_one_line():
    result = subprocess.run([sys.executable, "mdcns.py", "--lr", "abc"], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert result.returncode == 2
    assert result.stderr == "error: argument --lr: invalid float value: 'abc' (see mdcns.py --help)\n"


# ---------------------------------------------------------------------------------------------- run_all.sh
def test_run_all_quick_uses_a_new_temporary_folder_every_time(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    folders = []
    for _ in range(2):
        listing = subprocess.run(["bash", os.path.join(ROOT, "run_all.sh"), "--quick", "--dry-run"], env=env,
                                 capture_output=True, text=True, timeout=60)
        assert listing.returncode == 0, listing.stderr
        folders.append(re.search(r"--out-dir (\S+)/quick/", listing.stdout).group(1))
    assert folders[0] != folders[1] and all(f.startswith(str(tmp_path)) and os.path.isdir(f) for f in folders)


def test_run_all_resumes_a_run_with_a_checkpoint_but_no_results(tmp_path):
    run = tmp_path / "quick" / "synthetic-user-sasrec-mdcns-s1"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"")
    listing = subprocess.run(["bash", os.path.join(ROOT, "run_all.sh"), "--quick", "--dry-run", "--runs",
                              str(tmp_path)], capture_output=True, text=True, timeout=60).stdout.splitlines()
    resumed = [line for line in listing if line.startswith("resume")]
    assert len(resumed) == 1 and resumed[0].endswith(f"--out-dir {run} --epochs 3 --dim 16 --max-len 20 --resume")


def test_ctrl_c_stops_the_whole_grid(tmp_path):
    """SIGINT to run_all.sh: the running method file gets SIGTERM (to save its checkpoint) and no run follows."""
    log = tmp_path / "calls.txt"
    fake = tmp_path / "fake-python"
    fake.write_text("#!/usr/bin/env bash\n"   # "started" once its TERM trap is set: no race with the signal
                    f"trap 'kill $sleeper; echo terminated >> {log}; exit 143' TERM\n"
                    "sleep 60 & sleeper=$!\n"
                    f"echo started >> {log}\n"
                    "wait $sleeper\n")
    fake.chmod(0o755)
    grid = subprocess.Popen(["bash", os.path.join(ROOT, "run_all.sh"), "--quick", "--runs", str(tmp_path / "runs")],
                            env=dict(os.environ, PYTHON=str(fake)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,   # SIGINT as a terminal gives it: a shell can't trap a signal ignored at entry
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while not log.exists() and time.time() < deadline:
        time.sleep(0.05)
    grid.send_signal(signal.SIGINT)
    _, stderr = grid.communicate(timeout=60)
    assert grid.returncode == 130 and "interrupted: stopping the grid" in stderr
    assert log.read_text().split() == ["started", "terminated"]
    assert not (tmp_path / "runs" / "RESULTS.md").exists()
