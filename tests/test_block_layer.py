"""BlockSparseLinear against an independent masked-dense reference, on CPU and (when present) CUDA."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparsetopo import SparsetopoError
from sparsetopo.nn import SparseLinear
from sparsetopo.nn import block_ops
from sparsetopo.nn.block import BlockSparseLinear
from sparsetopo.nn.plan import (BLOCK_CHUNK_FLOATS, BLOCK_CHUNK_MIN_ROWS, BLOCK_VECTOR_MIN_TILE, block_chunk_rows,
                                block_keeps_gathered)
from sparsetopo.topology import build

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")

LAYERS = [  # even widths, ragged last blocks on either side, unequal degrees (padded slots)
    ("regular_rotating", 64, 96, 3, 16),
    ("random_regular", 100, 70, 3, 8),
    ("random_edge", 50, 37, 3, (4, 6)),
    ("long_short_rotating", 45, 70, 2, (4, 9)),
]


def reference(layer, x, g):
    """Masked dense: the layer's dense weight times the lifted mask, through F.linear."""
    t = layer.topology
    weight = layer.dense_weight().clone().requires_grad_()
    bias = layer.bias.detach().clone().requires_grad_()
    mask = torch.from_numpy(t.mask().T).to(weight)   # (out, in), as the weight
    x = x.detach().clone().requires_grad_()
    y = F.linear(x, weight * mask, bias)
    y.backward(g)
    return y, x.grad, weight.grad * mask, bias.grad


def lifted_grad(layer):
    """The tiles' gradient as an (n_out, n_in) matrix, as the dense weight, from the layer's own index."""
    t = layer.topology
    dense = torch.zeros(t.n_out, t.n_in, dtype=layer.tiles.dtype, device=layer.tiles.device)
    dense[torch.from_numpy(t.indices.astype(np.int64)), torch.from_numpy(t.rows.astype(np.int64))] = \
        layer.tiles.grad.reshape(-1)[layer._tile_index.to(layer.tiles.device)]
    return dense


def check_against_reference(layer, batches, device="cpu"):
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        layer.bias.copy_(torch.randn(layer.topology.n_out, generator=gen))
    for batch in batches:
        x = torch.randn(batch, layer.topology.n_in, generator=gen).to(device).requires_grad_()
        g = torch.randn(batch, layer.topology.n_out, generator=gen).to(device)
        layer.zero_grad()
        y = layer(x)
        y.backward(g)
        y_ref, gx_ref, gw_ref, gb_ref = reference(layer, x, g)
        for ours, ref in ((y, y_ref), (x.grad, gx_ref), (lifted_grad(layer), gw_ref), (layer.bias.grad, gb_ref)):
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5 * max(1.0, float(ref.detach().abs().max())))
        # entries outside a ragged block meet no input and reach no output: gradient exactly 0
        assert float(layer.tiles.grad.abs().sum()) == pytest.approx(float(gw_ref.abs().sum()), rel=1e-5)
        assert layer.last_path == "block"
        with torch.no_grad():   # inference: one example tile by tile on the CPU, else the forward alone
            inference = layer(x.detach())
        small = layer.topology.block_in * layer.topology.block_out < BLOCK_VECTOR_MIN_TILE
        assert layer.last_path == ("block-vector" if batch == 1 and device == "cpu" and not small else "block")
        torch.testing.assert_close(inference, y_ref.detach(), rtol=1e-5,
                                   atol=1e-5 * max(1.0, float(y_ref.detach().abs().max())))


@pytest.mark.parametrize("name, n_in, n_out, k, block", LAYERS)
def test_block_layer_equals_masked_dense_forward_and_gradients(name, n_in, n_out, k, block):
    layer = BlockSparseLinear(build(name, n_in, n_out, k, seed=1, block=block), gen=np.random.default_rng(2))
    check_against_reference(layer, (1, 7, 33, 128, 1000))


