"""Mamba4Rec: the selective scans (PyTorch and C++) against a literal recurrence, causality, right padding, training."""

import pytest
import torch
import torch.nn.functional as F

import common
from common import Mamba4Rec, MambaBlock, Packing, _SelectiveScan, packed_selective_scan, selective_scan


@pytest.fixture(autouse=True, params=["pytorch", "compiled"])
def scan_path(request, monkeypatch):
    """Every test here runs on both CPU scans: `_SelectiveScan` (the PyTorch loop) and `_CompiledScan` (common.py's
    C++ loop, where it can be built); on CUDA both params run the PyTorch loop (or mamba_ssm's kernel)."""
    if request.param == "pytorch":
        monkeypatch.setattr(common, "_compiled_mamba", lambda: None)
    elif common._compiled_mamba() is None:
        pytest.skip("the C++ selective scan could not be built here (no C++ compiler or Python headers)")
    return request.param


def close(got, want, rtol=1.3e-6, atol=1e-5, msg=""):
    """allclose with shape, dtype and the worst gap (torch.testing.assert_close imports DTensor: seconds)."""
    assert got.shape == want.shape and got.dtype == want.dtype, (msg, got.shape, want.shape, got.dtype, want.dtype)
    assert torch.allclose(got, want, rtol=rtol, atol=atol), (msg, (got - want).abs().max().item())


def scan_inputs(Bt=2, L=5, d=3, n=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(Bt, L, d, generator=g, dtype=dtype)
    dt = F.softplus(torch.randn(Bt, L, d, generator=g, dtype=dtype))
    A = -torch.rand(d, n, generator=g, dtype=dtype) * 2 - 0.1
    B = torch.randn(Bt, L, n, generator=g, dtype=dtype)
    C = torch.randn(Bt, L, n, generator=g, dtype=dtype)
    D = torch.randn(d, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (x, dt, A, B, C, D)]


def literal_scan(x, dt, A, B, C, D):
    """h[b,c,s] <- exp(dt[b,t,c] A[c,s]) h[b,c,s] + dt[b,t,c] B[b,t,s] x[b,t,c];
    y[b,t,c] = sum_s h[b,c,s] C[b,t,s] + D[c] x[b,t,c], one scalar at a time."""
    Bt, L, d = x.shape
    n = A.shape[1]
    rows = []
    for b in range(Bt):
        h = [[0.0] * n for _ in range(d)]
        steps = []
        for t in range(L):
            ys = []
            for c in range(d):
                acc = D[c] * x[b, t, c]
                for s in range(n):
                    h[c][s] = torch.exp(dt[b, t, c] * A[c, s]) * h[c][s] + dt[b, t, c] * B[b, t, s] * x[b, t, c]
                    acc = acc + h[c][s] * C[b, t, s]
                ys.append(acc)
            steps.append(torch.stack(ys))
        rows.append(torch.stack(steps))
    return torch.stack(rows)


def loop_scan(x, dt, A, B, C, D):
    """The recurrence as written, one time step at a time (vectorised over rows, channels and states)."""
    h, ys = torch.zeros(x.shape[0], *A.shape, dtype=x.dtype), []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * x[:, t])
    return torch.stack(ys, 1)


def with_padding(y, x, D, lengths):
    """`selective_scan`'s output with lengths: y up to each row's length, D x on the padding after it."""
    padding = torch.arange(x.shape[1]) >= lengths.unsqueeze(1)                      # (Bt, L)
    return torch.where(padding.unsqueeze(-1), x * D, y)


