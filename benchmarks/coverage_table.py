"""How much of real models sparsify reaches: the coverage table, one row per model.

Usage: ``python benchmarks/coverage_table.py [--density D] [--construction NAME]``

Every model is built from its config (no download, no weights): Hugging Face GPT-2 with its
tied head and untied, BERT for sequence classification (small configs), an LSTM and a GRU
classifier on token ids, a Conv1d net, an ``nn.TransformerEncoder`` classifier and a
MobileNet-style inverted residual block (1x1 expand, 3x3 depthwise, 1x1 project). Each is
sparsified at ``--density`` (0.1) with every layer selected, and its row of
:func:`sparsetopo.summary` printed as a Markdown table: the weight layers made sparse, the
share of all weights sparse, the share of the attention projections sparse (models with
attention), and every layer left dense with its reason. The ``transformers`` models are
skipped, with a line, when ``transformers`` is not installed.
"""

from __future__ import annotations

import argparse
import warnings

import torch
from torch import nn

import sparsetopo
from sparsetopo.nn import CoverageWarning

VOCAB = 1000


class RecurrentClassifier(nn.Module):
    """Token ids -> embedding -> a 2-layer recurrent layer -> a 4-class head on the last step."""

    def __init__(self, kind, width=64, hidden=128, classes=4):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.rnn = kind(width, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, ids):
        out, _ = self.rnn(self.embed(ids))
        return self.head(out[:, -1])


class Conv1dNet(nn.Module):
    """8-channel signals -> two 1-d convolutions -> mean over time -> 10 classes."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv1d(8, 64, 5, padding=2), nn.ReLU(), nn.Conv1d(64, 128, 5, padding=2),
                                      nn.ReLU())
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        return self.head(self.features(x).mean(-1))


class EncoderClassifier(nn.Module):
    """Token ids -> embedding -> ``nn.TransformerEncoder`` (2 layers, 4 heads) -> 10 classes."""

    def __init__(self, width=64):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, 10)

    def forward(self, ids):
        return self.head(self.encoder(self.embed(ids)).mean(1))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, 3x3 depthwise, 1x1 project, with the residual."""

    def __init__(self, channels=32, expand=4):
        super().__init__()
        wide = channels * expand
        self.expand = nn.Sequential(nn.Conv2d(channels, wide, 1, bias=False), nn.BatchNorm2d(wide), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(wide, wide, 3, padding=1, groups=wide, bias=False),
                                       nn.BatchNorm2d(wide), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(wide, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        return x + self.project(self.depthwise(self.expand(x)))


def transformers_models() -> dict:
    """GPT-2 tied and untied and BERT, from small configs; {} without ``transformers``."""
    try:
        import transformers
    except ImportError:
        return {}

    def gpt2(tied):
        config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                         bos_token_id=0, eos_token_id=0, tie_word_embeddings=tied)
        return transformers.GPT2LMHeadModel(config)

    def bert():
        config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=128, max_position_embeddings=64, num_labels=3)
        return transformers.BertForSequenceClassification(config)

    return {"GPT-2, tied head": lambda: gpt2(True), "GPT-2, untied head": lambda: gpt2(False), "BERT": bert}


def models() -> dict:
    """Every model of the table by its row name, as a function that builds it."""
    return {**transformers_models(), "LSTM classifier": lambda: RecurrentClassifier(nn.LSTM),
            "GRU classifier": lambda: RecurrentClassifier(nn.GRU), "Conv1d net": Conv1dNet,
            "TransformerEncoder": EncoderClassifier, "MobileNet-style block": InvertedResidual}


def is_attention(name: str) -> bool:
    """A layer of an attention block: GPT-2's ``attn``, BERT's ``attention``, torch's ``self_attn``."""
    return any(part in ("attn", "attention", "self_attn") for part in name.split("."))


def row(name: str, report) -> str:
    """One Markdown row of the table from a :func:`sparsetopo.summary` report."""
    attention = [layer for layer in report.layers if is_attention(layer.name)]
    attention_weights = sum(layer.weights for layer in attention)
    share = (f"{sum(layer.weights for layer in attention if layer.sparse) / attention_weights:.0%}"
             if attention_weights else "-")
    dense = "; ".join(f"`{layer.name}`: {layer.reason}" for layer in report.dense) or "none"
    return (f"| {name} | {len(report.sparse)} of {len(report.layers)} | {report.sparse_share:.1%} | {share} | "
            f"{dense} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--construction", default="random_regular")
    args = parser.parse_args(argv)
    built = models()
    if "BERT" not in built:
        print("transformers is not installed: GPT-2 and BERT are skipped (pip install 'sparsetopo[models]')")
    print(f"{args.construction} at density {args.density}, every layer selected\n")
    print("| model | weight layers made sparse | share of weights sparse | attention projections sparse "
          "| layers left dense, with their reasons |")
    print("|---|---|---|---|---|")
    for name, build in built.items():
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CoverageWarning)   # the table itself reports what stays dense
            model = sparsetopo.sparsify(build(), args.construction, density=args.density, seed=0)
        print(row(name, sparsetopo.summary(model)))


if __name__ == "__main__":
    main()
