"""Sparse embeddings, and the output layer that shares an embedding's table.

Reading of the paper's graph: an ``nn.Embedding`` table, ``num_embeddings`` x ``embedding_dim``,
is read as the weight of the linear layer that scores vectors against the tokens: a bipartite
graph from the ``embedding_dim`` coordinates (inputs) to the ``num_embeddings`` tokens
(outputs), stored as torch stores an ``nn.Linear(embedding_dim, num_embeddings)`` weight, rows
the outputs. It is the graph of a language model's output layer tied to the embedding (GPT-2's
``lm_head``, whose weight *is* the table), so a tied pair holds one matrix under one topology:

- ``k`` counts tokens per coordinate: ``k = round(density * num_embeddings)``, the density of
  the table is ``k / num_embeddings``;
- the lookup of token ``t`` reads the graph backwards: its vector holds the coordinates
  connected to ``t`` (the in-degree of ``t``: ``k * embedding_dim / num_embeddings`` for every
  token under the regular constructions, on average under the random ones);
- the topology is seeded by the embedding's name, for both ends of a tie.

Both ends keep torch's class and code and are masked in place
(:mod:`sparsetopo.nn.masked_params`): :class:`SparseEmbedding` looks tokens up in
``weight * mask``, and :class:`TiedSparseLinear`, the ``nn.Linear`` that shares the table,
computes with the same product. The parameter stays one ``Parameter`` (the tie is kept, and
``state_dict`` holds the table under both names as before); its pruned entries are exactly 0
and, since both uses multiply by the same mask, get a gradient of exactly 0 from both.
"""

from __future__ import annotations

from torch import nn

from sparsetopo.nn.masked_params import MaskedParameters, substituted


class SparseEmbedding(MaskedParameters, nn.Embedding):
    """``nn.Embedding`` whose table is masked by a topology (module docstring)."""

    dense_type = nn.Embedding

    def forward(self, input):
        with substituted(self, self.masked_weights()):
            return super().forward(input)


class TiedSparseLinear(MaskedParameters, nn.Linear):
    """``nn.Linear`` whose weight is an embedding's table, masked by the embedding's topology
    (module docstring); its bias stays dense."""

    dense_type = nn.Linear

    def forward(self, input):
        with substituted(self, self.masked_weights()):
            return super().forward(input)


def embedding_refusal(module: nn.Embedding) -> str | None:
    """Why an embedding cannot be masked, or None: ``max_norm`` renormalises the stored table
    in place (its pruned rows would be rescaled, not the masked ones), and ``sparse=True``
    gradients cannot pass through the mask."""
    if module.max_norm is not None:
        return f"max_norm={module.max_norm} renormalises the stored table in place, which a mask cannot follow"
    if module.sparse:
        return "sparse=True gradients cannot pass through a mask"
    return None


def embedding_topologies(name: str, module: nn.Embedding, make_topology):
    """``({"weight": (topology,)}, None)`` for the table of embedding ``name`` (module docstring),
    or ``(None, refusal)``; ``make_topology(seed_name, n_in, n_out)`` as sparsify's rule for k gives it.
    The tied output layer gets the same topology from the same call."""
    topology, refusal = make_topology(name, module.embedding_dim, module.num_embeddings)
    return (None, refusal) if refusal is not None else ({"weight": (topology,)}, None)
