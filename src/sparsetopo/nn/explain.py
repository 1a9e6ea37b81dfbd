"""What each sparse layer of a model runs, and why: :func:`explain`, the plan made readable.

For every sparse layer, the record names the path (a key of :data:`sparsetopo.nn.plan.PATHS`,
or of :data:`~sparsetopo.nn.plan.BLOCK_PATHS` for a :class:`~sparsetopo.nn.BlockSparseLinear`) a training call and an inference
call on ``batch_size`` examples take, the threads they may use, and the cost model's predicted
seconds behind the choice. The layers answer from the same plan their forward asks
(:meth:`SparseLinear.path_for <sparsetopo.nn.SparseLinear.path_for>`), and each records the
path its last call took (``last_path``), so a test can hold one against the other.

The training path is the one a call through autograd takes (``model(x).backward()``).
:func:`sparsetopo.train.train` may instead run a whole epoch of a sparse MLP in one numba call
(the fused epoch; its ``RunResult.backend`` says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sparsetopo.errors import SparsetopoError
from sparsetopo.nn.block import BlockSparseLinear
from sparsetopo.nn.conv import SparseConv2d
from sparsetopo.nn.linear import SparseLinear
from sparsetopo.nn.plan import CPU_COST_MODEL, inference_cost_model, thread_count


@dataclass(frozen=True)
class LayerPlan:
    """One layer's plan at one batch size (see the module docstring). Seconds are the cost
    model's predictions (None where no choice is made by it: masked, block and conv layers)."""

    name: str
    kind: str
    n_in: int
    n_out: int
    density: float
    backend: str
    batch: int
    train_path: str
    infer_path: str
    threads: int
    train_seconds: dict | None = None   # {"dense": s, "sparse": s} for one training step
    infer_seconds: dict | None = None   # the same for one inference forward

    def why(self) -> str:
        """The cost model's numbers, in words."""
        if self.train_seconds is None:
            return {"block": "dense tiles between blocks: batched matmuls, or one example read tile by tile",
                    "conv": "masked convolution (one path)"}.get(self.kind, "backend masked: dense weight times mask")
        t, i = self.train_seconds, self.infer_seconds
        return (f"train dense {t['dense'] * 1e6:.3g} us / sparse {t['sparse'] * 1e6:.3g} us; "
                f"infer dense {i['dense'] * 1e6:.3g} us / sparse {i['sparse'] * 1e6:.3g} us")


class Explanation(tuple):
    """The :class:`LayerPlan` of every sparse layer, in module order; ``str()`` is a table."""

    def __str__(self) -> str:
        head = ("layer", "shape", "density", "backend", "batch", "train", "inference", "threads", "why")
        rows = [(p.name or "(model)", f"{p.n_in}x{p.n_out}", f"{p.density:.4f}", p.backend, str(p.batch),
                 p.train_path, p.infer_path, str(p.threads), p.why()) for p in self]
        widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head) - 1)]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1] for r in [head, *rows])


def _linear_plan(name: str, layer: SparseLinear, batch: int) -> LayerPlan:
    t = layer.topology
    common = dict(name=name, kind="linear", n_in=t.n_in, n_out=t.n_out, density=t.density, backend=layer.backend,
                  batch=batch, train_path=layer.path_for(batch, True), infer_path=layer.path_for(batch, False))
    if layer.backend == "masked":
        return LayerPlan(**common, threads=torch.get_num_threads())
    seconds = [dict(zip(("dense", "sparse"), model.seconds(t.nnz, t.n_in, t.n_out, batch, training)))
               for training, model in ((True, CPU_COST_MODEL), (False, inference_cost_model()))]
    return LayerPlan(**common, threads=thread_count(t.nnz, batch), train_seconds=seconds[0],
                     infer_seconds=seconds[1])


def explain(model: nn.Module, batch_size: int = 32) -> Explanation:
    """Per sparse layer of ``model``: the path a training and an inference call on
    ``batch_size`` examples take, the threads, and the cost model's numbers behind the choice.

    Raises SparsetopoError when ``batch_size`` is not positive or the model has no sparse layer.

    Examples
    --------
    >>> import sparsetopo
    >>> from sparsetopo.nn import SparseMLP
    >>> mlp = SparseMLP(sparsetopo.build_stack([784, 300, 10], "random_regular", [3, 10]), backend="sparse")
    >>> [(p.train_path, p.infer_path) for p in sparsetopo.explain(mlp, batch_size=1)]
    [('untiled', 'vector'), ('untiled', 'vector')]
    """
    batch = int(batch_size)
    if batch < 1:
        raise SparsetopoError(f"batch_size={batch_size} must be a positive number of examples")
    plans = []
    for name, module in model.named_modules():
        if isinstance(module, SparseLinear):
            plans.append(_linear_plan(name, module, batch))
        elif isinstance(module, (BlockSparseLinear, SparseConv2d)):
            t, block = module.topology, isinstance(module, BlockSparseLinear)
            paths = (module.path_for(batch, True), module.path_for(batch, False)) if block else ("masked", "masked")
            plans.append(LayerPlan(name=name, kind="block" if block else "conv", n_in=t.n_in, n_out=t.n_out,
                                   density=t.density, backend=module.backend, batch=batch, train_path=paths[0],
                                   infer_path=paths[1], threads=torch.get_num_threads()))
    if not plans:
        raise SparsetopoError(f"{type(model).__name__} has no sparse layer to explain: sparsify it first")
    return Explanation(plans)