@pytest.mark.parametrize("chunk", [7, None])
@pytest.mark.parametrize("name, n_in, n_out, k, block", LAYERS)
def test_a_batch_through_the_scratch_tensors_gives_what_a_kept_gather_gives(monkeypatch, name, n_in, n_out, k,
                                                                          block, chunk):
    """A batch gathered into the layer's scratch tensors and gathered again for the tile
    gradient, as large batches are taken: in chunks of 7 examples (the last one shorter), or
    whole (``chunk`` None), against the masked-dense reference (the reference check above runs
    these small batches the default way, their gathered inputs kept from the forward)."""
    monkeypatch.setattr(block_ops, "block_keeps_gathered", lambda batch, row_floats: False)
    if chunk is not None:
        monkeypatch.setattr(block_ops, "block_chunk_rows", lambda batch, row_floats: chunk)
    layer = BlockSparseLinear(build(name, n_in, n_out, k, seed=1, block=block), gen=np.random.default_rng(2))
    check_against_reference(layer, (7, 33, 128))


def test_chunks_hold_a_few_mib_of_gathered_blocks_unless_rows_are_too_wide():
    assert block_chunk_rows(2048, 3072) == BLOCK_CHUNK_FLOATS // 3072            # 1024 wide, blocks of 32, 10%
    assert block_chunk_rows(2048, 64) == BLOCK_CHUNK_FLOATS // 64
    assert block_chunk_rows(2048, 6144) == BLOCK_CHUNK_MIN_ROWS                   # never fewer rows
    assert block_chunk_rows(2048, 128 * 13 * 32) == 2048                          # 4096 wide: the whole batch
    assert block_chunk_rows(0, 10 ** 6) == 1


