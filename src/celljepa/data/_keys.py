"""Look-ups of user-given keys in AnnData with close-match suggestions."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from .._errors import InputError


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choices, or an empty string."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(name), choices, n=n, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        if str(name).lower() in lowered:
            close = [lowered[str(name).lower()]]
    if not close:
        return ""
    return " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


def require_obs_key(obs_columns: Iterable[str], key: str, *, argument: str, source: str = "adata") -> str:
    """Raise :class:`InputError` naming ``argument`` when ``key`` is not an obs column."""
    columns = list(map(str, obs_columns))
    if key not in columns:
        shown = ", ".join(f"'{c}'" for c in columns[:25]) + (" ..." if len(columns) > 25 else "")
        raise InputError(
            f"{argument}='{key}' is not a column of {source}.obs.{suggest(key, columns)} "
            f"Available columns: {shown or '(none)'}."
        )
    return key
