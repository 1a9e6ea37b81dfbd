"""The paper's claims, each checked against the results store: numbers, interval, verdict.

Nothing here is typed in: every number is computed from the runs. Each check's docstring
quotes what the paper says, then fixes how we read it (the thresholds); the report prints the
same text. Verdicts:

* "supported": the 95% bootstrap interval lies wholly on the claim's side of the threshold;
* "not supported": it lies wholly on the other side;
* "inconclusive": it straddles the threshold, or there are too few runs for an interval
  (fewer than 2 in a compared group), or the store lacks the runs the claim needs.

All checks take the analysis slice of :func:`sparsetopo.report.results.analysis_slice`
(finished runs, one dataset and protocol) and a seed for the bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats as sstats

from sparsetopo.report import stats
from sparsetopo.report.formats import plain_markup
from sparsetopo.report.results import (
    figure2_hidden,
    largest_hidden,
    single_layer,
    fixed_k_out,
)
from sparsetopo.report.stats import Estimate

VERDICTS = ("supported", "not supported", "inconclusive")
STRUCTURED = ("regular_rotating", "fibonacci_rotating")  # the paper's "Regular and Fibonacci"

C1_TOLERANCE = 0.02          # accuracy points (as a fraction) counted as "no sharp drop"
C1_MIN_DENSITY = 0.10        # the paper's "10% of the connections"
C2_TOLERANCE = 0.005         # "match": at most 0.5 point below fully connected
MEDIUM_BAND = (0.10, 0.50)   # "medium sparsity": input-layer density from 10% to 50%
C3_SPREAD = 0.01             # constructions "differ" when the max - min spread exceeds 1 point
C3_FIB_TOLERANCE = 0.005     # Fibonacci "best": within 0.5 point of (or above) the best other
C3_VERY_SPARSE = 0.10        # "very sparse": input-layer density below 10%
C5_BAND = (0.20, 0.40)       # "about 30% of connections" in the deep network
C5_PAPER_GAIN = 0.0015       # the paper's +0.15 percentage point
C8_RATIO = 1.0               # sparse/FC seconds per epoch must be below this
C8_MAX_DENSITY = 0.5         # sparse runs counted for the timing comparison
ALPHA = 0.05


@dataclass
class ClaimResult:
    """One claim's check. ``value``/``ci_low``/``ci_high`` are the headline estimate."""

    id: str
    statement: str
    operationalisation: str
    verdict: str
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    threshold: float | None = None
    unit: str = ""
    rule: str = ""            # the verdict's rule when it is not "interval vs threshold"; shown in its place
    numbers: dict = field(default_factory=dict)
    n_runs: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "verdict": self.verdict,
            "statement": self.statement,
            "operationalisation": self.operationalisation,
            "value": self.value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "threshold": self.threshold,
            "unit": self.unit,
            "rule": self.rule,
            "n_runs": self.n_runs,
            "numbers": self.numbers,
            "notes": self.notes,
        }


def _f(x):
    return None if x is None or not np.isfinite(x) else float(x)


def _result(id, fn, verdict, estimate: Estimate | None = None, **kw) -> ClaimResult:
    statement, operationalisation = _doc_parts(fn)
    out = ClaimResult(id=id, statement=statement, operationalisation=operationalisation, verdict=verdict, **kw)
    if estimate is not None:
        out.value, out.ci_low, out.ci_high = _f(estimate.value), _f(estimate.low), _f(estimate.high)
    return out


def _doc_parts(fn) -> tuple[str, str]:
    """The first paragraph of a check's docstring is the claim; the rest how we test it.

    The docstring's reST markup becomes plain text (code between single backticks): the
    documents show it to readers, not to Sphinx.
    """
    doc = (fn.__doc__ or "").strip()
    first, _, rest = doc.partition("\n\n")
    clean = lambda s: plain_markup(" ".join(line.strip() for line in s.splitlines()).strip())  # noqa: E731
    return clean(first), " ".join(clean(p) for p in rest.split("\n\n") if p.strip())


def _missing(id, fn, why: str) -> ClaimResult:
    return _result(id, fn, "inconclusive", notes=[f"not enough data: {why}"])


