"""Print the measured table of docs/results.md's section "The paper's future work: CNN and LSTM".

Reads the ``claims.json`` that ``sparsetopo reproduce --preset cnn`` and ``--preset recurrent``
wrote and prints claims F1-F5 as one Markdown table (value and interval in accuracy points,
Spearman's rho for F5), one row per claim and report::

    python examples/future_table.py results/cnn/claims.json results/recurrent/claims.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def cell(value, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:+.2f} pt" if unit == "accuracy" else f"{value:+.2f}"


def rows(path: Path) -> list[str]:
    out = []
    for claim in json.loads(path.read_text(encoding="utf-8")):
        if not claim["id"].startswith("F"):
            continue
        unit = claim.get("unit") or ""
        low, high = cell(claim["ci_low"], unit), cell(claim["ci_high"], unit)
        interval = "n/a" if "n/a" in (low, high) else f"[{low.replace(' pt', '')}, {high.replace(' pt', '')}]"
        out.append(f"| {claim['id']} | {claim['statement']} | {cell(claim['value'], unit)} | {interval} | "
                   f"{claim['n_runs']} | **{claim['verdict']}** |")
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
