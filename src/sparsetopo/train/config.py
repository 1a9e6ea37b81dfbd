"""What a training run is and what it yields: :class:`TrainConfig`, :class:`EpochRecord`, :class:`RunResult`.

``TrainConfig``'s defaults are the paper's protocol (Section 4.1): MNIST, 784-H-10, 50 epochs,
batch 32, mean squared error on one-hot targets, sigmoid on every neuron, Glorot normal
initialisation, SGD with learning rate 0.01 and Nesterov momentum 0.9, a constant learning
rate and no validation split (other recipes: :mod:`sparsetopo.train.recipe`). A config checks itself
when it is made, so every TrainConfig that exists is valid.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields

import torch

from sparsetopo.errors import SparsetopoError, check_int

FLOAT32_MAX = 3.4028234663852886e38
from sparsetopo.nn import ACTIVATIONS, BACKENDS, INITIALISERS, SparseMLP
from sparsetopo.topology import get_construction
from sparsetopo.topology.blocks import n_blocks
from sparsetopo.train.recipe import LOSSES, LR_SCHEDULES, OPTIMIZERS


DEVICE_TYPES = ("cpu", "cuda")


def check_device(device) -> str:
    """``device`` if it names a place the network can compute ("cpu", "cuda", "cuda:N"), else
    SparsetopoError. Whether CUDA is present is checked when a run starts, not here, so a
    sweep spec can be read on a machine without a GPU."""
    try:
        parsed = torch.device(device) if isinstance(device, str) else None
    except (RuntimeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in DEVICE_TYPES:
        raise SparsetopoError(f"device={device!r} is not a device sparsetopo trains on: choose 'cpu', 'cuda' or "
                              "'cuda:N'")
    return device


#: The networks a TrainConfig can name (train.architectures builds the cnn and the lstm).
ARCHITECTURES = ("mlp", "cnn", "lstm")


def check_architecture(config) -> None:
    """SparsetopoError naming the first field that does not fit ``config.architecture``."""
    kind, density = config.architecture, config.density
    if kind not in ARCHITECTURES:
        raise SparsetopoError(f"unknown architecture {kind!r}: choose one of {', '.join(ARCHITECTURES)}")
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density <= 1:
        raise SparsetopoError(f"density={density!r} must be a fraction in (0, 1] (1: dense)")
    if kind == "mlp":
        if density != 1:
            raise SparsetopoError(f"density={density} applies to architecture 'cnn' or 'lstm'; an mlp gives "
                                  "its sparsity as degrees (out-degree per layer)")
        return
    if config.degrees is not None:
        article = "an" if kind == "lstm" else "a"
        raise SparsetopoError(f"degrees={list(config.degrees)} applies to the mlp; {article} {kind} gives its sparsity "
                              "as density (fraction of connections kept in each sparsified layer)")
    if config.construction == "fully_connected" and density != 1:
        raise SparsetopoError(f"construction 'fully_connected' keeps every connection but density={density}: "
                              "use density = 1, or another construction")
    if kind == "cnn" and len(config.hidden) < 2:
        raise SparsetopoError(f"a cnn needs hidden = a list of >= 2 conv layers' channels (the first conv stays "
                              f"dense), e.g. [24, 24, 24]; got {list(config.hidden)}")
    if kind == "lstm" and len(config.hidden) != 1:
        raise SparsetopoError(f"an lstm has one hidden size, e.g. hidden = [128]; got {list(config.hidden)}")
    if config.block != 1 or config.backend == "sparse":
        raise SparsetopoError(f"a {kind} computes its layers masked, one neuron per block: keep block = 1 and "
                              f"backend 'auto' or 'masked' (got block={config.block}, backend={config.backend!r})")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the paper's protocol (Section 4.1)."""

    dataset: str = "mnist"                       # the paper's data set
    hidden: tuple[int, ...] = (300,)             # hidden layer sizes; the paper: 100, 300, 500 or (500, 300)
    construction: str = "regular_rotating"       # every layer's construction
    degrees: tuple[int | None, ...] | None = None  # out-degree k per layer; None (or a None entry) = all outputs
    epochs: int = 50                             # passes over the training set
    batch_size: int = 32                         # examples per SGD step
    lr: float = 0.01                             # SGD learning rate ("1%")
    momentum: float = 0.9                        # Nesterov momentum
    activation: str = "sigmoid"                  # on every neuron, output included
    dropout: tuple[float, float] = (0.0, 0.0)    # rates on the input layer and on hidden layers (paper's variant: 0.2, 0.5)
    init: str = "glorot"                         # "glorot" (Keras glorot_normal) or "glorot_sparse" (real fan-in/out)
    backend: str = "auto"                        # masked, sparse or auto (decided once per network: nn.plan.layer_backends); numbers equal up to float error
    seed: int = 0                                # topology, initial weights, shuffling and dropout all derive from it
    limit_train: int | None = None               # use only the first N training examples (None: all)
    device: str = "cpu"                          # where the network computes: "cpu", "cuda" or "cuda:N" (CUDA: masked backend)
    # Training options beyond the paper's (train.recipe); the defaults are the paper's recipe.
    loss: str = "mse"                            # "mse" on the output activation, or "cross_entropy" (softmax output)
    optimizer: str = "sgd_nesterov"              # "sgd_nesterov" (lr, momentum) or "adam" (lr; momentum unused)
    lr_schedule: str = "constant"                # "constant" or "cosine" (per epoch, from lr towards 0)
    validation_fraction: float = 0.0             # training examples held out for validation (never the test set)
    early_stop: int = 0                          # patience in epochs on validation accuracy; 0: none
    # A null for the data's alignment (beyond the paper): None keeps the features in their order
    # (raster order for images); an int seeds one fixed permutation of the input features, the
    # same for train and test data and for every run with that seed (data.input_permutation).
    permute_inputs: int | None = None
    # Neurons per block (beyond the paper): 1 is the paper's layers; above 1 every layer is a
    # block layer (nn.BlockSparseLinear) whose construction runs on blocks of this many neurons
    # (b x b tiles; a side narrower than b is one block), and a degree counts output blocks.
    block: int = 1
    # The network's kind (beyond the paper, its "future work": train.architectures). "mlp" is the
    # paper's; "cnn" and "lstm" read images as 2-D arrays or as sequences of rows, take their
    # sizes from ``hidden`` (cnn: the channels of each conv layer; lstm: one hidden size) and
    # their sparsity from ``density`` (``degrees`` stays None); ``activation``, ``init``,
    # ``dropout`` and ``backend`` are the MLP's (a cnn computes ReLU, an lstm its gates, both
    # masked, initialised as torch initialises them). For them ``permute_inputs`` seeds the
    # architecture's null: cnn, one fixed permutation of every sparsified layer's input channels;
    # lstm, one fixed permutation of the pixels within each row.
    architecture: str = "mlp"
    # The fraction of connections kept in each sparsified layer of a cnn or lstm (k = round(density
    # * n_out) per input, as sparsetopo.sparsify counts it); 1.0: dense. MLPs give ``degrees``.
    density: float = 1.0

    def __post_init__(self):
        def as_tuple(value):
            return tuple(value) if isinstance(value, (list, tuple)) else (value,)

        object.__setattr__(self, "hidden", as_tuple(self.hidden))
        object.__setattr__(self, "dropout", as_tuple(self.dropout))
        if self.degrees is not None:
            object.__setattr__(self, "degrees", as_tuple(self.degrees))
        self._check()

    def _check(self) -> None:
        """Raise SparsetopoError naming the first bad field: a TrainConfig that exists is valid."""
        for h in self.hidden:
            check_int("hidden size", h, 1)
        get_construction(self.construction)
        check_int("epochs", self.epochs, 0)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        check_device(self.device)
        if isinstance(self.block, bool) or not hasattr(self.block, "__index__") or self.block < 1:
            raise SparsetopoError(f"block={self.block!r} must be a whole number of neurons per block, >= 1 "
                                  "(1: the paper's layers; e.g. 16 for 16x16 tiles)")
        if self.backend == "sparse" and torch.device(self.device).type != "cpu":
            raise SparsetopoError(f"backend='sparse' computes on CPU only, not on device={self.device!r}: "
                                  "use backend='masked' or 'auto'")
        if self.limit_train is not None:
            check_int("limit_train", self.limit_train, 1)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SparsetopoError(f"lr={self.lr} must be a positive number")
        if self.lr > FLOAT32_MAX:  # the parameters are float32: such a step cannot even be represented
            raise SparsetopoError(f"lr={self.lr:g} is out of range: choose 0 < lr <= {FLOAT32_MAX:.4g}")
        if not 0 <= self.momentum < 1:
            raise SparsetopoError(f"momentum={self.momentum} must be in [0, 1)")
        if len(self.dropout) != 2 or not all(0 <= p < 1 for p in self.dropout):
            raise SparsetopoError(f"dropout={list(self.dropout)} must be two rates in [0, 1): input layer, hidden layers")
        for name, value, valid in (("activation", self.activation, ACTIVATIONS), ("init", self.init, INITIALISERS),
                                   ("backend", self.backend, BACKENDS)):
            if value not in valid:
                raise SparsetopoError(f"unknown {name} {value!r}: choose one of {', '.join(valid)}")
        for name, value, valid in (("loss", self.loss, LOSSES), ("optimizer", self.optimizer, OPTIMIZERS),
                                   ("lr_schedule", self.lr_schedule, LR_SCHEDULES)):
            if value not in valid:
                raise SparsetopoError(f"unknown {name} {value!r}: choose one of {', '.join(valid)}")
        fraction = self.validation_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise SparsetopoError(f"validation_fraction={self.validation_fraction!r} must be a fraction in [0, 1): "
                                  "the share of training examples held out (0: none)")
        check_int("early_stop", self.early_stop, 0)
        if self.permute_inputs is not None:
            check_int("permute_inputs", self.permute_inputs, 0)
        if self.early_stop > 0 and self.validation_fraction <= 0:
            raise SparsetopoError(f"early_stop={self.early_stop} needs a validation split: set "
                                  "validation_fraction > 0 (e.g. 0.1), or early_stop = 0")
        check_architecture(self)
        if self.degrees is not None and len(self.degrees) != len(self.hidden) + 1:
            raise SparsetopoError(
                f"degrees={list(self.degrees)} has {len(self.degrees)} entries but a network with hidden "
                f"sizes {list(self.hidden)} has {len(self.hidden) + 1} layers: give one degree per layer"
            )

    def sizes(self, n_features: int, n_classes: int) -> list[int]:
        return [n_features, *self.hidden, n_classes]

    def layer_blocks(self, sizes: list[int]) -> list[tuple[int, int]]:
        """Each layer's ``(b_in, b_out)``: ``block`` on both sides, a side narrower than it one
        block (so 300 -> 10 with block 16 has blocks of 16 x 10 and one output block)."""
        return [(min(self.block, n_in), min(self.block, n_out)) for n_in, n_out in zip(sizes, sizes[1:])]

    def layer_degrees(self, sizes: list[int]) -> list[int]:
        """The degree of each layer, None entries replaced by the layer's output count (of
        output blocks, with ``block`` > 1)."""
        degrees = self.degrees or (None,) * (len(sizes) - 1)
        outputs = [n_blocks(n_out, b_out) for n_out, (_, b_out) in zip(sizes[1:], self.layer_blocks(sizes))]
        return [outputs[l] if k is None else k for l, k in enumerate(degrees)]

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SparsetopoError(f"unknown TrainConfig field(s) {unknown}: valid fields are {sorted(known)}")
        return cls(**data)