def _acc(rows: pd.DataFrame) -> np.ndarray:
    return rows["test_accuracy"].to_numpy(dtype=float)


def _density(rows: pd.DataFrame) -> pd.Series:
    """Total density of the network, falling back to the input layer's when the store lacks it."""
    return rows["density"].fillna(rows["density_in"])


def _input_density(rows: pd.DataFrame) -> pd.Series:
    """Density of the first (input -> hidden) layer: the sparsity the paper varies and plots.

    "Medium sparsity" (C2, C4) is read on this layer. The total density would count the
    hidden -> output layer too, which the grids keep dense and which, on small inputs such as
    digits' 64, lifts a 1%-dense input layer to a 14%-dense network.
    """
    return rows["density_in"]


def _est(e: Estimate) -> dict:
    return e.to_dict()


def _no_dropout_at(runs, hidden):
    rows = single_layer(runs, dropout=False)
    return rows[rows["hidden1"].eq(hidden)]


# -- C1 -----------------------------------------------------------------------------------------

def check_c1(runs: pd.DataFrame, rng: np.random.Generator) -> ClaimResult:
    """No sharp drop in accuracy until well below 10% of the connections remain (Section 4.2, Figure 2).

    Hidden size 300 (or the largest one-hidden-layer size present), regular_rotating, no dropout,
    the output-layer degree held fixed. Measured: accuracy at the sparsest input degree whose
    input-layer density is at least 10%, minus fully connected accuracy at the same hidden size.
    Supported when the 95% interval of that difference lies above -2 points; not supported when
    it lies below; inconclusive otherwise. Also reported: the largest density at which the mean
    first falls more than 2 points below fully connected (scanning from dense to sparse).
    """
    h = figure2_hidden(runs)
    if h is None:
        return _missing("C1", check_c1, "no one-hidden-layer runs without dropout")
    rows = _no_dropout_at(runs, h)
    fc = rows[rows["is_full"]]
    reg = fixed_k_out(rows[rows["construction"].eq("regular_rotating") & ~rows["is_full"]])
    if fc.empty or reg.empty:
        return _missing("C1", check_c1, f"hidden {h} needs both fully connected and regular_rotating runs")
    cells = reg.groupby("density_in")
    eligible = sorted(d for d in cells.groups if d >= C1_MIN_DENSITY - 1e-12)
    if not eligible:
        return _missing("C1", check_c1, f"no regular_rotating run at hidden {h} has input density >= 10%")
    d_star = eligible[0]
    cell = cells.get_group(d_star)
    est = stats.diff_ci(_acc(cell), _acc(fc), rng)
    fc_mean = float(_acc(fc).mean())
    first_drop = None
    for d in sorted(cells.groups, reverse=True):
        if _acc(cells.get_group(d)).mean() - fc_mean < -C1_TOLERANCE:
            first_drop = float(d)
            break
    verdict = stats.verdict_above(est, -C1_TOLERANCE)
    notes = [] if est.has_interval else ["fewer than 2 runs in a compared group: no interval"]
    return _result("C1", check_c1, verdict, est, threshold=-C1_TOLERANCE, unit="accuracy difference",
                   n_runs=len(cell) + len(fc), notes=notes, numbers={
                       "hidden": int(h), "k_out": _f(cell["k_out"].iloc[0]),
                       "density_in_checked": float(d_star), "k_in_checked": _f(cell["k_in"].iloc[0]),
                       "accuracy_sparse": float(_acc(cell).mean()), "accuracy_fully_connected": fc_mean,
                       "first_drop_density_in": first_drop, "tolerance": C1_TOLERANCE,
                       "n_sparse": len(cell), "n_fully_connected": len(fc)})


# -- C2 -----------------------------------------------------------------------------------------

def _structured_in_band(rows: pd.DataFrame, band=MEDIUM_BAND) -> dict[str, pd.DataFrame]:
    """The sparse runs of each structured construction in ``band`` ({} without fully connected runs)."""
    if not rows["is_full"].any():
        return {}
    dens = _input_density(rows)
    picked = {c: rows[rows["construction"].eq(c) & ~rows["is_full"] & dens.between(*band)] for c in STRUCTURED}
    return {c: s for c, s in picked.items() if len(s)}


