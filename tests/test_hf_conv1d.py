"""Hugging Face transformers' Conv1D (GPT-2's projections) is sparsified like nn.Linear: a
stand-in with the same attributes and arithmetic (``transformers`` is not a dependency) against
an independent masked reference, inside a GPT-2-like block."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import sparsetopo
from sparsetopo.nn import SparseLinear, sparsify


class Conv1D(nn.Module):
    """transformers.pytorch_utils.Conv1D as GPT-2 uses it: weight (nx, nf), y = x @ W + b."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.randn(nf) * 0.02)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size_out)


class Block(nn.Module):
    """GPT-2's block without attention arithmetic: c_attn, c_proj, c_fc and the MLP's c_proj."""

    def __init__(self, d: int = 32):
        super().__init__()
        self.c_attn, self.attn_proj = Conv1D(3 * d, d), Conv1D(d, d)
        self.c_fc, self.mlp_proj = Conv1D(4 * d, d), Conv1D(d, 4 * d)

    def forward(self, x):
        q, k, v = self.c_attn(x).chunk(3, dim=-1)
        x = x + self.attn_proj(torch.tanh(q * k) * v)
        return x + self.mlp_proj(torch.nn.functional.gelu(self.c_fc(x)))


def masked_reference(block: Block, sparse: Block) -> Block:
    """``block`` with each Conv1D's (in, out) weight times its sparse twin's (in, out) adjacency."""
    reference = copy.deepcopy(block)
    for name in ("c_attn", "attn_proj", "c_fc", "mlp_proj"):
        mask = torch.from_numpy(getattr(sparse, name).topology.mask()).float()
        getattr(reference, name).weight.data *= mask
    return reference


@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_conv1d_layers_become_sparse_linear_layers_keeping_their_weights(backend):
    torch.manual_seed(0)
    block = Block()
    sparse = sparsify(copy.deepcopy(block), "random_regular", density=0.25, seed=3, backend=backend)
    assert all(isinstance(getattr(sparse, n), SparseLinear) for n in ("c_attn", "attn_proj", "c_fc", "mlp_proj"))
    assert (sparse.c_attn.topology.n_in, sparse.c_attn.topology.n_out) == (32, 96)
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(sparse(x), masked_reference(block, sparse)(x), rtol=1e-5, atol=1e-5)
    assert sparsetopo.summary(sparse).sparse_share == 1.0


def test_a_conv1d_left_out_is_reported_as_not_sparsified():
    model = sparsify(Block(), "random_regular", density=0.25, exclude=["c_fc"])
    reasons = {layer.name: (layer.sparse, layer.reason) for layer in sparsetopo.summary(model).layers}
    assert reasons["c_fc"] == (False, "excluded ('c_fc')") and reasons["c_attn"][0]


def test_a_sparsified_conv1d_model_saves_and_loads_into_a_fresh_instance(tmp_path):
    pytest.importorskip("safetensors")
    torch.manual_seed(1)
    sparse = sparsify(Block(), "regular_rotating", density=0.25)
    path = sparsetopo.save(sparse, tmp_path / "block.safetensors")
    loaded = sparsetopo.load(path, model=Block())
    x = torch.randn(3, 32)
    torch.testing.assert_close(loaded(x), sparse(x), rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_the_state_dict_keeps_conv1d_layout_both_ways(backend):
    """A dense Conv1D checkpoint (square attn_proj included) loads into the sparsified block as
    sparsifying it with keep_weights would, and the sparse block's state_dict loads into a dense one."""
    torch.manual_seed(0)
    dense, other = Block(), Block()
    model = sparsify(copy.deepcopy(dense), "random_regular", density=0.25, seed=0, backend=backend)
    assert {key: tuple(v.shape) for key, v in model.state_dict().items()} == \
        {key: tuple(v.shape) for key, v in dense.state_dict().items()}
    model.load_state_dict(other.state_dict())
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), masked_reference(other, model)(x), atol=1e-6, rtol=0)
        fresh = Block()
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(fresh(x), model(x), atol=1e-6, rtol=0)
