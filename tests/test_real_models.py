"""Real architectures, end to end: GPT-2- and BERT-like models, LSTM and GRU classifiers, a
MobileNet-style depthwise block and an ``nn.TransformerEncoder``, each sparsified whole.

Each is checked for coverage (the summary), training steps, masked == sparse, save/load, ONNX
and the state_dict round trip with its dense twin. The models are benchmarks/coverage_table.py's
(one definition), plus a GPT-2-like language model written here with a tied embedding and head,
so that a run without ``transformers`` still covers a tie; the Hugging Face models skip cleanly
when ``transformers`` is absent.
"""

from __future__ import annotations

import copy
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import sparsetopo
from sparsetopo.nn import CoverageWarning, SparseLinear
from sparsetopo.nn.masked_params import MaskedParameters, mask_name

SPEC = importlib.util.spec_from_file_location("coverage_table",
                                              Path(__file__).resolve().parents[1] / "benchmarks" / "coverage_table.py")
table = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(table)

DENSITY = 0.1


class TiedLM(nn.Module):
    """A GPT-2-like language model: token and position embeddings, one pre-norm block (causal
    self-attention and an MLP), and an output layer tied to the token embedding."""

    def __init__(self, vocab=96, width=32, positions=16):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(positions, width)
        self.ln_1, self.ln_2, self.ln_f = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, 4, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, ids):
        n = ids.shape[1]
        x = self.wte(ids) + self.wpe(torch.arange(n, device=ids.device))
        causal = torch.triu(torch.full((n, n), float("-inf"), device=ids.device), 1)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=causal, need_weights=False)[0]
        x = x + self.mlp(self.ln_2(x))
        return self.lm_head(self.ln_f(x))


class Logits(nn.Module):
    """A Hugging Face model as a plain module: token ids in, logits out (an explicit attention
    mask keeps transformers off code torch's ONNX exporter cannot write)."""

    def __init__(self, model, **options):
        super().__init__()
        self.model, self.options = model, options

    def forward(self, ids):
        return self.model(input_ids=ids, attention_mask=torch.ones_like(ids), **self.options).logits


def hf(name, **options):
    def make():
        pytest.importorskip("transformers")
        models = table.transformers_models()
        config = models[name]().config
        for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "hidden_dropout_prob", "attention_probs_dropout_prob"):
            if hasattr(config, key):
                setattr(config, key, 0.0)   # train and eval compute the same, for the round trips
        return Logits(type(models[name]())(config), **options)
    return make


def ids(batch=2, length=8, vocab=96, seed=1):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


# name: (factory, example input, least share of weights sparse)
MODELS = {
    "tied-lm": (TiedLM, ids(), 1.0),
    "gpt2-tied": (hf("GPT-2, tied head", use_cache=False), ids(), 0.95),
    "gpt2-untied": (hf("GPT-2, untied head", use_cache=False), ids(), 0.95),
    "bert": (hf("BERT"), ids(), 0.95),
    "lstm": (lambda: table.RecurrentClassifier(nn.LSTM), ids(), 0.95),
    "gru": (lambda: table.RecurrentClassifier(nn.GRU), ids(), 0.95),
    "mobilenet-block": (table.InvertedResidual, torch.randn(2, 32, 6, 6, generator=torch.Generator().manual_seed(1)),
                        0.85),
    "transformer-encoder": (table.EncoderClassifier, ids(), 1.0),
}


def build(name, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MODELS[name][0]()


def sparse(name, model=None, backend="auto", seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoverageWarning)
        return sparsetopo.sparsify(build(name) if model is None else model, "random_regular", density=DENSITY,
                                   seed=seed, backend=backend)


def pruned_values(model):
    """Every pruned weight of every masked layer (they must all be exactly 0)."""
    values = []
    for module in model.modules():
        if isinstance(module, MaskedParameters):
            values += [module.get_parameter(p)[getattr(module, mask_name(p)) == 0] for p in module.topologies]
        elif getattr(module, "backend", None) == "masked" and hasattr(module, "mask"):
            values.append(module.weight[module.mask.expand_as(module.weight) == 0])
    return torch.cat([v.flatten() for v in values])


@pytest.mark.parametrize("name", MODELS)
def test_coverage_reaches_the_weights_and_names_each_dense_layer(name):
    report = sparsetopo.summary(sparse(name))
    assert report.sparse_share >= MODELS[name][2]
    assert all(layer.reason for layer in report.dense)
    attention = [layer for layer in report.layers if table.is_attention(layer.name)]
    assert all(layer.sparse for layer in attention)   # every attention projection, packed or not
    if name == "mobilenet-block":
        assert [(layer.name, layer.reason.split(" ")[0]) for layer in report.dense] == [("depthwise.0", "depthwise")]
    if name in ("bert", "transformer-encoder"):
        assert attention


def test_the_tied_embedding_and_head_keep_one_parameter_under_one_mask():
    model = sparse("tied-lm")
    assert model.lm_head.weight is model.wte.weight
    assert torch.equal(model.lm_head.weight_mask, model.wte.weight_mask)
    assert 0 < model.wte.weight_mask.mean().item() < 0.15   # density 0.1 of 96 tokens per coordinate
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.lm_head(x), x @ (model.wte.weight * model.wte.weight_mask).T)
    tokens = ids()
    torch.testing.assert_close(model.wte(tokens), (model.wte.weight * model.wte.weight_mask)[tokens])


@pytest.mark.parametrize("name", MODELS)
def test_training_steps_lower_the_loss_and_pruned_weights_stay_zero(name):
    model = sparse(name).train()
    x = MODELS[name][1]
    with torch.no_grad():
        target = torch.randn(model(x).shape, generator=torch.Generator().manual_seed(2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = (model(x) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert not pruned_values(model).any()


@pytest.mark.parametrize("name", [n for n in MODELS if n not in ("lstm", "gru", "mobilenet-block")])
def test_masked_equals_sparse_backend(name):
    """Models with linear layers, where the sparse backend applies."""
    masked = sparse(name, backend="masked").eval()
    fast = sparse(name, backend="sparse").eval()
    assert any(getattr(m, "backend", None) == "sparse" for m in fast.modules())
    with torch.no_grad():
        torch.testing.assert_close(fast(MODELS[name][1]), masked(MODELS[name][1]), atol=5e-6, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_save_and_load_into_a_fresh_model(tmp_path, name):
    pytest.importorskip("safetensors")
    model = sparse(name).eval()
    path = sparsetopo.save(model, tmp_path / f"{name}.safetensors")
    loaded = sparsetopo.load(path, model=build(name, seed=5)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(MODELS[name][1]), model(MODELS[name][1]), atol=0, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_onnx_matches_onnxruntime(tmp_path, name):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = sparse(name).eval()
    x = MODELS[name][1]
    sparsetopo.export_onnx(model, tmp_path / f"{name}.onnx", example_input=x)
    session = ort.InferenceSession(str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_round_trip_with_the_dense_twin(name):
    """A dense state_dict loads into the sparsified model and is masked (as sparsifying that
    dense model with keep_weights gives), and the sparsified state_dict loads into a fresh
    dense model, which then computes what the sparse one does."""
    other = build(name, seed=3)
    reference = sparse(name, model=copy.deepcopy(other)).eval()
    model = sparse(name)
    model.load_state_dict(other.state_dict())
    model.eval()
    x = MODELS[name][1]
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-6, rtol=0)
    assert not pruned_values(model).any()
    dense = build(name, seed=4).eval()
    dense.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(dense(x), model(x), atol=1e-5, rtol=0)
