# --- BEGIN DEV IMPORTS (deleted when merged into common.py)
from common import SequentialBackbone
import torch, torch.nn as nn, torch.nn.functional as F, math
# --- END DEV IMPORTS


def selective_scan(x, dt, A, B, C, D):
    """The selective scan of Mamba (Gu & Dao 2023, Algorithm 2) with zero-order-hold A and Euler B, in PyTorch:

        h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * x_t,   h_{-1} = 0,   h_t: (Bt, d_inner, d_state)
        y_t = h_t . C_t + D * x_t

    x, dt: (Bt, L, d_inner); A: (d_inner, d_state); B, C: (Bt, L, d_state); D: (d_inner,) -> y: (Bt, L, d_inner).
    Runs in float32 at least (like mamba_ssm's reference scan) and returns x's dtype. The CUDA kernel of mamba-ssm
    is replaced by `_SelectiveScan`, which walks the time steps in small cache-sized blocks and has a hand-written
    backward (an adjoint recurrence run backwards in time), ~3.5x faster on CPU than autograd through the loop.
    """
    work = torch.promote_types(x.dtype, torch.float32)
    y = _SelectiveScan.apply(*(t.to(work) for t in (x, dt, A, B, C, D)))
    return y.to(x.dtype)


class _SelectiveScan(torch.autograd.Function):
    """`selective_scan` with a manual backward. Internally time-major: (L, Bt, ...). The (Bt, d_inner, d_state)
    terms exp(dt*A) and dt*B*x are built a block of time steps at a time (~2^20 elements, so they stay in cache)
    instead of for the whole sequence; only the states h_t are kept for the backward, exp(dt*A) is recomputed."""

    block_elements = 1 << 20

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D):
        xT, dtT, BT, CT = (t.transpose(0, 1).contiguous() for t in (x, dt, B, C))     # (L, Bt, d) / (L, Bt, n)
        L, Bt, d = xT.shape
        step = max(1, _SelectiveScan.block_elements // max(1, Bt * A.numel()))
        dtx = dtT * xT
        states = xT.new_empty(L, Bt, d, A.shape[1])                                    # h_t for every t
        y = torch.empty_like(xT)
        h = None
        for s in range(0, L, step):
            e = min(s + step, L)
            decay = torch.exp(dtT[s:e].unsqueeze(-1) * A)                              # (T, Bt, d, n)
            block = states[s:e]
            torch.mul(dtx[s:e].unsqueeze(-1), BT[s:e].unsqueeze(2), out=block)        # dt * B * x
            for k in range(e - s):
                if h is not None:
                    block[k].addcmul_(decay[k], h)                                     # + exp(dt A) * h_{t-1}
                h = block[k]
            torch.sum(block * CT[s:e].unsqueeze(2), -1, out=y[s:e])                   # h_t . C_t
        y.addcmul_(xT, D)
        ctx.save_for_backward(xT, dtT, A, BT, CT, D, states)
        ctx.step = step
        return y.transpose(0, 1)                                                       # (Bt, L, d)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        xT, dtT, A, BT, CT, D, states = ctx.saved_tensors
        gyT = gy.transpose(0, 1).contiguous()                                          # (L, Bt, d)
        L, step = len(xT), ctx.step
        dtx = dtT * xT
        gx, gdt, gB, gC = torch.empty_like(xT), torch.empty_like(xT), torch.empty_like(BT), torch.empty_like(CT)
        gA = torch.zeros_like(A)
        carry = None                                                                   # exp(dt_{t+1} A) * G_{t+1}
        for e in range(L, 0, -step):
            s = max(e - step, 0)
            decay = torch.exp(dtT[s:e].unsqueeze(-1) * A)                              # (T, Bt, d, n)
            G = gyT[s:e].unsqueeze(-1) * CT[s:e].unsqueeze(2)                          # dLoss/dh_t, direct part
            for k in range(e - s - 1, -1, -1):
                if carry is not None:
                    G[k] += carry                                                      # + through h_{t+1}
                carry = decay[k] * G[k]
            torch.sum(states[s:e] * gyT[s:e].unsqueeze(-1), 2, out=gC[s:e])
            g_dtA = G * decay                                                          # dLoss/d(dt*A) ...
            if s == 0:
                g_dtA[1:] *= states[:e - 1]                                            # ... = G * decay * h_{t-1}
                g_dtA[0] = 0                                                           # h_{-1} = 0
            else:
                g_dtA *= states[s - 1:e - 1]
            gA += (g_dtA * dtT[s:e].unsqueeze(-1)).sum((0, 1))
            GB = (G * BT[s:e].unsqueeze(2)).sum(-1)                                    # (T, Bt, d)
            torch.sum(G * dtx[s:e].unsqueeze(-1), 2, out=gB[s:e])
            torch.sum(g_dtA * A, -1, out=gdt[s:e])
            gdt[s:e].addcmul_(GB, xT[s:e])
            torch.mul(GB, dtT[s:e], out=gx[s:e])
        gx.addcmul_(gyT, D)
        gD = (gyT * xT).sum((0, 1))
        return gx.transpose(0, 1), gdt.transpose(0, 1), gA, gB.transpose(0, 1), gC.transpose(0, 1), gD


class MambaBlock(nn.Module):
    """The Mamba block (Gu & Dao 2023; `mamba_ssm.Mamba` with its defaults), without norm or residual:
    in_proj -> (x, z); x -> causal depthwise conv -> SiLU -> selective SSM with input-dependent dt, B, C;
    y * SiLU(z) -> out_proj. Causal: position t only sees positions <= t."""

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, dt_init_floor: float = 1e-4):
        super().__init__()
        self.d_inner, self.d_state, self.dt_rank = expand * dim, d_state, math.ceil(dim / 16)
        self.in_proj = nn.Linear(dim, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, dim, bias=False)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.dt_init = (dt_min, dt_max, dt_init_floor)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self):
        """mamba_ssm's special inits: A = -(1..d_state) per channel (S4D-real), D = 1, dt_proj weight
        U(+-dt_rank^-1/2), dt_proj bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max]."""
        dt_min, dt_max, floor = self.dt_init
        states = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.A_log.device)
        self.A_log.copy_(torch.log(states).expand_as(self.A_log))                     # (d_inner, d_state)
        self.D.fill_(1.0)
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        device = self.dt_proj.bias.device
        dt = torch.exp(torch.rand(self.d_inner, device=device) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))                    # inverse of softplus

    def forward(self, hidden):                                                         # (B, L, D)
        L = hidden.shape[1]
        x, z = self.in_proj(hidden).chunk(2, dim=-1)                                   # 2 x (B, L, d_inner)
        x = self.conv1d(x.transpose(1, 2))[..., :L].transpose(1, 2)                    # causal: (B, L, d_inner)
        x = F.silu(x)
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))                                              # (B, L, d_inner)
        y = selective_scan(x, dt, -torch.exp(self.A_log.float()), B, C, self.D)
        return self.out_proj(y * F.silu(z))


