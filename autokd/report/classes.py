"""Per-class accuracy of the teacher and the front's students, and the selection metric's name.

Why: on imbalanced data one number hides which classes a small student gave up on; the report
shows each class's accuracy (its recall, on the test split: selection never saw it) for every
front member beside the teacher, with the data's class names where the data names them.
"""

from __future__ import annotations

from typing import Any

from autokd.report.format import Column

__all__ = ["class_names", "per_class_section"]


def class_names(dataset: dict[str, Any], count: int) -> list[str]:
    """The data's class names (``class_names`` in its description), else ``0 .. K-1``."""
    names = dataset.get("class_names")
    if isinstance(names, list) and len(names) == count:
        return [str(n) for n in names]
    return [str(i) for i in range(count)]


def per_class_section(front: list[dict[str, Any]], teacher: dict[str, Any],
                      dataset: dict[str, Any], split: str = "test") -> dict[str, Any] | None:
    """One row per class, one column per model; None when no front member recorded them
    (studies from before per-class metrics)."""
    key = f"{split}_per_class_accuracy"
    members = [r for r in front if isinstance(r.get(key), list)]
    if not members:
        return None
    count = len(members[0][key])
    models: list[tuple[str, list[Any]]] = []
    if isinstance(teacher.get(key), list) and len(teacher[key]) == count:
        models.append(("teacher", teacher[key]))
    models += [(f"#{r['trial']}", r[key]) for r in members if len(r[key]) == count]
    rows = [{"class": name, **{label: values[i] for label, values in models}}
            for i, name in enumerate(class_names(dataset, count))]
    columns: list[Column] = [("class", "class", "text")]
    columns += [(label, label, "pct") for label, _ in models]
    return {"split": split, "rows": rows, "columns": columns}

