"""ONNX export of models other people wrote: what torch's exporter writes densely, sparsetopo
writes with its sparse layers, and onnxruntime computes what torch computes."""

import numpy as np
import pytest
import torch
from torch import nn

import sparsetopo
from sparsetopo.nn import SparseLinear

from test_io import seeded
from test_onnx_export import moved, run

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.filterwarnings("ignore::sparsetopo.nn.CoverageWarning")  # attention stays dense


class Encoder(nn.Module):
    """A sequence classifier on ``nn.TransformerEncoder`` (batch first, as torch's fused kernels want)."""

    def __init__(self, width=32, heads=4, layers=2):
        super().__init__()
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, 16)

    def forward(self, x):
        return self.head(self.encoder(x))


def assert_exports_and_matches(model, path, example, inputs):
    """The sparse file is written, lists every sparse layer, is smaller than the dense file,
    and onnxruntime matches torch within 1e-4 on every input."""
    sparse_layers = [name for name, m in model.named_modules() if isinstance(m, SparseLinear)]
    result = sparsetopo.export_onnx(model, path, example_input=example)
    assert [layer.name for layer in result.layers] == sparse_layers
    dense = sparsetopo.export_onnx(model, path.with_suffix(".dense.onnx"), example_input=example, dense=True)
    assert result.file_bytes < dense.file_bytes
    for x in inputs:
        with torch.no_grad():
            expected = model(x).numpy()
        got = run(path, x)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("include", [None, ["head"]], ids=["all-linear", "head-only"])
def test_a_transformer_encoder_exports(tmp_path, include):
    """With sparse layers inside the encoder (torch's fused kernel would read their weight) and
    with the encoder dense (its fused kernel has no ONNX form) alike."""
    model = seeded(0, Encoder)
    model = moved(sparsetopo.sparsify(model, "random_regular", density=0.25, seed=0, include=include))
    gen = torch.Generator().manual_seed(3)
    inputs = [torch.randn(batch, 6, 32, generator=gen) for batch in (1, 2, 5)]
    assert_exports_and_matches(model, tmp_path / "encoder.onnx", inputs[1], inputs)
    assert torch.backends.mha.get_fastpath_enabled()  # switched off for the trace only


def test_the_fused_kernels_are_switched_back_on_when_the_trace_fails(tmp_path, monkeypatch):
    model = moved(sparsetopo.sparsify(seeded(0, Encoder), "random_regular", density=0.25, seed=0))
    seen = []

    def failing_export(*args, **kwargs):
        seen.append(torch.backends.mha.get_fastpath_enabled())
        raise RuntimeError("the exporter failed")

    monkeypatch.setattr(torch.onnx, "export", failing_export)
    with pytest.raises(RuntimeError, match="the exporter failed"):
        sparsetopo.export_onnx(model, tmp_path / "e.onnx", example_input=torch.zeros(2, 6, 32))
    assert seen == [False] and torch.backends.mha.get_fastpath_enabled()
    assert not (tmp_path / "e.onnx").exists()


class Logits(nn.Module):
    """A Hugging Face causal language model as an ONNX graph wants it: token ids in, logits out.
    The explicit attention mask keeps transformers off its packed-sequence check
    (``torch.diff``, which torch's exporter cannot write)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits


def tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval()


def test_gpt2_returning_logits_exports(tmp_path):
    """GPT-2's projections (transformers' Conv1D) become sparse layers; the tied embedding and head share a mask."""
    model = moved(sparsetopo.sparsify(Logits(seeded(0, tiny_gpt2)), "random_regular", density=0.25, seed=0))
    assert sum(isinstance(m, SparseLinear) for m in model.modules()) == 8   # 4 projections x 2 blocks
    gen = torch.Generator().manual_seed(3)
    inputs = [torch.randint(0, 64, (batch, 8), generator=gen) for batch in (1, 2, 4)]
    assert_exports_and_matches(model, tmp_path / "gpt2.onnx", inputs[1], inputs)


def test_an_operator_the_exporter_lacks_is_named_in_one_error(tmp_path):
    """Without an attention mask transformers checks for packed sequences with torch.diff, which
    torch's exporter cannot write, dense or sparse: one SparsetopoError names it, no file."""

    class IdsOnly(Logits):
        def forward(self, ids):
            return self.model(input_ids=ids, use_cache=False).logits

    model = sparsetopo.sparsify(IdsOnly(seeded(0, tiny_gpt2)), "random_regular", density=0.25, seed=0)
    for dense in (False, True):
        with pytest.raises(sparsetopo.SparsetopoError, match="cannot write this model at opset 17: .*aten::diff"):
            sparsetopo.export_onnx(model, tmp_path / "ids.onnx", example_input=torch.zeros(1, 8, dtype=torch.long),
                                   dense=dense)
        assert not (tmp_path / "ids.onnx").exists()
