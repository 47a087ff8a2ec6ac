"""The celljepa data contract: column names, token grammar, provenance keys, and helpers on them."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

import numpy as np

# Contract columns in ``adata.obs``.
PERTURBATION_ID = "perturbation_id"
IS_CONTROL = "is_control"
CONTEXT_ID = "context_id"
PERTURBATION_TOKENS = "perturbation_tokens"
DOSE = "dose"
TIME_HOURS = "time_hours"
REQUIRED_OBS = (PERTURBATION_ID, IS_CONTROL, CONTEXT_ID, PERTURBATION_TOKENS, DOSE, TIME_HOURS)
OPTIONAL_OBS = ("cell_type", "batch")

# Provenance keys in ``adata.uns``.
PROVENANCE_KEYS = ("dataset_id", "preprocess_name", "preprocess_version", "created_at", "source", "feature_set")

# Tokens: ``kind:name`` joined by ``|`` in sorted order; controls carry the single token ``control:CTRL``.
CONTROL_ID = "control"
CONTROL_TOKEN = "control:CTRL"
TOKEN_SEP = "|"
COMBO_SEP = "+"  # separator of the names inside a perturbation_id
TOKEN_KINDS = ("gene", "drug", "cytokine", "compound", "other")
COUNTS_LAYER = "counts"

PREPROCESS_NAME = "library_size_log1p"
PREPROCESS_VERSION = "lognorm-v1"
DEFAULT_TARGET_SUM = 1e4
DEFAULT_MIN_CELLS = 10

# the OOD splits (celljepa.splits); split files, run folders and reports are named by them.
# S1 holds out conditions (perturbation ids): a held-out combination may contain genes seen in training; the
# name is kept because stored results use it. S1g holds out perturbation tokens (genes): no token of a test
# condition occurs in any training or validation condition.
S1 = "S1_unseen_perturbation"
S1G = "S1g_unseen_genes"
S2 = "S2_unseen_context"
S3 = "S3_unseen_combo"
SPLIT_NAMES = (S1, S1G, S2, S3)

# Labels that mean "control" in the layouts we read; used to catch a control label left among perturbations.
KNOWN_CONTROL_LABELS = frozenset(
    {"control", "ctrl", "non-targeting", "nontargeting", "non_targeting", "nt", "dmso", "vehicle", "unperturbed"}
)

_TOKEN_RE = re.compile(r"^[a-z][a-z0-9_]*:[^|:\s][^|]*$")


def make_token(kind: str, name: str) -> str:
    """Return the token ``kind:name`` (e.g. ``gene:STAT1``); ``name`` is stripped of whitespace."""
    name = str(name).strip()
    if not name:
        raise ValueError("a perturbation name is empty")
    if TOKEN_SEP in name:
        raise ValueError(f"perturbation name {name!r} contains the token separator {TOKEN_SEP!r}")
    return f"{kind}:{name}"


def join_tokens(tokens: Iterable[str]) -> str:
    """Join tokens in sorted, de-duplicated order, so ``B+A`` and ``A+B`` give the same string."""
    return TOKEN_SEP.join(sorted(set(tokens)))


def split_tokens(tokens: str) -> list[str]:
    """Split a ``perturbation_tokens`` string back into its tokens."""
    return [t for t in str(tokens).split(TOKEN_SEP) if t]


def token_name(token: str) -> str:
    """``gene:STAT1`` -> ``STAT1``."""
    return token.split(":", 1)[1]


def token_kind(token: str) -> str:
    """``gene:STAT1`` -> ``gene``."""
    return token.split(":", 1)[0]


def is_valid_token(token: str) -> bool:
    """Whether ``token`` follows the ``kind:name`` grammar."""
    return bool(_TOKEN_RE.match(token))


def perturbation_id_from_tokens(tokens: Sequence[str]) -> str:
    """Canonical ``perturbation_id``: sorted names joined by ``+`` (``CEBPE+KLF1``), ``control`` for controls."""
    if list(tokens) == [CONTROL_TOKEN]:
        return CONTROL_ID
    return COMBO_SEP.join(sorted(token_name(t) for t in set(tokens)))


def n_tokens(tokens: str) -> int:
    """Number of perturbation tokens (0 for controls)."""
    parts = split_tokens(tokens)
    return 0 if parts == [CONTROL_TOKEN] else len(parts)


def feature_set_record(var_names: Sequence[str], name: str = "native", version: str = "1") -> dict:
    """Describe the gene list of a dataset: name, version, number of genes and a SHA-256 of the names."""
    joined = "\n".join(map(str, var_names)).encode("utf-8")
    return {
        "name": name,
        "version": version,
        "n_genes": int(len(var_names)),
        "sha256": hashlib.sha256(joined).hexdigest(),
    }


def parse_number(value) -> float:
    """Parse a dose/time value to float; ``"1+1"`` with equal parts gives 1.0; anything else NaN."""
    if value is None:
        return float("nan")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if not text or text.lower() in {"nan", "na", "none", "null"}:
        return float("nan")
    parts = text.split(COMBO_SEP)
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        return float("nan")
    return numbers[0] if all(n == numbers[0] for n in numbers) else float("nan")
