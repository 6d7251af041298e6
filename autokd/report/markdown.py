"""report.md: the same sections as report.html, as static Markdown tables and sentences.

Why: a Markdown report reads in a terminal, a pull request or a notebook, where the interactive
HTML does not; its figure is the pareto.png written next to it.
"""

from __future__ import annotations

from typing import Any

from autokd.report.format import (
    CLAIM_COLUMNS,
    LATENCY_COLUMNS,
    REASON_COLUMNS,
    RECIPE_COLUMNS,
    Column,
    fmt,
    front_columns,
    importance_columns,
    importance_rows,
    kd_columns,
    teacher_columns,
    with_lr,
)
from autokd.report.text import (
    NO_BASELINE,
    hypervolume_text,
    importance_text,
    kd_gain_text,
    latency_text,
    left_off_text,
    selection_text,
    summary_rows,
)

__all__ = ["md_table", "render_markdown"]


def md_table(rows: list[dict[str, Any]], cols: list[Column]) -> str:
    """A Markdown table; ``|`` inside a cell becomes ``/`` so it cannot split the row."""
    if not rows:
        return "_none_\n"
    head = "| " + " | ".join(h for h, _, _ in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(fmt(r.get(k), kind).replace("|", "/") for _, k, kind in cols)
            + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"


def render_markdown(data: dict[str, Any]) -> str:
    """report.md: the same sections as the HTML report, static."""
    out = [f"# autokd report: {data['study']}\n", f"_generated {data['generated']}_\n"]
    out += [f"- **{k}**: {v}" for k, v in summary_rows(data)]
    out += ["\n## Teacher\n", md_table([data["teacher"]], teacher_columns(data["teacher"]))]
    out += ["## Pareto front\n", "![Pareto front](pareto.png)\n"]
    if left_off_text(data.get("usefulness")):
        out += [f"_{left_off_text(data.get('usefulness'))}_\n"]
    out += [md_table(with_lr(data["front"]), front_columns(data["front"], data.get("metric")))]
    if data.get("chains"):
        out += ["\n### Teacher-assistant chains\n", *[f"- {line}" for line in data["chains"]]]
    out += ["\n### Recipes of the front\n", md_table(data["front"], RECIPE_COLUMNS)]
    if data.get("per_class"):
        pc = data["per_class"]
        out += [f"\n### Per-class accuracy ({pc['split']})\n", md_table(pc["rows"], pc["columns"])]
    out += ["\n## Retention vs compression: the article's claims, measured\n",
            md_table(data["claim"], CLAIM_COLUMNS)]
    out += _md_sections(data)
    return "\n".join(out) + "\n"


def _md_sections(data: dict[str, Any]) -> list[str]:
    """The analyses after the claim table, in the order report.html shows them."""
    out = ["\n## Selection: validation vs test\n", selection_text(data["selection"]) + "\n"]
    out += ["\n## Convergence\n", hypervolume_text(data["hypervolume"], data.get("hypervolume_scale")) + "\n"]
    imp = data["importances"]
    out += ["\n## Hyperparameter importances (fANOVA)\n",
            importance_text(imp) + "\n", md_table(importance_rows(imp), importance_columns(imp))]
    out += ["\n## KD gain over training from scratch\n",
            *([kd_gain_text(data["kd_gain"]) + "\n",
               md_table(data["kd_gain"], kd_columns(data["kd_gain"]))]
              if data["kd_gain"] else [NO_BASELINE + "\n"])]
    if data["latency_prediction"]:
        lp = data["latency_prediction"]
        out += ["\n## Predicted vs measured latency\n", latency_text(lp) + "\n",
                md_table(lp["rows"], LATENCY_COLUMNS)]
    out += ["\n## Failed, pruned and infeasible trials\n"]
    for title, key in (("Failed", "failures"), ("Pruned", "pruned"), ("Infeasible", "infeasible")):
        out += [f"\n### {title}\n", md_table(data[key], REASON_COLUMNS)]
    return out
