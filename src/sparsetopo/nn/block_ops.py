"""The computation of a block layer: only its tiles, as batched matmuls, in pure torch.

A block layer (:mod:`sparsetopo.topology.blocks`) has ``p`` input blocks of ``b_in`` neurons,
``q`` output blocks of ``b_out`` and one dense ``b_in x b_out`` tile per block edge. Its tiles
are stored *by output block* (:class:`BlockPlan`, ``tile_in``/``tile_out``), so that output
block ``J`` reads the tiles of its ``D`` input blocks as one ``(D*b_in) x b_out`` matrix:

* forward: ``y_J = [x_I1 .. x_ID] @ [W_1; ..; W_D]``: the input blocks of every output block
  are gathered side by side (one ``index_select`` of whole blocks along the block axis of the
  batch-major input, ``(batch, p, b_in)``) and one ``torch.bmm`` over the ``q`` output blocks
  multiplies them by the stacked tiles (a view of the parameter);
* input gradient: ``gx_I = [g_J1 .. g_Jk] @ [W_1^T; ..; W_k^T]``, the same by input block:
  one gather of gradient blocks, one gather of the tiles side by side (``nnz`` numbers), one
  bmm reading them transposed;
* tile gradient: ``gW_J = [x_I1 .. x_ID]^T @ g_J``, one bmm whose result already has the
  tiles' layout. The forward's gathered inputs are kept for it when they are small
  (:func:`sparsetopo.nn.plan.block_keeps_gathered`), and gathered again otherwise (they are
  ``D`` times the input: 13 copies of it for a 4096-wide layer of blocks of 32 at 10%).

The layer stays batch-major: ``bmm`` reads the gathered ``(batch, q, D*b_in)`` as ``q``
strided matrices, so only the results are transposed (an earlier form transposed the input
too, a third of a step's time). A large batch goes through reused scratch tensors in chunks
(:func:`sparsetopo.nn.plan.block_chunk_rows`) whose gathered blocks are still in cache for
their matmul; the tile gradient sums the chunks' products. Every reduction is inside a
matmul: no scatter-add, whose cost grew with the batch (docs/design.md, "Block layers";
``benchmarks/bench_layers.py --block`` times the layer). One example in CPU inference skips
all of this (:func:`block_call`, :mod:`sparsetopo.kernels.block`). A block
with fewer edges than the most connected one is padded with a zero block and a zero tile;
a ragged last block is padded with zero neurons, whose tile entries stay 0 (their gradient
is exactly 0) and whose outputs are cut off. Everything is plain torch, so the same code runs
on CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from sparsetopo.errors import SparsetopoError
from sparsetopo.kernels.block import block_vector
from sparsetopo.nn.plan import block_chunk_rows, block_keeps_gathered, block_path
from sparsetopo.topology import Topology
from sparsetopo.topology.blocks import n_blocks


def _slots(heads: np.ndarray, tails: np.ndarray, n_heads: int, pad_tail: int, pad_edge: int):
    """Per head (output block, or input block), the tails and edge numbers of its edges in
    increasing order of tail, padded to the largest degree with ``pad_tail``/``pad_edge``."""
    order = np.lexsort((tails, heads))
    degree = np.bincount(heads, minlength=n_heads)
    width = int(degree.max()) if degree.size else 0
    tail_slots = np.full((n_heads, width), pad_tail, dtype=np.int64)
    edge_slots = np.full((n_heads, width), pad_edge, dtype=np.int64)
    position = np.arange(order.size) - np.repeat(np.cumsum(degree) - degree, degree)
    tail_slots[heads[order], position] = tails[order]
    edge_slots[heads[order], position] = order
    return tail_slots, edge_slots, bool((degree == width).all())


@dataclass(frozen=True)
class BlockPlan:
    """Index tensors of one block layer, built once from its topology.

    ``tile_in[e]``, ``tile_out[e]``: the input and output block of tile ``e``; tiles are
    ordered by output block, then input block. ``fwd_blocks`` (q x D): the input blocks of each
    output block (``p`` = the zero block where padded), and ``fwd_slot[e]`` the slot of tile
    ``e`` among those ``q * D``; ``bwd_blocks`` (p x K) and
    ``bwd_tiles`` (p x K): the output blocks of each input block and their tiles (``q`` and
    ``E`` where padded).
    """

    n_in: int
    n_out: int
    block_in: int
    block_out: int
    tile_in: torch.Tensor
    tile_out: torch.Tensor
    fwd_blocks: torch.Tensor
    bwd_blocks: torch.Tensor
    bwd_tiles: torch.Tensor
    fwd_slot: torch.Tensor
    fwd_padded: bool      # some output block has fewer input blocks than D
    bwd_padded: bool      # some input block has fewer output blocks than K
    scratch: dict = field(default_factory=dict, compare=False, repr=False)

    def buffer(self, name: str, numel: int, like: torch.Tensor) -> torch.Tensor:
        """A reused 1-D scratch tensor of at least ``numel`` elements for a temporary.

        The gathered blocks are ``D`` times the input; allocating them afresh each call costs
        several times more than filling them (each new large block of memory is mapped and
        faulted in page by page), so each layer keeps its largest temporaries. Nothing kept here
        outlives the call that fills it; a layer is therefore not to be called from two threads
        at once.
        """
        key = (name, like.dtype, like.device)
        held = self.scratch.get(key)
        if held is None or held.numel() < numel:
            held = self.scratch[key] = torch.empty(numel, dtype=like.dtype, device=like.device)
        return held[:numel]

    @classmethod
    def from_topology(cls, topology: Topology) -> "BlockPlan":
        graph = topology.block_graph
        return cls._from_edges(graph.rows, graph.indices, graph.n_in, graph.n_out, topology.n_in, topology.n_out,
                               topology.block_in, topology.block_out)

    @classmethod
    def union(cls, topologies) -> "BlockPlan":
        """The plan of block layers of one shape side by side, as one layer: member ``m``'s input
        and output blocks are offset by ``m`` times its block counts, each member padded to whole
        blocks (``m * in_blocks * block_in`` is where member ``m``'s inputs start). Its tiles are
        the members' tiles concatenated in member order, each member's in its own plan's order.
        One call of the union computes every member's layer (a population's shared matmul)."""
        first = topologies[0]
        if any(t.shape != first.shape or t.block != first.block for t in topologies):
            raise SparsetopoError("the block layers of a union must share their shape and block sizes, not "
                                  f"{sorted({(t.shape, t.block) for t in topologies})}")
        graphs = [t.block_graph for t in topologies]
        p, q, members = graphs[0].n_in, graphs[0].n_out, len(graphs)
        rows = np.concatenate([g.rows.astype(np.int64) + m * p for m, g in enumerate(graphs)])
        cols = np.concatenate([g.indices.astype(np.int64) + m * q for m, g in enumerate(graphs)])
        b_in, b_out = first.block
        return cls._from_edges(rows, cols, p * members, q * members, p * members * b_in, q * members * b_out,
                               b_in, b_out)

    @classmethod
    def _from_edges(cls, rows, cols, p: int, q: int, n_in: int, n_out: int, b_in: int, b_out: int) -> "BlockPlan":
        """The plan of the block graph with edges ``(rows[e], cols[e])`` on ``p`` input and ``q``
        output blocks, lifted to ``n_in`` x ``n_out`` neurons."""
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        order = np.lexsort((rows, cols))                     # tiles by output block
        tile_in, tile_out = rows[order], cols[order]
        fwd_blocks, fwd_tiles, fwd_full = _slots(tile_out, tile_in, q, p, tile_in.size)
        bwd_blocks, bwd_tiles, bwd_full = _slots(tile_in, tile_out, p, q, tile_in.size)
        fwd_slot = np.empty(tile_in.size, dtype=np.int64)
        used = fwd_tiles.ravel() < tile_in.size
        fwd_slot[fwd_tiles.ravel()[used]] = np.flatnonzero(used)
        as_tensor = torch.from_numpy
        return cls(n_in, n_out, b_in, b_out, as_tensor(tile_in), as_tensor(tile_out), as_tensor(fwd_blocks),
                   as_tensor(bwd_blocks), as_tensor(bwd_tiles), as_tensor(fwd_slot), not fwd_full, not bwd_full)

    @property
    def n_tiles(self) -> int:
        return int(self.tile_in.numel())

    @property
    def in_blocks(self) -> int:
        return n_blocks(self.n_in, self.block_in)

    @property
    def out_blocks(self) -> int:
        return n_blocks(self.n_out, self.block_out)

    def to(self, device) -> "BlockPlan":
        """This plan with its index tensors on ``device``."""
        moved = {name: getattr(self, name).to(device) for name in
                 ("tile_in", "tile_out", "fwd_blocks", "bwd_blocks", "bwd_tiles", "fwd_slot")}
        return BlockPlan(self.n_in, self.n_out, self.block_in, self.block_out, fwd_padded=self.fwd_padded,
                         bwd_padded=self.bwd_padded, **moved)


def _blocks(x: torch.Tensor, n: int, b: int, count: int, zero_block: bool) -> torch.Tensor:
    """``x`` (batch, n) as (batch, count [+1], b): a view of the batch-major input (a padded copy
    only when the last block is ragged or an all-zero block is added for ``zero_block``)."""
    pad = count * b - n + (b if zero_block else 0)
    if pad:
        x = F.pad(x, (0, pad))
    return x.contiguous().view(x.shape[0], -1, b)


def _gather(blocks: torch.Tensor, slots: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """(heads, batch, width * b): for each head its ``width`` blocks side by side, gathered from
    ``blocks`` (batch, count, b) along the block axis (each gathered block is a contiguous run of
    ``b`` numbers per example) into a new tensor or the scratch tensor ``out``, as a strided view
    whose first axis is the head, which ``bmm`` reads in place."""
    heads, width = slots.shape
    batch, _, b = blocks.shape
    if out is not None:
        out = out.view(batch, heads * width, b)
    out = torch.index_select(blocks, 1, slots.view(-1), out=out)
    return out.view(batch, heads, width * b).transpose(0, 1)


def _stacked_tiles(tiles: torch.Tensor, plan: BlockPlan) -> torch.Tensor:
    """(q, D*b_in, b_out): each output block's tiles stacked; a view unless padded."""
    q, width = plan.fwd_blocks.shape
    if plan.fwd_padded:  # place every tile at its slot, zeros elsewhere
        slot = torch.full((q * width,), plan.n_tiles, dtype=torch.long, device=tiles.device)
        slot[plan.fwd_slot] = torch.arange(plan.n_tiles, device=tiles.device)
        tiles = torch.cat([tiles, tiles.new_zeros(1, *tiles.shape[1:])]).index_select(0, slot)
    return tiles.reshape(q, width * plan.block_in, plan.block_out)


