"""Checks that a figure reads well: titles, axis labels and legends present, no raw keys shown."""

from __future__ import annotations

import re

from celljepa.bench.pooling import METRICS

#: Keys that must never reach a title, an axis label or a legend as they are spelled in code.
RAW_KEYS = set(METRICS) | {"edistance_effect", "perturbation_id", "context_id", "min_cells", "is_control"}


def assert_readable(text: str, what: str = "text") -> None:
    """``text`` is non-empty and holds no raw metric or column key."""
    assert text and text.strip(), f"{what} is empty"
    raw = RAW_KEYS & set(re.findall(r"[A-Za-z0-9_]+", text))
    assert not raw, f"{what} {text!r} shows raw key(s) {sorted(raw)}"


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None, f"axes {ax.get_title()!r} has no legend"
    return [t.get_text() for t in legend.get_texts()]
