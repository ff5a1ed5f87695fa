"""Mutation check: does the suite go red when a rule it guards changes by one line?

    python tests/mutate.py                      # every mutation below
    python tests/mutate.py patience tie-policy  # only these ids

Each mutation is applied, alone, to a temporary copy of the repository (its tracked and untracked, not ignored
files); the mutation's test files then run there (`pytest -x -q`, with a timeout). A failing run kills the mutation;
a passing one lets it survive. First the same test files run on the unmutated copy (a suite that fails
without any mutation would kill everything). Prints one line per mutation and exits non-zero if any mutation
survived, is stale or broke the check itself. Not part of the default test run (pytest collects test_*.py only);
about 5 minutes on 2 CPU cores.

A mutation is (id, file, old, new, test files). `old` must occur exactly once in the file; whitespace runs in it
match any whitespace, so realigned comments still match, and it may reach into the next line to be unique.
When a refactoring moves or rewrites the line, the mutation is reported "stale" (a failure): update `old`
and `new` to the line as it now reads, keeping what the mutation changes.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 300   # per mutation; a run that hangs past it counts as killed (the suite would not pass)


class Mutation(NamedTuple):
    id: str
    file: str
    old: str
    new: str
    tests: tuple


RULES, COMMON_T, MDCNS_T = "tests/test_rules.py", "tests/test_common.py", "tests/test_mdcns.py"
ICPNS_T, BASELINES_T = "tests/test_icpns.py", "tests/test_baselines.py"

MUTATIONS = [
    # MDCNS: Eqs. (4)-(13) and the defaults of its published runs
    Mutation("mdcns-teacher-mean", "mdcns.py",
             'return 0.5 * total if aggregation == "mean" else total',
             'return total if aggregation == "mean" else 0.5 * total', (MDCNS_T,)),
    Mutation("mdcns-teacher-default", "mdcns.py",
             'g.add_argument("--teacher", default="mean"', 'g.add_argument("--teacher", default="sum"', (RULES,)),
    Mutation("mdcns-divergence-sign", "mdcns.py",
             "return views + d", "return views - d", (MDCNS_T,)),
    Mutation("mdcns-divergence-abs", "mdcns.py",
             "d = (s_self - s_peer).abs()", "d = (s_self - s_peer)", (MDCNS_T,)),
    Mutation("mdcns-top-m-direction", "mdcns.py",
             "top = scores.topk(min(m, scores.shape[-1]), dim=-1).indices",
             "top = scores.topk(min(m, scores.shape[-1]), dim=-1, largest=False).indices", (MDCNS_T,)),
    Mutation("mdcns-tau-squared", "mdcns.py",
             "kl = temperature ** 2 * kl", "kl = temperature * kl", (MDCNS_T,)),
    Mutation("mdcns-teacher-detach", "mdcns.py",
             "log_softmax(teacher.detach() / temperature", "log_softmax(teacher / temperature", (MDCNS_T,)),
    Mutation("mdcns-kd-positive-default", "mdcns.py",
             'g.add_argument("--kd-positive", default=True', 'g.add_argument("--kd-positive", default=False',
             (RULES, MDCNS_T)),
    Mutation("mdcns-peer-view-weights", "mdcns.py",
             "s_peer.gather(1, picks), peer_weights)", "s_peer.gather(1, picks), self_weights)", (MDCNS_T,)),
    Mutation("mdcns-kd-weight-mu", "mdcns.py",
             'CODE_KD_WEIGHT * (CODE_BATCH if kd_reduction == "mean" else 1)',
             'CODE_KD_WEIGHT * (1 if kd_reduction == "mean" else 1)', (RULES, MDCNS_T)),
    Mutation("mdcns-kd-teacher-source", "mdcns.py",
             "s_teacher = teacher_scores(support_self, support_peer, teacher)",
             "s_teacher = teacher_scores(support_self, support_self, teacher)", (MDCNS_T,)),
    # ICPNS: counts per community, the power, the communities, rejection of the user's positives
    Mutation("icpns-power", "icpns.py",
             "weights = (counts + epsilon).pow(alpha)", "weights = (counts + epsilon).pow(1.0)", (ICPNS_T,)),
    Mutation("icpns-per-community-counts", "icpns.py",
             "counts.index_put_((community[users], items)", "counts.index_put_((community[users] * 0, items)",
             (ICPNS_T,)),
    Mutation("icpns-labels", "icpns.py",
             "return labels[:len(representations)]", "return labels[-len(representations):]", (ICPNS_T,)),
    Mutation("icpns-positive-rejection", "common.py",
             "accept = todo & ~positives.contains(users.unsqueeze(1), draw) & (draw > 0)",
             "accept = todo & (draw > 0)", (ICPNS_T, BASELINES_T)),
    # the shared uniform draw (RNS, every candidate pool)
    Mutation("uniform-draw", "common.py",
             "r = (u * n_free).long().clamp(max=n_free - 1)", "r = (u * (n_free - 1)).long()",
             (COMMON_T, BASELINES_T)),
    # baselines' selection rules
    Mutation("dns-argmax", "baselines.py",
             "best = scores.view(P, k, N).argmax(-1, keepdim=True)",
             "best = scores.view(P, k, N).argmin(-1, keepdim=True)", (BASELINES_T,)),
    Mutation("dnsmn-top-m-plus-1", "baselines.py",
             "top = scores.topk(min(m, scores.shape[-1]), dim=-1).indices",
             "top = scores.topk(min(m + 1, scores.shape[-1]), dim=-1).indices[..., -m:]", (BASELINES_T,)),
    Mutation("pns-power", "baselines.py",
             "count.pow(alpha)", "count.pow(1.0)", (BASELINES_T,)),
    # metrics
    Mutation("ndcg-discount", "common.py",
             "discount = 1.0 / torch.log2(rank.double() + 1)", "discount = 1.0 / torch.log2(rank.double() + 2)",
             (COMMON_T,)),
    Mutation("tie-policy", "common.py",
             "torch.searchsorted(top_others, target_scores)",
             "torch.searchsorted(top_others, target_scores, right=True)",
             (COMMON_T,)),
    Mutation("idcg-cap", "common.py",
             "ideal[n_targets.clamp(min=1, max=k) - 1]", "ideal[n_targets.clamp(min=1, max=K) - 1]", (COMMON_T,)),
    Mutation("target-masking-evaluate", "common.py",
             'scores[target_rows, target_items] = -float("inf") # non-targets only', "pass", (COMMON_T,)),
    # splits and what evaluation masks
    Mutation("history-mask", "common.py",
             "masked = [np.setdiff1d(s, t) for s, t in zip(inputs, targets_)] if mask_history else",
             "masked = [np.unique(s) for s, t in zip(inputs, targets_)] if mask_history else", (RULES, COMMON_T)),
    Mutation("target-masking-general", "common.py",
             "masked = [np.setdiff1d(s, t) for s, t in zip(inputs, targets_)]\n        target_ptr",
             "masked = [np.unique(s) for s, t in zip(inputs, targets_)]\n        target_ptr", (RULES, COMMON_T)),
    Mutation("target-masking-prefixes", "common.py",
             "keep = history != item[target][entry_row]", "keep = history == history", (RULES, COMMON_T)),
    Mutation("validation-masking", "common.py",
             "known = (part < p) | train", "known = train", (RULES, COMMON_T)),
    Mutation("split-leak", "common.py",
             "train = part == 0", "train = part < 2", (RULES, COMMON_T)),
    Mutation("loo-short-user", "common.py",
             "legal = np.minimum(2, length - 1)[user]", "legal = np.minimum(2, length)[user]", (RULES, COMMON_T)),
    # the training loop: model selection and early stopping on validation
    Mutation("best-state-restore", "common.py",
             "self.model.load_state_dict(self.best_state)", "pass", (RULES,)),
    Mutation("best-state-copy", "common.py",
             "run.best_state = 0, {k: v.detach().clone() for", "run.best_state = 0, {k: v.detach() for", (RULES,)),
    Mutation("patience", "common.py",
             "if loop.stale > args.patience:", "if loop.stale >= args.patience:", (RULES,)),
    Mutation("strict-improvement", "common.py",
             "valid[args.valid_metric] > loop.best_score", "valid[args.valid_metric] >= loop.best_score", (RULES,)),
]


def pattern(old: str) -> re.Pattern:
    return re.compile(r"\s+".join(re.escape(token) for token in old.split()))


def repository_copy(destination: str):
    """The repository's tracked and untracked-but-not-ignored files, copied into `destination`."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for path in filter(None, listed):
        source = os.path.join(ROOT, path)
        if os.path.isfile(source):   # a tracked file deleted in the working tree is not copied
            os.makedirs(os.path.dirname(os.path.join(destination, path)), exist_ok=True)
            shutil.copy2(source, os.path.join(destination, path))


