"""``sparsetopo topology``: build one layer's graph, describe it, draw it, save it."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

import click

from sparsetopo.atomic import atomic_path
from sparsetopo.cli.app import app
from sparsetopo.cli.parsing import INTS
from sparsetopo.errors import SparsetopoError
from sparsetopo.jsonable import plain
from sparsetopo.spectral import layer_measures
from sparsetopo.topology import CONSTRUCTIONS, Topology, build


def describe(topology: Topology, metrics: bool = True) -> dict:
    """The JSON description of a layer (degrees, density, identity and graph measures)."""
    out_deg, in_deg = topology.out_degrees, topology.in_degrees
    info = {
        "construction": topology.construction,
        "version": topology.version,
        "n_in": topology.n_in,
        "n_out": topology.n_out,
        "k": topology.k,
        "seed": topology.seed,
        "nnz": topology.nnz,
        "density": topology.density,
        "out_degree": {"min": int(out_deg.min()), "max": int(out_deg.max()), "mean": float(out_deg.mean())},
        "in_degree": {"min": int(in_deg.min()), "max": int(in_deg.max()), "mean": float(in_deg.mean())},
        "mask_sha256": topology.mask_sha256(),
    }
    if topology.is_blocked:  # k counts output blocks; the other numbers are the neurons'
        info["block"] = [topology.block_in, topology.block_out]
    if metrics:
        info["metrics"] = plain(layer_measures(topology))  # JSON has no NaN: undefined measures become null
    return info


def _number(value, digits: int = 4) -> str:
    return "undefined" if value is None else f"{value:.{digits}f}"


def _blocks(info: dict) -> str:
    if "block" not in info:
        return ""
    b_in, b_out = info["block"]
    return f" output blocks per input block (blocks of {b_in}x{b_out} neurons)"


def _summary(info: dict) -> str:
    od, idg = info["out_degree"], info["in_degree"]
    lines = [
        f"{info['construction']} (v{info['version']}): {info['n_in']} inputs -> {info['n_out']} outputs, "
        f"k={info['k']}{_blocks(info)}, seed={info['seed']}",
        f"  connections  {info['nnz']} of {info['n_in'] * info['n_out']} (density {info['density']:.4f})",
        f"  out-degree   min {od['min']}, max {od['max']}, mean {od['mean']:.2f}  (per input neuron)",
        f"  in-degree    min {idg['min']}, max {idg['max']}, mean {idg['mean']:.2f}  (per output neuron)",
        f"  mask sha256  {info['mask_sha256']}",
    ]
    if "metrics" in info:
        m = info["metrics"]
        lines += [
            f"  algebraic connectivity  {_number(m['algebraic_connectivity'])}  (Fiedler value; 0 = disconnected)",
            f"  spectral gap            {_number(m['spectral_gap'])}  (s1 - s2 of the biadjacency; "
            f"normalised {_number(m['normalized_spectral_gap'])})",
            f"  Ramanujan margin        {_number(m['ramanujan_margin'])}  (sqrt(dL-1) + sqrt(dR-1) - s2; > 0 beats the bound)",
            f"  paper's Laplacian       largest {_number(m['paper_laplacian_largest'])}, "
            f"second largest {_number(m['paper_laplacian_second_largest'])}  (the paper's literal wording)",
            f"  components   {m['components']}  (isolated: {m['isolated_inputs']} inputs, {m['isolated_outputs']} outputs)",
        ]
    return "\n".join(lines)


def _check_output(path: Path, option: str) -> None:
    """Refuse, before any work, an output that cannot be written; the message names it.

    The parent directory must exist (it is not created: a typo would otherwise make a tree of
    directories), and a file must be creatable there: that is tried, not inferred from
    permission bits, which say nothing about read-only file systems, /proc, or root. An
    existing path must be a regular file, since the atomic write replaces it by renaming.
    """
    try:
        if path.exists() and not path.is_file():
            what = "a directory" if path.is_dir() else "not a regular file"
            raise SparsetopoError(f"{option} {path}: is {what}; give the path of a file to write")
        parent = path.parent
        if not parent.is_dir():
            raise SparsetopoError(
                f"{option} {path}: directory {parent} does not exist; create it or choose another path"
            )
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SparsetopoError(
            f"{option} {path}: cannot write there ({exc.strerror or exc}); choose a writable directory"
        ) from None


def _check_picture_format(path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    kind = path.suffix.lstrip(".").lower() or "png"  # draw_topology writes PNG without a suffix
    formats = sorted(FigureCanvasAgg.get_supported_filetypes())
    if kind not in formats:
        raise SparsetopoError(
            f"--png {path}: {kind!r} is not a picture format; end the name with one of .{', .'.join(formats)}"
        )


def _write_outputs(topology: Topology, png: Path | None, save: Path | None) -> None:
    """Write the picture and the .npz together: each goes to a temporary file beside its
    target, and both are renamed into place only once both are complete, so a failure leaves
    neither behind (and any earlier file of that name unchanged)."""
    from sparsetopo.report.pictures import draw_topology

    jobs = [(png, lambda tmp: draw_topology(topology, tmp)), (save, topology.save)]
    current = None
    try:
        with ExitStack() as staged:
            for current, write in [(path, write) for path, write in jobs if path is not None]:
                write(staged.enter_context(atomic_path(current)))
            current = None  # the renames: os.replace names the target as filename2
    except OSError as exc:
        failed = current or exc.filename2 or exc.filename
        raise SparsetopoError(f"cannot write {failed}: {exc.strerror or exc}") from None


@app.command(
    "topology",
    epilog="""\b
