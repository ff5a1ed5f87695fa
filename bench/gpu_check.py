"""One prepared check of the GPU path, a single command: the test suite, the README's commands, short real runs,
mamba_ssm's kernel and torchrun, each a step with its seconds per epoch, peak GPU memory and pass / fail.

Steps (each in its own subprocess, with --timeout seconds; a step that cannot run here says why and is skipped):
- tests: `python -m pytest -q tests --device DEVICE` (tests/conftest.py: method-file runs pick the device, tests
  taking the `device` fixture put their models and tensors there, the CPU-only test files are skipped);
- readme-baselines, readme-icpns, readme-mdcns: the README's three commands on synthetic data (`README_COMMANDS`);
- ml-1m: --epochs of the README's main command on ml-1m (`MAIN_COMMAND`), needs <data-dir>/ml-1m;
- table3-beauty: --epochs of table3's Beauty MDCNS run, the command `run_all.sh --dry-run` lists, needs
  <data-dir>/beauty;
- mamba-ssm: mamba_ssm's fused selective-scan kernel against the pure-PyTorch scan (`common._scan_rows`) at
  Mamba4Rec's shapes, outputs and gradients, and their times; needs CUDA and the mamba_ssm package;
- torchrun: `torchrun --standalone --nproc_per_node W` of the README's MDCNS command, W = 2 where 2 GPUs are
  there (NCCL, the gradient all-reduce of common.train_step), else 1: that process then joins an NCCL group of
  one itself and checks an all_reduce before the run (gloo on the CPU).
Seconds per epoch: the median of the run's epochs (results.json; the first includes CUDA's warm-up). Peak GPU
memory: torch.cuda.max_memory_allocated() of the process (of rank 0 under torchrun).

It also runs on the CPU (--device cpu), which is how the suite tests it (tests/test_bench.py, --smoke: a few
tests, the README's MDCNS command alone and under torchrun, one epoch each). Its table goes into bench/README.md once it has run on a GPU.

    python bench/gpu_check.py                                   # CUDA, data from --data-dir
    python bench/gpu_check.py --device cpu --smoke              # seconds
    python bench/gpu_check.py --steps readme-mdcns,torchrun     # some steps only
"""
import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_mdcns import DATA_DIR, GRIDS, grid_commands  # noqa: E402

MARK = "@@GPU_CHECK@@ "
README_COMMANDS = {   # README.md's "Run" section, word for word (tests/test_bench.py checks)
    "readme-baselines": "python baselines.py --sampler rns --backbone sasrec",
    "readme-icpns": "python icpns.py --backbone lightgcn --split ratio",
    "readme-mdcns": "python mdcns.py --backbone sasrec",
}
MAIN_COMMAND = "python mdcns.py --dataset ml-1m --backbone sasrec"
SMOKE_TESTS = ["tests/test_mamba.py", "-k", "literal_recurrence or on_the_device"]
STEPS = ("tests", *README_COMMANDS, "ml-1m", "table3-beauty", "mamba-ssm", "torchrun")


# ---------------------------------------------------------------------------------------------- in a subprocess
def worker(script: str, argv: list):
    """Run a method file's main(argv) here and print the peak GPU memory. Under a torchrun of one process, join a
    process group of one first (NCCL on CUDA, gloo on the CPU) and check an all_reduce through it."""
    import torch.distributed as dist
    device = argv[argv.index("--device") + 1]
    if "LOCAL_RANK" in os.environ and int(os.environ["WORLD_SIZE"]) == 1:
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        ones = torch.ones(3, device=device)
        dist.all_reduce(ones)
        if ones.tolist() != [1.0, 1.0, 1.0]:
            raise SystemExit(f"error: an all_reduce over one {dist.get_backend()} process gave {ones.tolist()}")
        print(f"{dist.get_backend()} process group of one: all_reduce checked", flush=True)
    importlib.import_module(script.removesuffix(".py")).main(argv)
    if dist.is_initialized() and int(os.environ["WORLD_SIZE"]) == 1:
        dist.destroy_process_group()
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    print(MARK + json.dumps({"peak_bytes": peak}), flush=True)


# ---------------------------------------------------------------------------------------------- the steps
class Step:
    """A step's outcome: status (pass, FAIL, skipped, timeout), seconds per epoch, peak GPU bytes, a note."""

    def __init__(self, status, epoch=None, peak=None, note=""):
        self.status, self.epoch, self.peak, self.note = status, epoch, peak, note