def _structured_vs_fc(rows: pd.DataFrame, rng, band=MEDIUM_BAND) -> dict[str, tuple[Estimate, int]]:
    fc = rows[rows["is_full"]]
    return {c: (stats.diff_ci(_acc(s), _acc(fc), rng), len(s)) for c, s in _structured_in_band(rows, band).items()}


def check_c2(runs: pd.DataFrame, rng: np.random.Generator) -> ClaimResult:
    """Regular and Fibonacci sparse networks match or beat fully connected ones at medium sparsity on large hidden layers (Sections 4.3 and 5).

    The largest one-hidden-layer size holding fully connected, regular and Fibonacci runs in the
    band (else the largest size present), no dropout. For each of regular_rotating and
    fibonacci_rotating: mean accuracy over its runs with input-layer density between 10% and 50%, minus
    the fully connected mean at that size. Supported when both intervals lie above -0.5 point
    ("match" allows half a point); not supported when either lies below; inconclusive otherwise.
    The headline number is the weaker of the two constructions.
    """
    base = single_layer(runs, dropout=False)
    h = largest_hidden(base)
    if h is None:
        return _missing("C2", check_c2, "no one-hidden-layer runs without dropout")
    for size in sorted(set(base["hidden1"].dropna().astype(int)), reverse=True):
        if len(_structured_in_band(_no_dropout_at(runs, size))) == len(STRUCTURED):
            h = size  # the largest size holding both constructions and fully connected
            break
    rows = _no_dropout_at(runs, h)
    diffs = _structured_vs_fc(rows, rng)
    if not diffs or rows[rows["is_full"]].empty:
        return _missing("C2", check_c2, f"hidden {h} needs fully connected runs and regular/Fibonacci runs "
                                        f"with input-layer density in [{MEDIUM_BAND[0]:.0%}, {MEDIUM_BAND[1]:.0%}]")
    verdicts = [stats.verdict_above(e, -C2_TOLERANCE) for e, _ in diffs.values()]
    if len(diffs) < len(STRUCTURED):
        verdicts.append("inconclusive")
    worst = min(diffs, key=lambda c: diffs[c][0].value)
    return _result("C2", check_c2, stats.combine_all(verdicts), diffs[worst][0], threshold=-C2_TOLERANCE,
                   unit="accuracy difference", n_runs=sum(n for _, n in diffs.values()) + int(rows["is_full"].sum()),
                   notes=[f"missing construction(s): {sorted(set(STRUCTURED) - set(diffs))}"] if len(diffs) < 2 else [],
                   numbers={"hidden": int(h), "band": list(MEDIUM_BAND), "weaker": worst,
                            **{f"{c}_minus_fc": _est(e) for c, (e, _) in diffs.items()}})


# -- C3 -----------------------------------------------------------------------------------------

def _blocks(rows: pd.DataFrame) -> dict[tuple, dict[str, np.ndarray]]:
    out: dict[tuple, dict[str, np.ndarray]] = {}
    for (h, ki, ko, c), g in rows.groupby(["hidden1", "k_in", "k_out", "construction"]):
        out.setdefault((h, ki, ko), {})[c] = _acc(g)
    return out