def run_tests(copy: str, tests) -> tuple[str, float, str]:
    """('passed' | 'failed' | 'timeout' | 'error', seconds, the first failing test or the output's tail)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rfE", *tests]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, f"no result in {TIMEOUT_S} s"
    seconds, output = time.perf_counter() - start, done.stdout + done.stderr
    first = next((line.split(" - ")[0] for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))),
                 output.strip().splitlines()[-1] if output.strip() else "")
    # pytest: 0 all passed, 1 a test failed, 2 interrupted (a collection error); 3-5: the check itself broke
    outcome = {0: "passed", 1: "failed", 2: "failed"}.get(done.returncode, "error")
    return outcome, seconds, first if outcome != "error" else output.strip()[-2000:]


def main(selected) -> int:
    unknown = set(selected) - {m.id for m in MUTATIONS}
    if unknown:
        print(f"unknown mutation id(s): {', '.join(sorted(unknown))}; known: {', '.join(m.id for m in MUTATIONS)}")
        return 2
    mutations = [m for m in MUTATIONS if not selected or m.id in selected]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mutate-") as copy:
        repository_copy(copy)
        tests = sorted({t for m in mutations for t in m.tests})
        outcome, seconds, detail = run_tests(copy, tests)
        if outcome != "passed":
            print(f"control: the unmutated copy does not pass {' '.join(tests)} ({outcome}: {detail}); fix the "
                  "suite first")
            return 2
        print(f"control: {len(tests)} test files pass unmutated ({seconds:.0f} s)")
        counts = dict.fromkeys(("killed", "survived", "stale", "invalid", "error"), 0)
        width = max(len(m.id) for m in mutations)
        for m in mutations:
            path = os.path.join(copy, m.file)
            with open(path, encoding="utf-8") as f:
                original = f.read()
            found = pattern(m.old).findall(original)
            if len(found) != 1:
                verdict, line = "stale", (f"old snippet found {len(found)} times in {m.file} (must be once): update "
                                          f"this mutation in tests/mutate.py")
            else:
                mutated = pattern(m.old).sub(lambda _: m.new, original)
                try:
                    compile(mutated, m.file, "exec")
                except SyntaxError as error:
                    verdict, line = "invalid", f"the mutated {m.file} does not compile: {error}"
                else:
                    with open(path, "w", encoding="utf-8") as f:
                        f.write(mutated)
                    try:
                        outcome, seconds, detail = run_tests(copy, m.tests)
                    finally:
                        with open(path, "w", encoding="utf-8") as f:
                            f.write(original)
                    verdict = {"failed": "killed", "timeout": "killed", "passed": "survived"}[outcome] \
                        if outcome != "error" else "error"
                    line = f"{seconds:5.1f} s  " + (detail if verdict != "survived" else
                                                    f"{' '.join(m.tests)} all pass with it")
            counts[verdict] += 1
            print(f"{verdict:9s} {m.id:{width}s}  {m.file:13s} {line}", flush=True)
    print(f"{len(mutations)} mutations: " + ", ".join(f"{n} {name}" for name, n in counts.items() if n or
                                                      name in ("killed", "survived"))
          + f" ({time.perf_counter() - start:.0f} s)")
    return 0 if counts["killed"] == len(mutations) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