def run(command, timeout, env=None):
    """(return code or None on timeout, combined output)."""
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as error:
        return None, (error.stdout or b"").decode(errors="replace") if isinstance(error.stdout, bytes) else ""
    return done.returncode, done.stdout + done.stderr


def method_run(words, args, out_dir, launcher=()):
    """A method-file command (words after `python`) with --device, --quiet and --out-dir, through `worker`."""
    script, *flags = words
    command = [*(launcher or [sys.executable]), os.path.abspath(__file__), "--worker", script, *flags,
               "--device", args.device, "--quiet", "--out-dir", out_dir] + (["--epochs", "1"] if args.smoke else [])
    code, output = run(command, args.timeout)
    if code is None:
        return Step("timeout", note=f"over {args.timeout} s")
    if code != 0:
        return Step("FAIL", note=output.strip().splitlines()[-1] if output.strip() else f"exit {code}")
    with open(os.path.join(out_dir, "results.json")) as f:
        saved = json.load(f)
    marks = [json.loads(line[len(MARK):]) for line in output.splitlines() if line.startswith(MARK)]
    test = saved.get("test", {})
    if not test or not all(0 <= value <= 1 for value in test.values()):
        return Step("FAIL", note=f"results.json's test metrics: {test}")
    return Step("pass", statistics.median(saved["epoch_seconds"]), marks[-1]["peak_bytes"] if marks else None,
                f"{len(saved['epoch_seconds'])} epoch(s), test ndcg@10 {test.get('ndcg@10', float('nan')):.4f}")


def step_tests(args, tmp):
    files = SMOKE_TESTS if args.smoke else ["tests"]
    code, output = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files, "--device",
                        args.device], args.timeout)
    summary = next((line for line in reversed(output.splitlines())
                    if any(word in line for word in ("passed", "failed", "error"))), f"exit {code}")
    if code is None:
        return Step("timeout", note=f"over {args.timeout} s")
    return Step("pass" if code == 0 else "FAIL", note=str(summary).strip("= "))


def step_readme(name):
    def step(args, tmp):
        if args.smoke and name != "readme-mdcns":
            return Step("skipped", note="--smoke runs readme-mdcns only")
        return method_run(README_COMMANDS[name].split()[1:], args, os.path.join(tmp, name))
    return step


def step_ml1m(args, tmp):
    if args.smoke or not os.path.isdir(os.path.join(args.data_dir, "ml-1m")):
        return Step("skipped", note="--smoke" if args.smoke else f"no ml-1m in {args.data_dir}")
    words = MAIN_COMMAND.split()[1:] + ["--data-dir", args.data_dir, "--epochs", str(args.epochs)]
    return method_run(words, args, os.path.join(tmp, "ml-1m"))


def step_table3(args, tmp):
    if args.smoke or not os.path.isdir(os.path.join(args.data_dir, "beauty")):
        return Step("skipped", note="--smoke" if args.smoke else f"no beauty in {args.data_dir}")
    words = grid_commands(GRIDS["beauty-table3"], args.data_dir)["mdcns"][1:]   # after the interpreter
    words = [w for i, w in enumerate(words) if w != "--out-dir" and (i == 0 or words[i - 1] != "--out-dir")]
    return method_run(words + ["--epochs", str(args.epochs)], args, os.path.join(tmp, "table3-beauty"))


