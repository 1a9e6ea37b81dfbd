"""The sparse layer's autograd Function for every combination of wanted gradients, and its one-call
entry points against the layer kernels (sparse equals masked over the grid: test_sparse_equals_masked.py)."""

import numpy as np
import pytest
import torch

from helpers import rel_err
from sparsetopo import build
from sparsetopo.kernels import batch_major
from sparsetopo.nn import SparseLinear


def dense_reference(layer: SparseLinear) -> torch.Tensor:
    """The layer's n_in x n_out weight built independently from its edge list, as a leaf."""
    t = layer.topology
    w = torch.zeros(t.n_in, t.n_out)
    w[t.rows.astype(np.int64), t.indices.astype(np.int64)] = layer.values.detach()
    return w.requires_grad_()


@pytest.mark.parametrize("batch", [1, 7, 32, 70])           # 70 > the kernels' 32-column block
@pytest.mark.parametrize("want", ["all", "no_x", "no_values", "no_bias", "only_x"])
def test_gradients_match_dense_for_every_combination(batch, want):
    t = build("random_regular", 50, 40, 6, seed=1)
    layer = SparseLinear(t, gen=np.random.default_rng(0), backend="sparse")
    with torch.no_grad():
        layer.bias.copy_(torch.linspace(-1, 1, 40))
    w = dense_reference(layer)
    b = layer.bias.detach().clone().requires_grad_()
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 50, generator=gen)
    g = torch.randn(batch, 40, generator=gen)
    x_needs = want not in ("no_x",)
    layer.values.requires_grad_(want not in ("no_values", "only_x"))
    layer.bias.requires_grad_(want not in ("no_bias", "only_x"))
    xs, xd = x.clone().requires_grad_(x_needs), x.clone().requires_grad_(x_needs)
    ys, yd = layer(xs), torch.addmm(b, xd, w)
    assert rel_err(ys, yd) < 1e-5 and ys.is_contiguous()
    if not (x_needs or layer.values.requires_grad or layer.bias.requires_grad):
        return
    ys.backward(g)
    yd.backward(g)
    if x_needs:
        assert rel_err(xs.grad, xd.grad) < 1e-5
    if layer.values.requires_grad:
        edges = (t.rows.astype(np.int64), t.indices.astype(np.int64))
        assert rel_err(layer.values.grad, w.grad[edges]) < 1e-5
    else:
        assert layer.values.grad is None
    if layer.bias.requires_grad:
        assert rel_err(layer.bias.grad, b.grad) < 1e-5
    else:
        assert layer.bias.grad is None


def test_the_batch_major_entry_points_are_the_layer_kernels_bit_for_bit():
    from sparsetopo.kernels import layer as kernels
    from sparsetopo.nn import SparseIndex

    t = build("random_rotating", 64, 48, 7, seed=9)
    index = SparseIndex.from_topology(t)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 64)).astype(np.float32)
    gy = rng.standard_normal((20, 48)).astype(np.float32)
    values = rng.standard_normal(t.nnz).astype(np.float32)
    bias = rng.standard_normal(48).astype(np.float32)
    y, xt = batch_major.forward(x, values, bias, index.col_ptr, index.col_rows, index.col_perm, 0, True)
    yt = np.empty((48, 20), np.float32)
    kernels.forward_serial(np.ascontiguousarray(x.T), values, bias, index.col_ptr, index.col_rows, index.col_perm,
                           yt, False)
    assert np.array_equal(y, yt.T) and np.array_equal(xt, x.T)
    gx, gv, gb = batch_major.backward(xt, gy, values, index.indptr, index.indices, True, True, True, 0)
    gxt, gv2 = np.empty((64, 20), np.float32), np.empty(t.nnz, np.float32)
    kernels.backward_serial(xt, np.ascontiguousarray(gy.T), values, index.indptr, index.indices, gxt, gxt, False, gv2)
    assert np.array_equal(gx, gxt.T) and np.array_equal(gv, gv2)
    assert np.allclose(gb, gy.sum(axis=0), rtol=1e-5, atol=1e-5)


def test_entry_points_loaded_from_numbas_cache_run_first_thing_in_a_process():
    """Cached compiled code holding a parallel kernel used to crash when called before numba's
    thread pool started; each fresh interpreter below calls an entry point first thing (the
    second one loads it from the on-disk cache the first one wrote)."""
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from sparsetopo.kernels import batch_major as bm\n"
            "x = np.ones((3, 4), np.float32)\n"
            "y, xt = bm.forward(x, np.ones(4, np.float32), np.zeros(2, np.float32), np.array([0, 2, 4]),\n"
            "                   np.array([0, 1, 2, 3], np.int32), np.arange(4), 0, True)\n"
            "print(y.sum())\n")
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert float(out.stdout) == 12.0