def test_schedule_packs_rows_step_major_longest_first():
    lengths = torch.tensor([2, 3, 0, 3])                    # longest first: rows 1, 3 (3 steps), 0 (2), 2 (none)
    index, groups = _SelectiveScan.schedule(torch.arange(4) * 3, lengths, 2)       # rows of x.view(Bt * L)
    assert index.tolist() == [1 * 3 + 0, 3 * 3 + 0, 0 * 3 + 0,      # step 0: rows 1, 3, 0 (x.view(Bt * L) rows)
                              1 * 3 + 1, 3 * 3 + 1, 0 * 3 + 1,      # step 1
                              1 * 3 + 2, 3 * 3 + 2]                 # step 2: row 0 has ended
    assert groups == [[(slice(0, 2), slice(0, 2)), (slice(3, 5), slice(2, 4)), (slice(6, 8), slice(4, 6))],
                      [(slice(2, 3), slice(0, 1)), (slice(5, 6), slice(1, 2))]]   # row 0, for 2 steps
    index, groups = _SelectiveScan.schedule(torch.tensor([0, 2]), torch.tensor([2, 2]), 8)
    assert index.tolist() == [0, 2, 1, 3] and groups == [[(slice(0, 2), slice(0, 2)), (slice(2, 4), slice(2, 4))]]
    index, _ = _SelectiveScan.schedule(torch.tensor([0, 2, 2, 5]), torch.tensor([2, 0, 3, 1]), 8)   # packed rows
    assert index.tolist() == [2, 0, 5, 3, 1, 4]              # step 0 of rows 2, 0, 3; step 1 of 2, 0; step 2 of 2


@pytest.mark.parametrize("tail_rows", [0, 1, 8])              # no tail, the steps of one row, every step
@pytest.mark.parametrize("lengths", [None, [5, 2, 0]])
@pytest.mark.parametrize("group_rows", [1, 2, 3])            # rows per group: 3 groups, 2 (one partial), 1 group
def test_selective_scan_equals_literal_recurrence(monkeypatch, group_rows, lengths, tail_rows, device):
    """On --device (float64: the PyTorch scan there too), against the literal recurrence on the CPU; the groups'
    tails (`_SelectiveScan.tail`) of none, some or all of their steps."""
    monkeypatch.setattr(_SelectiveScan, "group_elements", group_rows * 3 * 4)
    monkeypatch.setattr(_SelectiveScan, "tail_rows", tail_rows)
    inputs = scan_inputs(Bt=3)
    on_device = [t.detach().to(device).requires_grad_() for t in inputs]
    weights = torch.randn(3, 5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y, expected = selective_scan(*on_device), literal_scan(*inputs)
    if lengths is not None:
        lengths = torch.tensor(lengths)
        y = selective_scan(*on_device, lengths.to(device))
        expected = with_padding(expected, inputs[0], inputs[5], lengths)
    assert y.shape == (3, 5, 3) and y.dtype == torch.float64 and y.device.type == device.type
    close(y.cpu(), expected, rtol=1e-10, atol=1e-10)
    with torch.no_grad():                                               # the no-backward path (no state kept)
        close(selective_scan(*on_device, None if lengths is None else lengths.to(device)).cpu(), expected.detach(),
              rtol=1e-10, atol=1e-10)
    grads = torch.autograd.grad((y * weights.to(device)).sum(), on_device)
    expected_grads = torch.autograd.grad((expected * weights).sum(), inputs)
    for name, got, want in zip("x dt A B C D".split(), grads, expected_grads):
        close(got.cpu(), want, rtol=1e-10, atol=1e-10, msg=f"gradient of {name}")


@pytest.mark.parametrize("tail_rows", [0, 1, 8])
@pytest.mark.parametrize("L", [1, 7, 50, 200])
def test_selective_scan_float32_matches_the_loop(monkeypatch, L, tail_rows):
    """float32, realistic ranges (Mamba's A = -(1..n), dt up to ~2), right padding of random lengths, several row
    groups, their tails of none, some or all of their steps: outputs and all six gradients within 1e-5 of the
    step-by-step loop, relative to each tensor's size."""
    monkeypatch.setattr(_SelectiveScan, "group_elements", 2 * 8 * 6)  # 2 rows per group
    monkeypatch.setattr(_SelectiveScan, "tail_rows", tail_rows)
    g = torch.Generator().manual_seed(L)
    Bt, d, n = 5, 6, 8
    x, B, C = torch.randn(Bt, L, d, generator=g), torch.randn(Bt, L, n, generator=g), torch.randn(Bt, L, n, generator=g)
    dt = F.softplus(torch.randn(Bt, L, d, generator=g) - 1)
    A = -torch.arange(1.0, n + 1).expand(d, n) * torch.rand(d, 1, generator=g).add(0.5)
    D = torch.randn(d, generator=g)
    inputs = [t.clone().requires_grad_() for t in (x, dt, A, B, C, D)]
    lengths = torch.randint(0, L + 1, (Bt,), generator=g)
    lengths[0] = L                                                     # one row without padding
    y = selective_scan(*inputs, lengths)
    expected = with_padding(loop_scan(*inputs), inputs[0], inputs[5], lengths)
    weights = torch.randn(Bt, L, d, generator=g)
    grads = torch.autograd.grad((y * weights).sum(), inputs)
    expected_grads = torch.autograd.grad((expected * weights).sum(), inputs)
    for name, got, want in zip("y x dt A B C D".split(), (y, *grads), (expected, *expected_grads)):
        close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item(), msg=name)


