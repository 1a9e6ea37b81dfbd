"""The batch-tiled kernels of the sparse layer at any batch size: masked-dense equality,
determinism across runs and thread counts, the inference path, and the thread chooser."""

import numpy as np
import pytest
import torch

from helpers import layer_pair, rel_err
from sparsetopo import build
from sparsetopo.kernels import tiled
from sparsetopo.kernels.threads import AdaptiveThreads
from sparsetopo.nn import SparseIndex, SparseLinear
from sparsetopo.nn.plan import tile_width


def pair(n_in=96, n_out=80, k=9, seed=3):
    """``(topology, sparse, masked)``: the same layer on both backends (same weights)."""
    t = build("random_regular", n_in, n_out, k, seed=seed)
    masked, sparse = layer_pair(t, seed=seed)
    return t, sparse, masked


def test_inference_sees_weights_changed_in_place():
    t, sparse, _ = pair(seed=6)
    x = torch.randn(3, t.n_in, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = sparse(x)
        sparse.values.numpy()[:] *= 2  # as the fused engines update them: no version bump
        after = sparse(x)
    assert rel_err(after - sparse.bias, 2 * (before - sparse.bias)) < 1e-6


def kernel_run(index, x, g, values, bias, chunks):
    """Forward, input gradient and weight gradient through the tiled kernels on ``chunks``
    thread ranges (0: the serial entry points)."""
    width = tile_width(x.shape[0])
    xt, gt = tiled.tiles_from_rows(x, width), tiled.tiles_from_rows(g, width)
    y = np.empty((x.shape[0], index.n_out), np.float32)
    gx = np.empty(x.shape, np.float32)
    gv = np.empty(index.nnz, np.float32)
    wc = tiled.csc_values(values, index.col_perm)
    if chunks:
        tiled.gather(xt, wc, index.col_ptr, index.col_rows, bias, True, y, chunks)
        tiled.gather(gt, values, index.indptr, index.indices, values, False, gx, chunks)
        tiled.sddmm(xt, gt, index.indptr, index.indices, gv, chunks)
    else:
        tiled.gather_serial(xt, wc, index.col_ptr, index.col_rows, bias, True, y)
        tiled.gather_serial(gt, values, index.indptr, index.indices, values, False, gx)
        tiled.sddmm_serial(xt, gt, index.indptr, index.indices, gv)
    return y, gx, gv


@pytest.mark.parametrize("batch", [7, 130])
def test_results_are_bitwise_the_same_run_after_run_and_for_any_thread_split(batch):
    t = build("random_regular", 70, 50, 11, seed=2)
    index = SparseIndex.from_topology(t)
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 70), dtype=np.float32)
    g = rng.standard_normal((batch, 50), dtype=np.float32)
    values = rng.standard_normal(index.nnz, dtype=np.float32)
    bias = rng.standard_normal(50, dtype=np.float32)
    first = kernel_run(index, x, g, values, bias, 0)
    for chunks in (0, 1, 2, 3, 7):
        for a, b in zip(first, kernel_run(index, x, g, values, bias, chunks)):
            assert np.array_equal(a, b)
    # and they are right: against a dense float64 product
    w = np.zeros((70, 50))
    w[t.rows, t.indices] = values
    assert np.allclose(first[0], x.astype(float) @ w + bias, atol=1e-4)
    assert np.allclose(first[1], g.astype(float) @ w.T, atol=1e-4)
    assert np.allclose(first[2], (x.astype(float).T @ g)[t.rows, t.indices], atol=1e-3)


def test_tiles_copy_every_example_and_pad_with_zeros():
    x = np.arange(70 * 5, dtype=np.float32).reshape(70, 5)
    tiles = tiled.tiles_from_rows(x, 64)
    assert tiles.shape == (2, 5, 64)
    assert np.array_equal(tiles[0], x[:64].T) and np.array_equal(tiles[1, :, :6], x[64:].T)
    assert not tiles[1, :, 6:].any()


