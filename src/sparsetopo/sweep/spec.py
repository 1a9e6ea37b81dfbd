"""Sweep specs: a TOML file that names a grid of training runs, and its expansion.

The paper (Section 4.1) trains "many networks with the varying constructions ... and varying
degree k imposed on both the input to hidden layer connection and hidden layer to output,
fitting a total of 3000 networks", plus a dropout variant and a 784-500-300-10 variant. It
does not list the grid. A spec writes one grid down explicitly, so that a sweep is a file
that can be read, diffed and rerun.

Layout of a spec (see the shipped presets ``sparsetopo/presets/*.toml``)::

    [sweep]                      # optional: what the sweep is for
    name = "quick"
    description = "..."
    departures = ["lr 0.5 instead of the paper's 0.01 because ..."]  # shown by the report

    [protocol]                   # TrainConfig fields shared by every run (defaults: the paper's)
    dataset = "digits"
    epochs = 40

    [grid.contour]               # one block; the runs are the product of its axes
    constructions = ["regular_rotating"]
    hidden = [300]               # an int per single-hidden-layer net, a list for deeper ones
    degrees_in = [3, 6, 30]      # k of the first layer (input -> hidden)
    degrees_out = [1, 5, "full"] # k of the last layer (hidden -> output); default "full"
    seeds = 3                    # a count (0, 1, 2) or an explicit list

    [recipes.modern]             # optional: named training recipes (TrainConfig fields; see below)
    loss = "cross_entropy"
    optimizer = "adam"
    lr = 0.001

    [grid.compare]
    recipes = ["modern"]         # the protocol axis: the block once per recipe, on top of [protocol]

Block keys: ``constructions``, ``hidden``, ``seeds``, ``recipes``, ``dropout`` (a list of
``[input, hidden]`` pairs) and one way of giving degrees: ``degrees_in`` / ``degrees_out``
(layers between the first and the last stay fully connected), ``densities_in`` /
``densities_out`` (fractions of the layer's outputs, ``k = max(1, round(d * n_out))``), or
``degrees`` (explicit per-layer lists, e.g. ``[[150, 90, "full"]]``). Any other TrainConfig
field (``epochs``, ``lr``, ``init``, ...) may appear as a value or as a list of values (an
axis). ``fully_connected`` ignores the degree axes: one cell per hidden size and seed.
``permute_inputs`` (a seed for one fixed permutation of the input features) takes ``false``
for "the features in their own order", so ``permute_inputs = [false, 1]`` trains every
network in raster order and permuted.

A recipe may set any TrainConfig field but those naming the network (data set, architecture,
sizes, construction, degrees, density, seed) and dropout; each run remembers its recipe's name
(:func:`expand_recipes`; the store's ``recipe`` column). ``[sweep] fallback_dataset`` names a
data set used when the [protocol] one is not on this machine (:func:`with_fallback`).

Runs are identified by :func:`run_id`: a short sha256 of the canonical config JSON plus the
versions of the constructions it uses, so results made with older masks are never mixed
with new ones. Identical runs named by two blocks are kept once (the first).

Everything is validated before any run starts; errors name the file, the table, the key and
the fix.
"""

from __future__ import annotations

import difflib
import itertools
import json
import sys
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path

from sparsetopo.data import DATASETS, dataset_shape
from sparsetopo.errors import SparsetopoError
from sparsetopo.sweep.identity import LATER_FIELDS, run_id  # noqa: F401 - run_id is part of this module's API
from sparsetopo.topology.registry import CONSTRUCTIONS
from sparsetopo.train import TrainConfig
from sparsetopo.train.config import scalar_field_types

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 needs the 'tomli' backport (pip install tomli)
    try:
        import tomli as tomllib
    except ImportError:  # the error is raised when a spec is read, with the fix
        tomllib = None

__all__ = ["SweepSpec", "expand", "expand_recipes", "load_spec", "parse_spec", "preset_names", "run_id"]