def test_selective_scan_dtypes_and_noncontiguous_inputs():
    x, dt, A, B, C, D = (t.detach() for t in scan_inputs(dtype=torch.float32))
    reference = selective_scan(x, dt, A, B, C, D)
    assert reference.dtype == torch.float32
    # non-contiguous (transposed) inputs give the same result
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)
    Bt_ = B.transpose(0, 1).contiguous().transpose(0, 1)
    close(selective_scan(xt, dt, A, Bt_, C, D), reference)
    # low precision in, float32 inside, low precision out
    low = selective_scan(*(t.to(torch.bfloat16) for t in (x, dt, A, B, C, D)))
    assert low.dtype == torch.bfloat16
    close(low.float(), reference, rtol=0.05, atol=0.05)


def small_model(n_layers=2, dim=16, n_items=30, dropout=0.1, seed=0):
    torch.manual_seed(seed)
    return Mamba4Rec(n_items, dim, max_len=10, n_layers=n_layers, dropout=dropout, d_state=4)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_causal_in_eval_mode(n_layers):
    model = small_model(n_layers).eval()
    g = torch.Generator().manual_seed(2)
    sequences = torch.randint(1, 31, (3, 8), generator=g)
    with torch.no_grad():
        base = model.encode(sequences)
        for k in range(8):
            changed = sequences.clone()
            changed[:, k] = changed[:, k] % 30 + 1                      # another real item
            out = model.encode(changed)
            close(out[:, :k], base[:, :k], rtol=0, atol=1e-6)
            assert (out[:, k] - base[:, k]).abs().max() > 1e-4        # the changed position does move


def test_right_padding_never_reaches_valid_positions_and_forward_reads_last_valid():
    model = small_model().eval()
    g = torch.Generator().manual_seed(3)
    lengths = [5, 2, 7, 1]
    items = [torch.randint(1, 31, (n,), generator=g) for n in lengths]
    padded = torch.zeros(4, 9, dtype=torch.long)
    for row, seq in enumerate(items):
        padded[row, :len(seq)] = seq
    with torch.no_grad():
        hidden = model.encode(padded)
        for row, seq in enumerate(items):
            alone = model.encode(seq[None])[0]                          # no padding at all
            close(hidden[row, :len(seq)], alone, rtol=0, atol=1e-6)
            longer = model.encode(F.pad(seq, (0, 20))[None])[0]        # more padding than in the batch
            close(longer[:len(seq)], alone, rtol=0, atol=1e-6)
        queries, table = model(padded)
        close(queries, hidden[torch.arange(4), torch.tensor(lengths) - 1])
        close(model(padded, every_position=True)[0], hidden)
    assert table is model.item_embedding.weight


def sequence_layout_encode(model, sequences):
    """Mamba4Rec.encode as it was before `Packing` (common.py at 32e14f2), restated on the model's modules: every
    layer on every position of the (B, L, D) layout, nn.Conv1d's causal conv, the recurrence step by step over
    the padding too (`loop_scan`)."""
    x = model.norm(model.dropout(model.item_embedding(sequences)))                     # (B, L, D)
    for layer in model.layers:
        block = layer.mamba
        u, z = block.in_proj(x).chunk(2, dim=-1)
        u = F.silu(block.conv1d(u.transpose(1, 2))[..., :x.shape[1]].transpose(1, 2))
        dt, B, C = block.x_proj(u).split([block.dt_rank, block.d_state, block.d_state], dim=-1)
        y = loop_scan(u, F.softplus(block.dt_proj(dt)), -torch.exp(block.A_log.float()), B, C, block.D)
        y = layer.dropout(block.out_proj(y * F.silu(z)))
        x = layer.norm(y + x if layer.residual else y)
        x = layer.ffn_norm(x + layer.ffn(x))
    return x


