"""Print the measured table of docs/results.md's section "The paper's future work: CNN and LSTM".

Reads the ``claims.json`` that ``sparsetopo reproduce --preset cnn`` and ``--preset recurrent``
wrote and prints claims F1-F5 as one Markdown table (value and interval in accuracy points,
Spearman's rho for F5, written as the report writes them), one row per claim and report::

    python examples/future_table.py results/cnn/claims.json results/recurrent/claims.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sparsetopo.report.formats import in_points, interval, number


def rows(path: Path) -> list[str]:
    """One table row per claim F1-F5 of a claims.json, numbers written as the report writes them."""
    out = []
    for claim in json.loads(path.read_text(encoding="utf-8")):
        if not claim["id"].startswith("F"):
            continue
        unit = claim.get("unit") or ""
        measured = number(claim["value"], unit) + (" pt" if in_points(unit) else f" ({unit})")
        out.append(f"| {claim['id']} | {claim['statement']} | {measured} | "
                   f"{interval(claim['ci_low'], claim['ci_high'], unit)} | {claim['n_runs']} | "
                   f"**{claim['verdict']}** |")
    return out


def main(paths: list[str]) -> int:
    if not paths:
        print("usage: python examples/future_table.py CLAIMS_JSON [CLAIMS_JSON ...]", file=sys.stderr)
        return 2
    print("| id | claim | measured | 95% CI | runs | verdict |")
    print("|---|---|---|---|---|---|")
    for path in paths:
        for row in rows(Path(path)):
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