FULL = "full"
CONFIG_FIELDS = {f.name: f for f in fields(TrainConfig)}
# each scalar field's type comes from TrainConfig's annotations; hidden, dropout and degrees
# have parsers of their own (_hidden, _dropout, _degree)
SCALAR_TYPES = scalar_field_types(TrainConfig)
INT_FIELDS = {name for name, (kind, _) in SCALAR_TYPES.items() if kind is int}
#: Int fields that may be absent (None). TOML has no null: ``false`` writes None for permute_inputs.
NONE_FIELDS = {name for name, (_, optional) in SCALAR_TYPES.items() if optional}
FLOAT_FIELDS = {name for name, (kind, _) in SCALAR_TYPES.items() if kind is float}
STR_FIELDS = {name for name, (kind, _) in SCALAR_TYPES.items() if kind is str}
GRID_AXES = ("constructions", "hidden", "degrees_in", "degrees_out", "densities_in", "densities_out",
             "degrees", "dropout", "seeds", "recipes")
# block keys that replace a TrainConfig field (the singular names are not accepted in a block)
GRID_REPLACES = {"construction": "constructions", "seed": "seeds"}
SWEEP_KEYS = ("name", "description", "departures", "fallback_dataset", "population")
#: TrainConfig fields a [recipes.NAME] table may set: how a network is trained, not which
#: network it is (data set, architecture, sizes, construction, degrees, density and seed are the
#: grid's, and so is dropout, the paper's own variant and a grid axis).
RECIPE_FIELDS = tuple(name for name in CONFIG_FIELDS
                      if name not in ("dataset", "hidden", "construction", "degrees", "seed", "dropout", "architecture",
                                      "density"))


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, validated sweep spec. ``blocks`` keeps the file's order."""

    name: str
    source: str                   # the file path or "preset NAME", for messages
    description: str
    departures: tuple[str, ...]   # departures from the paper's protocol, for the report
    protocol: dict                # TrainConfig fields shared by every run
    blocks: tuple[tuple[str, dict], ...]
    text: str = ""                # the TOML text, stored with the results
    recipes: tuple[tuple[str, dict], ...] = ()   # [recipes.NAME] tables: named training recipes, in file order
    fallback_dataset: str | None = None          # used when the protocol's data set is not on this machine
    population: bool = True       # false: every run trains alone, so its stored seconds are its own

    def summary(self) -> dict:
        """JSON-ready description (what the store keeps in its meta table)."""
        out = {"name": self.name, "source": self.source, "description": self.description,
               "departures": list(self.departures), "protocol": self.protocol,
               "blocks": [name for name, _ in self.blocks]}
        if self.recipes:
            out["recipes"] = {name: dict(fields) for name, fields in self.recipes}
        return out