def step_mamba_ssm(args, tmp):
    """mamba_ssm's kernel against the PyTorch scan, Mamba4Rec's shapes (128 rows, L = 50, d_inner 128, d_state 16),
    right padding of Beauty-like lengths: the largest gaps of y and of the six gradients, relative to each tensor's
    largest entry, and forward + backward milliseconds of each."""
    import common
    if args.device != "cuda":
        return Step("skipped", note="needs --device cuda")
    kernel = common._mamba_ssm_selective_scan()
    if kernel is None:
        return Step("skipped", note="mamba_ssm is not installed (optional: pip install mamba-ssm)")
    g = torch.Generator().manual_seed(0)
    Bt, L, d, n = 128, 50, 128, 16
    inputs = [torch.randn(Bt, L, d, generator=g), F.softplus(torch.randn(Bt, L, d, generator=g) - 3),
              -torch.arange(1.0, n + 1).expand(d, n).contiguous(), torch.randn(Bt, L, n, generator=g),
              torch.randn(Bt, L, n, generator=g), torch.ones(d)]
    lengths = (1 + torch.distributions.Geometric(1 / 7.8).sample((Bt,))).clamp(max=L).long().cuda()
    weights = torch.randn(Bt, L, d, generator=g).cuda()
    results = {}
    for name, fused in (("kernel", True), ("pytorch", False)):
        tensors = [t.cuda().requires_grad_() for t in inputs]
        if not fused:                                    # the PyTorch path on the same GPU: _scan_rows directly
            x, dt, A, B, C, D = tensors
            flat = [t.reshape(Bt * L, -1) for t in (x, dt, B, C)]
            scan = lambda: common._scan_rows(flat[0], flat[1], A, flat[2], flat[3], D,  # noqa: E731
                                             torch.arange(Bt, device="cuda") * L, lengths).view(Bt, L, d)
        else:
            scan = lambda: common.selective_scan(*tensors, lengths)  # noqa: E731
        y = scan()
        grads = torch.autograd.grad((y * weights).sum(), tensors)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            torch.autograd.grad((scan() * weights).sum(), tensors)
        torch.cuda.synchronize()
        results[name] = ([y.detach(), *grads], (time.perf_counter() - start) / 5 * 1e3)
    real = (torch.arange(L, device="cuda") < lengths.unsqueeze(1)).unsqueeze(-1)       # compare real steps only
    gaps = []
    for i, (a, b) in enumerate(zip(results["kernel"][0], results["pytorch"][0])):
        if i in (0, 1, 2):                                # y, x and dt: (Bt, L, d), padding steps differ by design
            a, b = a * real, b * real
        gaps.append(((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item())
    ok = max(gaps) < 1e-3
    return Step("pass" if ok else "FAIL", note=f"largest relative gap {max(gaps):.1e} (y and 6 gradients); forward + "
                f"backward {results['kernel'][1]:.1f} ms (kernel) vs {results['pytorch'][1]:.1f} ms (PyTorch)")


def step_torchrun(args, tmp):
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    processes = 2 if gpus >= 2 else 1
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    step = method_run(README_COMMANDS["readme-mdcns"].split()[1:], args, os.path.join(tmp, "torchrun"), launcher)
    backend = "nccl" if args.device == "cuda" else "gloo"
    step.note = f"{processes} process(es), {backend}" + (f"; {step.note}" if step.note else "")
    return step


STEP_FUNCTIONS = {"tests": step_tests, **{name: step_readme(name) for name in README_COMMANDS}, "ml-1m": step_ml1m,
                  "table3-beauty": step_table3, "mamba-ssm": step_mamba_ssm, "torchrun": step_torchrun}


def table(results: dict) -> str:
    lines = ["| step | s / epoch | peak GPU memory | result | note |", "|---|---|---|---|---|"]
    for name, step in results.items():
        epoch = "—" if step.epoch is None else f"{step.epoch:.2f}"
        peak = "—" if step.peak is None else f"{step.peak / 2 ** 30:.2f} GB"
        lines.append(f"| {name} | {epoch} | {peak} | {step.status} | {step.note} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="where every step runs "
                                                                                  "(default cuda)")
    parser.add_argument("--data-dir", default=DATA_DIR, help="where ml-1m/ and beauty/ are (default data/ in the repository)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the ml-1m and Beauty runs (default 3)")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated, of: %(default)s (default: all)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per step (default 900)")
    parser.add_argument("--smoke", action="store_true", help="a few tests, the README's MDCNS command alone and "
                                                             "under torchrun, one epoch each: seconds")
    parser.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker[0], args.worker[1:])
    steps = args.steps.split(",")
    unknown = [step for step in steps if step not in STEP_FUNCTIONS]
    if unknown:
        raise SystemExit(f"error: unknown step(s) {', '.join(unknown)}; choose from: {', '.join(STEPS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but CUDA is not available here; use --device cpu")
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"gpu_check on {where}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in steps:
            start = time.perf_counter()
            results[name] = STEP_FUNCTIONS[name](args, tmp)
            print(f"  {name}: {results[name].status} ({time.perf_counter() - start:.0f} s) {results[name].note}",
                  flush=True)
    print("\n" + table(results))
    failed = [name for name, step in results.items() if step.status in ("FAIL", "timeout")]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")
    return results


if __name__ == "__main__":
    main()
