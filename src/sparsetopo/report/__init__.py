"""Figures and reports: one function per figure, the claims table, HTML/Markdown output.

``make_report(db, out_dir)`` turns a sweep's results store into ``report.html``, ``report.md``
and ``claims.json`` with every figure as PNG and PDF. Modules, one job each:
:mod:`.results` (load the store, derived columns, slices), :mod:`.stats` (seeded bootstrap
intervals), :mod:`.graph` (algebraic connectivity the store lacks), :mod:`.claims` (the paper's
claims C1..C8 and their verdicts), :mod:`.recipes` (the claims per training recipe and each
construction against random edges, for stores holding several recipes), :mod:`.figures` (one
function per figure), :mod:`.protocol`
(departures from the paper's protocol, software and machine), :mod:`.document` (HTML, Markdown,
JSON), :mod:`.formats` (numbers, intervals and code names as the documents write them),
:mod:`.pictures` (a topology's edge matrix), :mod:`.build` (all of it in one call),
:mod:`.reproduce` (a preset sweep, its timings and its report: the whole reproduction).
"""

from sparsetopo.report.build import ReportSummary, make_report
from sparsetopo.report.reproduce import ReproduceSummary, reproduce

__all__ = ["ReportSummary", "ReproduceSummary", "make_report", "reproduce"]