def check_c3(runs: pd.DataFrame, rng: np.random.Generator) -> ClaimResult:
    """Sparse constructions of the same degree differ in accuracy, and Fibonacci is the best below 10% of connections (Sections 4.3 and 5).

    One-hidden-layer runs without dropout, sparse constructions only, grouped in cells of equal
    (hidden size, input degree, output degree). (a) Differ: the mean over cells of the spread
    (best minus worst construction mean) has a 95% interval (seeds resampled within cells, cells
    resampled) above 1 point, and a Friedman test over the cells holding every construction is
    significant at 5% when it can be run; not supported when the interval lies below 1 point.
    (b) Fibonacci best: in cells with input density below 10%, Fibonacci's mean minus the best
    other construction's mean, averaged over cells, has an interval above -0.5 point; not
    supported when it lies below. The claim is supported when (a) and (b) are.
    """
    rows = single_layer(runs, dropout=False)
    rows = rows[~rows["is_full"]]
    blocks = {k: v for k, v in _blocks(rows).items() if len(v) >= 2}
    if not blocks:
        return _missing("C3", check_c3, "no cell of equal degree holds two or more sparse constructions")
    spread_fn = lambda m: m.max(axis=0) - m.min(axis=0)  # noqa: E731
    spread = stats.block_bootstrap([list(v.values()) for v in blocks.values()], spread_fn, rng)
    names = sorted(set(rows["construction"]))
    complete = [v for v in blocks.values() if set(v) == set(names)]
    p = float("nan")
    if len(names) >= 3 and len(complete) >= 2:
        table = np.array([[v[c].mean() for c in names] for v in complete])
        if np.ptp(table) > 0:
            p = float(sstats.friedmanchisquare(*table.T).pvalue)
    verdict_a = stats.verdict_above(spread, C3_SPREAD)
    if verdict_a == "supported" and np.isfinite(p) and p >= ALPHA:
        verdict_a = "inconclusive"
    sparse_blocks = [v for (h, ki, ko), v in blocks.items()
                     if ki / h < C3_VERY_SPARSE and "fibonacci_rotating" in v]
    fib_fn = lambda m: m[0] - m[1:].max(axis=0)  # noqa: E731
    fib = stats.block_bootstrap(
        [[v["fibonacci_rotating"], *[a for c, a in v.items() if c != "fibonacci_rotating"]] for v in sparse_blocks],
        fib_fn, rng)
    verdict_b = stats.verdict_above(fib, -C3_FIB_TOLERANCE) if sparse_blocks else "inconclusive"
    notes = []
    if not sparse_blocks:
        notes.append("no cell below 10% input density holds Fibonacci and another construction")
    rank = None
    if sparse_blocks:
        ranks = [1 + sum(a.mean() > v["fibonacci_rotating"].mean() for c, a in v.items() if c != "fibonacci_rotating")
                 for v in sparse_blocks]
        rank = float(np.mean(ranks))
    return _result("C3", check_c3, stats.combine_all([verdict_a, verdict_b]), spread, threshold=C3_SPREAD,
                   unit="accuracy spread", n_runs=len(rows), notes=notes, numbers={
                       "cells": len(blocks), "constructions": names, "spread": _est(spread),
                       "friedman_p": _f(p), "friedman_cells": len(complete), "verdict_differ": verdict_a,
                       "fibonacci_minus_best_other_below_10pct": _est(fib), "fibonacci_mean_rank_below_10pct": rank,
                       "cells_below_10pct": len(sparse_blocks), "verdict_fibonacci_best": verdict_b})


# -- C4 -----------------------------------------------------------------------------------------

def _side(e: Estimate, threshold: float) -> str | None:
    v = stats.verdict_above(e, threshold)
    return {"supported": "match or beat", "not supported": "worse"}.get(v)


