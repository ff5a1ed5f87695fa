"""Every bench/ script runs: its --smoke mode (synthetic data, seconds), so that a benchmark cannot rot unseen.

Each script's main(argv) is called here (the scripts that time whole runs start their own subprocesses). What a
smoke run prints is not a measurement; the checks are that it finishes and returns the rows it promises."""
import importlib
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
ROOT = os.path.dirname(BENCH)


def script(name):
    """bench/<name>.py as a module, imported by its own name (bench/ on sys.path: the scripts import each other,
    and bench_ddp's spawned workers import it by that name)."""
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    return importlib.import_module(name)


@pytest.fixture
def venv_first(monkeypatch):
    """Scripts that start `python` or torchrun subprocesses get this interpreter's folder first on PATH."""
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


def test_every_bench_script_is_tested_here():
    scripts = sorted(name[:-3] for name in os.listdir(BENCH) if name.endswith(".py"))
    tested = sorted(name for name in SMOKE)
    assert scripts == tested, f"add a smoke test for: {sorted(set(scripts) - set(tested))}"


def check_mdcns(result):
    return set(result) == {"RNS", "MDCNS, Mamba4Rec peer"} and all(s[0] > 0 for s in result.values())


def check_profile(rows):
    mdcns, *rns = rows
    return [row.name for row in rns] == ["RNS, sasrec", "RNS, gru4rec", "RNS, mamba4rec"] and \
        {"self forward", "peer backward", "scoring backward", "KD forward", "optimizer"} <= set(mdcns.clock.seconds)


def check_gpu_check(results):
    return all(results[step].status == "pass" for step in ("tests", "readme-mdcns", "torchrun")) and \
        all(results[step].status == "skipped" for step in ("readme-baselines", "readme-icpns", "ml-1m",
                                                           "table3-beauty", "mamba-ssm"))


SMOKE = {   # script: (extra argv after --smoke, a check of what main returns)
    "bench_ddp": ([], lambda table: len(table) == 1),
    "bench_eval": ([], lambda timings: len(timings) == 3),
    "bench_icpns": ([], lambda rates: rates["ours_rate"] > 0 and rates["official_rate"] > 0),
    "bench_mdcns": ([], check_mdcns),
    "bench_recbole": ([], lambda measurements: len(measurements) == 2),
    "bench_samplers": ([], lambda rates: set(rates) == {"rns", "pns", "dns", "dnsmn"}),
    "bench_samplers_extra": ([], lambda medians: set(medians) == {"rns", "mixgcf"}),
    "bench_scan": ([], lambda times: len(times) == 8),
    "compile_scan_step": ([], lambda table: sorted(table) == [1, 4, 16, 64]),
    "gpu_check": (["--device", "cpu"], check_gpu_check),
    "profile_mdcns": ([], check_profile),
    "recbole_parity": ([], lambda gap: gap == 0.0),
}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_smoke(name, venv_first, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)                        # nothing may be written to the working folder
    argv, check = SMOKE[name]
    result = script(name).main(["--smoke", *argv])
    assert check(result), result
    assert os.listdir(tmp_path) == []


def test_gpu_check_runs_the_readme_commands_word_for_word():
    gpu_check = script("gpu_check")
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    for command in [*gpu_check.README_COMMANDS.values(), gpu_check.MAIN_COMMAND]:
        assert f"\n{command} " in readme or f"\n{command}\n" in readme, command
