"""tkn.torch: the kernels as torch.library custom ops (eager, autograd, fake tensors, torch.compile)."""
import os
import subprocess
import sys

import pytest

from tkn.ptx import SIM

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")
needs_cuda = pytest.mark.skipif(torch is None or SIM or not torch.cuda.is_available(), reason="needs torch with CUDA")


@pytest.mark.host
def test_import_without_torch_is_a_clear_error():
    """`import tkn.torch` where torch cannot be imported: an ImportError that says what is missing."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import tkn.torch\nexcept ImportError as e:\n    print('ERR', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"})
    assert "ERR tkn.torch needs PyTorch" in r.stdout, r.stdout + r.stderr
    import tkn.host
    assert tkn.host.torch is (sys.modules.get("torch") if torch is not None else None)


@needs_torch
@pytest.mark.host
def test_module_does_not_shadow_torch():
    """tkn/torch.py is tkn.torch; tkn's own modules get PyTorch from `import torch`."""
    import tkn.torch
    import tkn.host
    import tkn.interop
    assert tkn.host.torch is torch and torch.__name__ == "torch" and hasattr(torch, "Tensor")
    assert tkn.torch.__name__ == "tkn.torch" and tkn.torch.torch is torch
    assert torch.ops.tkn.gemm.default is not None and torch.ops.tkn.gemm_fp8.default is not None


@needs_torch
@pytest.mark.host
def test_fake_tensors_shape_and_checks():
    """The fakes (what torch.compile traces with) give the result's shape, dtype and strides, and refuse bad
    shapes or dtypes; nothing runs."""
    import tkn.torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        a = torch.empty(300, 520, dtype=torch.bfloat16)
        w = torch.empty(136, 520, dtype=torch.bfloat16)
        out = tkn.torch.gemm(a, w.T)
        assert out.shape == (300, 136) and out.dtype == torch.bfloat16 and out.is_contiguous()
        with pytest.raises(Exception, match=r"b needs 520 rows"):
            tkn.torch.gemm(a, w)
        with pytest.raises(Exception, match=r"must be torch.bfloat16"):
            tkn.torch.gemm(a.float(), w.T)
        a8, w8 = torch.empty(64, 128, dtype=torch.float8_e4m3fn), torch.empty(32, 128, dtype=torch.float8_e4m3fn)
        assert tkn.torch.gemm_fp8(a8, w8.T, 2.0).shape == (64, 32)


