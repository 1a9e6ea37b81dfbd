"""Writes the report: ``report.html`` (self-contained, figures embedded), ``report.md`` (figures
linked beside it) and ``claims.json``. Pure formatting: every number arrives computed."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from sparsetopo.atomic import atomic_path
from sparsetopo.jsonable import plain
from sparsetopo.report.claims import ClaimResult
from sparsetopo.report.figures import FigureResult
from sparsetopo.report.formats import code_html, code_plain, in_points, interval, number
from sparsetopo.report.frontier import FrontierComparison
from sparsetopo.report.locality import LocalityComparison, connectivity_agreement, locality_table
from sparsetopo.report.recipes import RecipeComparison
from sparsetopo.report.recipes import claims_table as recipes_claims_table
from sparsetopo.report.recipes import null_table as recipes_null_table

VERDICT_COLORS = {"supported": "#d6f5d6", "not supported": "#f8d7d7", "inconclusive": "#fff2cc"}


@dataclass
class ReportContent:
    """Everything the documents show."""

    title: str
    source: str
    generated: str
    claims: list[ClaimResult]
    figures: list[FigureResult]
    notes: list[str] = field(default_factory=list)
    protocol: list[dict] = field(default_factory=list)
    sweep: dict = field(default_factory=dict)
    grid: list[tuple[str, str]] = field(default_factory=list)
    environment: list[tuple[str, str]] = field(default_factory=list)
    recipes: RecipeComparison | None = None   # several training recipes: claims per recipe, random null
    locality: LocalityComparison | None = None  # raster-order and permuted runs: the permutation null
    frontier: FrontierComparison | None = None  # runs on blocks of neurons: accuracy per second, B1-B4


def _pct(x, unit: str) -> str:
    text = number(x, unit)
    return f"{text} pt" if in_points(unit) and text != "n/a" else text


def _interval(c: ClaimResult) -> str:
    return interval(c.ci_low, c.ci_high, c.unit)


def _threshold(c: ClaimResult) -> str:
    """The verdict's rule: its own text when it is not a comparison with one threshold."""
    if c.rule:
        return c.rule
    return "n/a" if c.threshold is None else _pct(c.threshold, c.unit)


def claims_json(claims: list[ClaimResult]) -> str:
    return json.dumps(plain([c.to_dict() for c in claims]), indent=2, allow_nan=False)


def _numbers_text(numbers: dict) -> str:
    return json.dumps(plain(numbers), indent=1, allow_nan=False)


def _sweep_lines(sweep: dict) -> tuple[str, list[str], str]:
    spec = sweep.get("spec") if isinstance(sweep.get("spec"), dict) else {}
    description = spec.get("description") or ""
    name = spec.get("name") or spec.get("source") or ""
    departures = list(spec.get("departures") or [])
    text = sweep.get("spec_text") if isinstance(sweep.get("spec_text"), str) else ""
    return (f"{name}: {description}".strip(": "), departures, text)


