"""Block topologies: a construction on the graph of blocks of neurons, lifted to neurons.

A layer of ``n_in`` inputs and ``n_out`` outputs with blocks of ``(b_in, b_out)`` neurons has
``ceil(n_in / b_in)`` input blocks and ``ceil(n_out / b_out)`` output blocks. Input block ``I``
holds neurons ``I*b_in .. min((I+1)*b_in, n_in) - 1``, and likewise for output blocks. Any
construction builds the *block graph* on those blocks (``k`` output blocks per input block);
each of its edges ``(I, J)`` connects every neuron of input block ``I`` to every neuron of
output block ``J``, a dense tile. The neuron-level graph is this Kronecker lift ``B ⊗ 1``
(block graph times the all-ones ``b_in x b_out`` tile).

**Ragged last blocks.** When ``b_in`` does not divide ``n_in``, the last input block is
narrower: it holds the ``n_in - (ceil(n_in/b_in) - 1) * b_in`` neurons left, and its tiles are
truncated to those rows (likewise for the last output block and columns). The block graph is
built exactly as for even widths, so the last block gets as many block edges as any other;
the lifted graph simply has fewer neurons in it, and ``density`` (lifted connections over
``n_in * n_out``) counts the truncated tiles exactly.

Pure numpy; no torch.
"""

from __future__ import annotations

import numpy as np

from sparsetopo.errors import SparsetopoError, check_int


def block_sizes(block, n_in: int, n_out: int) -> tuple[int, int]:
    """``(b_in, b_out)`` from ``block``: one int for both sides or a pair ``(b_in, b_out)``.

    Raises naming the bad value: each block size must be an integer from 1 to the width of its side.
    """
    pair = tuple(block) if isinstance(block, (tuple, list)) else (block, block)
    if len(pair) != 2:
        raise SparsetopoError(f"block={block!r} must be one integer or a pair (b_in, b_out)")
    return (check_int("block (inputs)", pair[0], 1, n_in), check_int("block (outputs)", pair[1], 1, n_out))


def n_blocks(n: int, b: int) -> int:
    """Blocks of ``b`` neurons covering ``n`` neurons (the last one ragged when ``b`` does not divide ``n``)."""
    return -(-n // b)


def block_widths(n: int, b: int) -> np.ndarray:
    """Neurons in each of the ``n_blocks(n, b)`` blocks: ``b`` each, the last one what is left."""
    widths = np.full(n_blocks(n, b), b, dtype=np.int64)
    widths[-1] = n - (widths.size - 1) * b
    return widths


def lift(block_indptr: np.ndarray, block_indices: np.ndarray, n_in: int, n_out: int,
         b_in: int, b_out: int) -> tuple[np.ndarray, np.ndarray]:
    """The neuron-level CSR ``(indptr, indices)`` of a block graph given as CSR.

    Row ``i`` of the result lists, for every output block ``J`` of ``i``'s input block (in
    increasing order), the neurons of ``J``: so the rows are sorted when the block rows are.
    """
    block_indptr = np.asarray(block_indptr, dtype=np.int64)
    block_indices = np.asarray(block_indices, dtype=np.int64)
    out_widths = block_widths(n_out, b_out)
    # the neuron-level row of each input block: every block edge's output neurons, concatenated
    edge_width = out_widths[block_indices]
    edge_start = np.concatenate([[0], np.cumsum(edge_width)])
    offset = np.arange(edge_start[-1], dtype=np.int64) - np.repeat(edge_start[:-1], edge_width)
    block_cols = np.repeat(block_indices * b_out, edge_width) + offset
    block_row_start = edge_start[block_indptr]                      # (n_blocks_in + 1,)
    block_row_len = np.diff(block_row_start)
    # every neuron of input block I repeats block row I
    block_of = np.arange(n_in, dtype=np.int64) // b_in
    row_len = block_row_len[block_of]
    indptr = np.concatenate([[0], np.cumsum(row_len)])
    within = np.arange(indptr[-1], dtype=np.int64) - np.repeat(indptr[:-1], row_len)
    indices = block_cols[np.repeat(block_row_start[:-1][block_of], row_len) + within]
    return indptr, indices


def coarsen(indptr: np.ndarray, indices: np.ndarray, n_in: int, b_in: int, b_out: int) -> tuple[np.ndarray, np.ndarray]:
    """The block-level CSR ``(indptr, indices)`` read back from a lifted CSR: the output blocks
    met by the first neuron of every input block (each met once)."""
    first = np.arange(0, n_in, b_in, dtype=np.int64)
    starts, ends = indptr[first], indptr[first + 1]
    lengths = ends - starts
    flat = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
    blocks = indices[flat].astype(np.int64) // b_out
    row = np.repeat(np.arange(first.size), lengths)
    new = np.ones(blocks.size, dtype=bool)
    new[1:] = (blocks[1:] != blocks[:-1]) | (row[1:] != row[:-1])
    block_indptr = np.concatenate([[0], np.cumsum(np.bincount(row[new], minlength=first.size))])
    return block_indptr, blocks[new]


def lifted_connections(block_indptr: np.ndarray, block_indices: np.ndarray, n_in: int, n_out: int,
                       b_in: int, b_out: int) -> int:
    """Connections of the lifted graph, truncated tiles counted exactly, without lifting."""
    in_widths = np.repeat(block_widths(n_in, b_in), np.diff(block_indptr))
    return int(np.dot(in_widths, block_widths(n_out, b_out)[np.asarray(block_indices, dtype=np.int64)]))


def check_lift(topology) -> None:
    """Raise unless ``topology``'s CSR is exactly the lift of its own block graph (a file or a
    hand-made Topology could claim block sizes that its edges do not have)."""
    t = topology
    indptr, indices = lift(*coarsen(t.indptr, t.indices, t.n_in, t.block_in, t.block_out),
                           t.n_in, t.n_out, t.block_in, t.block_out)
    if not (np.array_equal(indptr, t.indptr) and np.array_equal(indices, t.indices)):
        raise SparsetopoError(f"the edges of this {t.n_in}x{t.n_out} topology are not whole blocks of "
                              f"{t.block_in}x{t.block_out}: build it with block=({t.block_in}, {t.block_out}) "
                              "or give block sizes 1")
