"""The sparse backend computes what the masked backend computes, and runs the path the plan names.

One grid: batch 1, 7, 32, 33, 128, 1000; the paper's layers (784x300, 300x10) and 1024-4096
widths; densities 2% and 10%; a gradient to everything, to the input only (frozen weights), or
none (``no_grad`` in training mode, ``inference_mode`` in eval). Each point compares the output
and every wanted gradient with the masked layer of the same weights, and the path the layer
recorded (``last_path``) with the plan's rule, written out here independently of
:mod:`sparsetopo.nn.plan`, and with what :func:`sparsetopo.explain` reports.
"""

from functools import cache

import numpy as np
import pytest
import torch

import sparsetopo
from helpers import layer_pair as pair
from helpers import rel_err
from sparsetopo import CONSTRUCTIONS, build
from sparsetopo.nn import SparseLinear

BATCHES = [1, 7, 32, 33, 128, 1000]
DENSITIES = [0.02, 0.1]
MODES = ["grad", "input_grad", "no_grad", "inference"]
SHAPES = [(784, 300), (300, 10), (1024, 1024), (4096, 4096)]


def heavy(shape, batch) -> bool:
    """Points of more than a second (dense 1024x1024 at batch 1000, anything 4096 wide): slow."""
    return shape[0] >= 4096 or (shape[0] >= 1024 and batch >= 1000)


POINTS = [pytest.param(shape, batch, marks=[pytest.mark.slow] if heavy(shape, batch) else [],
                       id=f"{shape[0]}x{shape[1]}-b{batch}") for shape in SHAPES for batch in BATCHES]


@cache
def topology(n_in, n_out, density):
    return build("random_regular", n_in, n_out, max(1, round(density * n_out)), seed=1)


def expected_path(t, batch, grad) -> str:
    """The plan's rule for a layer asked for backend="sparse" (see nn/plan.py)."""
    if grad:
        return "untiled" if batch <= 32 and t.n_out < 512 else "tiled"
    return "vector" if batch == 1 else "tiled"


def run(layer, x, mode):
    if mode == "inference":
        layer.eval()
        with torch.inference_mode():
            return layer(x)
    layer.train()
    if mode == "no_grad":
        with torch.no_grad():
            return layer(x)
    return layer(x)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("shape,batch", POINTS)
def test_sparse_equals_masked_and_runs_the_planned_path(shape, batch, density, mode):
    t = topology(*shape, density)
    masked, sparse = pair(t)
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, t.n_in, generator=gen)
    grad = mode in ("grad", "input_grad")
    if mode == "input_grad":
        for layer in (masked, sparse):
            layer.weight.requires_grad_(False) if layer.backend == "masked" else layer.values.requires_grad_(False)
            layer.bias.requires_grad_(False)
    xm, xs = x.clone().requires_grad_(grad), x.clone().requires_grad_(grad)
    ym, ys = run(masked, xm, mode), run(sparse, xs, mode)

    assert sparse.last_path == expected_path(t, batch, grad)
    assert masked.last_path == "masked"
    planned = sparsetopo.explain(sparse, batch_size=batch)[0]
    assert sparse.last_path == (planned.train_path if grad else planned.infer_path)

    assert ys.shape == ym.shape and rel_err(ys, ym) < 1e-5
    if not grad:
        return
    g = torch.randn(batch, t.n_out, generator=gen)
    ym.backward(g)
    ys.backward(g)
    assert rel_err(xs.grad, xm.grad) < 1e-5
    if mode == "grad":
        edges = (t.indices.astype(np.int64), t.rows.astype(np.int64))   # (out, in)
        assert sparse.values.grad.shape == (t.nnz,)
        assert rel_err(sparse.values.grad, masked.weight.grad[edges]) < 1e-5
        assert rel_err(sparse.bias.grad, masked.bias.grad) < 1e-5
    else:
        assert sparse.values.grad is None and sparse.bias.grad is None