# -- HTML ------------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.92em; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }
th { background: #eee; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
.note { color: #7a5200; }
"""


def _h(text) -> str:
    return html.escape(str(text))


def _table_html(header, rows) -> str:
    head = "".join(f"<th>{_h(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(content: ReportContent) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_h(content.title)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>{_h(content.title)}</h1>",
             f"<p>Results store: <code>{_h(content.source)}</code>. Generated {_h(content.generated)}.</p>"]
    if content.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li class='note'>{_h(n)}</li>" for n in content.notes) + "</ul>")
    parts.append("<h2 id='claims'>Claims</h2><p>Every number is computed from the store. Intervals are 95% "
                 "percentile-bootstrap intervals (seeded). A verdict is <em>supported</em> when the interval "
                 "lies wholly on the claim's side of the threshold, <em>not supported</em> when it lies wholly "
                 "on the other side, and <em>inconclusive</em> when it straddles it or there is too little "
                 "data.</p>")
    parts.append("<table class='claims'><tr><th>id</th><th>claim (paper)</th><th>measured</th><th>95% CI</th>"
                 "<th>threshold</th><th>runs</th><th>verdict</th></tr>")
    for c in content.claims:
        color = VERDICT_COLORS.get(c.verdict, "#fff")
        parts.append(f"<tr><td>{_h(c.id)}</td><td>{code_html(c.statement)}</td><td>{_h(_pct(c.value, c.unit))}"
                     f"<br><small>{_h(c.unit)}</small></td><td>{_h(_interval(c))}</td><td>{_h(_threshold(c))}</td>"
                     f"<td>{c.n_runs}</td><td style='background:{color}'><b>{_h(c.verdict)}</b></td></tr>")
    parts.append("</table><h3>How each claim is tested</h3>")
    for c in content.claims:
        parts.append(f"<h4>{_h(c.id)}: {_h(c.verdict)}</h4><p>{code_html(c.operationalisation)}</p>")
        for n in c.notes:
            parts.append(f"<p class='note'>{_h(n)}</p>")
        parts.append(f"<details><summary>numbers</summary><pre>{_h(_numbers_text(c.numbers))}</pre></details>")
    if content.recipes is not None:
        parts += [f"<h2 id='recipes'>{_h(title)}</h2><p>{_h(text)}</p>" + (_table_html(*table) if table[0] else "")
                  for title, text, table in _recipe_sections(content.recipes)]
    if content.locality is not None:
        title, text, table = _locality_section(content.locality)
        parts.append(f"<h2 id='locality'>{_h(title)}</h2><p>{_h(text)}</p>" + (_table_html(*table) if table[0] else ""))
    if content.frontier is not None:
        title, text, table = content.frontier.section()
        parts.append(f"<h2 id='frontier'>{_h(title)}</h2><p>{_h(text)}</p>" + (_table_html(*table) if table[0] else ""))
    parts.append("<h2 id='figures'>Figures</h2>")
    for f in content.figures:
        if f.skipped:
            parts.append(f"<h3>{_h(f.title)}</h3><p class='note'>Skipped: {_h(f.skipped)}</p>")
            continue
        data = base64.b64encode(Path(f.png).read_bytes()).decode("ascii")
        parts.append(f"<figure><h3>{_h(f.title)}</h3><img alt='{_h(f.title)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{_h(f.caption)} (<a href='{_h(Path(f.pdf).name)}'>PDF</a>)</figcaption></figure>")
        for n in f.notes:
            parts.append(f"<p class='note'>{_h(n)}</p>")
    parts.append("<h2 id='protocol'>Sweep and protocol</h2>")
    summary, spec_departures, text = _sweep_lines(content.sweep)
    if summary:
        parts.append(f"<p>{_h(summary)}</p>")
    if spec_departures:
        parts.append("<p>Departures the sweep declares:</p><ul>" +
                     "".join(f"<li>{_h(d)}</li>" for d in spec_departures) + "</ul>")
    parts.append("<p>Each run's protocol compared with the paper's (TrainConfig's defaults):</p>")
    parts.append(_table_html(["field", "meaning", "paper", "this store", "runs departing"],
                             [(r["field"], r["meaning"], r["paper"], r["store"], r["departing_runs"])
                              for r in content.protocol]))
    parts.append("<h3>Grid</h3>" + _table_html(["axis", "values"], content.grid))
    if text:
        parts.append(f"<details><summary>sweep spec (TOML)</summary><pre>{_h(text)}</pre></details>")
    parts.append("<h2 id='environment'>Software and machine</h2>"
                 "<p>Where this report was made (runs may have been trained elsewhere; see the store's "
                 "<code>worker</code> column).</p>" + _table_html(["item", "value"], content.environment))
    parts.append("</body></html>")
    return "\n".join(parts)


# -- Markdown --------------------------------------------------------------------------------------

# Markdown's other code fence: the document holds no backtick at all, so a plain search finds any
# stray reST literal (``x``) or role
FENCE = "~~~"


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table_md(header, rows) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return out + [""]


def render_markdown(content: ReportContent) -> str:
    lines = [f"# {content.title}", "", f"Results store: {content.source}. Generated {content.generated}.", ""]
    if content.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in content.notes] + [""]
    lines += ["## Claims", "",
              "Every number is computed from the store; intervals are 95% percentile-bootstrap intervals "
              "(seeded). Supported: the interval lies wholly on the claim's side of the threshold; not "
              "supported: wholly on the other side; inconclusive: it straddles it or there is too little data.", ""]
    lines += _table_md(["id", "claim (paper)", "measured", "95% CI", "threshold", "runs", "verdict"],
                       [(c.id, code_plain(c.statement), f"{_pct(c.value, c.unit)} ({c.unit})", _interval(c), _threshold(c),
                         c.n_runs, f"**{c.verdict}**") for c in content.claims])
    lines += ["### How each claim is tested", ""]
    for c in content.claims:
        lines += [f"**{c.id}** ({c.verdict}). {code_plain(c.operationalisation)}", ""]
        lines += [f"> {n}" for n in c.notes] + ([""] if c.notes else [])
        lines += [f"{FENCE}json", _numbers_text(c.numbers), FENCE, ""]
    if content.recipes is not None:
        for title, text, table in _recipe_sections(content.recipes):
            lines += [f"## {title}", "", text, ""] + (_table_md(*table) if table[0] else [])
    if content.locality is not None:
        title, text, table = _locality_section(content.locality)
        lines += [f"## {title}", "", text, ""] + (_table_md(*table) if table[0] else [])
    if content.frontier is not None:
        title, text, table = content.frontier.section()
        lines += [f"## {title}", "", text, ""] + (_table_md(*table) if table[0] else [])
    lines += ["## Figures", ""]
    for f in content.figures:
        lines += [f"### {f.title}", ""]
        if f.skipped:
            lines += [f"*Skipped: {f.skipped}*", ""]
            continue
        lines += [f"![{f.title}]({Path(f.png).name})", "", f"{f.caption} ([PDF]({Path(f.pdf).name}))", ""]
        lines += [f"> {n}" for n in f.notes] + ([""] if f.notes else [])
    lines += ["## Sweep and protocol", ""]
    summary, spec_departures, text = _sweep_lines(content.sweep)
    if summary:
        lines += [summary, ""]
    if spec_departures:
        lines += ["Departures the sweep declares:", ""] + [f"- {d}" for d in spec_departures] + [""]
    lines += ["Each run's protocol compared with the paper's (TrainConfig's defaults):", ""]
    lines += _table_md(["field", "meaning", "paper", "this store", "runs departing"],
                       [(r["field"], r["meaning"], r["paper"], r["store"], r["departing_runs"])
                        for r in content.protocol])
    lines += ["### Grid", ""] + _table_md(["axis", "values"], content.grid)
    if text:
        lines += ["<details><summary>sweep spec (TOML)</summary>", "", f"{FENCE}toml", text.rstrip(), FENCE, "",
                  "</details>", ""]
    lines += ["## Software and machine", "", "Where this report was made (runs may have been trained elsewhere).", ""]
    lines += _table_md(["item", "value"], content.environment)
    return "\n".join(lines)


def _recipe_sections(comparison: RecipeComparison) -> list[tuple[str, str, tuple]]:
    """(title, text, (header, rows)) of the per-recipe claims and the random-null tables."""
    return [
        ("Claims per recipe",
         "Every claim checked by the same rule on each recipe's runs alone (cells: verdict, measured value, "
         "95% interval; accuracy in points). A verdict that changes across a row depends on how the networks "
         "were trained, not only on their topology.", recipes_claims_table(comparison)),
        ("Random null",
         "Each sparse construction's mean accuracy minus random_edge's at the same hidden size, input degree "
         "and output degree (one hidden layer, no dropout), in accuracy points with its 95% bootstrap interval "
         "over seeds. Above 0: the construction beats i.i.d. random edges at that density; below: it loses; "
         "across 0: no difference these seeds can show.", recipes_null_table(comparison.null)),
    ]


def _locality_section(null: LocalityComparison) -> tuple[str, str, tuple]:
    """(title, text, (header, rows)) of the permutation-null table."""
    cells, largest = connectivity_agreement(null.table)
    spectra = ("no algebraic connectivity is known for these runs" if cells == 0 else
               f"the mean input-layer algebraic connectivity agrees between the orders in all {cells} cells "
               f"(largest difference {largest:.3g}): the permutation changes the data, not the graphs")
    text = (f"Each sparse construction's mean accuracy minus random_edge's at the same degrees, in accuracy points "
            f"with its 95% bootstrap interval over seeds, once with the input features in their own (raster) order "
            f"and once after one fixed random permutation of them (seed {null.permutation_seed}; the same networks "
            f"and seeds). An advantage that disappears when permuted came from the alignment of the graph with the "
            f"pixel order, not from the graph; one that stays is the graph's. Claim L1: {null.claim.verdict}. "
            f"Checks: {spectra}.")
    return "Permutation null: topology or input locality", text, locality_table(null.table)


def write_documents(content: ReportContent, out_dir) -> dict[str, Path]:
    """Write report.html, report.md and claims.json into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    documents = [("report.html", render_html(content)), ("report.md", render_markdown(content)),
                 ("claims.json", claims_json(content.claims))]
    if content.recipes is not None:
        documents.append(("claims_by_recipe.json",
                          json.dumps(plain(content.recipes.to_dict()), indent=2, allow_nan=False)))
    if content.locality is not None:
        documents.append(("locality_null.json",
                          json.dumps(plain(content.locality.to_dict()), indent=2, allow_nan=False)))
    if content.frontier is not None:
        documents.append(("frontier.json", json.dumps(plain(content.frontier.to_dict()), indent=2, allow_nan=False)))
    for name, text in documents:
        path = out_dir / name
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        paths[name] = path
    return paths
