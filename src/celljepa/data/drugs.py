"""Drug metadata (targets, pathways) as fixed features of ``drug:`` tokens, so unseen drugs can generalise."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import InputError

__all__ = ["DrugFeatures", "normalize_drug_name", "read_drug_metadata"]

_PAREN = re.compile(r"\s*\(.*?\)\s*")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalize_drug_name(name: str) -> str:
    """Case-, space- and punctuation-free drug name; a parenthesised alias is dropped.

    >>> normalize_drug_name("Veliparib (ABT-888)")
    'veliparib'
    >>> normalize_drug_name("ABT-737")
    'abt737'
    """
    return _NON_ALNUM.sub("", _PAREN.sub(" ", str(name)).lower())


@dataclass(frozen=True)
class DrugFeatures:
    """A multi-hot table: one row per drug (normalised name), one column per target / pathway value."""

    names: tuple[str, ...]
    features: tuple[str, ...]
    matrix: np.ndarray
    source: str = ""

    def vector(self, drug: str) -> np.ndarray | None:
        """The feature vector of ``drug`` (any spelling :func:`normalize_drug_name` maps to a row), or None."""
        key = normalize_drug_name(drug)
        try:
            return self.matrix[self.names.index(key)]
        except ValueError:
            return None

    @property
    def n_features(self) -> int:
        return len(self.features)


def read_drug_metadata(
    path: str | os.PathLike, *, name_column: str | None = None, feature_columns: list[str] | None = None
) -> DrugFeatures:
    """Read drug targets / pathways into multi-hot features of ``drug:`` tokens.

    Two layouts are recognised without arguments: the Selleck catalog table of sci-Plex
    (``drugProperties_short.tsv``: ``Product.Name``, ``Target``, ``Pathway``) and chemCPA's headerless
    ``name,SMILES,pathway`` CSV. Any other table works with ``name_column`` and ``feature_columns``.
    Values separated by ``,`` or ``;`` inside a cell count as several features.

    Examples
    --------
    >>> feats = read_drug_metadata("../shared/data/drug_metadata/sciplex/drugProperties_short.tsv")  # doctest: +SKIP
    >>> feats.vector("Veliparib").sum()  # doctest: +SKIP
    2.0
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"drug metadata file {path} does not exist.")
    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    table = pd.read_csv(path, sep=sep, dtype=str)
    if name_column is None and "Product.Name" in table.columns:
        name_column, feature_columns = "Product.Name", feature_columns or ["Target", "Pathway"]
    elif name_column is None and table.shape[1] == 3 and sep == ",":
        table = pd.read_csv(path, sep=",", header=None, names=["name", "smiles", "pathway"], dtype=str)
        name_column, feature_columns = "name", feature_columns or ["pathway"]
    if name_column is None or name_column not in table.columns:
        raise InputError(
            f"{path}: no drug name column (columns {list(table.columns)[:8]}). Fix: pass "
            "name_column= and feature_columns=."
        )
    feature_columns = list(feature_columns or [c for c in table.columns if c != name_column])
    missing = [c for c in feature_columns if c not in table.columns]
    if missing:
        raise InputError(f"{path}: feature column(s) {missing} not found; columns are {list(table.columns)}.")
    rows: dict[str, set[str]] = {}
    for _, r in table.iterrows():
        if pd.isna(r[name_column]):
            continue
        key = normalize_drug_name(r[name_column])
        if not key:
            continue
        values = rows.setdefault(key, set())
        for col in feature_columns:
            if pd.isna(r[col]):
                continue
            for v in re.split(r"[,;]", str(r[col])):
                if v.strip():
                    values.add(f"{col}={v.strip()}")
    names = tuple(sorted(rows))
    features = tuple(sorted({v for vs in rows.values() for v in vs}))
    index = {f: i for i, f in enumerate(features)}
    matrix = np.zeros((len(names), len(features)), dtype=np.float32)
    for i, n in enumerate(names):
        for v in rows[n]:
            matrix[i, index[v]] = 1.0
    return DrugFeatures(names=names, features=features, matrix=matrix, source=str(path))
