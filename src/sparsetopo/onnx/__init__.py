"""ONNX export: :func:`export_onnx` writes a model for inference (onnxruntime, mobile runtimes)
with each sparse layer in a form whose size and work follow its connections.

The modules, front to back:

- :mod:`~sparsetopo.onnx.export`: :func:`export_onnx` (arguments, the dense export),
  :func:`dense_equivalent` and :func:`onnx_difference` (the model against onnxruntime);
- :mod:`~sparsetopo.onnx.result`: what an export returns (:class:`OnnxExport`, one
  :class:`LayerExport` per sparse layer);
- :mod:`~sparsetopo.onnx.sparse`: :func:`export_sparse`, the sparse export: torch's exporter
  writes the model with every sparse layer as one opaque ``sparsetopo::Layer`` node
  (:mod:`~sparsetopo.onnx.trace`), and each such node is then replaced by standard ONNX
  operators (opset 13 or later) that onnxruntime and mobile runtimes execute;
- the forms: :mod:`~sparsetopo.onnx.linear` (``ell``, ``expanded``, ``dense`` for linear
  layers), :mod:`~sparsetopo.onnx.block` (``block``, ``dense`` for block layers),
  :mod:`~sparsetopo.onnx.conv` (``gathered``, ``expanded``, ``dense`` for convolutions), on
  the node and initializer helpers of :mod:`~sparsetopo.onnx.graph`.

The package is named after the format; inside it, ``import onnx`` is the ``onnx`` pip package
(absolute imports), and the package is always imported as ``sparsetopo.onnx``.

The forms, measured in onnxruntime on one thread by ``benchmarks/bench_onnx.py``
(docs/benchmarks.md):

``ell`` (linear layers)
    The padded per-output index list (ELLPACK): output ``j`` reads the ``kmax`` inputs that
    feed it (its in-degree, padded to the largest one) with ``GatherElements``, multiplies by
    a ``[n_out, kmax]`` weight and sums (``Mul``, ``ReduceSum``). Work and bytes follow the
    connections. Padding slots point at inputs *not* connected to that output, with weight 0,
    so every (input, output) pair in the index is distinct. A gather costs about 10 times a
    dense multiply-add in onnxruntime, and the gathered tensor grows with the batch, so this
    form only pays at small batches: up to ``ell_max_batch = floor(ELL_BATCH_WORK * n_in /
    kmax)`` rows (:func:`~sparsetopo.onnx.linear.ell_max_batch`; a smaller constant where the
    dense model's weights fit in the cache, which makes the dense MatMul faster). A larger batch
    takes the
    ``expanded`` path below, chosen inside the graph by an ``If`` on the batch size.
``gathered`` (convolutions)
    The input channels feeding each output channel are gathered (``Gather`` on the channel
    axis, whole feature maps at a time) and one grouped ``Conv`` (``group = out_channels``)
    applies only the connected kernels: only connected channel pairs are stored and computed.
    onnxruntime runs that fast only as a depthwise convolution (one input channel per output
    channel); with more, the dense convolution was faster, so such layers are ``expanded``.
``expanded``
    The connections are stored as above, and the dense weight is rebuilt from them inside the
    graph (``ScatterND`` into zeros). onnxruntime folds that constant subgraph once, when the
    session is created, so inference runs the dense ``MatMul`` / ``Conv``: the file stays as
    small as the connections, the work and the session's memory are the dense layer's (the
    same ``Gemm`` as the dense export). Chosen
    where the dense operator is faster (a layer too dense for ``ell``) and for the large
    batches of an ``ell`` layer.
``block`` (block layers, :class:`~sparsetopo.nn.BlockSparseLinear`)
    One ``Gather`` places the input blocks of every output block side by side, and one batched
    ``MatMul`` multiplies them by the output block's stacked tiles: 4 bytes per connection, and
    the tiles' work in a dense kernel, at every batch (``bench_onnx.py``'s ``block32`` rows).
``dense``
    The dense weight stored as it is, where storing the connections would not be smaller.

Indices are stored as int16 when the layer's width allows (int32 otherwise) and cast in the
graph; weights stay float32 (the export must match the model within 1e-4), so a connection
costs 6 bytes (8 above 32767 inputs) against 4 per possible connection in the dense file. The
cast, like the expansion, is folded by onnxruntime at load.

We tried and dropped: onnxruntime's ``SparseToDenseMatMul`` (com.microsoft) needs a sparse
tensor *input*, and onnxruntime turns sparse initializers into dense ones when it loads a
model, so a self-contained file cannot feed it; ``Gather`` on the feature axis (one
``memcpy`` per element) was 10 times slower than ``GatherElements``; ``ScatterElements`` with
``reduction="add"`` (the per-input form) was 3 times slower than ``ell``. For the rotating
constructions the inputs of output ``j`` are ``j - p (mod n_out)`` for the base vector's
positions ``p``, so the graph can take them as one ``Slice`` of the doubled input per position,
with no index stored at all (the paper's "handful of numbers"); one node per position made
that 3 (2%) to 6 (10%) times slower than ``ell`` on a 4096-wide layer, so it is not used.
Chunking ``ell`` by blocks of outputs (to keep the gathered tensor in cache) and a grouped
``Conv`` or ``Einsum`` in place of ``Mul`` + ``ReduceSum`` did not help either.
"""

from sparsetopo.onnx.export import dense_equivalent, export_onnx, onnx_difference
from sparsetopo.onnx.result import LayerExport, OnnxExport

__all__ = ["LayerExport", "OnnxExport", "dense_equivalent", "export_onnx", "onnx_difference"]
