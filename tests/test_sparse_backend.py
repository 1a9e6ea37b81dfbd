"""The truly sparse backend against the masked-dense reference: numbers, training, memory, auto."""

import numpy as np
import pytest
import torch

from helpers import layer_pair as pair
from helpers import rel_err
from sparsetopo import SparsetopoError, build
from sparsetopo.nn import CostModel, SparseLinear, SparseMLP, choose_backend
from sparsetopo.train import TrainConfig, train
from sparsetopo.train.fused import FusedEpoch
from sparsetopo.train.loop import momentum_buffers


def test_an_example_with_no_gradient_flowing_to_inputs_still_trains_weights():
    t = build("random_regular", 30, 20, 4)
    _, sparse = pair(t)
    y = sparse(torch.randn(5, 30))  # input does not require grad
    y.sum().backward()
    assert sparse.values.grad is not None and sparse.bias.grad is not None



@pytest.mark.parametrize("dropout", [(0.0, 0.0), (0.2, 0.5)])  # fused path, then autograd path
def test_training_on_digits_matches_masked_dense(digits, dropout):
    kw = dict(dataset="digits", hidden=(32,), degrees=(8, 10), epochs=3, lr=0.5, dropout=dropout,
              construction="random_regular", seed=4)
    dense = train(TrainConfig(backend="masked", **kw), dataset=digits)
    sparse = train(TrainConfig(backend="sparse", **kw), dataset=digits)
    assert [layer.backend for layer in sparse.model.layers] == ["sparse", "sparse"]
    assert abs(dense.test_accuracy - sparse.test_accuracy) <= 0.005
    for d, s in zip(dense.model.layers, sparse.model.layers):
        assert float((d.connected_weights() - s.connected_weights()).abs().max()) < 1e-4
        assert float((d.bias - s.bias).detach().abs().max()) < 1e-4
    assert sparse.history[-1].train_loss == pytest.approx(dense.history[-1].train_loss, rel=1e-4)


def test_fused_epoch_equals_autograd_path_includingmomentum_buffers():
    topologies = [build("long_short_rotating", 50, 40, 7), build("random_edge", 40, 30, 9, seed=2),
                  build("fully_connected", 30, 6)]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(70, 50, generator=gen)
    targets = torch.nn.functional.one_hot(torch.randint(0, 6, (70,), generator=gen), 6).float()
    order = torch.randperm(70, generator=gen)
    models = [SparseMLP(topologies, seed=1, backend="sparse") for _ in range(2)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.3, momentum=0.9, nesterov=True) for m in models]
    fused = FusedEpoch(models[0], 0.3, 0.9, momentum_buffers(opts[0], models[0]))
    total_fused = sum(fused.run(x, targets, order, 32) for _ in range(2))
    total = 0.0
    for _ in range(2):
        for start in range(0, 70, 32):
            batch = order[start: start + 32]
            loss = torch.nn.functional.mse_loss(models[1](x[batch]), targets[batch])
            opts[1].zero_grad()
            loss.backward()
            opts[1].step()
            total += float(loss.detach()) * batch.numel()
    assert total_fused == pytest.approx(total, rel=1e-5)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert rel_err(a.detach(), b.detach()) < 1e-5
        assert rel_err(opts[0].state[a]["momentum_buffer"], opts[1].state[b]["momentum_buffer"]) < 1e-4


