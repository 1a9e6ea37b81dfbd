"""BlockSparseLinear: a layer whose connections are dense tiles between blocks of neurons.

Its topology is a block topology (``build(..., block=b)``, :mod:`sparsetopo.topology.blocks`):
every edge of the graph of blocks is a dense ``b_in x b_out`` tile, and the layer stores and
computes only those tiles (:mod:`sparsetopo.nn.block_ops`: gathers and batched matmuls in plain
torch, so it runs wherever torch does, CUDA included). A topology with block sizes 1 is an
ordinary layer, one 1 x 1 tile per connection.

Each tile is ``b_in x b_out`` (``y = x W + b`` within a tile), while :meth:`dense_weight`
gives the whole weight as :class:`~sparsetopo.nn.SparseLinear` and ``nn.Linear`` hold it,
``(n_out, n_in)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sparsetopo.errors import SparsetopoError
from sparsetopo.nn.block_ops import BlockPlan, block_call
from sparsetopo.nn.init import initial_weights
from sparsetopo.nn.linear import edge_index_of, record_path
from sparsetopo.nn.masking import dense_twin
from sparsetopo.nn.plan import block_path
from sparsetopo.topology import Topology


class BlockSparseLinear(nn.Module):
    """``y = x @ lift(tiles) + b``, computing only the tiles of a block topology.

    Parameters
    ----------
    topology : the layer's connectivity, a block topology (any block sizes, 1 included).
    init : "glorot" or "glorot_sparse", as :class:`~sparsetopo.nn.SparseLinear`; the weights
        are drawn per connection in the topology's CSR order, so a layer and a
        ``SparseLinear`` on the same topology start from the same weights.
    gen : numpy Generator for the initial weights.
    bias : whether the layer has a learnable bias.

    Attributes
    ----------
    tiles : parameter of shape ``(tiles, block_in, block_out)``, one dense tile per edge of the
        block graph, ordered by output block then input block (``plan.tile_in``,
        ``plan.tile_out`` name each tile's blocks). Entries outside a ragged last block are 0
        and stay 0: they never meet an input or reach an output, so their gradient is 0.
    plan : the layer's index tensors (:class:`~sparsetopo.nn.block_ops.BlockPlan`); they
        follow the layer to its device.
    backend : ``"block"``, what computes the layer, where a :class:`~sparsetopo.nn.SparseLinear`
        names its backend (run results, summaries).
    last_path : the path (a key of :data:`sparsetopo.nn.plan.BLOCK_PATHS`) the last call ran,
        None before the first; :meth:`path_for` says which a call would take.
    """

    backend = "block"

    def __init__(self, topology: Topology, init: str = "glorot", gen: np.random.Generator | None = None,
                 bias: bool = True):
        super().__init__()
        self.topology = topology
        self.last_path: str | None = None
        self._plan = BlockPlan.from_topology(topology)
        self._tile_index = _tile_index(topology, self._plan)
        values = initial_weights(topology, init, gen if gen is not None else np.random.default_rng(0))
        tiles = torch.zeros(self._plan.n_tiles * topology.block_in * topology.block_out)
        tiles[self._tile_index] = torch.from_numpy(values)
        self.tiles = nn.Parameter(tiles.view(self._plan.n_tiles, topology.block_in, topology.block_out))
        self.bias = nn.Parameter(torch.zeros(topology.n_out)) if bias else None

    @property
    def plan(self) -> BlockPlan:
        return self._plan_for(self.tiles)

    def _plan_for(self, tiles: torch.Tensor) -> BlockPlan:
        """The plan, its index moved to the device of ``tiles`` when the layer was moved. Both on
        the CPU is answered without building two device objects (a microsecond a call)."""
        if not (tiles.is_cpu and self._plan.tile_in.is_cpu) and self._plan.tile_in.device != tiles.device:
            self._plan = self._plan.to(tiles.device)
        return self._plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():  # tracing the gathers would write a file that fails or misleads
            raise SparsetopoError("torch.onnx.export cannot write a block layer (BlockSparseLinear): use "
                                  "sparsetopo.export_onnx, which writes its tiles in standard operators")
        # read from the parameter table directly (nn.Module's attribute lookup costs about half a
        # microsecond a name); a parametrization, or bias=False, leaves the name outside it
        table = self._parameters
        tiles = table["tiles"] if "tiles" in table else self.tiles
        bias = table["bias"] if "bias" in table else self.bias
        if not (isinstance(x, torch.Tensor) and x.dim() and x.shape[-1] == self.topology.n_in
                and x.dtype is tiles.dtype and (x.is_cpu and tiles.is_cpu or x.device == tiles.device)):
            self._refuse(x)
        y, path = block_call(x, tiles, bias, self._plan_for(tiles))
        record_path(self, path)
        return y

    def path_for(self, batch: int, grad: bool) -> str:
        """The path (a key of :data:`sparsetopo.nn.plan.BLOCK_PATHS`) a call on ``batch``
        examples runs, with a gradient wanted or not, on this layer's device and dtype."""
        return block_path(batch, grad, self.tiles.device, self.tiles.dtype, self.topology.block_in * self.topology.block_out)

    def _refuse(self, x) -> None:
        t = self.topology
        label = f"BlockSparseLinear({t.n_in}->{t.n_out})"
        if not isinstance(x, torch.Tensor):
            raise SparsetopoError(f"{label} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != t.n_in:
            raise SparsetopoError(f"input of shape {tuple(x.shape)} does not fit {label}: its last dimension "
                                  f"must be {t.n_in}")
        raise SparsetopoError(f"input is {x.dtype} on {x.device} but {label} is {self.tiles.dtype} on "
                              f"{self.tiles.device}: convert one with .to()")

    def tile_index(self) -> torch.Tensor:
        """For every connection of the lifted topology, in its CSR order, its position in the
        flattened tiles (``tiles.view(-1)``); a CPU tensor."""
        return self._tile_index

    def connected_weights(self) -> torch.Tensor:
        """The weight of every connection of the (lifted) topology, in its CSR order (a copy):
        the numbers a :class:`~sparsetopo.nn.SparseLinear` on this topology holds."""
        return self.tiles.detach().reshape(-1)[self._tile_index.to(self.tiles.device)].clone()

    @torch.no_grad()
    def set_connected_weights(self, values: torch.Tensor) -> None:
        """Replace the weight of every connection of the (lifted) topology, given in its CSR
        order (length nnz); the entries of a ragged block's padding stay 0."""
        if tuple(values.shape) != (self.topology.nnz,):
            raise SparsetopoError(f"connected weights of shape {tuple(values.shape)} do not fit this layer: "
                                  f"expected ({self.topology.nnz},)")
        flat = self.tiles.view(-1)
        flat[self._tile_index.to(flat.device)] = values.to(dtype=flat.dtype, device=flat.device)

    def edge_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(outputs, inputs)`` of every connection of the lifted topology, in its CSR order:
        indices into the ``(n_out, n_in)`` weight, as :meth:`SparseLinear.edge_index`."""
        return edge_index_of(self.topology)

    def dense_weight(self) -> torch.Tensor:
        """The effective weight, ``(n_out, n_in)`` as ``nn.Linear``'s, zeros where there is no
        connection (a copy)."""
        t = self.topology
        dense = torch.zeros(t.n_out, t.n_in, dtype=self.tiles.dtype, device=self.tiles.device)
        dense[tuple(i.to(self.tiles.device) for i in self.edge_index())] = self.connected_weights()
        return dense

    masked_weight = dense_weight

    def to_dense(self) -> nn.Linear:
        """An ``nn.Linear`` computing the same function (pruned weights as zeros)."""
        t = self.topology
        return dense_twin(nn.Linear(t.n_in, t.n_out, bias=self.bias is not None, device="meta"), self)

    def extra_repr(self) -> str:
        t = self.topology
        return (f"{t.construction}, {t.n_in}->{t.n_out}, block={t.block_in}x{t.block_out}, k={t.k}, "
                f"tiles={self._plan.n_tiles}, density={t.density:.4f}")


def _tile_index(topology: Topology, plan: BlockPlan) -> torch.Tensor:
    """For every connection in the topology's CSR order, its position in the flattened tiles."""
    b_in, b_out = topology.block_in, topology.block_out
    rows, cols = topology.rows.astype(np.int64), topology.indices.astype(np.int64)
    q = plan.out_blocks
    # tile number of each block edge, looked up by (input block, output block)
    key = plan.tile_in.numpy() * q + plan.tile_out.numpy()
    order = np.argsort(key)
    edge = (rows // b_in) * q + cols // b_out
    tile = order[np.searchsorted(key[order], edge)]
    return torch.from_numpy(((tile * b_in + rows % b_in) * b_out) + cols % b_out)
