"""What an ONNX export returns: the file's path and, per sparse layer, the form written and its bytes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from sparsetopo.nn import SparseConv2d
from sparsetopo.nn.sparsify import MADE_LAYERS


@dataclass(frozen=True)
class LayerExport:
    """How one sparse layer was written: its form, its bytes in the file and the dense layer's."""

    name: str
    kind: str              # "linear", "block", "conv1d", "conv2d" or "conv3d"
    form: str              # "ell", "gathered", "expanded", "block" or "dense" (sparsetopo.onnx's docstring)
    density: float
    bytes: int             # bytes of this layer's tensors in the ONNX file (weights, indices, bias, shapes)
    dense_bytes: int       # the same layer written dense
    ell_max_batch: int = 0  # "ell": the largest batch computed sparsely (larger ones run expanded)
    note: str = ""

    def describe(self) -> str:
        """One line for a table: the form, and when the form depends on the batch, how."""
        if self.form == "ell":
            return f"ell up to batch {self.ell_max_batch}, expanded above"
        return self.form + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`sparsetopo.export_onnx` wrote: the path and one :class:`LayerExport` per
    sparse layer. ``os.fspath(result)`` and ``str(result)`` give the path, so it stands where a
    path is expected (what ``export_onnx`` returned before it returned a summary)."""

    path: Path
    layers: tuple[LayerExport, ...]
    dense: bool

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def file_bytes(self) -> int:
        return self.path.stat().st_size

    def rows(self) -> list[dict]:
        """The layers as plain dicts (JSON)."""
        return [asdict(layer) for layer in self.layers]


def dense_summary(model: nn.Module, path) -> OnnxExport:
    """The summary of a dense export: every sparse layer written as the dense operator."""
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, MADE_LAYERS):
            t = module.topology
            size = t.n_in * t.n_out * (module.kernel_size[0] * module.kernel_size[1]
                                       if isinstance(module, SparseConv2d) else 1)
            nbytes = 4 * (size + (t.n_out if module.bias is not None else 0))
            rows.append(LayerExport(name, "conv2d" if isinstance(module, SparseConv2d) else "linear", "dense",
                                    t.density, nbytes, nbytes))
    return OnnxExport(Path(path), tuple(rows), dense=True)