@pytest.mark.skipif(__import__("numba").config.NUMBA_NUM_THREADS < 2, reason="needs two numba threads")
def test_fused_epoch_segments_give_the_same_bits_serial_parallel_or_mixed(monkeypatch):
    """The epoch runs in segments of SEGMENT_BATCHES, each on the thread pool or the calling
    thread as the plan's clock says; every choice must leave the same numbers, and the summed
    loss must count every segment's batches."""
    import numba

    from sparsetopo.nn import plan
    from sparsetopo.train.fused import SEGMENT_BATCHES

    topologies = [build("random_regular", 200, 120, 30, seed=3), build("fully_connected", 120, 10)]
    gen = torch.Generator().manual_seed(0)
    n = 32 * (2 * SEGMENT_BATCHES + 3) - 5  # three segments, the last batch short
    x = torch.rand(n, 200, generator=gen)
    targets = torch.nn.functional.one_hot(torch.randint(0, 10, (n,), generator=gen), 10).float()
    order = torch.randperm(n, generator=gen)
    choices = {"parallel": lambda calls: 2, "serial": lambda calls: 0, "mixed": lambda calls: 2 * (calls % 2)}
    results = {}
    previous = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        for name, pick in choices.items():
            calls = []

            def fake(site, work, pick=pick, calls=calls):
                calls.append(site)
                return pick(len(calls))
            monkeypatch.setattr(plan, "call_threads", fake)
            model = SparseMLP(topologies, seed=1, backend="sparse")
            opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, nesterov=True)
            loss = FusedEpoch(model, 0.3, 0.9, momentum_buffers(opt, model)).run(x, targets, order, 32)
            assert len(calls) == 3  # one choice per segment
            results[name] = (loss, [p.detach().clone() for p in model.parameters()])
    finally:
        numba.set_num_threads(previous)
    for name in ("serial", "mixed"):
        assert results[name][0] == results["parallel"][0]
        assert all(torch.equal(a, b) for a, b in zip(results[name][1], results["parallel"][1]))
    model = SparseMLP(topologies, seed=1, backend="sparse")  # the summed loss against autograd
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, nesterov=True)
    total = 0.0
    for start in range(0, n, 32):
        batch = order[start: start + 32]
        loss = torch.nn.functional.mse_loss(model(x[batch]), targets[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach()) * batch.numel()
    assert results["parallel"][0] == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize("batch_size, engine", [(48, "fused/sparse"), (49, "autograd/sparse")])
def test_the_fused_epoch_trains_batches_up_to_its_width(digits, batch_size, engine):
    """Wider batches train faster on the autograd loop's tiled kernels (train.fused.fused_pays)."""
    config = TrainConfig(dataset="digits", hidden=(16,), degrees=(4, 10), epochs=1, lr=0.5, backend="sparse",
                         limit_train=200, batch_size=batch_size)
    assert train(config, dataset=digits).backend == engine


def test_fused_epoch_is_refused_where_it_would_compute_something_else():
    ts = [build("regular_rotating", 20, 10, 3), build("fully_connected", 10, 4)]
    assert FusedEpoch.supports(SparseMLP(ts, backend="sparse"))
    assert not FusedEpoch.supports(SparseMLP(ts, backend="sparse", dropout=(0.2, 0.5)))
    assert not FusedEpoch.supports(SparseMLP(ts, backend="sparse", activation="tanh"))
    masked = SparseMLP(ts, backend="masked")
    assert not FusedEpoch.supports(masked)
    with pytest.raises(SparsetopoError, match="sparse backend"):
        FusedEpoch(masked, 0.1, 0.9, [])


def test_train_reports_the_engine_that_computed_each_run(digits):
    """RunResult.backend names what ran: the fused epoch for all-sparse networks without
    dropout, the autograd loop otherwise, whatever the config asked for."""
    kw = dict(dataset="digits", hidden=(16,), degrees=(4, 10), epochs=1, lr=0.5, limit_train=64)
    assert train(TrainConfig(backend="sparse", **kw), dataset=digits).backend == "fused/sparse"
    assert train(TrainConfig(backend="masked", **kw), dataset=digits).backend == "autograd/masked"
    dropped = train(TrainConfig(backend="sparse", dropout=(0.2, 0.5), **kw), dataset=digits)
    assert dropped.backend == "autograd/sparse"
    assert [layer["backend"] for layer in dropped.layers] == ["autograd/sparse"] * 2
    assert dropped.to_dict()["backend"] == "autograd/sparse"


def test_parameter_and_optimizer_memory_follow_the_connections():
    one_percent = build("regular_rotating", 784, 300, 3)
    ten_percent = build("regular_rotating", 784, 300, 30)
    sparse_1 = SparseLinear(one_percent, backend="sparse")
    sparse_10 = SparseLinear(ten_percent, backend="sparse")
    dense = SparseLinear(one_percent, backend="masked")
    assert sparse_1.parameter_bytes() == 4 * (one_percent.nnz + 300)
    assert sparse_1.state_bytes() < 0.05 * dense.state_bytes()
    # proportional to nnz: ten times the connections, about ten times the bytes
    assert 8 < sparse_10.state_bytes() / sparse_1.state_bytes() < 10.5
    assert dense.state_bytes() == SparseLinear(ten_percent, backend="masked").state_bytes()


@pytest.mark.parametrize("layers", [dict(degrees=(4, 10), backend="sparse"), dict(degrees=(2, None), block=4)])
def test_checkpoint_resume_of_a_fused_run_equals_uninterrupted(digits, tmp_path, interrupted_training, layers):
    """Sparse layers and block layers (whose tiles the fused epoch stages and writes back)."""
    cfg = TrainConfig(dataset="digits", hidden=(16,), epochs=3, lr=0.5, limit_train=300, **layers)
    whole = train(cfg, dataset=digits)
    assert whole.backend.startswith("fused/")
    interrupted_training(cfg, digits, tmp_path, after=1)
    resumed = train(cfg, dataset=digits, checkpoint_dir=tmp_path, resume=True)
    assert [h.train_loss for h in resumed.history] == [h.train_loss for h in whole.history]
    for a, b in zip(whole.model.layers, resumed.model.layers):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


COSTS = CostModel(dense_overhead_s=50e-6, dense_per_mac_s=1e-10, sparse_overhead_s=10e-6, sparse_per_mac_s=1e-9)


def test_auto_picks_by_the_measured_cost_model():
    very_sparse = build("random_regular", 2000, 1000, 5)  # 0.5%
    dense = build("fully_connected", 2000, 1000)
    # crossover here: about 10% density (sparse MACs cost 10x dense ones)
    assert COSTS.crossover_density(2000, 1000) == pytest.approx(0.1, abs=0.01)
    assert choose_backend(very_sparse, cost_model=COSTS) == "sparse"
    assert choose_backend(dense, cost_model=COSTS) == "masked"
    assert choose_backend(build("random_regular", 2000, 1000, 150), cost_model=COSTS) == "masked"  # 15%
    assert choose_backend(build("random_regular", 2000, 1000, 50), cost_model=COSTS) == "sparse"  # 5%
    assert choose_backend(very_sparse, device="cuda", cost_model=COSTS) == "masked"
    # with the shipped constants: MNIST's 1% input layer is sparse, a dense 784x300 is masked
    assert choose_backend(build("regular_rotating", 784, 300, 3)) == "sparse"
    assert choose_backend(build("fully_connected", 784, 300)) == "masked"
    assert SparseLinear(very_sparse, backend="auto").backend == "sparse"


def test_backend_errors_name_the_value_and_the_fix():
    t = build("regular_rotating", 10, 5, 2)
    with pytest.raises(SparsetopoError, match=r"unknown backend 'csr'.*auto, masked, sparse"):
        SparseLinear(t, backend="csr")
    with pytest.raises(SparsetopoError, match="CPU only.*backend='masked'"):
        SparseLinear(t, backend="sparse", device="cuda")
    with pytest.raises(SparsetopoError, match="float32"):
        SparseLinear(t, backend="sparse")(torch.ones(2, 10, dtype=torch.float64))
    with pytest.raises(SparsetopoError, match="unknown backend 'csr'"):
        TrainConfig(dataset="digits", backend="csr")


def test_auto_never_mixes_backends_within_a_network():
    from sparsetopo.nn.plan import layer_backends

    sparse_input = build("regular_rotating", 784, 300, 3)
    assert layer_backends([sparse_input, build("fully_connected", 300, 10)]) == ["sparse", "sparse"]
    assert layer_backends([build("fully_connected", 784, 300), build("fully_connected", 300, 10)]) == ["masked"] * 2
    assert layer_backends([sparse_input, build("fully_connected", 300, 10)], "masked") == ["masked"] * 2
    assert layer_backends([sparse_input], "auto", device="cuda") == ["masked"]
    model = SparseMLP([build("fully_connected", 784, 300), build("fully_connected", 300, 10)], backend="auto")
    assert [layer.backend for layer in model.layers] == ["masked", "masked"]


def test_sparse_layer_is_deterministic_run_to_run_and_across_batch_blocks():
    """Same inputs, same bits (the kernels' summation order is fixed per build), and a batch
    wider than the kernels' block agrees with the same examples computed block by block."""
    t = build("random_regular", 50, 40, 7, seed=1)
    _, sparse = pair(t)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(70, 50, generator=gen)
    g = torch.randn(70, 40, generator=gen)
    runs = []
    for _ in range(2):
        sparse.zero_grad(set_to_none=True)
        xs = x.clone().requires_grad_()
        y = sparse(xs)
        y.backward(g)
        runs.append((y.detach(), xs.grad, sparse.values.grad.clone()))
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    assert torch.equal(sparse(x[:32]).detach(), runs[0][0][:32])


@pytest.mark.parametrize("batch", [5, 32, 45])
def test_one_pass_backward_kernels_match_the_separate_ones(batch):
    """kernels.backward(_sgd) computes in one pass what backward_input and backward_values(_sgd)
    compute in two, the input gradient with the weights from before the step."""
    from sparsetopo.kernels import layer as kernels
    from sparsetopo.nn.sparse_index import SparseIndex

    t = build("random_regular", 60, 25, 9, seed=2)
    idx = SparseIndex.from_topology(t)
    gen = np.random.default_rng(batch)
    xt = gen.random((60, batch), dtype=np.float32)
    gyt = gen.standard_normal((25, batch), dtype=np.float32)
    values = gen.standard_normal(idx.nnz, dtype=np.float32)
    buf = gen.standard_normal(idx.nnz, dtype=np.float32)
    ref_gx, ref_gv = np.empty_like(xt), np.empty(idx.nnz, np.float32)
    kernels.backward_input_serial(gyt, values, idx.indptr, idx.indices, ref_gx, xt, True)
    kernels.backward_values_serial(xt, gyt, idx.indptr, idx.indices, ref_gv)
    gx, gv = np.empty_like(xt), np.empty(idx.nnz, np.float32)
    kernels.backward_serial(xt, gyt, values, idx.indptr, idx.indices, gx, xt, True, gv)
    assert np.abs(gx - ref_gx).max() <= 1e-5 * np.abs(ref_gx).max()
    assert np.abs(gv - ref_gv).max() <= 1e-5 * np.abs(ref_gv).max()
    lr, mom = np.float32(0.1), np.float32(0.9)
    ref_values, ref_buf = values.copy(), buf.copy()
    kernels.backward_values_sgd_serial(xt, gyt, idx.indptr, idx.indices, ref_values, ref_buf, lr, mom, True)
    new_values, new_buf = values.copy(), buf.copy()
    kernels.backward_sgd_serial(xt, gyt, new_values, idx.indptr, idx.indices, gx, xt, True, new_buf, lr, mom, True)
    assert np.abs(gx - ref_gx).max() <= 1e-5 * np.abs(ref_gx).max()
    assert np.abs(new_values - ref_values).max() <= 1e-5 * np.abs(ref_values).max()
    assert np.abs(new_buf - ref_buf).max() <= 1e-5 * np.abs(ref_buf).max()
