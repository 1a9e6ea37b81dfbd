"""SparseConv2d against nn.Conv2d with the masked weight: outputs, gradients, channel degrees."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import rel_err
from sparsetopo import CONSTRUCTIONS, SparsetopoError, build
from sparsetopo.nn import SparseConv2d


def reference(layer: SparseConv2d) -> nn.Conv2d:
    """An independent nn.Conv2d holding the layer's masked weight (dense mask built from the
    topology's edge list, not from the layer's own mask buffer)."""
    t = layer.topology
    mask = torch.zeros(t.n_out, t.n_in, 1, 1)
    mask[t.indices.astype(np.int64), t.rows.astype(np.int64)] = 1.0
    conv = nn.Conv2d(t.n_in, t.n_out, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                     bias=layer.bias is not None, padding_mode=layer.padding_mode, device="meta")
    conv.weight = nn.Parameter(layer.weight.detach() * mask)
    if layer.bias is not None:
        conv.bias = nn.Parameter(layer.bias.detach().clone())
    return conv


@pytest.mark.parametrize("stride,padding,dilation,padding_mode", [
    (1, 0, 1, "zeros"),
    ((2, 1), (1, 2), 2, "zeros"),
    (2, 1, (1, 3), "zeros"),
    (1, "same", 2, "zeros"),
    ((1, 2), (2, 1), 1, "reflect"),
    (2, 2, 2, "circular"),
    (1, "same", 1, "replicate"),
])
@pytest.mark.parametrize("construction", ["random_regular", "fibonacci_rotating"])
def test_outputs_and_gradients_equal_conv2d_with_the_masked_weight(construction, stride, padding, dilation,
                                                                   padding_mode):
    t = build(construction, 6, 10, 3, seed=2)
    layer = SparseConv2d(t, (3, 2), stride, padding, dilation, padding_mode=padding_mode,
                         gen=np.random.default_rng(1))
    with torch.no_grad():
        layer.bias.copy_(torch.linspace(-1, 1, 10))
    conv = reference(layer)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, 11, 9, generator=gen)
    xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    ys, yr = layer(xs), conv(xr)
    assert ys.shape == yr.shape
    g = torch.randn(ys.shape, generator=gen)
    ys.backward(g)
    yr.backward(g)
    assert rel_err(ys, yr) < 1e-5
    assert rel_err(xs.grad, xr.grad) < 1e-5
    assert rel_err(layer.bias.grad, conv.bias.grad) < 1e-5
    mask = layer.mask.expand_as(layer.weight)
    assert rel_err(layer.weight.grad[mask == 1], conv.weight.grad[mask == 1]) < 1e-5
    assert float(layer.weight.grad[mask == 0].abs().max()) == 0.0  # pruned kernels never move


@pytest.mark.parametrize("construction", sorted(CONSTRUCTIONS))
def test_channel_graph_has_the_topologys_degrees(construction):
    k = 12 if construction == "fully_connected" else 4
    t = build(construction, 20, 12, k, seed=5)
    layer = SparseConv2d(t, 3, padding=1)
    kernels = layer.dense_weight().abs().sum(dim=(2, 3))            # (out, in): nonzero where connected
    connected = (kernels > 0).to(torch.int64)
    assert torch.equal(connected, torch.from_numpy(t.mask().T.astype(np.int64)))
    assert connected.sum(dim=0).tolist() == t.out_degrees.tolist()  # per input channel
    assert connected.sum(dim=1).tolist() == t.in_degrees.tolist()   # per output channel
    if construction != "random_edge":
        assert set(connected.sum(dim=0).tolist()) == {k}
    # an output channel depends only on the input channels that feed it
    x = torch.zeros(1, 20, 5, 5, requires_grad=True)
    layer(x)[0, 0].sum().backward()
    feeding = (x.grad[0].abs().sum(dim=(1, 2)) > 0).nonzero().flatten().tolist()
    assert feeding == sorted(t.rows[t.indices == 0].tolist())


def test_connected_weights_round_trip_and_init_scale():
    t = build("random_regular", 32, 64, 8, seed=0)
    layer = SparseConv2d(t, 3, gen=np.random.default_rng(0))
    w = layer.connected_weights()
    assert w.shape == (t.nnz, 3, 3)
    # Glorot with the receptive field in the fans (Keras' convolution fans)
    expected_std = np.sqrt(2.0 / ((32 + 64) * 9))
    assert abs(float(w.std()) - expected_std) / expected_std < 0.05
    other = SparseConv2d(t, 3, gen=np.random.default_rng(1))
    other.set_connected_weights(w)
    assert torch.equal(other.weight, layer.weight)
    with pytest.raises(SparsetopoError, match=r"expected \(256, 3, 3\)"):
        other.set_connected_weights(w[:, :2])


def test_to_dense_computes_the_same_function():
    layer = SparseConv2d(build("long_short_rotating", 5, 7, 3), (3, 3), stride=2, padding=1,
                         gen=np.random.default_rng(3))
    x = torch.randn(2, 5, 9, 9, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float((layer.to_dense()(x) - layer(x)).abs().max()) < 1e-6


@pytest.mark.parametrize("kwargs,message", [
    (dict(kernel_size=0), "kernel_size=0 is out of range: choose kernel_size >= 1"),
    (dict(kernel_size=3, stride=0), "stride=0 is out of range: choose stride >= 1"),
    (dict(kernel_size=3, padding="full"), "padding='full'"),
    (dict(kernel_size=3, padding="same", stride=2), "padding='same' needs stride 1"),
    (dict(kernel_size=3, padding_mode="mirror"), "unknown padding_mode 'mirror'"),
    (dict(kernel_size=3, backend="sparse"), "unknown convolution backend 'sparse'"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(SparsetopoError) as err:
        SparseConv2d(build("regular_rotating", 4, 4, 2), **kwargs)
    assert message in str(err.value)


def test_functional_reference_is_not_the_module_itself():
    """The comparison above can fail: a wrong mask orientation changes the output."""
    t = build("regular_rotating", 4, 6, 2)
    layer = SparseConv2d(t, 3, gen=np.random.default_rng(0))
    x = torch.randn(1, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    wrong = layer.weight.detach() * torch.from_numpy(np.resize(t.mask().astype(np.float32), (6, 4))).reshape(6, 4, 1, 1)
    with torch.no_grad():
        assert float((F.conv2d(x, wrong) - layer(x)).abs().max()) > 1e-3