def padded_rows(seed=5, L=9, n_items=30):
    """Right-padded rows with an interior 0, an empty row and a full one; real = steps up to the last item (at
    least step 0), what `Packing` keeps."""
    g = torch.Generator().manual_seed(seed)
    sequences = torch.randint(1, n_items + 1, (6, L), generator=g)
    for row, length in enumerate([L, 4, 1, 6, 0, 7]):
        sequences[row, length:] = 0
    sequences[5, 2] = 0                                                                 # a 0 inside row 5
    real = torch.arange(L) < torch.tensor([L, 4, 1, 6, 1, 7]).unsqueeze(1)             # (B, L)
    return sequences, real


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
@pytest.mark.parametrize("n_layers", [1, 2])
def test_packing_changes_nothing_at_real_positions(dtype, rtol, n_layers):
    """Eval mode: the packed model's hidden states at the real positions, its queries (what scoring reads) and
    the gradients of a loss on them equal the sequence-layout forward's (before packing); padding holds 0."""
    model = small_model(n_layers).to(dtype).eval()
    sequences, real = padded_rows()
    weights = torch.randn(*sequences.shape, 16, generator=torch.Generator().manual_seed(6), dtype=dtype)
    results = []
    for encode in (model.encode, lambda s: sequence_layout_encode(model, s)):
        hidden = encode(sequences)
        loss = (hidden * weights * real.unsqueeze(-1)).sum()
        results.append((hidden, torch.autograd.grad(loss, list(model.parameters()))))
    (packed, packed_grads), (full, full_grads) = results
    scale = full[real].abs().max().item()
    close(packed[real], full[real], rtol=rtol, atol=rtol * scale)
    assert not packed[~real].any()
    last = (sequences > 0).sum(1).clamp(min=1) - 1                                      # forward()'s query positions
    assert real[torch.arange(len(sequences)), last].all()
    with torch.no_grad():
        queries, table = model(sequences)
    close(queries, full[torch.arange(len(sequences)), last].detach(), rtol=rtol, atol=rtol * scale)
    scores, want = queries @ table.T, full[torch.arange(len(sequences)), last].detach() @ table.T
    close(scores, want, rtol=rtol, atol=rtol * want.abs().max().item())
    for (name, _), got, want in zip(model.named_parameters(), packed_grads, full_grads):
        tol = max(10 * rtol, 1e-6) if name.endswith("A_log") else 10 * rtol     # A = -exp(A_log.float()): float32
        close(got, want, rtol=tol, atol=tol * want.abs().max().item(), msg=name)