def test_the_thread_chooser_keeps_the_faster_path_and_probes_the_other(monkeypatch):
    import numba

    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    chooser = AdaptiveThreads()
    assert chooser.chunks("small", 10) == 0  # too little work: always serial
    seconds = {2: 5.0, 0: 1.0}  # the thread pool is five times slower (a busy core)
    picks = []
    for _ in range(300):
        c = chooser.chunks("site", 10 ** 9)
        picks.append(c)
        chooser.record("site", c, seconds[c])
    assert picks[:2] == [2, 0]  # each path measured once
    parallel = [i for i, c in enumerate(picks) if c]
    assert 3 <= len(parallel) <= 8  # probes, ever rarer: 8, 16, 32, ... calls apart
    assert all(b - a < c - b for a, b, c in zip(parallel[1:], parallel[2:], parallel[3:]))
    seconds = {2: 0.2, 0: 1.0}  # the other core is free again: the next probe switches back
    for _ in range(AdaptiveThreads.MAX_GAP + 1):
        c = chooser.chunks("site", 10 ** 9)
        chooser.record("site", c, seconds[c])
    assert chooser.chunks("site", 10 ** 9) == 2


def test_cache_files_older_than_a_kernel_source_are_found_and_dropped(tmp_path, monkeypatch):
    import os

    from sparsetopo.kernels import cache

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    newest = cache.newest_kernel_source()
    old, fresh = tmp_path / "layer.forward-1.py312.nbi", tmp_path / "tiled.gather-2.py312.nbc"
    old.write_bytes(b"")
    fresh.write_bytes(b"")
    os.utime(old, (newest - 60, newest - 60))
    os.utime(fresh, (newest + 60, newest + 60))
    assert old in cache.stale_cache_files() and fresh not in cache.stale_cache_files()
    assert old in cache.drop_stale_cache()
    assert not old.exists() and fresh.exists()


def test_auto_weighs_the_batch_size():
    from sparsetopo.nn import CostModel, SparseMLP, choose_backend
    from sparsetopo.nn.plan import layer_backends

    costs = CostModel(dense_overhead_s=50e-6, dense_per_mac_s=1e-10, sparse_overhead_s=10e-6, sparse_per_mac_s=1e-9)
    half = build("random_regular", 200, 100, 50)  # 50% dense: per-call overheads decide small batches
    assert choose_backend(half, batch=1, cost_model=costs) == "sparse"
    assert choose_backend(half, batch=512, cost_model=costs) == "masked"
    assert layer_backends([half], "auto", cost_model=costs, batch_size=1) == ["sparse"]
    assert layer_backends([half], "auto", cost_model=costs, batch_size=512) == ["masked"]
    with pytest.raises(Exception, match="batch_size=0"):
        layer_backends([half], "auto", batch_size=0)
    # the shipped constants: a fully connected layer is masked at training batches, a 2% one sparse
    full = build("fully_connected", 512, 256)
    assert SparseLinear(full, backend="auto", batch_size=512).backend == "masked"
    sparse = build("random_regular", 512, 256, 5)
    assert SparseMLP([sparse], backend="auto", batch_size=512).layers[0].backend == "sparse"


@pytest.mark.parametrize("batch", [1, 32, 128, 512, 2048])
def test_auto_on_a_grid_of_shapes_and_densities_follows_the_cost_model(batch):
    """On a grid of (batch, shape, density), "auto" picks the backend the shipped cost model
    predicts faster, sparse below the crossover density and masked above it, with the
    crossover where the model puts it for that batch."""
    from sparsetopo.nn import choose_backend
    from sparsetopo.nn.plan import CPU_COST_MODEL

    for n_in, n_out in [(784, 300), (784, 1024), (1024, 1024), (300, 10)]:
        crossover = CPU_COST_MODEL.crossover_density(n_in, n_out, batch)
        picks = []
        for density in (0.01, 0.02, 0.1, 0.3, 0.5, 0.8, 1.0):
            k = max(1, round(density * n_out))
            topology = build("random_regular", n_in, n_out, k, seed=0) if k < n_out else build("fully_connected", n_in, n_out)
            pick = choose_backend(topology, batch=batch)
            expected = "sparse" if topology.density < crossover else "masked"
            assert pick == expected, (n_in, n_out, density, batch, crossover)
            picks.append(pick)
        assert picks == sorted(picks, key=lambda p: p == "masked")  # sparse, then masked: one crossover