def check_c4(runs: pd.DataFrame, rng: np.random.Generator) -> ClaimResult:
    """Dropout and sparsity are independent: with dropout (0.2 input, 0.5 hidden) Regular and Fibonacci compare with fully connected as they do without it (the paper adds: still better; Section 4.4, Figure 4).

    At the largest hidden size that has one-hidden-layer runs both with and without dropout (the
    dropout setting with most runs): D = mean accuracy of regular_rotating and fibonacci_rotating
    runs with input-layer density in [10%, 50%] minus the fully connected mean, once without and once
    with dropout. Each D is classed as C2 classes it: "match or beat" when its interval lies above
    -0.5 point, "worse" when below. Supported when both classes are determined and equal (the
    ranking is unchanged), not supported when they are determined and differ, inconclusive
    otherwise. Also reported: the fraction of (construction, degree) cells whose sign of
    (sparse - fully connected) is the same with and without dropout.
    """
    one = runs[runs["n_hidden_layers"].eq(1)]
    both = sorted(set(one[one["has_dropout"]]["hidden1"]) & set(one[~one["has_dropout"]]["hidden1"]))
    if not both:
        return _missing("C4", check_c4, "no hidden size has one-hidden-layer runs both with and without dropout")
    h = both[-1]
    rows = one[one["hidden1"].eq(h)]
    with_d = rows[rows["has_dropout"]]
    setting = with_d.groupby(["dropout_in", "dropout_hidden"]).size().idxmax()
    with_d = with_d[with_d["dropout_in"].eq(setting[0]) & with_d["dropout_hidden"].eq(setting[1])]
    without = rows[~rows["has_dropout"]]
    est = {}
    for name, part in (("without", without), ("with", with_d)):
        fc = part[part["is_full"]]
        s = part[part["construction"].isin(STRUCTURED) & ~part["is_full"] & _input_density(part).between(*MEDIUM_BAND)]
        if len(fc) and len(s):
            est[name] = stats.diff_ci(_acc(s), _acc(fc), rng)
    if len(est) < 2:
        return _missing("C4", check_c4, f"hidden {h} needs fully connected and regular/Fibonacci runs at "
                                        f"input-layer density 10-50% both with and without dropout")
    sides = {k: _side(e, -C2_TOLERANCE) for k, e in est.items()}
    if None in sides.values():
        verdict = "inconclusive"
    else:
        verdict = "supported" if sides["with"] == sides["without"] else "not supported"
    agree = []
    fc_mean = {k: _acc(p[p["is_full"]]).mean() for k, p in (("without", without), ("with", with_d))}
    cells_w = with_d[with_d["construction"].isin(STRUCTURED) & ~with_d["is_full"]]
    cells_o = without[without["construction"].isin(STRUCTURED) & ~without["is_full"]]
    mean_o = cells_o.groupby(["construction", "k_in", "k_out"])["test_accuracy"].mean()
    for key, acc in cells_w.groupby(["construction", "k_in", "k_out"])["test_accuracy"].mean().items():
        if key in mean_o.index:
            agree.append(np.sign(acc - fc_mean["with"]) == np.sign(mean_o[key] - fc_mean["without"]))
    rule = (f"same class with and without dropout (each difference's interval above or below "
            f"{-C2_TOLERANCE * 100:g} pt)")
    return _result("C4", check_c4, verdict, est["with"], threshold=-C2_TOLERANCE, unit="accuracy difference", rule=rule,
                   n_runs=len(with_d) + len(without), numbers={
                       "hidden": int(h), "dropout": [float(setting[0]), float(setting[1])],
                       "without_dropout_minus_fc": _est(est["without"]), "with_dropout_minus_fc": _est(est["with"]),
                       "class_without": sides["without"], "class_with": sides["with"],
                       "cells_compared": len(agree),
                       "sign_agreement": _f(float(np.mean(agree))) if agree else None})


# -- C5 -----------------------------------------------------------------------------------------

def check_c5(runs: pd.DataFrame, rng: np.random.Generator) -> ClaimResult:
    """The deep network 784-500-300-10 with about 30% of the connections beats fully connected (the paper: +0.15 percentage point, Section 4.4).

    Networks with two or more hidden layers (the architecture with most runs), no dropout:
    mean accuracy of regular_rotating and fibonacci_rotating runs with total density between 20%
    and 40% minus the fully connected mean of the same architecture. Supported when the 95%
    interval lies above 0, not supported when below 0, inconclusive otherwise.
    """
    deep = runs[runs["n_hidden_layers"].ge(2) & ~runs["has_dropout"]]
    if deep.empty or "hidden" not in deep:
        return _missing("C5", check_c5, "no runs with two or more hidden layers (without dropout)")
    arch = deep["hidden"].astype(str).value_counts().index[0]
    rows = deep[deep["hidden"].astype(str).eq(arch)]
    fc = rows[rows["is_full"]]
    s = rows[rows["construction"].isin(STRUCTURED) & ~rows["is_full"] & _density(rows).between(*C5_BAND)]
    if fc.empty or s.empty:
        present = sorted(set(np.round(_density(rows[~rows["is_full"]]).dropna(), 3)))
        return _missing("C5", check_c5, f"architecture {arch} needs fully connected runs and regular/Fibonacci "
                                        f"runs at total density 20-40% (sparse densities present: {present})")
    est = stats.diff_ci(_acc(s), _acc(fc), rng)
    return _result("C5", check_c5, stats.verdict_above(est, 0.0), est, threshold=0.0, unit="accuracy difference",
                   n_runs=len(s) + len(fc), numbers={
                       "hidden": arch, "density_mean": float(_density(s).mean()),
                       "accuracy_sparse": float(_acc(s).mean()), "accuracy_fully_connected": float(_acc(fc).mean()),
                       "paper_gain": C5_PAPER_GAIN, "n_sparse": len(s), "n_fully_connected": len(fc)})


