import builtins
import dis
import os
import sys
import types
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Test files that are CPU-only by nature, skipped under --device cuda: why.
CPU_ONLY = {
    "test_pinned.py": "its results are pinned on the CPU (the same seed gives other floats on a GPU)",
    "test_distributed.py": "it starts several processes on one machine: gloo on the CPU (NCCL needs a GPU each)",
}


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", choices=("cpu", "cuda"),
                     help="where the tests run: cpu (default; CUDA is hidden, so `--device auto` runs pick the CPU "
                          "too) or cuda (method-file runs pick the GPU, tests taking the `device` fixture put their "
                          "models and tensors there, the CPU-only test files are skipped)")


def pytest_configure(config):
    if config.getoption("--device") == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""        # before CUDA starts: this process and its subprocesses
    elif not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda, but CUDA is not available here; use --device cpu")


@pytest.fixture(scope="session", autouse=True)
def compiled_mamba_built():
    """common.py's C++ loops of Mamba4Rec built (or found unbuildable) once, before any test: the tests that start
    method files as subprocesses under a timeout then never pay the first build (~30-60 s)."""
    import common
    return common._compiled_mamba()


def pytest_collection_modifyitems(config, items):
    if config.getoption("--device") == "cpu":
        return
    for item in items:
        reason = CPU_ONLY.get(os.path.basename(str(item.fspath)))
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"CPU only: {reason}"))


@pytest.fixture
def device(request) -> torch.device:
    """The device of --device: a test taking this fixture builds its models and tensors there."""
    return torch.device(request.config.getoption("--device"))


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread in every test: the tensors are tiny (one thread is faster), the machine may be shared,
    and the pinned results of tests/test_pinned.py depend on the thread count (float reduction order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def trains_with():
    """Check a method's core sampler in a loop of its own: an MF (users x D, items 0..I x D) trained 30 Adam steps
    with BPR on the examples (user, item), one negative each from negatives_of(queries (E, D), item_table (I+1, D))
    -> (E, 1). The loss must fall below 30 % of its start and no negative may be an item of `seen` (U, I+1)."""
    def check(negatives_of, user, item, seen, D: int = 8):
        U, I = seen.shape[0], seen.shape[1] - 1
        torch.manual_seed(0)
        users_table, items_table = torch.nn.Embedding(U, D), torch.nn.Embedding(I + 1, D)
        optimizer = torch.optim.Adam([*users_table.parameters(), *items_table.parameters()], lr=0.05)
        losses = []
        for _ in range(30):
            queries, item_table = users_table(user), items_table.weight                    # (E, D), (I+1, D)
            negatives = negatives_of(queries, item_table)                                   # (E, 1)
            positive = (queries * item_table[item]).sum(-1, keepdim=True)                  # (E, 1)
            negative = (queries.unsqueeze(1) * item_table[negatives]).sum(-1)              # (E, 1)
            loss = -torch.nn.functional.logsigmoid(positive - negative).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < 0.3 * losses[0], losses
        assert not bool(seen[user.unsqueeze(1), negatives].any())
    return check


CORE_START = "# ---- core: copy this section into your project; it needs only torch ----"
CORE_END = "# ---- end of core ----"


def _global_loads(code) -> set:
    """The global names a code object and the functions and classes inside it read."""
    names = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_loads(const)
    return names


@pytest.fixture
def copied_core():
    """copied_core(path): a method file's core section, the lines between its two marker lines, as a user would
    copy it: run in a namespace that holds only torch, after checking that it reads no other global name.
    Returns the namespace (its functions and classes as attributes)."""
    def copy(path: str) -> SimpleNamespace:
        lines = open(path).read().splitlines()
        assert lines.count(CORE_START) == 1 and lines.count(CORE_END) == 1, f"{path}: one marked core section"
        code = compile("\n".join(lines[lines.index(CORE_START):lines.index(CORE_END)]), path, "exec")
        namespace = {"torch": torch}
        exec(code, namespace)
        unknown = _global_loads(code) - set(namespace) - set(dir(builtins))
        assert not unknown, f"{path}: the core section reads {sorted(unknown)}, which it does not define"
        return SimpleNamespace(**namespace)
    return copy