@pytest.mark.parametrize("density,path", [(0.3, "dense"), (0.02, "vector")])
def test_auto_runs_dense_where_dense_is_faster_with_the_masked_layers_numbers(density, path):
    """Batch-1 inference on 1024x1024: at 30% density the cost model predicts the dense matmul
    faster, and ``auto`` runs it on the same weights (the masked layer's numbers, bit for bit);
    at 2% the sparse kernel. A layer asked for "sparse" keeps the kernel."""
    t = topology(1024, 1024, density)
    masked, auto = pair(t, backend="auto")
    _, sparse = pair(t, backend="sparse")
    assert auto.backend == "sparse"
    x = torch.randn(1, t.n_in, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ya, ym, ys = auto(x), masked(x), sparse(x)
    assert auto.last_path == path and sparse.last_path == "vector"
    assert rel_err(ya, ym) < 1e-5 and rel_err(ys, ym) < 1e-5
    if path == "dense":
        assert torch.equal(ya, ym)
    # training calls never run dense: the gradient must reach the connected weights only
    auto(x.requires_grad_()).sum().backward()
    assert auto.last_path == "tiled" and auto.values.grad.shape == (t.nnz,)   # 1024 outputs: tiled


@pytest.mark.parametrize("density,path", [(0.3, "dense"), (0.02, "vector")])
def test_inference_copies_see_weights_changed_by_torch_numpy_and_the_fused_engine(density, path):
    """The dense matrix ("dense", an auto layer at 30%) and the CSC copy ("vector", a sparse
    layer at 2%) that batch-1 inference reads are rebuilt when the weights change."""
    from torch.autograd.graph import increment_version

    t = topology(1024, 1024, density)
    dense = path == "dense"
    _, layer = pair(t, backend="auto" if dense else "sparse")
    x = torch.randn(1, t.n_in, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = layer(x)
        layer.values.mul_(2)   # an in-place torch update bumps the version: the copy is rebuilt
        after = layer(x)
        layer.values.numpy()[:] *= 0.5   # numpy (or .data) writes are not counted: the writer says so
        increment_version(layer.values)
        again = layer(x)
    assert layer.last_path == path
    assert rel_err(after - layer.bias, 2 * (before - layer.bias)) < 1e-6
    assert rel_err(again, before) < 1e-6

    # the fused epoch writes the weights through numpy, then tells torch
    from sparsetopo.nn import SparseMLP
    from sparsetopo.train.fused import FusedEpoch
    from sparsetopo.train.loop import momentum_buffers

    mlp = SparseMLP([t, build("random_regular", 1024, 10, 3, seed=2)], backend="sparse")
    mlp.layers[0].dense_when_faster = dense
    xs = torch.rand(16, 1024, generator=torch.Generator().manual_seed(3))
    mlp.eval()
    with torch.no_grad():
        first = mlp.layers[0](xs[:1])
    assert mlp.layers[0].last_path == path
    fused = FusedEpoch(mlp, 0.5, 0.9, momentum_buffers(None, mlp))
    fused.run(xs, torch.eye(10)[torch.arange(16) % 10], torch.arange(16), 4)
    with torch.no_grad():
        trained = mlp.layers[0](xs[:1])
        reference = torch.nn.functional.linear(xs[:1], mlp.layers[0].dense_weight(), mlp.layers[0].bias)
    assert rel_err(trained, first) > 1e-3
    if dense:   # the dense path is the masked layer's matmul, bit for bit
        assert torch.equal(trained, reference)
    else:
        assert rel_err(trained, reference) < 1e-5


def test_one_example_reads_the_current_bias_and_any_input_layout():
    """The batch-1 kernel reads a numpy view of the bias kept between calls: it follows in-place
    updates, a new bias Parameter and a swapped ``.data``. Inputs it cannot read as they are
    (1-D, a row of a wider tensor, one that requires grad under no_grad, float64) take the
    checked route and give the masked layer's numbers, or its error."""
    t = topology(784, 300, 0.02)
    masked, layer = pair(t)
    layer.eval()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, t.n_in, generator=gen)

    def agrees(inp):
        with torch.no_grad():
            got, want = layer(inp), masked(inp)
        assert layer.last_path == "vector"
        assert got.shape == want.shape and rel_err(got, want) < 1e-5

    agrees(x)
    with torch.no_grad():
        for m in (masked, layer):
            m.bias.add_(1.0)
    agrees(x)
    fresh = torch.randn(t.n_out, generator=gen)
    masked.bias = torch.nn.Parameter(fresh.clone())
    layer.bias = torch.nn.Parameter(fresh.clone())
    agrees(x)
    swapped = torch.randn(t.n_out, generator=gen)
    masked.bias.data = swapped.clone()
    layer.bias.data = swapped.clone()
    agrees(x)

    agrees(x[0])                                                         # 1-D: one example
    wide = torch.randn(1, 2 * t.n_in, generator=gen)
    agrees(wide[:, ::2])                                                 # strided row
    agrees(x.clone().requires_grad_())                                   # requires grad, no_grad
    with torch.no_grad(), pytest.raises(sparsetopo.SparsetopoError, match="float32"):
        layer(x.double())


def test_two_sparse_layers_in_a_row_match_masked():
    t1, t2 = topology(784, 300, 0.02), topology(300, 10, 0.1)
    (m1, s1), (m2, s2) = pair(t1), pair(t2)
    x = torch.randn(33, 784, generator=torch.Generator().manual_seed(2))
    xm, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    ym, ys = m2(torch.sigmoid(m1(xm))), s2(torch.sigmoid(s1(xs)))
    assert rel_err(ys, ym) < 1e-5
    ym.sum().backward()
    ys.sum().backward()
    assert rel_err(xs.grad, xm.grad) < 1e-5
    assert (s1.last_path, s2.last_path) == ("tiled", "tiled")


def test_a_transposed_input_is_read_correctly():
    """An input whose transpose is contiguous (feature-major memory) is copied batch-major."""
    t = topology(784, 300, 0.1)
    masked, sparse = pair(t)
    x = torch.randn(784, 12, generator=torch.Generator().manual_seed(4)).t()
    assert not x.is_contiguous()
    xm, xs = x.detach().clone().requires_grad_(), x.detach().t().contiguous().t().requires_grad_()
    ym, ys = masked(xm), sparse(xs)
    assert rel_err(ys, ym) < 1e-5
    ym.sum().backward()
    ys.sum().backward()
    assert rel_err(xs.grad, xm.grad) < 1e-5


@pytest.mark.parametrize("construction", sorted(CONSTRUCTIONS))
@pytest.mark.parametrize("n_in,n_out", [(45, 17), (13, 29)])
@pytest.mark.parametrize("batch", [1, 33])
def test_every_construction_matches_masked(construction, n_in, n_out, batch):
    """Every graph shape the library builds (uneven degrees, empty rows and columns included)."""
    k = n_out if construction == "fully_connected" else max(1, n_out // 4)
    t = build(construction, n_in, n_out, k, seed=3)
    masked, sparse = pair(t)
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, n_in, generator=gen)
    g = torch.randn(batch, n_out, generator=gen)
    xm, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    ym, ys = masked(xm), sparse(xs)
    assert sparse.last_path == expected_path(t, batch, True)
    ym.backward(g)
    ys.backward(g)
    assert rel_err(ys, ym) < 1e-5
    assert rel_err(xs.grad, xm.grad) < 1e-5
    assert rel_err(sparse.bias.grad, masked.bias.grad) < 1e-5
    rows, cols = torch.from_numpy(t.rows.astype(np.int64)), torch.from_numpy(t.indices.astype(np.int64))
    assert sparse.values.grad.shape == (t.nnz,)  # the gradient exists for connections only
    assert rel_err(sparse.values.grad, masked.weight.grad[cols, rows]) < 1e-5
    assert torch.equal(sparse.connected_weights(), masked.connected_weights())
    assert torch.equal(sparse.dense_weight(), masked.dense_weight())


@pytest.mark.parametrize("batch", [1, 5, 64, 200])
def test_inference_equals_the_training_forward(batch):
    t = build("random_regular", 96, 80, 9, seed=5)
    masked, sparse = pair(t)
    x = torch.randn(batch, t.n_in, generator=torch.Generator().manual_seed(1))
    train = sparse(x.clone().requires_grad_())
    sparse.eval()
    with torch.no_grad():
        no_grad = sparse(x)
    assert sparse.last_path == ("vector" if batch == 1 else "tiled")
    with torch.inference_mode():
        inference = sparse(x)
    assert not no_grad.requires_grad and train.requires_grad
    assert rel_err(no_grad, train) < 1e-6 and torch.equal(no_grad, inference)
    with torch.no_grad():
        assert rel_err(no_grad, masked(x)) < 1e-5
    if batch > 32:  # the same tiled kernel as training: the same bits
        assert torch.equal(no_grad, train.detach())