# -- C6 -----------------------------------------------------------------------------------------

def check_c6(runs: pd.DataFrame, rng: np.random.Generator) -> ClaimResult:
    """Accuracy is highly correlated with algebraic connectivity (Section 4.5, Figure 5); we test that it correlates with it more than with density.

    Sparse one-hidden-layer runs without dropout at the Figure 2 hidden size. Algebraic
    connectivity (Fiedler value of the whole network graph; the input layer's when the network
    value is missing) and total density are each rank-correlated (Spearman) with accuracy.
    Supported when the 95% interval of rho(connectivity) - rho(density), runs resampled jointly,
    lies above 0; not supported when it lies below 0; inconclusive otherwise.
    """
    h = figure2_hidden(runs)
    if h is None:
        return _missing("C6", check_c6, "no one-hidden-layer runs without dropout")
    rows = _no_dropout_at(runs, h)
    rows = rows[~rows["is_full"]]
    column = "alg_conn_net" if rows["alg_conn_net"].notna().sum() >= 3 else "alg_conn_in"
    rows = rows[rows[column].notna() & _density(rows).notna()]
    if len(rows) < 4:
        return _missing("C6", check_c6, f"fewer than 4 sparse runs at hidden {h} with algebraic connectivity")
    conn = rows[column].to_numpy(float)
    dens = _density(rows).to_numpy(float)
    acc = _acc(rows)
    est = stats.spearman_ci(conn, acc, rng, minus=(dens, acc))
    e_c = stats.spearman_ci(conn, acc, rng)
    e_d = stats.spearman_ci(dens, acc, rng)
    return _result("C6", check_c6, stats.verdict_above(est, 0.0), est, threshold=0.0,
                   unit="difference of Spearman rho", n_runs=len(rows), numbers={
                       "hidden": int(h), "connectivity_column": column,
                       "rho_connectivity_accuracy": _est(e_c), "rho_density_accuracy": _est(e_d)})


# -- C7 -----------------------------------------------------------------------------------------

def _within(rows: pd.DataFrame, by: str, x: str, y: str, min_levels: int) -> list[np.ndarray]:
    groups = []
    for _, g in rows.groupby(by):
        if g[x].nunique() >= min_levels and len(g) >= 3:
            groups.append(g.index.to_numpy())
    return groups


def check_c7(runs: pd.DataFrame, rng: np.random.Generator) -> ClaimResult:
    """The maximum, minimum and standard deviation of the connected weights fall as degree and hidden size grow (Section 4.6, Figure 6).

    One-hidden-layer runs without dropout, every construction, first (input) layer's connected
    weights after training. Four Spearman correlations: w0_max and w0_std against the input
    degree (within each hidden size, averaged weighting by runs) and against the hidden size
    (within each input degree present at two or more hidden sizes). Supported when all four 95%
    intervals (runs resampled within groups) lie below 0, not supported when any lies above 0,
    inconclusive otherwise. The minimum's magnitude (-w0_min) is reported alongside.
    """
    rows = single_layer(runs, dropout=False)
    rows = rows[rows["w0_max"].notna() & rows["w0_std"].notna()].reset_index(drop=True)
    if len(rows) < 3:
        return _missing("C7", check_c7, "fewer than 3 one-hidden-layer runs with weight statistics")
    rows = rows.assign(w0_min_magnitude=-rows["w0_min"])
    parts, verdicts, headline = {}, [], None
    for x, by, label in (("k_in", "hidden1", "degree"), ("hidden1", "k_in", "hidden_size")):
        groups = _within(rows, by, x, "w0_max", 3 if x == "k_in" else 2)
        for y in ("w0_max", "w0_std", "w0_min_magnitude"):
            key = f"rho_{y}_vs_{label}"
            if not groups:
                parts[key] = None
                if y != "w0_min_magnitude":
                    verdicts.append("inconclusive")
                continue
            e = stats.grouped_spearman_ci(groups, rows[x], rows[y], rng)
            parts[key] = _est(e)
            if y != "w0_min_magnitude":
                verdicts.append(stats.verdict_below(e, 0.0))
                if headline is None or (np.isfinite(e.value) and e.value > headline.value):
                    headline = e
    return _result("C7", check_c7, stats.combine_all(verdicts), headline, threshold=0.0,
                   unit="Spearman rho (weakest of four)", n_runs=len(rows), numbers=parts,
                   notes=[] if headline else ["no group varies degree or hidden size"])