class MambaLayer(nn.Module):
    """One Mamba4Rec layer: LN(dropout(Mamba(x)) [+ x if several layers]), then the position-wise FFN
    LN(x + dropout(W2 dropout(GELU(W1 x)))) with inner size 4 D."""

    def __init__(self, dim: int, d_state: int, d_conv: int, expand: int, dropout: float, residual: bool):
        super().__init__()
        self.residual = residual
        self.mamba = MambaBlock(dim, d_state, d_conv, expand)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * dim, dim), nn.Dropout(dropout))
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x):
        y = self.dropout(self.mamba(x))
        x = self.norm(y + x if self.residual else y)
        return self.ffn_norm(x + self.ffn(x))


class Mamba4Rec(SequentialBackbone):
    """Mamba4Rec (Liu et al., arXiv 2403.03900) as in its official RecBole code: embedding -> dropout ->
    LayerNorm, then n_layers MambaLayer (residual around the Mamba block only when n_layers > 1). No positional
    embedding: the causal conv and the scan carry the order. The selective scan is pure PyTorch (no mamba-ssm).

    Init as RecBole's `_init_weights`: Linear / Embedding weights N(0, 0.02), biases 0, LayerNorm 1 / 0, padding
    row 0; the conv keeps PyTorch's default and A_log, D, dt_proj keep Mamba's own inits. (The official code's
    `self.apply(_init_weights)` also reaches dt_proj, resetting it to N(0, 0.02) with a zero bias; we keep
    Mamba's dt init instead.)"""

    def __init__(self, n_items: int, dim: int, max_len: int, n_layers: int = 2, dropout: float = 0.5,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2):
        super().__init__(n_items, dim, max_len)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.layers = nn.ModuleList(MambaLayer(dim, d_state, d_conv, expand, dropout, residual=n_layers > 1)
                                    for _ in range(n_layers))
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for layer in self.layers:
            layer.mamba.reset_ssm_parameters()
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def encode(self, sequences):
        x = self.norm(self.dropout(self.item_embedding(sequences)))                    # (B, L, D)
        for layer in self.layers:
            x = layer(x)
        return x