@needs_torch
@pytest.mark.host
def test_forward_and_backward_trace_to_the_ops():
    """What torch.compile's AOTAutograd does, on fake tensors (no kernel runs, so every tier): the joint graph
    of out = gemm(x, w.T) and its gradients traces through the fake and the registered backward into tkn::gemm
    calls only (one forward, one per gradient), with the gradients' shapes and w.grad stored as w is."""
    import tkn.torch
    from torch.fx.experimental.proxy_tensor import make_fx

    def joint(x, w, g):
        out = tkn.torch.gemm(x, w.T)
        gx, gw = torch.autograd.grad(out, (x, w), g)
        return out, gx, gw

    x = torch.randn(300, 520, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(136, 520, dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(300, 136, dtype=torch.bfloat16)
    gm = make_fx(joint, tracing_mode="fake")(x, w, g)
    calls = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert calls.count(torch.ops.tkn.gemm.default) == 3, calls
    outs = [n for n in gm.graph.nodes if n.op == "output"][0].args[0]
    shapes = [tuple(o.meta["val"].shape) for o in outs]
    assert shapes == [(300, 136), (300, 520), (136, 520)]
    assert outs[2].meta["val"].stride() == (520, 1)          # w.grad row-major like w, from w.T's product


@needs_cuda
@pytest.mark.gpu_only
def test_compile_one_layer():
    """torch.compile(fullgraph=True) of tkn.torch.gemm runs, forward and the weight's gradient."""
    import tkn.torch
    torch.manual_seed(0)
    x = torch.randn(300, 520, device="cuda", dtype=torch.bfloat16)
    w = torch.nn.Parameter(torch.randn(136, 520, device="cuda", dtype=torch.bfloat16) / 8)
    cf = torch.compile(lambda x, w: tkn.torch.gemm(x, w.T), fullgraph=True)
    y = cf(x, w)
    y.float().square().sum().backward()
    ref = x.double() @ w.detach().double().T
    assert ((y.double() - ref).norm() / ref.norm()).item() < 1e-2
    gref = (2 * y.double()).T @ x.double()
    assert ((w.grad.double() - gref).norm() / gref.norm()).item() < 2e-2
    assert w.grad.stride() == w.stride()


class _MLP(torch.nn.Module if torch is not None else object):
    def __init__(self, d, h, device):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.randn(h, d, device=device, dtype=torch.bfloat16) / d ** 0.5)
        self.w2 = torch.nn.Parameter(torch.randn(d, h, device=device, dtype=torch.bfloat16) / h ** 0.5)

    def forward(self, x):
        import tkn.torch
        return tkn.torch.gemm(torch.relu(tkn.torch.gemm(x, self.w1.T)), self.w2.T)


@needs_cuda
@pytest.mark.gpu_only
def test_compile_two_layer_mlp_matches_eager():
    """A two-layer MLP on tkn.torch.gemm: torch.compile(fullgraph=True) gives eager's forward and gradients."""
    torch.manual_seed(0)
    mlp = _MLP(1024, 2048, "cuda")
    x = torch.randn(512, 1024, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(512, 1024, device="cuda", dtype=torch.bfloat16)

    def step(model):
        x.grad = mlp.w1.grad = mlp.w2.grad = None
        y = model(x)
        y.backward(g)
        return y.detach(), x.grad, mlp.w1.grad, mlp.w2.grad

    eager = step(mlp)
    compiled = step(torch.compile(mlp, fullgraph=True))
    for e, c in zip(eager, compiled):
        assert e.shape == c.shape and e.stride() == c.stride() and not c.isnan().any()
        assert ((e.double() - c.double()).norm() / e.double().norm()).item() < 1e-3
    with torch.no_grad():           # and eager is right (float64)
        h = torch.relu(x.double() @ mlp.w1.double().T)
        ref = h @ mlp.w2.double().T
    assert ((eager[0].double() - ref).norm() / ref.norm()).item() < 1e-2


@needs_cuda
@pytest.mark.gpu_only
def test_opcheck():
    """torch.library.opcheck: schema, fake tensor, autograd registration, aot dispatch (dynamic shapes)."""
    import tkn.torch
    a = torch.randn(256, 192, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(320, 192, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    torch.library.opcheck(tkn.torch.gemm, (a, w.T))
    torch.library.opcheck(tkn.torch.gemm, (a.detach()[:, :128], w.detach()[:128, :64]))
    a8 = torch.randn(256, 192, device="cuda").to(torch.float8_e4m3fn).view(torch.uint8)   # bits: opcheck's own
    w8 = torch.randn(320, 192, device="cuda").to(torch.float8_e4m3fn).view(torch.uint8)   # checks multiply them
    torch.library.opcheck(tkn.torch.gemm_fp8, (a8, w8.T, 0.5))


@needs_cuda
@pytest.mark.gpu_only
def test_ops_take_any_layout():
    """The ops copy what TMA cannot read (every other column, unaligned) instead of refusing it."""
    import tkn.torch
    a = torch.randn(128, 512, device="cuda", dtype=torch.bfloat16)[:, ::2]
    b = torch.randn(256, 129, device="cuda", dtype=torch.bfloat16)[:, 1:]
    out = tkn.torch.gemm(a, b)
    ref = a.double() @ b.double()
    assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-2
    a8 = torch.randn(64, 128, device="cuda").to(torch.float8_e4m3fn)
    w8 = torch.randn(32, 128, device="cuda").to(torch.float8_e4m3fn)
    got = tkn.torch.gemm_fp8(a8, w8.T.contiguous(), 2.0)           # b row-major: copied to w.T's layout
    ref8 = 2.0 * (a8.double() @ w8.double().T)
    assert ((got.double() - ref8).norm() / ref8.norm()).item() < 1e-2


@needs_torch
@pytest.mark.host
def test_attention_traces_to_the_ops():
    """The joint graph of o = tkn.torch.attention(q, k, v) and its gradients, on fake tensors: one tkn::attention
    and one tkn::attention_bwd, with the inputs' shapes (GQA: dk, dv shaped like k, v)."""
    import tkn.torch
    from torch.fx.experimental.proxy_tensor import make_fx

    def joint(q, k, v, g):
        o = tkn.torch.attention(q, k, v, causal=True)
        return (o,) + torch.autograd.grad(o, (q, k, v), g)

    q = torch.randn(2, 8, 100, 64, dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(2, 2, 120, 64, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    g = torch.randn(2, 8, 100, 64, dtype=torch.bfloat16)
    gm = make_fx(joint, tracing_mode="fake")(q, k, v, g)
    calls = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert calls.count(torch.ops.tkn.attention.default) == 1, calls
    assert calls.count(torch.ops.tkn.attention_bwd.default) == 1, calls
    outs = [n for n in gm.graph.nodes if n.op == "output"][0].args[0]
    assert [tuple(o.meta["val"].shape) for o in outs] == [(2, 8, 100, 64), (2, 8, 100, 64), (2, 2, 120, 64),
                                                           (2, 2, 120, 64)]


@needs_cuda
@pytest.mark.gpu_only
def test_attention_compile_and_opcheck():
    """torch.compile(fullgraph=True) over tkn.torch.attention gives eager's output and gradients; opcheck passes."""
    import tkn.torch
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 300, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    g = torch.randn(2, 4, 300, 128, device="cuda", dtype=torch.bfloat16)

    def step(fn):
        o = fn(q, k, v)
        return (o.detach(),) + torch.autograd.grad(o, (q, k, v), g)

    f = lambda q, k, v: tkn.torch.attention(q, k, v, causal=True) * 2    # noqa: E731
    eager, compiled = step(f), step(torch.compile(f, fullgraph=True))
    for e, c in zip(eager, compiled):
        assert torch.equal(e, c) or ((e.double() - c.double()).norm() / e.double().norm()).item() < 1e-3
    torch.library.opcheck(torch.ops.tkn.attention.default, (q, k, v, True, 0.125, False))