@pytest.mark.parametrize("threads", [1, 2])
def test_conv_silu_compiled_equals_pytorch(scan_path, threads):
    """`MambaBlock.conv_silu`: the C++ pass (`_CompiledConvSiLU`; with 2 threads its 32 channels in two blocks)
    against `causal_conv` + F.silu on packed rows of several lengths (one of a single step), float64, output and
    the three gradients; and gradcheck of the C++ one."""
    if scan_path != "compiled":
        pytest.skip("compares the C++ conv with the PyTorch one")
    torch.manual_seed(0)
    packing = Packing(torch.tensor([[3, 4, 5, 6, 7, 0], [6, 7, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6]]))
    block = MambaBlock(16).double()
    P, d = len(packing.index), block.d_inner
    x = torch.randn(P, d, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(P, d, dtype=torch.float64)
    params = [x, block.conv1d.weight, block.conv1d.bias]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = block.conv_silu(x, packing)
        got_grads = torch.autograd.grad((got * weights).sum(), params)
    finally:
        torch.set_num_threads(before)
    want = F.silu(block.causal_conv(x, packing))
    for name, a, b in zip(["output", "x", "weight", "bias"], [got, *got_grads],
                          [want, *torch.autograd.grad((want * weights).sum(), params)]):
        close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    assert torch.autograd.gradcheck(lambda x, w, b: common._CompiledConvSiLU.apply(x, w, b, packing.step),
                                    (x.detach()[:, :3].clone().requires_grad_(),
                                     block.conv1d.weight[:3, 0].detach().clone().requires_grad_(),
                                     block.conv1d.bias[:3].detach().clone().requires_grad_()))


def test_causal_conv_equals_conv1d_on_each_row_with_gradients():
    """`MambaBlock.causal_conv` (`_CausalConv`, hand-written backward) on packed rows against nn.Conv1d on each row
    (its left zero padding), outputs and the gradients of x, weight and bias, float64; and torch's gradcheck."""
    torch.manual_seed(0)
    block = MambaBlock(4, d_state=2).double()                                          # d_inner = 8, d_conv = 4
    sequences = torch.tensor([[3, 1, 4, 1, 5, 9], [2, 6, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0], [3, 5, 8, 9, 7, 0]])
    packing = Packing(sequences)
    x = torch.randn(len(packing.index), 8, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(len(packing.index), 8, dtype=torch.float64)
    got = block.causal_conv(x, packing)
    grads = torch.autograd.grad((got * weights).sum(), [x, block.conv1d.weight, block.conv1d.bias])
    rows = torch.split(x, packing.lengths.tolist())
    want = torch.cat([block.conv1d(row.T.unsqueeze(0))[0, :, :len(row)].T for row in rows])
    want_grads = torch.autograd.grad((want * weights).sum(), [x, block.conv1d.weight, block.conv1d.bias])
    close(got, want, rtol=1e-12, atol=1e-12)
    for name, a, b in zip(["x", "weight", "bias"], grads, want_grads):
        close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    assert torch.autograd.gradcheck(lambda x, w, b: common._CausalConv.apply(x, w, b, *packing.same_row_masks(
        4, torch.float64)), (x, block.conv1d.weight[:, 0].detach().requires_grad_(),
                             block.conv1d.bias.detach().requires_grad_()))


def test_packing_layout():
    sequences, real = padded_rows(L=5)
    packing = Packing(sequences)
    assert packing.lengths.tolist() == [5, 4, 1, 5, 1, 5] and packing.shape == (6, 5)
    assert torch.equal(packing.pack(sequences), sequences[real])                       # row after row
    assert packing.step.tolist() == [t for n in [5, 4, 1, 5, 1, 5] for t in range(n)]
    assert packing.starts.tolist() == [0, 5, 9, 10, 15, 16]
    values = torch.randn(int(real.sum()), 3)
    unpacked = packing.unpack(values)
    assert unpacked.shape == (6, 5, 3) and torch.equal(unpacked[real], values) and not unpacked[~real].any()


def test_packed_selective_scan_equals_the_sequence_layout():
    """packed_selective_scan on the packed real positions = selective_scan with lengths, read there (values and
    gradients), and so does the fused (mamba_ssm) branch, which unpacks around the sequence-layout scan."""
    sequences, real = padded_rows(L=5)
    packing = Packing(sequences)
    inputs = scan_inputs(Bt=6, L=5)
    x, dt, A, B, C, D = inputs
    y = selective_scan(x, dt, A, B, C, D, packing.lengths)[real]
    packed = packed_selective_scan(x[real], dt[real], A, B[real], C[real], D, packing)
    close(packed, y, rtol=1e-12, atol=1e-12)
    weights = torch.randn(*y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
    for name, got, want in zip("x dt A B C D".split(), torch.autograd.grad((packed * weights).sum(), inputs),
                               torch.autograd.grad((y * weights).sum(), inputs)):
        close(got, want, rtol=1e-12, atol=1e-12, msg=name)


def test_mamba4rec_with_a_fused_scan_kernel(monkeypatch):
    """The mamba_ssm branch's plumbing on the CPU: a stand-in for `selective_scan_fn` (its (B, d, L) layout,
    computed by `loop_scan`) gives the same hidden states at the real positions as the PyTorch path."""
    model = small_model().eval()
    sequences, real = padded_rows()
    calls = []

    def kernel(u, delta, A, B, C, D):                                     # selective_scan_fn's layout, no padding
        calls.append(u.shape)
        return loop_scan(u.mT, delta.mT, A, B.mT, C.mT, D).mT

    with torch.no_grad():
        want = model.encode(sequences)
        monkeypatch.setattr(common, "_fused_scan", lambda x: kernel)
        got = model.encode(sequences)
    assert calls == [(6, 32, 9)] * 2
    close(got[real], want[real], rtol=1e-6, atol=1e-6)


def test_mamba_ssm_kernel_on_cuda_equals_the_pytorch_scan():
    """Optional path: with the mamba_ssm package and a GPU, selective_scan runs its fused kernel."""
    pytest.importorskip("mamba_ssm")
    if not torch.cuda.is_available():
        pytest.skip("mamba_ssm's kernel needs CUDA")
    inputs = scan_inputs(Bt=3, L=9, d=4, n=4, dtype=torch.float32)
    lengths = torch.tensor([9, 4, 0])
    y = selective_scan(*inputs, lengths)
    grads = torch.autograd.grad(y.square().sum(), inputs)
    cuda_inputs = [t.detach().cuda().requires_grad_() for t in inputs]
    y_cuda = selective_scan(*cuda_inputs, lengths.cuda())
    grads_cuda = torch.autograd.grad(y_cuda.square().sum(), cuda_inputs)
    for name, got, want in zip("y x dt A B C D".split(), (y_cuda, *grads_cuda), (y, *grads)):
        close(got.cpu(), want, rtol=1e-4, atol=1e-4, msg=name)


def test_mamba4rec_on_the_device_equals_the_cpu(device):
    """Eval-mode hidden states and the gradients of a loss on them: --device's model equals the CPU model's."""
    model = small_model(dropout=0.0).double()
    sequences, real = padded_rows()
    weights = torch.randn(*sequences.shape, 16, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    results = []
    for where in (torch.device("cpu"), device):
        moved = small_model(dropout=0.0).double().to(where)
        moved.load_state_dict(model.state_dict())
        hidden = moved.encode(sequences.to(where))
        grads = torch.autograd.grad((hidden * weights.to(where)).sum(), list(moved.parameters()))
        assert hidden.device.type == where.type
        results.append((hidden.cpu(), [g.cpu() for g in grads]))
    (cpu_hidden, cpu_grads), (got_hidden, got_grads) = results
    close(got_hidden, cpu_hidden, rtol=1e-10, atol=1e-10)
    for got, want in zip(got_grads, cpu_grads):
        close(got, want, rtol=1e-9, atol=1e-9 * max(1.0, want.abs().max().item()))


@pytest.mark.parametrize("n_layers", [1, 2])
def test_shapes_dtypes_and_init(n_layers):
    model = small_model(n_layers, dim=20)
    sequences = torch.randint(0, 31, (6, 7))
    hidden = model.encode(sequences)
    queries, table = model(sequences)
    assert hidden.shape == (6, 7, 20) and hidden.dtype == torch.float32
    assert queries.shape == (6, 20) and table.shape == (31, 20)
    assert torch.isfinite(hidden).all()
    assert len(model.layers) == n_layers and all(layer.residual == (n_layers > 1) for layer in model.layers)
    assert model.item_embedding.weight[0].abs().max() == 0
    block = model.layers[0].mamba
    assert (block.d_inner, block.dt_rank) == (40, 2)
    assert block.in_proj.weight.shape == (80, 20) and block.x_proj.weight.shape == (2 + 2 * 4, 40)
    close(block.A_log[3], torch.log(torch.arange(1.0, 5.0)))
    assert torch.equal(block.D, torch.ones(40))
    assert not block.dt_proj.bias.any() and abs(block.dt_proj.weight.std().item() - 0.02) < 0.01   # code's apply
    dt0 = F.softplus(MambaBlock(20).dt_proj.bias)                    # a bare block keeps Mamba's dt init
    assert dt0.min() >= 1e-3 * 0.999 and dt0.max() <= 1e-1 * 1.001
    assert abs(block.in_proj.weight.std().item() - 0.02) < 0.005
    assert model.layers[0].ffn[0].bias.abs().max() == 0


def test_every_tensor_is_created_on_the_input_device():
    """Under a `meta` default device, a tensor created without an explicit device lands on meta, and mixing it
    with the CPU input raises or shows in the outputs' device: the CUDA rule, checked on a CPU-only box."""
    model = small_model()
    sequences = torch.randint(0, 31, (4, 6))
    with torch.device("meta"):
        assert torch.zeros(1).device.type == "meta"                   # device-less factories do go to meta
        hidden = model.encode(sequences)
        hidden.square().sum().backward()
    assert hidden.device.type == "cpu" and model.layers[0].mamba.A_log.grad.device.type == "cpu"

    class Ctx:                                       # the autograd engine runs backward outside the mode: call it
        def save_for_backward(self, *tensors):
            self.saved_tensors = tensors

    x, dt, A, B, C, D = (t.detach() for t in scan_inputs(dtype=torch.float32))       # Bt = 2, L = 5
    ctx, inputs = Ctx(), [x.view(10, -1), dt.view(10, -1), A, B.view(10, -1), C.view(10, -1), D]
    starts, lengths = torch.tensor([0, 5]), torch.tensor([5, 3])
    with torch.device("meta"):
        y = _SelectiveScan.forward(ctx, *inputs, starts, lengths, True)
        grads = _SelectiveScan.backward(ctx, torch.ones_like(y))
    assert all(t.device.type == "cpu" for t in [y, *grads[:6]])


def test_training_with_bpr_reduces_the_loss():
    """Toy task: the next item is the last item + 1 (mod n). A few Adam steps on BPR must lower the loss."""
    n_items, L, batch = 30, 6, 64
    model = small_model(n_items=n_items)
    g = torch.Generator().manual_seed(4)
    starts = torch.randint(0, n_items, (batch, 1), generator=g)
    sequences = (starts + torch.arange(L + 1)) % n_items + 1
    inputs, positives = sequences[:, :-1], sequences[:, -1]
    negatives = torch.randint(1, n_items + 1, (batch,), generator=g)

    def bpr():
        queries, table = model(inputs)
        return -F.logsigmoid((queries * (table[positives] - table[negatives])).sum(-1)).mean()

    model.eval()
    with torch.no_grad():
        before = bpr().item()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(15):
        optimizer.zero_grad()
        loss = bpr()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = bpr().item()
    assert after < 0.5 * before, (before, after)
    assert model.item_embedding.weight[0].abs().max() == 0                 # padding row never trained


@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_mamba_equals_the_pytorch_loop(scan_path, threads):
    """`_CompiledScan` against `_SelectiveScan` at Mamba4Rec's shapes (d_inner 128, d_state 16), packed rows of
    Beauty-like lengths (some empty), float32, realistic ranges: the output and the six gradients agree to float
    rounding. With 2 threads the rows run in parallel and dLoss/dA is summed per thread."""
    if scan_path != "compiled":
        pytest.skip("compares the C++ scan with the PyTorch one")
    g = torch.Generator().manual_seed(threads)
    lengths = torch.randint(1, 12, (40,), generator=g)
    lengths[:3], lengths[5] = torch.tensor([50, 31, 17]), 0
    starts, N, d, n = lengths.cumsum(0) - lengths, int(lengths.sum()), 128, 16
    x, B, C = torch.randn(N, d, generator=g), torch.randn(N, n, generator=g), torch.randn(N, n, generator=g)
    dt = F.softplus(torch.randn(N, d, generator=g) - 1)
    A = -torch.arange(1.0, n + 1).expand(d, n) * torch.rand(d, 1, generator=g).add(0.5)
    D, weights = torch.randn(d, generator=g), torch.randn(N, d, generator=g)
    results = []
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for scan in (common._CompiledScan, _SelectiveScan):
            inputs = [t.clone().requires_grad_() for t in (x, dt, A, B, C, D)]
            y = scan.apply(*inputs, starts, lengths, True)
            results.append((y, *torch.autograd.grad((y * weights).sum(), inputs)))
    finally:
        torch.set_num_threads(before)
    for name, got, want in zip("y x dt A B C D".split(), *results):
        close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item(), msg=name)