Examples:
  sparsetopo topology regular_rotating --n-in 784 --n-out 300 -k 30
  sparsetopo topology random_regular --n-in 20 --n-out 10 -k 3 --seed 7 --png graph.png
  sparsetopo topology fibonacci_rotating --n-in 784 --n-out 300 -k 12 --json --save fib.npz
  sparsetopo topology random_regular --n-in 500000 --n-out 500000 -k 8 --json   # about a minute
""",
)
@click.argument("construction", metavar="CONSTRUCTION")
@click.option("--n-in", "n_in", type=int, required=True, help="Input neurons of the layer (n >= 1).")
@click.option("--n-out", "n_out", type=int, required=True, help="Output neurons of the layer (m >= 1).")
@click.option("-k", "--degree", "k", type=int, default=None,
              help="Out-degree of every input, 1 <= k <= n_out (density k/n_out). Omit for fully_connected.")
@click.option("--block", type=INTS, default="1", show_default=True, metavar="B[,B_OUT]",
              help="Neurons per block: the construction runs on the graph of blocks and every block edge "
                   "becomes a dense tile; -k then counts output blocks per input block. B for BxB tiles, "
                   "B,B_OUT for B x B_OUT; a width that B does not divide ends in a narrower block. 1: "
                   "one neuron per block (the ordinary layer).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random constructions (>= 0).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the summary.")
@click.option("--metrics/--no-metrics", default=True, show_default=True,
              help="Compute the graph measures (algebraic connectivity, spectral gap, ...): about "
                   "half a minute for a random layer of a million nodes with k = 8; a deterministic "
                   "rotating layer that large is nearly a ring and can take over ten minutes.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Draw the edge matrix (and, for small layers, the graph) to this file.")
@click.option("--save", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save the topology with its provenance to this .npz file.")
def topology_command(construction, n_in, n_out, k, block, seed, as_json, metrics, png, save):
    """Build one layer's connectivity graph and describe it.

    CONSTRUCTION is one of: {constructions}.

    The layer has n_in inputs and n_out outputs; every input feeds k outputs (random_edge: k on
    average). The rotating constructions shift one base vector by one output per input.

    The graph measures (see sparsetopo.spectral) are those of the bipartite graph on
    n_in + n_out nodes: algebraic connectivity (second smallest Laplacian eigenvalue), spectral
    gap s1 - s2 of the biadjacency and its normalised form, the Ramanujan margin, the paper's
    literal "largest and second largest non-zero Laplacian eigenvalue", connected components
    and isolated neurons. With --json they are under "metrics"; undefined ones are null.

    Nothing is ever held as a dense n_in x n_out matrix. The mask hash (sha256 of the packed
    row-major mask) still reads all n_in * n_out / 8 of its bytes, zeros included, so it grows
    with the layer's area rather than its edges. docs/benchmarks.md (bench_spectral) records
    the time and memory of the measures of a random 500,000 x 500,000 layer with k = 8.

    --png and --save are checked before any work (their directory must exist and be
    writable) and written atomically, together, at the end.
    """
    for path, option in ((png, "--png"), (save, "--save")):
        if path is not None:
            _check_output(path, option)
    if png is not None:
        _check_picture_format(png)
    topology = build(construction, n_in, n_out, k, seed, block=block if len(block) > 1 else block[0])
    info = describe(topology, metrics=metrics)
    if png is not None or save is not None:
        _write_outputs(topology, png, save)
    click.echo(json.dumps(info, allow_nan=False) if as_json else _summary(info))


# the names come from the registry, so a new construction is listed without editing this text
topology_command.help = topology_command.help.replace("{constructions}", ", ".join(CONSTRUCTIONS))