def _gathered_chunks(blocks: torch.Tensor, slots: torch.Tensor, name: str, plan: BlockPlan):
    """For each chunk of the batch (:func:`~sparsetopo.nn.plan.block_chunk_rows` examples of
    ``blocks``, (batch, count, b)): its first example and, for each head (a row of ``slots``),
    its blocks side by side, (heads, size, width*b), gathered into one reused scratch tensor
    (``name``). A chunk's gathered blocks are still in cache for its matmul, where gathering the
    whole of a large batch would stream it through memory twice."""
    batch, _, b = blocks.shape
    heads, width = slots.shape
    row = heads * width * b
    rows = block_chunk_rows(batch, row)
    gathered = plan.buffer(name, min(rows, batch) * row, blocks)
    for first in range(0, batch, rows):
        part = blocks[first: first + rows]
        yield first, _gather(part, slots, gathered[: part.shape[0] * row])


def _products(blocks: torch.Tensor, slots: torch.Tensor, stacked: torch.Tensor, n: int, name: str,
              plan: BlockPlan) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(y, gathered)``: ``y`` (batch, n) holds, for each head (a row of ``slots``), its blocks of
    ``blocks`` (batch, count, b) side by side times its ``stacked`` tiles (heads, width*b, b_out),
    batch-major, the padding of a ragged last block cut off.

    A small batch (:func:`~sparsetopo.nn.plan.block_keeps_gathered`) is gathered whole into a new
    tensor, returned as ``gathered`` for the tile gradient to reuse; a larger one goes chunk by
    chunk (:func:`_gathered_chunks`, ``gathered`` None): one ``bmm`` into a reused scratch
    tensor, stored into the result transposed while it is in cache."""
    batch, heads, b_out = blocks.shape[0], slots.shape[0], stacked.shape[2]
    if block_keeps_gathered(batch, heads * slots.shape[1] * blocks.shape[2]):
        gathered = _gather(blocks, slots)
        out = torch.bmm(gathered, stacked).transpose(0, 1).reshape(batch, heads * b_out)
    else:
        gathered, out = None, blocks.new_empty(batch, heads, b_out)
        for first, inputs in _gathered_chunks(blocks, slots, name, plan):
            size = inputs.shape[1]   # the first chunk is the largest: the scratch is allocated once
            product = plan.buffer(name + " products", heads * size * b_out, blocks).view(heads, size, b_out)
            torch.bmm(inputs, stacked, out=product)
            out[first: first + size].copy_(product.transpose(0, 1))
        out = out.view(batch, heads * b_out)
    return (out if out.shape[1] == n else out[:, :n].contiguous()), gathered


def _forward(x: torch.Tensor, tiles: torch.Tensor, bias: torch.Tensor | None,
             plan: BlockPlan) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(y, gathered)``: ``y = x @ lift(tiles) + bias`` for a 2-D ``x`` (batch, n_in), and the
    gathered input blocks where :func:`_products` kept them."""
    # output block J: (its input blocks side by side) @ (its tiles stacked)
    blocks = _blocks(x, plan.n_in, plan.block_in, plan.in_blocks, plan.fwd_padded)
    y, gathered = _products(blocks, plan.fwd_blocks, _stacked_tiles(tiles, plan), plan.n_out, "inputs", plan)
    return (y if bias is None else y + bias), gathered


