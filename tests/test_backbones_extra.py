"""LinRec, FMLP4Rec and NGCF (common.py): shapes, causality and padding, literal re-statements of each layer on
small cases (the MDCNS code's formulas, dense NGCF matrices), learning on synthetic data, and each method's CLI.
Also the backbones' exact fast paths: `Dropout` against nn.Dropout, `score_items` in blocks against one gather."""
import argparse
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

import baselines
import common
import icpns
import mdcns


def close(got, want, atol=1e-6, msg=""):
    assert got.shape == want.shape, (msg, got.shape, want.shape)
    assert torch.allclose(got, want, rtol=0, atol=atol), (msg, (got - want).abs().max().item())


def sequential_model(name, n_layers=2, dim=8, n_items=30, max_len=10, seed=0):
    torch.manual_seed(seed)
    if name == "linrec":
        return common.LinRec(n_items, dim, max_len, n_layers, n_heads=2, dropout=0.1)
    return common.FMLP4Rec(n_items, dim, max_len, n_layers, dropout=0.1)


def random_weights_(model, seed):
    """Non-trivial values everywhere (LayerNorm weights and biases too), so no term of a layer hides behind an init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=g, dtype=parameter.dtype) * 0.5)


# ---------------------------------------------------------------------------------------------- sequential
@pytest.mark.parametrize("name", ["linrec", "fmlp4rec"])
def test_sequential_shapes_init_and_parameter_count(name):
    model = sequential_model(name, dim=8)
    sequences = torch.randint(0, 31, (4, 10))
    hidden = model.encode(sequences)
    queries, table = model(sequences)
    assert hidden.shape == (4, 10, 8) and queries.shape == (4, 8) and table.shape == (31, 8)
    assert model(sequences, every_position=True)[0].shape == (4, 10, 8)
    assert table is model.item_embedding.weight and table[0].abs().max() == 0
    assert torch.isfinite(hidden).all() and len(model.blocks) == 2
    assert abs(model.item_embedding.weight[1:].std().item() - 0.02) < 0.005
    # the MDCNS code's count, per block: LinRec 4 (D^2 + D) + 2 D + FFN; FMLP (L/2 + 1) D 2 + 2 D + FFN
    D, L, I = 8, 10, 30
    ffn = (D * 4 * D + 4 * D) + (4 * D * D + D) + 2 * D
    block = 4 * (D * D + D) + 2 * D + ffn if name == "linrec" else (L // 2 + 1) * D * 2 + 2 * D + ffn
    assert sum(p.numel() for p in model.parameters()) == (I + 1) * D + L * D + 2 * D + 2 * block


@pytest.mark.parametrize("n_layers", [1, 2])
@pytest.mark.parametrize("name", ["linrec", "fmlp4rec"])
def test_sequential_causal_and_padding_never_reaches_valid_positions(name, n_layers):
    model = sequential_model(name, n_layers).eval()
    random_weights_(model, 1)
    g = torch.Generator().manual_seed(2)
    sequences = torch.randint(1, 31, (3, 10), generator=g)
    with torch.no_grad():
        base = model.encode(sequences)
        for k in range(10):                                             # changing a later item never moves earlier
            changed = sequences.clone()
            changed[:, k] = changed[:, k] % 30 + 1
            out = model.encode(changed)
            assert torch.equal(out[:, :k], base[:, :k]), k                   # exact zeros, not rounding
            assert (out[:, k] - base[:, k]).abs().max() > 1e-4         # the changed position does move
        lengths = [5, 2, 7, 1]
        items = [torch.randint(1, 31, (n,), generator=g) for n in lengths]
        padded = torch.zeros(4, 10, dtype=torch.long)
        for row, seq in enumerate(items):
            padded[row, :len(seq)] = seq
        hidden = model.encode(padded)
        for row, seq in enumerate(items):
            alone = model.encode(seq[None])[0]                          # no padding at all (shorter L)
            close(hidden[row, :len(seq)], alone, msg="padding")
        queries, _ = model(padded)
        close(queries, hidden[torch.arange(4), torch.tensor(lengths) - 1])


@pytest.mark.parametrize("name", ["linrec", "fmlp4rec"])
def test_packed_forward_equals_the_blocks_on_the_padded_layout(name):
    """encode computes on the real positions only (Packing), the mixers on rows bucketed by length; the same blocks
    on the padded (B, L, D) layout (encode before packing) give the same hidden states at every real position and
    the same gradients. Rows of 1, 3, 9, 20 items and an empty one at L = max_len = 20: buckets 3, 9 and 20 steps
    wide, so FMLP's narrow buckets use the first taps only. Float64, eval mode (dropout draws differ)."""
    model = sequential_model(name, max_len=20).double().eval()
    random_weights_(model, 5)
    sequences = common.pad_right([torch.arange(1, n + 1) * 7 % 30 + 1 for n in (1, 3, 9, 20, 0)], 20)
    packing = common.Packing(sequences)
    assert [where.shape[1] for where, _ in packing.buckets] == [3, 9, 20]
    real = torch.zeros(sequences.numel(), dtype=torch.bool)      # the real positions, and the empty row's step 0
    real[packing.index] = True
    real = real.view(sequences.shape)

    def padded_layout(model):
        x = model.item_embedding(sequences) + model.position_embedding(model.positions(sequences))
        x = model.dropout(model.norm(x))                                                   # (B, L, D)
        for block in model.blocks:
            x = block(x)                                                                   # mixer, then ResidualFFN
        return x

    reference = copy.deepcopy(model)
    packed, full = model.encode(sequences), padded_layout(reference)
    close(packed[real], full[real], atol=1e-12)
    assert not packed[~real].any()                                                         # 0 at the padding
    weights = torch.randn(*packed.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    (packed[real] * weights[real]).sum().backward()
    (full[real] * weights[real]).sum().backward()
    for (parameter, a), b in zip(model.named_parameters(), reference.parameters()):
        close(a.grad, b.grad, atol=1e-10, msg=parameter)


@pytest.mark.parametrize("name", ["linrec", "fmlp4rec"])
def test_an_empty_batch_runs_forward_and_backward(name):
    model = sequential_model(name).train()
    empty = torch.zeros(0, 10, dtype=torch.long)
    assert model.encode(empty).shape == (0, 10, 8)
    queries, table = model(empty)
    assert queries.shape == (0, 8)
    (queries.sum() + table.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["linrec", "fmlp4rec", "ngcf"])
def test_every_tensor_is_created_on_the_input_device(name):
    """Under a `meta` default device a tensor created without an explicit device lands on meta and mixing it with
    the CPU weights raises or shows in the output's device: the CUDA rule, checked on a CPU-only box."""
    if name == "ngcf":
        n_users, n_items, user, item = ngcf_graph()
        model, inputs = common.NGCF(n_users, n_items, 4, 2, 0.1, user, item), torch.arange(3)
    else:
        model, inputs = sequential_model(name), torch.randint(0, 31, (4, 10))
    with torch.device("meta"):
        queries, table = model(inputs)
        (queries.square().sum() + table.sum()).backward()
    assert queries.device.type == "cpu" and all(p.grad.device.type == "cpu" for p in model.parameters())


def linrec_attention_on_prefix(attention, x):
    """The MDCNS code's `LinrecAttention` on one unpadded prefix x (n, D), as written there: ELU, divide each
    query and key row by its L2 norm, Q' (K'^T V) / sqrt(d_h) over the whole prefix (not causal), output
    projection, LN(x + .)."""
    n, D = x.shape
    h = attention.n_heads
    d = D // h
    Q, K, V = (layer(x).view(n, h, d).transpose(0, 1) for layer in (attention.query, attention.key, attention.value))
    Q, K = F.elu(Q), F.elu(K)
    Q = Q / torch.sqrt((Q * Q).sum(-1, keepdim=True))
    K = K / torch.sqrt((K * K).sum(-1, keepdim=True))
    context = Q @ (K.transpose(1, 2) @ V) / math.sqrt(d)                 # (h, n, d): K'^T V first, as LinRec does
    return attention.norm(x + attention.output(context.transpose(0, 1).reshape(n, D)))


def test_linrec_attention_at_t_equals_the_mdcns_formula_on_the_prefix_up_to_t():
    torch.manual_seed(0)
    attention = common.LinearAttention(4, 2, dropout=0.0)
    random_weights_(attention, 3)
    x = torch.randn(2, 3, 4, dtype=torch.float64)                       # the 3-step case
    attention.double()
    got = attention(x)
    for b in range(2):
        for t in range(3):
            close(got[b, t], linrec_attention_on_prefix(attention, x[b, :t + 1])[-1], atol=1e-12, msg=f"t={t}")
    # and the causal running-sum form, head by head: A_t = Q'_t (sum_{s<=t} K'_s^T V_s) / sqrt(d_h)
    for b in range(2):
        for t in range(3):
            heads = []
            for h in range(2):
                part = slice(2 * h, 2 * h + 2)
                q = F.normalize(F.elu(attention.query(x[b, t])[part]), dim=0)
                S = sum(torch.outer(F.normalize(F.elu(attention.key(x[b, s])[part]), dim=0),
                                    attention.value(x[b, s])[part]) for s in range(t + 1))   # (d_h, d_h)
                heads.append(q @ S / math.sqrt(2))
            expected = attention.norm(x[b, t] + attention.output(torch.cat(heads)))
            close(got[b, t], expected, atol=1e-12, msg=f"running sum t={t}")


def irfft_by_hand(W, L):
    """w_n = (1/L) sum over the Hermitian spectrum: Re W_0 + 2 sum_{0<k<L/2} Re(W_k e^{2 pi i k n / L})
    + (L even) Re(W_{L/2}) (-1)^n, per channel; W: (L//2 + 1, D) complex."""
    n = torch.arange(L, dtype=torch.float64)[:, None]
    w = W[0].real.expand(L, -1).clone()
    for k in range(1, (L + 1) // 2):
        w += 2 * (W[k] * torch.exp(2j * math.pi * k * n / L)).real
    if L % 2 == 0:
        w += W[L // 2].real * (-1.0) ** n
    return w / L


def mdcns_filter(layer, x):
    """The MDCNS code's `FilterLayer` on a (B, max_len, D) input: rfft (ortho) over the positions, times W,
    irfft (ortho), dropout (off), LN(x + .)."""
    spectrum = torch.fft.rfft(x, dim=1, norm="ortho") * torch.view_as_complex(layer.weight)
    return layer.norm(x + torch.fft.irfft(spectrum, n=x.shape[1], dim=1, norm="ortho"))


@pytest.mark.parametrize("max_len", [6, 5])
def test_fmlp_filter_equals_the_mdcns_filter_on_each_zero_padded_prefix(max_len):
    torch.manual_seed(0)
    layer = common.CausalFilter(3, max_len, dropout=0.0).double()
    random_weights_(layer, 4)
    x = torch.randn(2, max_len, 3, dtype=torch.float64)
    got = layer(x)
    W = torch.view_as_complex(layer.weight)
    taps = irfft_by_hand(W, max_len)
    close(layer.taps(), taps, atol=1e-12, msg="taps")
    for t in range(max_len):
        prefix = F.pad(x[:, :t + 1], (0, 0, max_len - t - 1, 0))       # left-padded with zero vectors
        close(got[:, t], mdcns_filter(layer, prefix)[:, -1], atol=1e-12, msg=f"prefix t={t}")
        convolved = sum(taps[j] * x[:, t - j] for j in range(t + 1))    # sum_{j<=t} w_j x_{t-j}
        close(got[:, t], layer.norm(x[:, t] + convolved), atol=1e-12, msg=f"convolution t={t}")
    # why the change: the original filter on a whole window moves position 0 when the last item changes
    later = x.clone()
    later[:, -1] += 1.0
    assert (mdcns_filter(layer, later)[:, 0] - mdcns_filter(layer, x)[:, 0]).abs().max() > 1e-3
    assert torch.equal(layer(later)[:, 0], got[:, 0])
    # shorter inputs use the first taps
    close(layer(x[:, :3]), got[:, :3], atol=1e-12)


# ---------------------------------------------------------------------------------------------- NGCF
def ngcf_graph():
    user, item = torch.tensor([0, 0, 1, 2, 2, 0]), torch.tensor([1, 2, 2, 3, 1, 1])  # (0, 1) twice
    return 3, 3, user, item


def dense_laplacian(n_users, n_items, user, item):
    A = torch.zeros(n_users + n_items + 1, n_users + n_items + 1, dtype=torch.float64)
    for u, i in zip(user.tolist(), item.tolist()):
        A[u, n_users + i] = A[n_users + i, u] = 1.0
    d = A.sum(1)
    inv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    return inv[:, None] * A * inv[None, :]


@pytest.mark.parametrize("n_layers", [1, 2])
def test_ngcf_equals_dense_equation_7_and_concatenation(n_layers):
    n_users, n_items, user, item = ngcf_graph()
    torch.manual_seed(0)
    model = common.NGCF(n_users, n_items, 4, n_layers, dropout=0.1, train_user=user, train_item=item).double()
    random_weights_(model, 5)
    model.eval()
    Lap = dense_laplacian(n_users, n_items, user, item)
    I = torch.eye(len(Lap), dtype=torch.float64)
    E = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
    layers = [E]
    for l in range(n_layers):
        W1, b1 = model.sum_transforms[l].weight.T, model.sum_transforms[l].bias
        W2, b2 = model.product_transforms[l].weight.T, model.product_transforms[l].bias
        Z = (Lap + I) @ E @ W1 + b1 + ((Lap @ E) * E) @ W2 + b2
        E = torch.where(Z > 0, Z, 0.2 * Z)                               # LeakyReLU(0.2)
        E = E / E.norm(dim=1, keepdim=True)
        layers.append(E)
    expected = torch.cat(layers, 1)
    queries, table = model(torch.arange(n_users))
    assert queries.shape == (3, 4 * (n_layers + 1)) and table.shape == (4, 4 * (n_layers + 1))
    close(queries, expected[:n_users], atol=1e-6)                      # the model's adjacency is float32
    close(table, expected[n_users:], atol=1e-6)
    users, items = model.ego_embeddings(torch.tensor([0, 2]), torch.tensor([1]))        # the L2 term's inputs
    assert torch.equal(users, model.user_embedding.weight[[0, 2]]) and torch.equal(items, model.item_embedding.weight[[1]])


def test_ngcf_training_mode_drops_messages_and_gradients_equal_dense_autograd():
    n_users, n_items, user, item = ngcf_graph()
    torch.manual_seed(0)
    model = common.NGCF(n_users, n_items, 4, 2, dropout=0.5, train_user=user, train_item=item).double()
    with torch.no_grad():
        a, b = model.train()(torch.arange(3))[0], model(torch.arange(3))[0]
    assert not torch.allclose(a, b)                                     # message dropout is active in training
    model.eval()
    q, table = model(torch.tensor([0, 2]))
    (q.sum() * 2 + (table ** 2).sum()).backward()
    Lap = dense_laplacian(n_users, n_items, user, item)
    E0 = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach().requires_grad_()
    E, layers = E0, [E0]
    for sum_t, product_t in zip(model.sum_transforms, model.product_transforms):
        E = F.normalize(F.leaky_relu(sum_t(Lap @ E + E) + product_t((Lap @ E) * E), 0.2), dim=1)
        layers.append(E)
    final = torch.cat(layers, 1)
    (final[[0, 2]].sum() * 2 + (final[3:] ** 2).sum()).backward()
    close(model.user_embedding.weight.grad, E0.grad[:3], atol=1e-6)
    close(model.item_embedding.weight.grad, E0.grad[3:], atol=1e-6)


def test_ngcf_init_and_eval_cache_follows_layer_weights():
    data = common.make_synthetic(0, n_users=60, n_items=40)
    split = common.split_dataset(data, "ratio", seed=0, sequential=False)
    torch.manual_seed(0)
    model = common.NGCF(split.n_users, split.n_items, 8, 2, 0.1, split.train_user, split.train_item).eval()
    assert all(t.bias.abs().max() == 0 for t in [*model.sum_transforms, *model.product_transforms])
    before = common.evaluate(model, split.valid, [5, 10], batch_size=16)
    with torch.no_grad():
        model.product_transforms[1].weight.add_(0.5)                    # only a layer weight changes
        fresh = model.propagate()
        assert torch.equal(model(torch.arange(split.n_users))[0], fresh[0])
    assert common.evaluate(model, split.valid, [5, 10], batch_size=16) != before


# ---------------------------------------------------------------------------------------------- exact fast paths
@pytest.mark.parametrize("p", [0.1, 0.5, 0.73])
def test_dropout_gives_nn_dropouts_masks_values_gradients_and_random_state(p):
    x = torch.randn(37, 19, requires_grad=True)
    weights = torch.randn(37, 19)
    results = []
    for module in (torch.nn.Dropout(p), common.Dropout(p)):
        torch.manual_seed(11)
        y = module(x)
        grad, = torch.autograd.grad((y * weights).sum(), x)
        results.append((y, grad, torch.get_rng_state(), torch.rand(3)))
    (y0, g0, state0, next0), (y1, g1, state1, next1) = results
    assert torch.equal(y0, y1) and torch.equal(g0, g1) and torch.equal(state0, state1) and torch.equal(next0, next1)
    assert 0 < int((y1 == 0).sum()) < y1.numel()                              # it does drop, and keeps
    module = common.Dropout(p).eval()
    assert module(x) is x and common.Dropout(0.0)(x) is x                    # off: the input itself, as nn.Dropout


def test_dropout_on_the_device_drops_scales_and_passes_gradients(device):
    """On --device: a fraction ~p of the entries dropped, the rest scaled by 1 / (1 - p), the gradient the mask."""
    x = torch.ones(200, 50, device=device, requires_grad=True)
    y = common.Dropout(0.3)(x)
    grad, = torch.autograd.grad(y.sum(), x)
    assert y.device.type == device.type and torch.equal(grad, y.detach())
    kept = y.detach() != 0
    assert torch.allclose(y.detach()[kept], torch.full_like(y.detach()[kept], 1 / 0.7))
    assert abs(1 - kept.float().mean().item() - 0.3) < 0.03                 # 10,000 draws: sd 0.005


def test_dropout_takes_its_own_draw_where_it_is_exact(monkeypatch):
    """Where this build's bernoulli_ is rand(float64) < p (checked on a private generator), the mask is drawn by
    torch.rand and nn.Dropout is not called; elsewhere it is nn.Dropout itself."""
    exact = common._bernoulli_draws_uniform_doubles()
    called = []
    monkeypatch.setattr(torch.nn.Dropout, "forward", lambda self, x: called.append(1) or x)
    common.Dropout(0.5)(torch.ones(8, 3))
    assert called == ([] if exact else [1])
    called.clear()
    common.Dropout(0.5)(torch.ones(3, 8).T)                                   # not contiguous: nn.Dropout
    assert called == [1]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(11, 5), (1, 1), (40, 100)])
def test_score_items_as_sparse_products_equals_one_gather(dtype, shape, device):
    """Scores and both gradients against autograd's through one (P, N, D) gather, to float rounding: the scores are
    sampled_addmm's dot products and the queries' gradient a CSR matmul, each summing in its kernel's order, not
    the batched matmul's (a tolerance since they became sparse products; before, bit for bit). The item table's
    gradient adds the same products as the gather's index_add_, in an order that depends on the CPU's vector kernels
    (bit for bit on some machines, not on all): to float rounding too. N = 100 > 9 items takes the gather fallback
    of the forward."""
    P, N = shape
    g = torch.Generator().manual_seed(3)
    queries = torch.randn(P, 6, generator=g, dtype=dtype).to(device).requires_grad_()
    table = torch.randn(9, 6, generator=g, dtype=dtype).to(device).requires_grad_()
    items = torch.randint(0, 9, (P, N), generator=g).to(device)             # repeats within and across rows
    weights = torch.randn(P, N, generator=g, dtype=dtype).to(device)
    close = lambda a, b: torch.allclose(a, b, rtol=1e-5 if dtype == torch.float32 else 1e-12,  # noqa: E731
                                        atol=(1e-6 if dtype == torch.float32 else 1e-14) * b.abs().max().item())
    got = common.score_items(queries, table, items)
    want = torch.einsum("pd,pnd->pn", queries, table.index_select(0, items.view(-1)).view(P, N, 6))
    assert close(got, want) and got.dtype == dtype and got.device.type == device.type
    for inputs in ([queries, table], [table], [queries]):
        got_grads = torch.autograd.grad((common.score_items(queries, table, items) * weights).sum(), inputs)
        want_grads = torch.autograd.grad((want * weights).sum(), inputs, retain_graph=True)
        assert all(close(a, b) for a, b in zip(got_grads, want_grads))
    for empty in (common.score_items(queries[:0], table, items[:0]), common.score_items(queries, table, items[:, :0])):
        assert empty.shape == (len(empty), 0 if empty.shape[1] == 0 else N)
        grads = torch.autograd.grad(empty.sum(), [queries, table])
        assert all(not grad.any() for grad in grads)


def test_score_items_reuses_the_item_sort_only_for_the_same_unchanged_items():
    """The item table's gradient reuses the last candidates' sort (MDCNS's two models score the same tensor):
    the same tensor again, the same tensor changed in place, and a new tensor give autograd's gradients (to float
    rounding: the CPU's vector kernels choose the summation order; a stale sort would be wrong by whole terms)."""
    g = torch.Generator().manual_seed(5)
    queries = torch.randn(6, 4, generator=g, requires_grad=True)
    tables = [torch.randn(10, 4, generator=g, requires_grad=True) for _ in range(2)]
    items = torch.randint(0, 10, (6, 7), generator=g)

    def gradient_matches_autograd(table):
        got = torch.autograd.grad(common.score_items(queries, table, items).sum(), table)[0]
        want = torch.autograd.grad(torch.einsum("pd,pnd->pn", queries, table[items]).sum(), table)[0]
        return torch.allclose(got, want, rtol=1e-5, atol=1e-6 * want.abs().max().item())

    for table in tables:                                                # the second call reuses the sort
        assert gradient_matches_autograd(table)
    assert common._patterns.last[1].items is items
    items[0] = (items[0] + 1) % 10                                      # in place: a new version, a new sort
    assert gradient_matches_autograd(tables[0])
    items = items.flip(0).clone()                                       # another tensor
    assert gradient_matches_autograd(tables[1])


# ---------------------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("backbone, flags", [
    ("linrec", ["--max-len", "20", "--dim", "16", "--dropout", "0.1"]),
    ("fmlp4rec", ["--max-len", "20", "--dim", "16", "--dropout", "0.1"]),
    ("ngcf", ["--split", "ratio", "--dim", "16", "--layers", "2", "--batch-size", "512"]),
])
def test_learns_on_synthetic_data(tmp_path, backbone, flags):
    parser = common.base_parser("test")
    args = parser.parse_args(["--quiet", "--epochs", "6", "--lr", "5e-3", "--backbone", backbone,
                              "--out-dir", str(tmp_path), *flags])
    args, split = common.prepare(args, "rns")
    model = common.build_backbone(args.backbone, split, args)
    untrained = common.evaluate(model, split.valid, args.ks)
    record = common.pretrain_uniform(args, split, model)
    losses = [h["loss"] for h in record["history"]]
    assert losses[-1] < 0.8 * losses[0], losses
    assert record["valid"]["ndcg@10"] > max(2 * untrained["ndcg@10"], 0.05), (untrained, record["valid"])