def test_small_batches_keep_their_gathered_inputs_and_large_ones_do_not():
    assert block_keeps_gathered(32, 3072) and block_keeps_gathered(BLOCK_CHUNK_FLOATS // 3072, 3072)
    assert not block_keeps_gathered(BLOCK_CHUNK_FLOATS // 3072 + 1, 3072)
    assert not block_keeps_gathered(32, 128 * 13 * 32)                            # 4096 wide: 6.8 MiB


def test_the_forward_keeps_its_gathered_inputs_only_where_the_rule_says(monkeypatch):
    """Which tensor the autograd graph holds for the tile gradient: the gathered blocks (D times
    the input) for a small batch, the input alone for a large one."""
    layer = BlockSparseLinear(build("random_regular", 64, 48, 3, seed=1, block=8))
    row = layer.plan.fwd_blocks.numel() * 8
    for batch, kept in ((5, True), (BLOCK_CHUNK_FLOATS // row + 1, False)):
        node = layer(torch.randn(batch, 64)).grad_fn
        while type(node).__name__ != "BlockLinearFunctionBackward":
            node = node.next_functions[0][0]
        saved = node.saved_tensors[0]
        assert saved.numel() == (batch * row if kept else batch * 64)


@pytest.mark.parametrize("batch", [1, 5])
def test_a_layer_without_bias_computes_the_lifted_product_alone(batch):
    layer = BlockSparseLinear(build("random_edge", 50, 37, 3, seed=1, block=(4, 6)), bias=False)
    x = torch.randn(batch, 50)
    with torch.no_grad():
        y = layer(x)
    assert layer.last_path == ("block-vector" if batch == 1 else "block")
    torch.testing.assert_close(y, x @ layer.dense_weight().t(), rtol=1e-5, atol=1e-6)


def test_one_example_reads_the_tiles_and_bias_as_they_are_now():
    """The batch-1 kernel keeps numpy views of the parameters: updates in place and new
    parameters must both reach it."""
    layer = BlockSparseLinear(build("random_regular", 64, 96, 3, seed=1, block=16))
    x = torch.randn(1, 64)

    def check():
        with torch.no_grad():
            y = layer(x)
        assert layer.last_path == "block-vector"
        torch.testing.assert_close(y, F.linear(x, layer.dense_weight(), layer.bias).detach(), rtol=1e-5, atol=1e-6)

    check()
    with torch.no_grad():
        layer.tiles.mul_(2.0)
        layer.bias.add_(1.0)
    check()
    layer.tiles = torch.nn.Parameter(torch.randn_like(layer.tiles))
    check()
    layer.bias = torch.nn.Parameter(torch.randn(96))
    check()
    # any layout of one example: 1-D, 3-D, a strided row, one that requires grad under no_grad
    reference = F.linear(x, layer.dense_weight(), layer.bias).detach()
    wide = torch.stack([x, torch.randn(1, 64)], dim=2).reshape(1, 128)
    for inp, shape in ((x[0], (96,)), (x.view(1, 1, 64), (1, 1, 96)), (wide[:, ::2], (1, 96)),
                       (x.clone().requires_grad_(), (1, 96))):
        with torch.no_grad():
            y = layer(inp)
        assert layer.last_path == "block-vector" and y.shape == shape
        torch.testing.assert_close(y.reshape(1, 96), reference, rtol=1e-5, atol=1e-6)


def test_inference_without_gradients_equals_training_forward():
    layer = BlockSparseLinear(build("random_regular", 100, 70, 3, seed=1, block=8))
    x = torch.randn(5, 3, 100)
    with torch.no_grad():
        inference = layer(x)
    assert inference.shape == (5, 3, 70)
    torch.testing.assert_close(inference, layer(x.requires_grad_()).detach(), rtol=0, atol=0)


def test_block_1_equals_the_sparse_layer():
    t = build("random_regular", 60, 40, 5, seed=3)
    block = BlockSparseLinear(t, init="glorot_sparse", gen=np.random.default_rng(7))
    sparse = SparseLinear(t, init="glorot_sparse", gen=np.random.default_rng(7), backend="sparse")
    assert torch.equal(block.connected_weights(), sparse.connected_weights())
    assert torch.equal(block.dense_weight(), sparse.dense_weight())
    x = torch.randn(33, 60)
    g = torch.randn(33, 40)
    xs = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    ys, yb = sparse(xs), block(xb)
    ys.backward(g)
    yb.backward(g)
    torch.testing.assert_close(yb, ys, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xb.grad, xs.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(block.tiles.grad.reshape(-1)[block._tile_index], sparse.values.grad, rtol=1e-5, atol=1e-5)
    with torch.no_grad():   # 1x1 tiles: one example stays on the batched matmuls (BLOCK_VECTOR_MIN_TILE)
        torch.testing.assert_close(block(x[:1]), sparse(x[:1]), rtol=1e-5, atol=1e-5)
    assert block.last_path == "block"


def test_padding_of_a_ragged_block_starts_and_stays_zero():
    layer = BlockSparseLinear(build("regular_rotating", 10, 6, 1, block=4))   # widths 4,4,2 -> 4,2
    assert int(torch.count_nonzero(layer.tiles)) == layer.topology.nnz
    layer(torch.randn(9, 10)).sum().backward()
    inside = torch.zeros_like(layer.tiles).reshape(-1)
    inside[layer._tile_index] = 1
    assert torch.all(layer.tiles.grad.reshape(-1)[inside == 0] == 0)


def test_bad_inputs_are_named():
    layer = BlockSparseLinear(build("regular_rotating", 16, 8, 1, block=4))
    with pytest.raises(SparsetopoError, match="last dimension must be 16"):
        layer(torch.randn(3, 15))
    with pytest.raises(SparsetopoError, match="is torch.float64 on cpu but BlockSparseLinear"):
        layer(torch.randn(3, 16, dtype=torch.float64))


@CUDA
@pytest.mark.parametrize("name, n_in, n_out, k, block", LAYERS)
def test_block_layer_on_cuda_equals_masked_dense(name, n_in, n_out, k, block):
    layer = BlockSparseLinear(build(name, n_in, n_out, k, seed=1, block=block), gen=np.random.default_rng(2)).cuda()
    check_against_reference(layer, (1, 7, 33, 128, 1000), device="cuda")
    cpu = BlockSparseLinear(layer.topology, gen=np.random.default_rng(2))
    with torch.no_grad():
        cpu.bias.copy_(layer.bias.cpu())
    x = torch.randn(17, n_in)
    torch.testing.assert_close(layer(x.cuda()).cpu(), cpu(x), rtol=1e-4, atol=1e-4)