# -- C8 -----------------------------------------------------------------------------------------

def check_c8(runs_all_backends: pd.DataFrame, rng: np.random.Generator) -> ClaimResult:
    """Sparse networks train in shorter time than fully connected ones (Section 5).

    Per backend, on the architecture with most runs: mean seconds per epoch of sparse runs with
    total density at most 50%, divided by the fully connected mean (on the same backend; on all
    backends when that backend has no fully connected run). A backend supports the claim when
    the 95% interval of the ratio lies below 1 and contradicts it when it lies above 1. Supported
    when at least one backend supports it, not supported when every backend contradicts it,
    inconclusive otherwise. The headline is the backend with the lowest ratio. Runs trained in a
    population (stacked networks) are left out: their time is shared among the members. When the
    store holds one-network-at-a-time epoch timings (table ``timings``, measured by ``sparsetopo
    reproduce`` after the sweep; :mod:`sparsetopo.sweep.timing`), they are among the rows, each
    with the backend it actually ran on.
    """
    rows = runs_all_backends[runs_all_backends["seconds_per_epoch"].notna()]
    if "trained_with" in rows:
        population = rows["trained_with"].eq("population")
        if population.all() and len(rows):
            return _missing("C8", check_c8, "every run was trained in a population (networks of one shape "
                                            "stacked), whose seconds are the population's time shared among its "
                                            "members: no network's own training time was measured")
        rows = rows[~population]
    if rows.empty or "hidden" not in rows:
        return _missing("C8", check_c8, "no run records its seconds per epoch")
    arch = rows["hidden"].astype(str).value_counts().index[0]
    rows = rows[rows["hidden"].astype(str).eq(arch) & ~rows["has_dropout"]]
    fc_all = rows[rows["is_full"]]
    if fc_all.empty:
        return _missing("C8", check_c8, f"no fully connected run for hidden {arch}")
    per, notes = {}, []
    for backend, part in rows.groupby(rows["backend"].fillna("unknown")):
        sparse = part[~part["is_full"] & _density(part).le(C8_MAX_DENSITY)]
        if sparse.empty:
            continue
        fc = part[part["is_full"]]
        if fc.empty:
            fc = fc_all
            notes.append(f"backend {backend!r} has no fully connected run: compared with all backends' ones")
        per[backend] = stats.ratio_ci(sparse["seconds_per_epoch"], fc["seconds_per_epoch"], rng)
    if not per:
        return _missing("C8", check_c8, f"no sparse run with density <= 50% for hidden {arch}")
    verdicts = [stats.verdict_below(e, C8_RATIO) for e in per.values()]
    if "supported" in verdicts:
        verdict = "supported"
    elif all(v == "not supported" for v in verdicts):
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    best = min(per, key=lambda b: per[b].value)
    return _result("C8", check_c8, verdict, per[best], threshold=C8_RATIO, unit="time ratio sparse / fully connected",
                   n_runs=len(rows), notes=notes, numbers={
                       "hidden": arch, "best_backend": best,
                       **{f"ratio_{b}": _est(e) for b, e in per.items()}})


CHECKS: dict[str, Callable[[pd.DataFrame, np.random.Generator], ClaimResult]] = {
    "C1": check_c1, "C2": check_c2, "C3": check_c3, "C4": check_c4,
    "C5": check_c5, "C6": check_c6, "C7": check_c7, "C8": check_c8,
}


def check_all(runs: pd.DataFrame, runs_all_backends: pd.DataFrame | None = None, seed: int = 0) -> list[ClaimResult]:
    """Every claim, C1..C8, each with its own Generator derived from ``seed`` and its id."""
    out = []
    for cid, check in CHECKS.items():
        data = runs_all_backends if (cid == "C8" and runs_all_backends is not None) else runs
        out.append(check(data, stats.make_rng(seed, cid)))
    return out