def scalar_field_types(config_class: type = TrainConfig) -> dict[str, tuple[type, bool]]:
    """Each field of ``config_class`` annotated with one scalar type, read from its annotation:
    ``name -> (int, float or str, whether None is allowed)``. Tuple fields (``hidden``,
    ``dropout``, ``degrees``) are left out. The schema a sweep spec checks its values against."""
    types_ = {}
    for name, hint in typing.get_type_hints(config_class).items():
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        args = set(typing.get_args(hint)) if union else {hint}
        scalars = args - {type(None)}
        if len(scalars) == 1 and next(iter(scalars)) in (int, float, str):
            types_[name] = (next(iter(scalars)), type(None) in args)
    return types_


@dataclass(frozen=True)
class EpochRecord:
    epoch: int            # 1-based
    train_loss: float     # mean loss over the epoch's batches
    test_accuracy: float
    seconds: float        # training time of the epoch (evaluation excluded)
    val_accuracy: float | None = None  # on the held-out validation examples (None without a validation split)


@dataclass
class RunResult:
    """What one training run yields: everything the paper's analysis needs."""

    config: TrainConfig
    status: str                      # "ok" or "diverged" (a NaN/inf loss, or a network saturated past learning)
    test_accuracy: float             # after the last completed epoch
    history: list[EpochRecord]
    weight_stats: list[dict]         # per layer: max, min, mean, std, nnz of connected weights
    parameters: int                  # connections + biases
    seconds: float                   # wall time of this call (includes evaluation)
    layers: list[dict] = field(default_factory=list)  # per layer: topology provenance and the backend that computed it
    model: SparseMLP | None = field(default=None, repr=False, compare=False)  # the trained network
    reason: str = ""                 # why a run is "diverged" ("" when ok)

    @property
    def backend(self) -> str:
        """What computed this run, as ``engine/layer backend`` (for example ``fused/sparse`` or
        ``fused-population/sparse``); layers that differ are joined with commas."""
        names = list(dict.fromkeys(layer["backend"] for layer in self.layers))
        return ",".join(names) if names else "unknown"

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "backend": self.backend,
            "status": self.status,
            "reason": self.reason,
            "test_accuracy": self.test_accuracy,
            "history": [asdict(h) for h in self.history],
            "weight_stats": self.weight_stats,
            "parameters": self.parameters,
            "seconds": self.seconds,
            "layers": self.layers,
        }