# -- presets ---------------------------------------------------------------------------------
def preset_names() -> list[str]:
    """Names of the specs shipped in ``sparsetopo/presets``."""
    folder = resources.files("sparsetopo") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_spec(spec: str | Path, data_dir=None) -> SweepSpec:
    """Read a spec from a TOML path or a preset name, validate it and every run it expands to."""
    path = Path(spec)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise SparsetopoError(f"sweep spec {spec}: no such file; give a TOML path or one of the "
                                  f"presets {', '.join(preset_names())}")
        try:
            text, source = path.read_text(encoding="utf-8"), str(path)
        except UnicodeDecodeError as exc:
            raise SparsetopoError(f"sweep spec {spec} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                                  f"save it as UTF-8 TOML") from None
    elif str(spec) in preset_names():
        text = (resources.files("sparsetopo") / "presets" / f"{spec}.toml").read_text()
        source = f"preset {spec}"
    else:
        raise SparsetopoError(f"sweep spec {spec!r} is neither a .toml file nor a preset: choose one of "
                              f"{', '.join(preset_names())} or give a path")
    parsed = with_fallback(parse_spec(text, source=source, default_name=path.stem), data_dir)
    expand(parsed, data_dir=data_dir)  # every run is checked before any starts
    return parsed


def with_fallback(spec: SweepSpec, data_dir=None) -> SweepSpec:
    """``spec``, or, when it names a ``[sweep] fallback_dataset`` and its [protocol] data set's
    files are not on this machine (looked for as loading would, but never downloaded), the
    same spec on the fallback data set, the switch recorded as a departure."""
    dataset = spec.protocol.get("dataset", CONFIG_FIELDS["dataset"].default)
    if spec.fallback_dataset is None or dataset not in DATASETS or DATASETS[dataset].offline:
        return spec
    from sparsetopo.data import locate

    try:
        locate(dataset, data_dir, download=False)
        return spec
    except SparsetopoError:
        note = (f"Data set {spec.fallback_dataset!r} instead of {dataset!r}: {dataset!r} was not found on this "
                f"machine (no download attempted); the spec names {spec.fallback_dataset!r} as its fallback.")
        return replace(spec, protocol={**spec.protocol, "dataset": spec.fallback_dataset},
                       departures=(*spec.departures, note))


def parse_spec(text: str, source: str = "<string>", default_name: str = "sweep") -> SweepSpec:
    """Parse TOML text into a SweepSpec, checking keys and types (not yet layer ranges)."""
    if tomllib is None:  # pragma: no cover
        raise SparsetopoError("reading sweep specs on Python 3.10 needs the 'tomli' package: pip install tomli")
    where = f"sweep spec {source}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SparsetopoError(f"{where}: not valid TOML ({exc}); fix the syntax") from None
    _unknown(where, "top level", data, ("sweep", "protocol", "grid", "recipes"))
    sweep = _table(where, "sweep", data.get("sweep", {}))
    _unknown(where, "[sweep]", sweep, SWEEP_KEYS)
    name = sweep.get("name", default_name)
    description = sweep.get("description", "")
    departures = sweep.get("departures", [])
    if not isinstance(name, str) or not isinstance(description, str):
        raise SparsetopoError(f"{where}: [sweep] name and description must be strings")
    if not isinstance(departures, list) or not all(isinstance(d, str) for d in departures):
        raise SparsetopoError(f"{where}: [sweep] departures must be a list of strings")
    fallback = sweep.get("fallback_dataset")
    if fallback is not None and fallback not in DATASETS:
        raise SparsetopoError(f"{where}: [sweep] fallback_dataset={fallback!r} is not a data set: choose one of "
                              f"{', '.join(DATASETS)}")

    population = sweep.get("population", True)
    if not isinstance(population, bool):
        raise SparsetopoError(f"{where}: [sweep] population={population!r} must be true or false")
    protocol = _table(where, "protocol", data.get("protocol", {}))
    _unknown(where, "[protocol]", protocol, CONFIG_FIELDS)
    protocol = {key: _config_value(where, "[protocol]", key, value) for key, value in protocol.items()}
    recipes = _parse_recipes(where, protocol, _table(where, "recipes", data.get("recipes", {})))

    grid = _table(where, "grid", data.get("grid", {}))
    if not grid:
        raise SparsetopoError(f"{where}: [grid] is empty: add at least one [grid.NAME] table of axes")
    blocks = []
    for block_name, block in grid.items():
        label = f"[grid.{block_name}]"
        block = _table(where, f"grid.{block_name}", block)
        blocks.append((block_name, _parse_block(where, label, block, recipes)))
    return SweepSpec(name=name, source=source, description=description, departures=tuple(departures),
                     protocol=protocol, blocks=tuple(blocks), text=text, recipes=tuple(recipes.items()),
                     fallback_dataset=fallback, population=population)


def _parse_recipes(where, protocol, table) -> dict[str, dict]:
    """The [recipes.NAME] tables: each a set of :data:`RECIPE_FIELDS` values, checked like
    [protocol]'s. Two recipes that would train the same runs are refused."""
    recipes: dict[str, dict] = {}
    effective: dict[str, str] = {}
    for name, fields_ in table.items():
        label = f"[recipes.{name}]" if name.replace("_", "").isalnum() else f'[recipes."{name}"]'
        fields_ = _table(where, f"recipes.{name}", fields_)
        for key in fields_:
            if key in CONFIG_FIELDS and key not in RECIPE_FIELDS:
                raise SparsetopoError(f"{where}: {label} {key}: a recipe says how networks train, not which "
                                      f"network; set {key} in [protocol] or in a grid block")
        _unknown(where, label, fields_, RECIPE_FIELDS)
        recipe = {key: _config_value(where, label, key, value) for key, value in fields_.items()}
        try:
            TrainConfig(**{**protocol, **recipe})
        except SparsetopoError as exc:
            raise SparsetopoError(f"{where}: {label} {exc}") from None
        key = json.dumps(TrainConfig(**{**protocol, **recipe}).to_dict(), sort_keys=True)
        if key in effective:
            raise SparsetopoError(f"{where}: {label} sets the same training as [recipes.{effective[key]}] "
                                  "(with [protocol]): give each recipe a field that differs, or drop one")
        effective[key] = name
        recipes[name] = recipe
    return recipes


# -- parsing helpers -------------------------------------------------------------------------
def _table(where, key, value) -> dict:
    if not isinstance(value, dict):
        raise SparsetopoError(f"{where}: {key} must be a table ([{key}]), not {type(value).__name__}")
    return value


def _unknown(where, label, table, valid) -> None:
    for key in table:
        if key not in valid:
            hint = difflib.get_close_matches(key, list(valid), n=1)
            fix = f"did you mean {hint[0]!r}?" if hint else f"valid keys are {', '.join(sorted(valid))}"
            raise SparsetopoError(f"{where}: {label} unknown field {key!r}: {fix}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _config_value(where, label, key, value):
    """Check one TrainConfig field's value and return it normalised (floats as float)."""
    bad = None
    if key == "permute_inputs" and value is False:
        value = None    # "no permutation", so that raster order can be one value of a grid axis
    if key in INT_FIELDS:
        if not (_is_int(value) or (key in NONE_FIELDS and value is None)):
            bad = "an integer"
        elif key == "permute_inputs" and value is not None and value < 0:
            bad = "a permutation seed >= 0 (or false: the features in their own order)"
        elif key == "block" and value < 1:
            bad = "a block size >= 1 (neurons per block; 1: the paper's layers)"
    elif key in FLOAT_FIELDS:
        if _is_number(value):
            value = float(value)
        else:
            bad = "a number"
    elif key in STR_FIELDS:
        if not isinstance(value, str):
            bad = "a string"
        elif key == "construction" and value not in CONSTRUCTIONS:
            _bad_construction(where, label, key, value)
    elif key == "hidden":
        value = _hidden(where, label, key, value)
    elif key == "dropout":
        value = _dropout(where, label, key, value)
    elif key == "degrees":
        value = tuple(_degree(where, label, key, k) for k in _list(where, label, key, value))
    if bad:
        if key == "permute_inputs" and bad == "an integer":
            bad = "an integer seed >= 0, or false for the features in their own order"
        raise SparsetopoError(f"{where}: {label} {key}={value!r} must be {bad}")
    return value


def _bad_construction(where, label, key, value):
    raise SparsetopoError(f"{where}: {label} {key}: unknown construction {value!r}: choose from "
                          f"{', '.join(CONSTRUCTIONS)}")


def _list(where, label, key, value, allow_empty=False) -> list:
    if not isinstance(value, list):
        raise SparsetopoError(f"{where}: {label} {key}={value!r} must be a list")
    if not value and not allow_empty:
        raise SparsetopoError(f"{where}: {label} {key} is empty: give at least one value")
    return value


def _hidden(where, label, key, value) -> tuple[int, ...]:
    sizes = (value,) if _is_int(value) else value
    if not isinstance(sizes, (list, tuple)) or not sizes or not all(_is_int(h) and h >= 1 for h in sizes):
        raise SparsetopoError(f"{where}: {label} {key}: {value!r} is not a hidden size (a positive integer) "
                              "or a list of them such as [500, 300]")
    return tuple(sizes)


def _dropout(where, label, key, value) -> tuple[float, float]:
    if not (isinstance(value, list) and len(value) == 2 and all(_is_number(p) and 0 <= p < 1 for p in value)):
        raise SparsetopoError(f"{where}: {label} {key}: {value!r} is not a dropout pair: give "
                              "[input rate, hidden rate], each in [0, 1), e.g. [0.2, 0.5]")
    return (float(value[0]), float(value[1]))


def _degree(where, label, key, value):
    if value == FULL or value is None:
        return None
    if not _is_int(value):
        raise SparsetopoError(f"{where}: {label} {key}: {value!r} is not a degree: give a positive integer "
                              f"or \"{FULL}\"")
    return value


def _density(where, label, key, value) -> float:
    if not (_is_number(value) and 0 < value <= 1):
        raise SparsetopoError(f"{where}: {label} {key}: {value!r} is not a density: give a fraction in (0, 1]")
    return float(value)


def _parse_block(where, label, block, recipes=None) -> dict:
    recipes = recipes or {}
    valid = set(GRID_AXES) | (set(CONFIG_FIELDS) - {"construction", "seed"})
    for key in block:
        if key in GRID_REPLACES:
            raise SparsetopoError(f"{where}: {label} unknown field {key!r}: in a grid block write "
                                  f"{GRID_REPLACES[key]} = [...]")
    _unknown(where, label, block, valid)
    out: dict = {}
    for key, value in block.items():
        if key == "constructions":
            names = [value] if isinstance(value, str) else _list(where, label, key, value)
            for name in names:
                if name not in CONSTRUCTIONS:
                    _bad_construction(where, label, key, name)
            out[key] = list(dict.fromkeys(names))
        elif key == "hidden":
            out[key] = [_hidden(where, label, key, h) for h in _list(where, label, key, value)]
        elif key in ("degrees_in", "degrees_out"):
            out[key] = [_degree(where, label, key, k) for k in _list(where, label, key, value)]
        elif key in ("densities_in", "densities_out"):
            out[key] = [_density(where, label, key, d) for d in _list(where, label, key, value)]
        elif key == "degrees":
            out[key] = [tuple(_degree(where, label, key, k) for k in _list(where, label, key, row))
                        for row in _list(where, label, key, value)]
        elif key == "dropout":
            out[key] = [_dropout(where, label, key, p) for p in _list(where, label, key, value)]
        elif key == "recipes":
            names = [value] if isinstance(value, str) else _list(where, label, key, value)
            for name in names:
                if not isinstance(name, str) or name not in recipes:
                    defined = ", ".join(recipes) if recipes else "none: add [recipes.NAME] tables"
                    raise SparsetopoError(f"{where}: {label} recipes: unknown recipe {name!r}: the spec defines "
                                          f"{defined}")
            out[key] = list(dict.fromkeys(names))
        elif key == "seeds":
            if _is_int(value):
                if value < 1:
                    raise SparsetopoError(f"{where}: {label} seeds={value} is empty: give a count >= 1 "
                                          "or a list of seeds")
                out[key] = list(range(value))
            else:
                seeds = _list(where, label, key, value)
                if not all(_is_int(s) and s >= 0 for s in seeds):
                    raise SparsetopoError(f"{where}: {label} seeds={value!r}: give non-negative integers")
                out[key] = list(dict.fromkeys(seeds))
        else:  # another TrainConfig field: a value or a list of values (an axis)
            values = value if isinstance(value, list) else [value]
            _list(where, label, key, values)
            out[key] = [_config_value(where, label, key, v) for v in values]
    for name in out.get("recipes", []):
        both = sorted(set(recipes[name]) & set(out))
        if both:
            raise SparsetopoError(f"{where}: {label} sets {both[0]}, which recipe {name!r} sets too: set it in "
                                  "one place (the recipe, or the block without that recipe)")
    for a, b in (("degrees", "degrees_in"), ("degrees", "degrees_out"), ("degrees", "densities_in"),
                 ("degrees", "densities_out"), ("degrees_in", "densities_in"), ("degrees_out", "densities_out")):
        if a in out and b in out:
            raise SparsetopoError(f"{where}: {label} gives both {a} and {b}: keep one way of giving "
                                  "each layer's degree")
    return out


# -- expansion -------------------------------------------------------------------------------
def expand(spec: SweepSpec, data_dir=None) -> list[TrainConfig]:
    """Every run of the spec as a validated TrainConfig, in a deterministic order.

    Order: blocks as in the file; inside a block recipes (as the block lists them), hidden
    sizes, constructions, degree cells (input degree, then output degree), dropout, other
    axes (by name), seeds. A run named twice is kept at its first place.
    """
    return [config for config, _ in expand_recipes(spec, data_dir)]


def expand_recipes(spec: SweepSpec, data_dir=None) -> list[tuple[TrainConfig, str | None]]:
    """:func:`expand`'s runs, each with the name of the recipe it was trained under (None for
    a block without ``recipes``: [protocol] alone)."""
    where = f"sweep spec {spec.source}"
    recipes = dict(spec.recipes)
    runs: list[tuple[TrainConfig, str | None]] = []
    seen: set[str] = set()
    for block_name, block in spec.blocks:
        label = f"[grid.{block_name}]"
        for recipe in block.get("recipes") or [None]:
            protocol = {**spec.protocol, **recipes.get(recipe, {})}
            for config in _expand_block(where, label, protocol, block, data_dir):
                rid = run_id(config)
                if rid not in seen:
                    seen.add(rid)
                    runs.append((config, recipe))
    return runs


def _expand_block(where, label, protocol, block, data_dir):
    base = dict(protocol)
    hidden_list = block.get("hidden") or [base.get("hidden", TrainConfig.hidden)]
    constructions = block.get("constructions") or [base.get("construction", TrainConfig.construction)]
    seeds = block.get("seeds") or [base.get("seed", TrainConfig.seed)]
    dropouts = block.get("dropout") or [base.get("dropout", TrainConfig.dropout)]
    other = sorted(k for k in block if k not in GRID_AXES)
    other_values = [block[k] for k in other]
    for combo in itertools.product(*other_values) if other else [()]:
        fixed = {**base, **dict(zip(other, combo))}
        dataset = fixed.get("dataset", TrainConfig.dataset)
        try:
            n_features, n_classes, _ = dataset_shape(dataset, data_dir)
        except SparsetopoError as exc:
            raise SparsetopoError(f"{where}: {label} dataset: {exc}") from None
        for hidden in hidden_list:
            sizes = [n_features, *hidden, n_classes]
            cells = _degree_cells(where, label, block, base, sizes, fixed.get("block", TrainConfig.block))
            for construction in constructions:
                for degrees in ([None] if construction == "fully_connected" else cells):
                    for dropout in dropouts:
                        for seed in seeds:
                            values = {**fixed, "hidden": tuple(hidden), "construction": construction,
                                      "degrees": degrees, "dropout": tuple(dropout), "seed": seed}
                            try:
                                yield TrainConfig(**values)
                            except SparsetopoError as exc:
                                raise SparsetopoError(f"{where}: {label} {exc}") from None


def _degree_cells(where, label, block, base, sizes, neurons_per_block: int = 1) -> list:
    """The distinct canonical per-layer degree tuples of a block for one list of layer sizes.
    With ``neurons_per_block`` > 1 a degree counts output blocks (:class:`TrainConfig` ``block``)."""
    n_layers = len(sizes) - 1
    outputs = TrainConfig(block=neurons_per_block).layer_degrees(sizes)   # a full layer's degree
    layer = lambda l: f"{sizes[l]}->{sizes[l + 1]} layer"  # noqa: E731
    if "degrees" in block:
        rows = block["degrees"]
        for row in rows:
            if len(row) != n_layers:
                raise SparsetopoError(
                    f"{where}: {label} degrees: {[FULL if k is None else k for k in row]} has {len(row)} "
                    f"entries but layer sizes {sizes} have {n_layers} layers: give one degree per layer")
        rows = [(row, ["degrees"] * n_layers) for row in rows]
    elif any(k in block for k in ("degrees_in", "degrees_out", "densities_in", "densities_out")):
        first = _layer_axis(block, "in", outputs[0])
        last = _layer_axis(block, "out", outputs[-1])
        rows = []
        for (k_in, key_in), (k_out, key_out) in itertools.product(first, last):
            row = (k_in, *([None] * (n_layers - 2)), k_out)
            keys = [key_in, *(["degrees"] * (n_layers - 2)), key_out]
            rows.append((row, keys))
    else:
        row = base.get("degrees")
        if row is not None and len(row) != n_layers:
            raise SparsetopoError(f"{where}: [protocol] degrees has {len(row)} entries but layer sizes "
                                  f"{sizes} have {n_layers} layers: give one degree per layer")
        rows = [(row or (None,) * n_layers, ["[protocol] degrees"] * n_layers)]
    cells = []
    for row, keys in rows:
        for l, k in enumerate(row):
            if k is not None and not 1 <= k <= outputs[l]:
                blocks = "" if neurons_per_block == 1 else f" in {outputs[l]} output blocks (block={neurons_per_block})"
                raise SparsetopoError(
                    f"{where}: {label} {keys[l]}: k={k} is out of range for a {layer(l)}{blocks} (layer {l} of "
                    f"{'-'.join(map(str, sizes))}): choose 1 <= k <= {outputs[l]} or \"{FULL}\"")
        canonical = tuple(None if k is None or k == outputs[l] else k for l, k in enumerate(row))
        canonical = None if all(k is None for k in canonical) else canonical
        if canonical not in cells:
            cells.append(canonical)
    return cells


def _layer_axis(block, side, n_out) -> list[tuple]:
    """(k, key) pairs of the first ("in") or last ("out") layer's degree axis."""
    if f"degrees_{side}" in block:
        return [(k, f"degrees_{side}") for k in block[f"degrees_{side}"]]
    if f"densities_{side}" in block:
        return [(max(1, round(d * n_out)), f"densities_{side}") for d in block[f"densities_{side}"]]
    return [(None, f"degrees_{side}")]
