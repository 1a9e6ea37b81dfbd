"""One call from a results store to a finished report: :func:`make_report`.

Steps: load the store (:mod:`.results`), keep one data set and protocol, fill graph measures the
store lacks (:mod:`.graph`), check the claims (:mod:`.claims`), draw the figures
(:mod:`.figures`), and write ``report.html``, ``report.md`` and ``claims.json`` with the figures'
PNG and PDF files beside them (:mod:`.document`). A store holding several training recipes also
gets every claim per recipe and the random-null table (:mod:`.recipes`), in the documents and
in ``claims_by_recipe.json``. A store holding the same networks on raster-order and permuted
inputs gets the permutation null and claim L1 (:mod:`.locality`; ``locality_null.json``), and
its claims C1-C8 rest on the raster-order runs.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sparsetopo.report import claims as _claims
from sparsetopo.report import figures as _figures
from sparsetopo.report import frontier, future, graph, locality, protocol
from sparsetopo.report.future_figure import architecture_figures
from sparsetopo.report.document import ReportContent, write_documents
from sparsetopo.report.recipes import compare_recipes, recipes_in
from sparsetopo.report.results import analysis_slice, load_table, normalise


@dataclass
class ReportSummary:
    out_dir: Path
    paths: dict
    claims: list
    figures: list
    notes: list
    recipes: object = None   # a recipes.RecipeComparison when the store holds several recipes
    locality: object = None  # a locality.LocalityComparison when the store holds raster and permuted runs

    def verdicts(self) -> dict[str, str]:
        return {c.id: c.verdict for c in self.claims}


def make_report(db_path, out_dir, seed: int = 0, dataset: str | None = None,
                on_step: Callable[[str], None] | None = None) -> ReportSummary:
    """Write the report for the store ``db_path`` into ``out_dir``; return what was written.

    seed : seeds every bootstrap interval (the same store and seed give the same report).
    dataset : analyse this data set only (default: the protocol with most runs decides).
    on_step : called with a short label before each step (for progress display).
    """
    step = on_step or (lambda label: None)
    step("loading the store")
    table = load_table(db_path)
    if table.empty:
        from sparsetopo.errors import SparsetopoError

        raise SparsetopoError(f"results store {str(db_path)!r} holds no finished runs yet: run the sweep first "
                              f"('sparsetopo reproduce' or 'sparsetopo sweep')")
    # CNN and LSTM runs (the paper's future work) make claims F1-F5; C1-C8 are about its MLPs
    table, other_architectures, architecture_notes = future.split_architectures(table)
    if table.empty:
        return _architectures_only(db_path, out_dir, other_architectures, architecture_notes, seed, step)
    recipes = recipes_in(table)
    # several recipes: the claims and figures are the first recipe's, the comparison follows
    main = table[table["recipe"].eq(recipes[0])] if len(recipes) > 1 else table
    # runs on blocks of neurons make the accuracy-per-second comparison (B1-B4), every order kept;
    # the paper's claims and the permutation null are about connections between neurons
    with_blocks = analysis_slice(main, dataset=dataset) if frontier.has_blocks(main) else None
    table, block_notes = frontier.neuron_level_only(table)
    main, _ = frontier.neuron_level_only(main)
    both_orders = analysis_slice(main, dataset=dataset) if locality.has_permutation_null(main) else None
    # permuted runs make the permutation null (L1); the paper's claims are about raster order
    table, order_notes = locality.raster_only(table)
    main, _ = locality.raster_only(main)
    chosen = analysis_slice(main, dataset=dataset)
    everything = analysis_slice(main, dataset=dataset, keep_backends=True)
    notes = [*_completeness(db_path), *architecture_notes, *block_notes, *order_notes, *chosen.notes]
    if len(recipes) > 1:
        notes.append(f"the store holds {len(recipes)} training recipes ({', '.join(recipes)}): the claims and "
                     f"figures are recipe {recipes[0]!r}'s; 'Claims per recipe' compares them all")
    timed = _with_timings(everything.runs, db_path)
    datasets = sorted(map(str, table["dataset"].dropna().unique()))
    if len(datasets) > 1:
        notes.append(f"the store holds data sets {datasets}; analysed: {sorted(set(chosen.runs['dataset'].astype(str)))}")
    step("graph measures")
    runs, computed = graph.fill_connectivity(chosen.runs)
    if computed:
        notes.append(f"algebraic connectivity computed for {computed} run(s) from their rebuilt topologies "
                     f"(the store's columns were NULL)")
    step("claims")
    claim_results = _claims.check_all(runs, timed, seed=seed)
    step("figures")
    out_dir = Path(out_dir)
    figure_results = _figures.make_figures(runs, timed, out_dir, seed=seed)
    comparison = None
    if len(recipes) > 1:
        step("claims per recipe")
        comparison = compare_recipes(table, recipes, seed=seed, dataset=dataset, out_dir=out_dir,
                                     with_timings=lambda rows: _with_timings(rows, db_path))
        notes += comparison.notes
        figure_results.append(comparison.figure)
    null_by_order = None
    if both_orders is not None:
        step("permutation null")
        runs_both, _ = graph.fill_connectivity(both_orders.runs)
        null_by_order = locality.compare_orders(runs_both, seed=seed, out_dir=out_dir)
        claim_results.append(null_by_order.claim)
        notes += null_by_order.notes
        figure_results.append(null_by_order.figure)   # beside the random-null figure when there is one
    blocks = None
    if with_blocks is not None:
        step("blocks and training time")
        blocks = frontier.compare_blocks(with_blocks.runs, seed=seed, out_dir=out_dir)
        claim_results += blocks.claims
        notes += blocks.notes
        figure_results.append(blocks.figure)
    if other_architectures is not None:
        step("other architectures")
        claim_results += future.check_future(other_architectures, seed=seed)
        figure_results += architecture_figures(other_architectures, out_dir)
    for f in figure_results:
        if f.skipped:
            notes.append(f"{f.title} skipped: {f.skipped}")
    step("writing the report")
    content = ReportContent(
        title="Sparse Neural Network Topologies: reproduction report",
        source=str(db_path),
        generated=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        claims=claim_results,
        figures=figure_results,
        notes=notes,
        protocol=protocol.departures(table),
        sweep=protocol.sweep_meta(db_path),
        grid=protocol.grid_summary(table),
        environment=protocol.environment(),
        recipes=comparison,
        locality=null_by_order,
        frontier=blocks,
    )
    paths = write_documents(content, out_dir)
    return ReportSummary(out_dir, paths, claim_results, figure_results, notes, comparison, null_by_order)


def _architectures_only(db_path, out_dir, runs, notes, seed, step) -> ReportSummary:
    """The report of a store holding only CNN and LSTM runs: claims F1-F5, no MLP claims or figures."""
    step("claims")
    claim_results = future.check_future(runs, seed=seed)
    step("figures")
    figure_results = architecture_figures(runs, out_dir)
    step("writing the report")
    notes = [*_completeness(db_path), *notes]
    content = ReportContent(
        title="Sparse Neural Network Topologies: reproduction report", source=str(db_path),
        generated=_dt.datetime.now().astimezone().isoformat(timespec="seconds"), claims=claim_results,
        figures=figure_results, notes=notes, protocol=protocol.departures(runs), sweep=protocol.sweep_meta(db_path),
        grid=protocol.grid_summary(runs), environment=protocol.environment())
    paths = write_documents(content, Path(out_dir))
    return ReportSummary(Path(out_dir), paths, claim_results, figure_results, notes)


def _completeness(db_path) -> list[str]:
    """A note when the sweep is only partly done: the claims then rest on fewer runs than planned."""
    from sparsetopo.sweep.store import SweepStore

    with SweepStore(db_path, readonly=True) as store:
        status = store.status()
    if status["done"] >= status["planned"]:
        return []
    return [f"the sweep is partly done: {status['done']} of {status['planned']} planned runs are stored "
            f"({status['failed']} failed, {status['remaining']} not yet run); the claims rest on the stored runs "
            f"only: resume the sweep for the full grid"]


def _with_timings(runs_all_backends, db_path):
    """The runs of every backend, plus the store's one-network-at-a-time epoch timings if any.

    When timings were measured (:mod:`sparsetopo.sweep.timing`), population-trained rows stop
    speaking for time: their seconds are a stack's clock shared among its members.
    """
    import pandas as pd

    from sparsetopo.sweep.timing import load_timings

    timings = load_timings(db_path)
    if timings.empty:
        return runs_all_backends
    runs = runs_all_backends.assign(seconds_per_epoch=runs_all_backends["seconds_per_epoch"].where(
        runs_all_backends.get("trained_with", pd.Series(index=runs_all_backends.index, dtype=object)).ne("population")))
    return pd.concat([runs, normalise(timings)], ignore_index=True)
