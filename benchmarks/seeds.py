"""Aggregating a benchmark's per-seed results (mean ± sample std, table cells) and writing
its results page."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path


def mean_std(values: Sequence[float | None]) -> tuple[float, float] | None:
    """(mean, sample std) of the values that exist; std 0 for one value; None for none."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else 0.0


def aggregate(
    per_seed: Sequence[dict[str, dict[str, float | None]]], keys: Sequence[str]
) -> dict[str, dict[str, tuple[float, float] | None]]:
    """{model: {metric: (mean, std)}} over seeds, for the models of the first seed."""
    return {
        name: {key: mean_std([rows[name].get(key) for rows in per_seed]) for key in keys}
        for name in per_seed[0]
    }


def cell(value: tuple[float, float] | None, fmt: str = ".4f") -> str:
    """``mean ± std`` in ``fmt``, or ``n/a``."""
    if value is None:
        return "n/a"
    return f"{format(value[0], fmt)} ± {format(value[1], fmt)}"


def write_page(doc: Path, record: dict, markdown: Callable[[dict], str]) -> None:
    """Write ``doc``.json (the record) and ``doc``.md (its page), and print the page."""
    page = markdown(record)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.with_suffix(".json").write_text(json.dumps(record, indent=2))
    doc.with_suffix(".md").write_text(page)
    print(page)