def block_forward(x: torch.Tensor, tiles: torch.Tensor, bias: torch.Tensor | None, plan: BlockPlan) -> torch.Tensor:
    """``y = x @ lift(tiles) + bias`` for a 2-D ``x`` (batch, n_in), no autograd bookkeeping."""
    return _forward(x, tiles, bias, plan)[0]


class BlockLinearFunction(torch.autograd.Function):
    """Forward, input gradient and tile gradient of a block layer (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, tiles, bias, plan):
        y, gathered = _forward(x, tiles, bias, plan)
        # the tile gradient needs the gathered inputs: kept when small, else gathered again
        ctx.save_for_backward(x if gathered is None else gathered, tiles)
        ctx.plan, ctx.has_bias, ctx.kept = plan, bias is not None, gathered is not None
        return y

    @staticmethod
    def backward(ctx, grad_y):
        inputs, tiles = ctx.saved_tensors
        plan = ctx.plan
        grad_blocks = _blocks(grad_y, plan.n_out, plan.block_out, plan.out_blocks, plan.bwd_padded)
        grad_x = grad_tiles = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _input_grad(grad_blocks, tiles, plan)
        if ctx.needs_input_grad[1]:
            grad_tiles = _tile_grad(inputs, ctx.kept, grad_blocks, plan)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_y.sum(0)
        return grad_x, grad_tiles, grad_bias, None


def _input_grad(grad_blocks, tiles, plan):
    """grad_x for input block I: its output blocks' gradients side by side @ its tiles,
    transposed, stacked. The tiles are gathered by input block as ``[W_1 .. W_K]`` (runs of
    ``b_out`` numbers, which copy fast; a copy transposing each tile took twice as long) and
    ``bmm`` reads that transposed."""
    p, width = plan.bwd_tiles.shape
    if plan.bwd_padded:
        tiles = torch.cat([tiles, tiles.new_zeros(1, *tiles.shape[1:])])
    side_by_side = (tiles.index_select(0, plan.bwd_tiles.view(-1)).view(p, width, plan.block_in, plan.block_out)
                    .transpose(1, 2).reshape(p, plan.block_in, width * plan.block_out))
    return _products(grad_blocks, plan.bwd_blocks, side_by_side.transpose(1, 2), plan.n_in, "gradients", plan)[0]


def _tile_grad(inputs, kept, grad_blocks, plan):
    """grad of output block J's stacked tiles: its input blocks stacked, transposed, @ its
    gradient. ``inputs`` is the forward's gathered blocks when ``kept``, else the layer's input,
    gathered again chunk by chunk (:func:`_gathered_chunks`) and the chunks' products summed."""
    q, width = plan.fwd_blocks.shape
    if kept:
        grad = torch.bmm(inputs.transpose(1, 2), grad_blocks[:, :q].transpose(0, 1))   # (q, D*b_in, b_out)
    else:
        blocks = _blocks(inputs, plan.n_in, plan.block_in, plan.in_blocks, plan.fwd_padded)
        grad = None
        for first, chunk in _gathered_chunks(blocks, plan.fwd_blocks, "inputs", plan):
            chunk, gradient = chunk.transpose(1, 2), grad_blocks[first: first + chunk.shape[1], :q].transpose(0, 1)
            grad = torch.bmm(chunk, gradient) if grad is None else grad.baddbmm_(chunk, gradient)
    grad = grad.view(q * width, plan.block_in, plan.block_out)
    return grad.index_select(0, plan.fwd_slot) if plan.fwd_padded else grad