# ---------------------------------------------------------------------------------------------- every method
@pytest.mark.parametrize("method, argv", [
    (mdcns.main, ["--backbone", "linrec", "--peer", "fmlp4rec", "--n-candidates", "20", "--split", "user"]),
    (icpns.main, ["--backbone", "ngcf", "--pretrain-epochs", "1", "--layers", "2"]),
    (baselines.main, ["--backbone", "fmlp4rec", "--sampler", "dnsmn", "--split", "loo"]),
])
def test_every_method_runs_on_the_new_backbones(tmp_path, method, argv):
    flags = ["--epochs", "1", "--dim", "16", "--quiet", "--out-dir", str(tmp_path)]
    if "ngcf" not in argv:
        flags += ["--max-len", "20", "--layers", "1"]
    result = method(argv + flags)
    with open(tmp_path / "results.json") as f:
        saved = json.load(f)
    assert saved["backbone"] == argv[1] and saved["test"] == result["test"] and 0 <= saved["test"]["ndcg@10"] <= 1


def test_linrec_heads_must_divide_dim(tmp_path):
    args = common.base_parser("test").parse_args(["--backbone", "linrec", "--dim", "10", "--heads", "3",
                                                  "--out-dir", str(tmp_path)])
    with pytest.raises(common.RecError, match="--heads 3 must divide --dim 10"):   # before any data is read
        common.resolve_args(args, "rns")
    split = common.split_dataset(common.make_synthetic(0, n_users=50, n_items=40), "loo", seed=0, sequential=True,
                                 max_len=10)
    with pytest.raises(common.RecError, match="not a multiple of --heads"):        # and for direct API use
        common.build_backbone("linrec", split, argparse.Namespace(dim=10, heads=3, layers=1, dropout=0.1))
