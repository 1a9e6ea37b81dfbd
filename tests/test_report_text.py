"""What the report's text says: departures from what runs requested, no reST markup, and one
format for every interval."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from sparsetopo.report import make_report, protocol, results
from sparsetopo.report.formats import code_html, code_plain, interval, number, plain_markup

sys.path.insert(0, str(Path(__file__).parent))
from test_report import make_runs, write_store  # noqa: E402

RAN = ("fused-population/sparse,masked", "population/masked", "train/sparse")


def runs_requesting_auto():
    """Runs that all requested ``auto``, computed by three engines; the last one asked for masked."""
    frame = make_runs(hidden=(40,), constructions=("regular_rotating", "random_edge"), k_in=(2, 12), k_out=(10,),
                      seeds=(0, 1), dropout=False, deep=False)
    frame["requested_backend"] = "auto"
    frame["backend"] = [RAN[i % len(RAN)] for i in range(len(frame))]
    frame.loc[frame.index[-1], "requested_backend"] = "masked"
    return frame


# -- departures ------------------------------------------------------------------------------------

def test_backend_departs_only_where_a_run_requested_another():
    frame = runs_requesting_auto()
    rows = {r["field"]: r for r in protocol.departures(results.normalise(frame))}
    assert rows["backend"]["paper"] == "auto"
    assert rows["backend"]["departing_runs"] == 1
    assert rows["backend"]["store"] == f"auto ({len(frame) - 1} runs); masked (1 runs)"


def test_the_backends_that_ran_are_listed_apart_one_count_each():
    frame = runs_requesting_auto()
    grid = dict(protocol.grid_summary(results.normalise(frame)))
    ran = next(v for k, v in grid.items() if k.startswith("backends that ran"))
    items = ran.split(protocol.SEPARATOR)
    expected = frame["backend"].value_counts()
    assert sorted(items) == sorted(f"{b.replace(',', ' + ')} ({n} runs)" for b, n in expected.items())
    assert not any("," in item for item in items), items   # a run's per-layer engines are joined by +
    assert grid["backends requested"] == f"auto ({len(frame) - 1} runs); masked (1 runs)"


def test_stores_without_a_requested_column_compare_their_backend():
    """Stores written before the engine was recorded kept the requested backend in ``backend``."""
    frame = runs_requesting_auto().drop(columns="requested_backend")
    frame["backend"] = "masked"
    rows = {r["field"]: r for r in protocol.departures(results.normalise(frame))}
    assert rows["backend"]["departing_runs"] == len(frame)


# -- markup and intervals in the documents -----------------------------------------------------------

ROLE_OR_LITERAL = re.compile(r"``|:[a-z]+:`|:mod:|:func:|:class:|:meth:|:data:")


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    frame = make_runs(hidden=(40,), constructions=("regular_rotating", "fibonacci_rotating", "random_edge"),
                      k_in=(2, 4, 12, 20), k_out=(3, 10), seeds=(0, 1), deep=True, backends=("masked", "sparse"))
    write_store(frame, folder / "sweep.sqlite")
    summary = make_report(folder / "sweep.sqlite", folder / "out", seed=0)
    return summary, (folder / "out" / "report.md").read_text(), (folder / "out" / "report.html").read_text()


def test_no_rest_markup_reaches_the_documents(documents):
    _, md, page = documents
    for name, text in (("report.md", md), ("report.html", page)):
        found = ROLE_OR_LITERAL.findall(text)
        assert not found, f"{name} holds reST markup: {sorted(set(found))}"


def test_code_in_claim_explanations_is_rendered(documents):
    summary, md, page = documents
    c8 = next(c for c in summary.claims if c.id == "C8")
    assert "`timings`" in c8.operationalisation and "`sparsetopo.sweep.timing`" in c8.operationalisation
    assert "table timings, measured by sparsetopo reproduce" in " ".join(md.split())
    assert "`" not in md, "report.md writes code names as plain words"
    assert "<code>timings</code>" in page and "<code>sparsetopo reproduce</code>" in page
    assert "`" not in re.sub(r"<pre>.*?</pre>", "", page, flags=re.S)


def test_every_interval_in_the_documents_has_one_format(documents):
    summary, md, page = documents
    pairs = re.findall(r"\[([^\[\]]*?), ([^\[\]]*?)\]", md + page)
    numeric = [(a, b) for a, b in pairs if re.fullmatch(r"[+-]?[\d.]+( pt)?", a)]
    assert len(numeric) >= len([c for c in summary.claims if c.ci_low is not None])
    points, plain = re.compile(r"[+-]\d+\.\d\d"), re.compile(r"-?\d+\.\d\d\d")
    for a, b in numeric:
        assert (points.fullmatch(a) and points.fullmatch(b)) or (plain.fullmatch(a) and plain.fullmatch(b)), (a, b)
    for c in summary.claims:
        if c.ci_low is not None:
            assert interval(c.ci_low, c.ci_high, c.unit) in md


# -- the formatters ------------------------------------------------------------------------------------

def test_numbers_and_intervals_are_written_one_way():
    assert interval(-1.0, 0.14321) == "[-1.000, 0.143]"
    assert interval(0.3, 0.4632) == "[0.300, 0.463]"
    assert interval(0.003, 0.00461, "accuracy difference") == "[+0.30, +0.46]"
    assert interval(-0.02, 0.0, "accuracy spread") == "[-2.00, +0.00]"
    assert interval(None, 0.2) == "n/a" and interval(0.1, float("nan")) == "n/a"
    assert number(np.float64(2.5)) == "2.500" and number(None) == "n/a"


def test_rest_markup_becomes_markdown_code():
    assert plain_markup("table ``timings``, by ``sparsetopo reproduce``") == "table `timings`, by `sparsetopo reproduce`"
    assert plain_markup("see :mod:`sparsetopo.sweep.timing` and :func:`~a.b.make`") == \
        "see `sparsetopo.sweep.timing` and `make`"
    assert plain_markup(":py:class:`the store <sparsetopo.sweep.SweepStore>`") == "`the store`"
    assert plain_markup("by ``sparsetopo\n    reproduce``") == "by `sparsetopo\n    reproduce`"
    assert plain_markup("plain text, 2 < 3") == "plain text, 2 < 3"
    assert code_plain("table `timings`, by `sparsetopo reproduce`") == "table timings, by sparsetopo reproduce"
    assert code_html("a < `b`") == "a &lt; <code>b</code>"