def block_call(x: torch.Tensor, tiles: torch.Tensor, bias: torch.Tensor | None,
               plan: BlockPlan) -> tuple[torch.Tensor, str]:
    """``(y, path)``: the block layer on ``x`` of any leading shape (..., n_in), on the path
    :func:`sparsetopo.nn.plan.block_path` picks: one example in CPU inference through
    :func:`sparsetopo.kernels.block.block_vector`; else the forward alone when no gradient is
    to be computed (inference), or :class:`BlockLinearFunction`."""
    flat = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])   # (a reshape costs a microsecond at batch 1)
    wanted = torch.is_grad_enabled() and (flat.requires_grad or tiles.requires_grad
                                          or (bias is not None and bias.requires_grad))
    path = block_path(flat.shape[0], wanted, flat.device, flat.dtype, plan.block_in * plan.block_out)
    if path == "block-vector":
        y = _vector(flat, tiles, bias, plan)
    else:
        y = BlockLinearFunction.apply(flat, tiles, bias, plan) if wanted else block_forward(flat, tiles, bias, plan)
    return (y if flat is x else y.reshape(*x.shape[:-1], plan.n_out)), path


def block_linear(x: torch.Tensor, tiles: torch.Tensor, bias: torch.Tensor | None, plan: BlockPlan) -> torch.Tensor:
    """The block layer on ``x`` of any leading shape (..., n_in): :func:`block_call`'s ``y``."""
    return block_call(x, tiles, bias, plan)[0]


def _vector(x: torch.Tensor, tiles: torch.Tensor, bias: torch.Tensor | None, plan: BlockPlan) -> torch.Tensor:
    """One example (1, n_in) through the tile-by-tile kernel, no autograd."""
    # numpy views of the index, the tiles and the bias, made once per storage (each .numpy()
    # costs about a microsecond, a twentieth of the call): a view keeps its tensor alive, so a
    # storage at the same address is the same tensor, updated in place by an optimizer
    key = (tiles.data_ptr(), 0 if bias is None else bias.data_ptr())
    held = plan.scratch.get("vector arrays")
    if held is None or held[0] != key:
        b = bias.detach().numpy() if bias is not None else np.zeros(plan.n_out, np.float32)
        held = plan.scratch["vector arrays"] = (key, tiles.detach().numpy(), plan.tile_in.numpy(),
                                                plan.tile_out.numpy(), b)
    y = np.empty((1, plan.n_out), np.float32)
    if x.requires_grad:   # (under no_grad)
        x = x.detach()
    block_vector(x.numpy(), *held[1:], y)
    return torch.from_numpy(y)
