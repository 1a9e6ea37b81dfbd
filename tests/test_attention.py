"""Sparse attention: nn.MultiheadAttention masked in place by sparsify, packed and separate
projections, inside nn.TransformerEncoder.

The reference is a plain nn.MultiheadAttention whose weights are multiplied by the dense 0/1
adjacency of topologies rebuilt from the seed recipe (``derive_seed(seed, "topology", role)``).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import sparsetopo
from sparsetopo import SparsetopoError
from sparsetopo.nn import sparsify, summary
from sparsetopo.nn.attention import SparseMultiheadAttention
from sparsetopo.seeding import derive_seed
from sparsetopo.topology import build


def adjacency(name: str, n_in: int, n_out: int, density: float, seed: int) -> torch.Tensor:
    k = int(density * n_out + 0.5)
    t = build("random_regular", n_in, n_out, k, seed=derive_seed(seed, "topology", name))
    return torch.from_numpy(t.mask().T.astype("float32"))


def reference(dense: nn.MultiheadAttention, name: str, density: float, seed: int) -> nn.MultiheadAttention:
    """``dense`` with each projection multiplied by its topology's adjacency."""
    ref = copy.deepcopy(dense)
    e, role = dense.embed_dim, (lambda r: f"{name}.{r}" if name else r)
    q, k, v = (adjacency(role(r), n, e, density, seed) for r, n in
               (("q_proj", e), ("k_proj", dense.kdim), ("v_proj", dense.vdim)))
    with torch.no_grad():
        if dense._qkv_same_embed_dim:
            ref.in_proj_weight.mul_(torch.cat([q, k, v]))
        else:
            ref.q_proj_weight.mul_(q)
            ref.k_proj_weight.mul_(k)
            ref.v_proj_weight.mul_(v)
        ref.out_proj.weight.mul_(adjacency(role("out_proj"), e, e, density, seed))
    return ref


@pytest.mark.parametrize("kdim,vdim", [(None, None), (12, 20)])
def test_attention_equals_the_masked_reference_in_train_and_eval(kdim, vdim):
    torch.manual_seed(0)
    dense = nn.MultiheadAttention(16, 4, batch_first=True, kdim=kdim, vdim=vdim)
    model = sparsify(nn.ModuleDict({"att": copy.deepcopy(dense)}), "random_regular", density=0.25, seed=2)
    att, ref = model["att"], reference(dense, "att", 0.25, 2)
    assert type(att) is SparseMultiheadAttention
    assert set(att.topologies) == ({"in_proj_weight", "out_proj.weight"} if kdim is None else
                                   {"q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"})
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(3, 5, 16, generator=gen)
    k, v = torch.randn(3, 6, kdim or 16, generator=gen), torch.randn(3, 6, vdim or 16, generator=gen)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[1, 4:] = True
    out, weights = att(q, k, v, key_padding_mask=pad)
    ref_out, ref_weights = ref(q, k, v, key_padding_mask=pad)
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights, ref_weights, atol=1e-6, rtol=1e-5)
    out.pow(2).sum().backward()
    ref_out.pow(2).sum().backward()
    for path in att.topologies:
        mask = att.get_buffer(path.replace(".", "_") + "_mask")
        grad = att.get_parameter(path).grad
        assert float(grad[mask == 0].abs().max()) == 0.0, path
        torch.testing.assert_close(grad, ref.get_parameter(path).grad * mask, atol=1e-6, rtol=1e-5)
    att.eval()
    ref.eval()
    inputs = (q, q, q) if kdim is None else (q, k, v)   # self-attention takes torch's fast path
    with torch.no_grad():
        torch.testing.assert_close(att(*inputs, need_weights=False)[0], ref(*inputs, need_weights=False)[0],
                                   atol=1e-6, rtol=1e-5)


def test_packed_and_separate_projections_get_the_same_query_and_output_graphs():
    packed = sparsify(nn.MultiheadAttention(16, 2), "random_regular", density=0.5, seed=1)
    separate = sparsify(nn.MultiheadAttention(16, 2, kdim=16, vdim=8), "random_regular", density=0.5, seed=1)
    assert separate.topologies["q_proj_weight"][0].fingerprint == packed.topologies["in_proj_weight"][0].fingerprint
    assert separate.topologies["out_proj.weight"][0].fingerprint == packed.topologies["out_proj.weight"][0].fingerprint
    assert len({t.fingerprint for t in packed.topologies["in_proj_weight"]}) == 3   # q, k, v: three graphs


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 8)

    def forward(self, x):
        return self.head(self.encoder(x).mean(1))


def test_transformer_encoder_attention_is_all_sparse_trains_and_keeps_pruned_zeros():
    torch.manual_seed(0)
    model = sparsify(Encoder(), "random_regular", density=0.25, seed=3, backend="masked")
    report = summary(model)
    attention = [row for row in report.layers if row.name.endswith("self_attn")]
    assert len(attention) == 2 and all(row.sparse and row.weights == 4 * 32 * 32 for row in attention)
    assert report.sparse_share == 1.0 and not report.dense
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 6, 32, generator=gen), torch.randint(0, 8, (4,), generator=gen)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for layer in model.encoder.layers:
        att = layer.self_attn
        for path in att.topologies:
            mask = att.get_buffer(path.replace(".", "_") + "_mask")
            assert float(att.get_parameter(path).detach()[mask == 0].abs().max()) == 0.0, path
    trained = model(x).detach()
    model.eval()
    with torch.no_grad():   # the fused encoder path declines around the masked attention
        torch.testing.assert_close(model(x), trained, atol=1e-5, rtol=1e-5)


def test_state_dict_both_ways_and_save_load(tmp_path):
    torch.manual_seed(0)
    dense = Encoder()
    kept = sparsify(copy.deepcopy(dense), "random_regular", density=0.25, seed=3, backend="masked")
    fresh = sparsify(Encoder(), "random_regular", density=0.25, seed=3, backend="masked", keep_weights=False)
    fresh.load_state_dict(dense.state_dict())                 # masked on load, torch's keys
    for key, value in kept.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    twin = Encoder()
    twin.load_state_dict(kept.state_dict())
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(twin(x), kept(x), atol=1e-6, rtol=1e-5)
    pytest.importorskip("safetensors")
    path = sparsetopo.save(kept, tmp_path / "encoder.safetensors")
    loaded = sparsetopo.load(path, model=Encoder().to("meta"))
    with torch.no_grad():
        assert torch.equal(loaded(x), kept(x))
    with pytest.raises(SparsetopoError, match="has no masked layer 'encoder.layers.0.self_attn'"):
        sparsetopo.load(sparsetopo.save(sparsify(Encoder(), "random_regular", density=0.25, seed=3, exclude=["encoder"]),
                                        tmp_path / "head.safetensors"), model=kept)


@pytest.mark.parametrize("dense", [False, True])
def test_onnx_export_of_a_sparse_transformer_encoder_matches_onnxruntime(tmp_path, dense):
    pytest.importorskip("onnxruntime")
    from sparsetopo.onnx import export_onnx, onnx_difference

    model = sparsify(Encoder(), "random_regular", density=0.25, seed=3)
    export_onnx(model, tmp_path / "encoder.onnx", input_shape=(1, 6, 32), dense=dense)
    x = torch.randn(3, 6, 32, generator=torch.Generator().manual_seed(0))
    assert onnx_difference(model, tmp_path / "encoder.onnx", x) < 1e-4
    assert torch.backends.mha.get_fastpath_enabled()   # switched off only while tracing
