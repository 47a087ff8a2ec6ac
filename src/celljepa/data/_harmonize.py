"""Gene harmonisation: one versioned feature set shared by several datasets.

Datasets measure different genes under different names (Kang 2018: 6,998 symbols; Papalexi 2021: 299;
the GEARS Norman subset: Ensembl IDs with a symbol column). A :class:`FeatureSet` is a named, versioned,
hashed gene list; :func:`map_genes` (``cj.pp.harmonize_genes``) maps a dataset onto it:

* identifiers are cleaned first (:func:`gene_keys`): the symbol column is used when the names are
  Ensembl IDs, version suffixes (``ENSG….12``) and surrounding blanks are dropped, names are compared
  without regard to case (``C1orf112`` = ``C1ORF112``), and an optional alias table maps old symbols to
  current ones;
* genes of the feature set the dataset does not measure are kept as columns flagged
  ``var["absent"]`` (their values are zero and are *not* observations: the masked encoder reads
  nonzeros only, so an absent gene contributes nothing, and it must never count as an expressed zero);
  genes outside the feature set are dropped;
* ``uns["feature_set"]`` records the name, version, strategy, hash and the mapping counts, so a run
  names the exact list it used.

Strategies: ``intersection`` (genes every training dataset measures), ``union_hvg`` (the union of each
training dataset's highly variable genes, scanpy) and ``foundation`` (a stored list shipped with the
package, :func:`load_feature_set`). Lists that depend on data are built by :func:`build_feature_set`
from the training datasets only; a held-out dataset is mapped onto them afterwards.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._errors import CelljepaWarning, InputError
from .._io import write_text_atomic
from ._names import genome_prefix, strip_genome_prefix

__all__ = [
    "FEATURE_SET_STRATEGIES",
    "FeatureSet",
    "build_feature_set",
    "combine_datasets",
    "feature_set_aliases",
    "feature_set_path",
    "gene_keys",
    "gene_presence",
    "list_feature_sets",
    "load_feature_set",
    "map_genes",
]

FEATURE_SET_STRATEGIES = ("intersection", "union_hvg", "foundation")
_ENSEMBL = re.compile(r"^(ENS[A-Z]*G\d{6,})(\.\d+)?$", re.IGNORECASE)
# columns that hold gene symbols when var_names are Ensembl IDs (GEARS/CPA, cellxgene, scanpy readers)
SYMBOL_COLUMNS = ("gene_symbol", "gene_symbols", "feature_name", "gene_name", "symbol", "gene")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def _digest(genes: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(genes).encode()).hexdigest()


@dataclass(frozen=True)
class FeatureSet:
    """A named, versioned gene list (the model's input genes, in order).

    Attributes
    ----------
    name, version
        ``name-vVERSION`` is the id a run records (e.g. ``foundation-v1``).
    strategy
        ``intersection``, ``union_hvg`` or ``foundation``.
    genes
        Gene symbols in model order (unique without regard to case).
    sources
        The datasets (or gene-set files) the list was built from; never a held-out dataset.
    params
        How it was built (e.g. ``n_top_genes``).
    """

    name: str
    version: int
    strategy: str
    genes: tuple[str, ...]
    sources: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise InputError(f"feature set name {self.name!r}: use letters, digits, '.', '_', '+' or '-'.")
        if self.strategy not in FEATURE_SET_STRATEGIES:
            raise InputError(f"feature set strategy must be one of {FEATURE_SET_STRATEGIES}, got {self.strategy!r}.")
        if int(self.version) < 1:
            raise InputError(f"feature set version must be >= 1, got {self.version}.")
        if not self.genes:
            raise InputError(f"feature set {self.name} has no genes.")
        keys = [g.upper() for g in self.genes]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
            raise InputError(f"feature set {self.name} lists genes twice (case-insensitive): {dup}.")

    @property
    def id(self) -> str:
        """``name-vVERSION``."""
        return f"{self.name}-v{self.version}"

    @property
    def sha256(self) -> str:
        """Hash of the gene list (newline-joined, in order)."""
        return _digest(self.genes)

    def info(self) -> dict:
        """What ``uns["feature_set"]`` records (everything but the genes themselves)."""
        return {
            "id": self.id,
            "name": self.name,
            "version": int(self.version),
            "strategy": self.strategy,
            "n_genes": len(self.genes),
            "sha256": self.sha256,
            "sources": list(self.sources),
            "params": dict(self.params),
        }

    def to_text(self) -> str:
        """The file format: ``# key: value`` header lines, then one gene per line."""
        head = [
            f"# celljepa feature set {self.id}",
            f"# name: {self.name}",
            f"# version: {int(self.version)}",
            f"# strategy: {self.strategy}",
            f"# sources: {'; '.join(self.sources)}",
            f"# params: {', '.join(f'{k}={v}' for k, v in sorted(self.params.items()))}",
            f"# n_genes: {len(self.genes)}",
            f"# sha256: {self.sha256}",
        ]
        return "\n".join(head + list(self.genes)) + "\n"

    def write(self, path: str | os.PathLike) -> Path:
        """Write the list (atomically) to ``path``."""
        return write_text_atomic(path, self.to_text())

    @classmethod
    def read(cls, path: str | os.PathLike) -> FeatureSet:
        """Read a file written by :meth:`write`; its recorded hash must match its genes."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"feature set file {path} does not exist. Known lists: {list_feature_sets()}.")
        meta, genes = {}, []
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                key, sep, value = line[1:].partition(":")
                if sep:
                    meta[key.strip()] = value.strip()
                continue
            genes.append(line)
        missing = {"name", "version", "strategy"} - set(meta)
        if missing:
            raise InputError(f"{path} is not a celljepa feature set (no {sorted(missing)} header).")
        params = {}
        for item in filter(None, (p.strip() for p in meta.get("params", "").split(","))):
            k, _, v = item.partition("=")
            params[k] = v
        fs = cls(
            meta["name"],
            int(meta["version"]),
            meta["strategy"],
            tuple(genes),
            tuple(s for s in (x.strip() for x in meta.get("sources", "").split(";")) if s),
            params,
        )
        if meta.get("sha256") and meta["sha256"] != fs.sha256:
            raise InputError(
                f"{path}: the gene list does not match its recorded sha256 (edited by hand?). A "
                "changed list is a new version: write it under a new version number."
            )
        return fs


# --------------------------------------------------------------------------------------------- stored lists
def _stored_dirs() -> list[Path]:
    """``configs/feature_sets`` of a source checkout first, then the copy installed with the package."""
    dirs = [
        Path(__file__).resolve().parents[3] / "configs" / "feature_sets",
        Path(str(resources.files("celljepa") / "feature_sets")),
    ]
    return [d for d in dirs if d.is_dir()]


def list_feature_sets() -> list[str]:
    """Ids of the stored feature sets (``configs/feature_sets/*.txt``, shipped with the package)."""
    return sorted({p.stem for d in _stored_dirs() for p in d.glob("*.txt")})


def feature_set_path(name: str) -> Path:
    """The file of the stored feature set ``name`` (``foundation-v1``)."""
    for d in _stored_dirs():
        if (d / f"{name}.txt").is_file():
            return d / f"{name}.txt"
    raise InputError(
        f"no stored feature set {name!r}; known: {list_feature_sets()}. Fix: give a path to a "
        "feature set file, or build one with cj.pp.build_feature_set."
    )


def feature_set_aliases(fs: FeatureSet) -> Path | None:
    """The alias table a stored feature set names (``params["aliases"]``, beside its file), or ``None``.

    ``genome-v1`` ships NCBI's unambiguous aliases and previous symbols of its genes, so that data
    with older symbols map onto it without an alias file of their own.
    """
    name = fs.params.get("aliases")
    if not name:
        return None
    for d in _stored_dirs():
        if (d / name).is_file():
            return d / name
    raise InputError(
        f"feature set {fs.id} names the alias table {name!r}, which is not installed beside it "
        f"({[str(d) for d in _stored_dirs()]}). Fix: reinstall celljepa, or pass aliases= explicitly."
    )


@functools.lru_cache(maxsize=4)
def _read_alias_file(path: str, size: int, mtime: int) -> dict[str, str]:
    table = pd.read_csv(path, sep=None, engine="python", dtype=str, comment="#")
    if table.shape[1] < 2:
        raise InputError(f"alias table {path} needs two columns (alias, symbol); it has {list(table.columns)}.")
    table = table.dropna(subset=list(table.columns[:2]))
    return {a.strip().upper(): s.strip() for a, s in zip(table.iloc[:, 0], table.iloc[:, 1], strict=True)}


def load_feature_set(name_or_path: str | os.PathLike) -> FeatureSet:
    """A stored feature set by id (``"foundation-v1"``) or a feature set file by path.

    Examples
    --------
    >>> import celljepa as cj
    >>> fs = cj.datasets.load_feature_set("foundation-v1")
    >>> fs.id, fs.strategy, len(fs.genes) > 10000
    ('foundation-v1', 'foundation', True)
    """
    if isinstance(name_or_path, FeatureSet):
        return name_or_path
    text = os.fspath(name_or_path)
    path = Path(text)
    if path.suffix == ".txt" or os.sep in text or path.is_file():
        return FeatureSet.read(path)
    return FeatureSet.read(feature_set_path(text))


# --------------------------------------------------------------------------------------------- identifiers
def _read_aliases(aliases) -> dict[str, str]:
    if aliases is None:
        return {}
    if isinstance(aliases, Mapping):
        return {str(k).strip().upper(): str(v).strip() for k, v in aliases.items()}
    path = Path(aliases)
    if not path.is_file():
        raise InputError(f"alias table {path} does not exist (expected a two-column CSV/TSV: alias, symbol).")
    st = path.stat()
    return _read_alias_file(str(path.resolve()), st.st_size, st.st_mtime_ns)


def gene_keys(adata: AnnData, *, id_column: str | None = None, aliases=None) -> tuple[list[str], dict]:
    """Cleaned gene identifiers of ``adata.var`` (one per gene) and a report of what was changed.

    Parameters
    ----------
    adata
        An AnnData (only ``var`` is read).
    id_column
        ``var`` column with the identifiers to use; default the gene names, or a symbol column
        (``gene_symbol``, ``feature_name``, …) when the names are Ensembl IDs.
    aliases
        ``{alias: symbol}`` or a two-column CSV/TSV file mapping old or alternative symbols to the
        feature set's spelling.

    Returns
    -------
    ``(names, report)``: ``names[i]`` is gene *i*'s cleaned name (compare with ``.upper()``);
    ``report`` says which column was used, which reference-genome prefix was dropped and counts versions
    stripped and aliases applied.

    Notes
    -----
    Cell Ranger prefixes every gene of a multi-genome reference with its genome (``hg19_ISG15``). When all
    prefixed names share one prefix, it is dropped, so the genes match their symbols; names of a mixed-species
    reference (``hg19_`` and ``mm10_`` genes side by side) keep theirs, so that a human and a mouse gene never
    merge into one.
    """
    var = adata.var
    source = "var_names"
    ids = [str(x) for x in adata.var_names]
    if id_column is not None:
        if id_column not in var.columns:
            raise InputError(f"id_column {id_column!r} is not a var column; var has {list(var.columns)}.")
        ids, source = [str(x) for x in var[id_column]], f"var[{id_column!r}]"
    elif ids and np.mean([bool(_ENSEMBL.match(x.strip())) for x in ids]) > 0.5:
        col = next((c for c in SYMBOL_COLUMNS if c in var.columns), None)
        if col is not None:
            symbols = [str(x) for x in var[col]]
            # genes without a symbol keep their Ensembl ID
            ids = [
                s if s.strip() and s.lower() not in ("nan", "none", "") else e
                for s, e in zip(symbols, ids, strict=True)
            ]
            source = f"var[{col!r}] (var_names are Ensembl IDs)"
    prefixes = {genome_prefix(x.strip()) for x in ids} - {None}
    dropped = prefixes.pop() if len(prefixes) == 1 else None
    if dropped is not None:
        ids = [strip_genome_prefix(x.strip()) for x in ids]
    alias = _read_aliases(aliases)
    # an alias never takes the name of a gene the dataset measures under that name itself
    own = {x.strip().upper() for x in ids} if alias else set()
    out, n_version, n_alias = [], 0, 0
    for raw in ids:
        name = raw.strip()
        m = _ENSEMBL.match(name)
        if m:
            n_version += m.group(2) is not None
            name = m.group(1).upper()
        target = alias.get(name.upper())
        if target is not None and target.upper() != name.upper() and target.upper() not in own:
            name, n_alias = target, n_alias + 1
        out.append(name)
    return out, {
        "id_source": source,
        "genome_prefix_dropped": dropped or "",
        "ensembl_versions_stripped": n_version,
        "aliases_applied": n_alias,
    }


# --------------------------------------------------------------------------------------------- building
def _hvgs(adata, n_top_genes: int, layer: str | None) -> list[int]:
    import anndata as ad
    import scanpy as sc

    x = adata.layers[layer] if layer else adata.X
    work = ad.AnnData(sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else np.asarray(x, dtype=np.float32))
    n = int(min(n_top_genes, work.n_vars))
    sc.pp.highly_variable_genes(work, n_top_genes=n, flavor="seurat")
    return np.flatnonzero(work.var["highly_variable"].to_numpy()).tolist()


def build_feature_set(
    datasets: Mapping[str, object],
    *,
    strategy: str,
    name: str,
    version: int = 1,
    train: Sequence[str] | None = None,
    n_top_genes: int = 2000,
    id_column: str | None = None,
    aliases=None,
    layer: str | None = None,
) -> FeatureSet:
    """Build a feature set from the **training** datasets only.

    Parameters
    ----------
    datasets
        ``{dataset id: AnnData}`` (log-normalised ``X``, or ``layer``).
    strategy
        ``"intersection"``: genes measured by every training dataset, in the first one's order;
        ``"union_hvg"``: the union of each training dataset's ``n_top_genes`` highly variable genes
        (scanpy, ``flavor="seurat"``), in dataset order then gene order. ``"foundation"`` lists are
        stored, not built: use :func:`load_feature_set`.
    name, version
        The list's id is ``name-vVERSION``; write it to ``configs/feature_sets/`` to keep it.
    train
        The dataset ids the list may depend on (default: all of ``datasets``). Pass every dataset and
        name the training ones: the others are never read, so a held-out dataset cannot leak into it.
    id_column, aliases
        As in :func:`gene_keys`.

    Examples
    --------
    >>> import celljepa as cj
    >>> fs = cj.pp.build_feature_set({"kang": kang, "papalexi": pap, "demo": demo},  # doctest: +SKIP
    ...                              strategy="union_hvg", name="hvg-kang-demo", train=["kang", "demo"])
    """
    if strategy == "foundation":
        raise InputError(
            "a foundation feature set is a stored list, not built from data. Fix: "
            f"cj.datasets.load_feature_set('foundation-v1') (known: {list_feature_sets()})."
        )
    if strategy not in FEATURE_SET_STRATEGIES:
        raise InputError(f"strategy must be one of {FEATURE_SET_STRATEGIES}, got {strategy!r}.")
    train = list(datasets) if train is None else list(train)
    unknown = [t for t in train if t not in datasets]
    if unknown or not train:
        raise InputError(f"train names {unknown or 'no dataset'}; the datasets are {list(datasets)}.")
    per: list[list[str]] = []
    for t in train:
        names, _ = gene_keys(datasets[t], id_column=id_column, aliases=aliases)
        if strategy == "union_hvg":
            names = [names[i] for i in _hvgs(datasets[t], n_top_genes, layer)]
        per.append(names)
    genes: list[str] = []
    seen: set[str] = set()
    if strategy == "intersection":
        common = set.intersection(*({g.upper() for g in names} for names in per))
        for g in per[0]:
            if g.upper() in common and g.upper() not in seen:
                genes.append(g)
                seen.add(g.upper())
        if not genes:
            raise InputError(
                f"the training datasets {train} share no gene. Fix: strategy='union_hvg' or a "
                "foundation list (genes a dataset lacks are then marked absent), or an alias table."
            )
    else:
        for names in per:
            for g in names:
                if g.upper() not in seen:
                    genes.append(g)
                    seen.add(g.upper())
    params = {"n_top_genes": n_top_genes} if strategy == "union_hvg" else {}
    return FeatureSet(name, int(version), strategy, tuple(genes), tuple(train), params)


# --------------------------------------------------------------------------------------------- mapping
def _reindex(x, columns: np.ndarray, n_out: int):
    """Columns ``columns[j]`` of ``x`` (−1: an all-zero column), as CSR."""
    x = sp.csr_matrix(x)
    present = np.flatnonzero(columns >= 0)
    sel = x[:, columns[present]].tocoo()
    return sp.csr_matrix((sel.data, (sel.row, present[sel.col])), shape=(x.shape[0], n_out), dtype=x.dtype)


def map_genes(
    adata: AnnData,
    fs: FeatureSet,
    *,
    name: str,
    id_column: str | None = None,
    aliases=None,
    measured_only: bool = False,
) -> AnnData:
    """``adata`` reindexed onto the genes of ``fs``, as :func:`celljepa.pp.harmonize_genes` describes.

    ``name`` names the dataset in messages; ``id_column`` and ``aliases`` are as in :func:`gene_keys`.
    ``measured_only`` keeps only the list's genes the dataset measures (in the list's order, ``var["absent"]``
    all False): the form for an encoder with GO gene vectors, which embeds any gene of the list, where a
    genome-wide list would otherwise add tens of thousands of empty columns.
    """
    if aliases is None:
        aliases = feature_set_aliases(fs)
    keys, report = gene_keys(adata, id_column=id_column, aliases=aliases)
    first: dict[str, int] = {}
    duplicates = []
    for i, k in enumerate(keys):
        if k.upper() in first:
            duplicates.append(k)
        else:
            first[k.upper()] = i
    if duplicates:
        import warnings

        warnings.warn(
            f"{name}: {len(duplicates)} genes map to a name already seen ({duplicates[:5]}); the first "
            "column of each is kept.",
            CelljepaWarning,
            stacklevel=3,
        )
    columns = np.array([first.get(g.upper(), -1) for g in fs.genes], dtype=np.int64)
    n_present = int((columns >= 0).sum())
    if n_present == 0:
        raise InputError(
            f"{name} measures none of the {len(fs.genes)} genes of {fs.id} (identifiers from "
            f"{report['id_source']}, e.g. {keys[:3]}). Fix: id_column= the var column with gene "
            "symbols, an alias table, or another feature set."
        )
    used = set(columns[columns >= 0].tolist())
    genes = list(fs.genes)
    if measured_only:
        keep = np.flatnonzero(columns >= 0)
        columns, genes = columns[keep], [genes[i] for i in keep]
    var = pd.DataFrame(
        {"absent": columns < 0, "source_id": [str(adata.var_names[c]) if c >= 0 else "" for c in columns]},
        index=pd.Index(genes, name=None),
    )
    out = AnnData(
        X=_reindex(adata.X, columns, len(genes)),
        obs=adata.obs.copy(),
        var=var,
        obsm={k: v.copy() for k, v in adata.obsm.items()},
        layers={k: _reindex(v, columns, len(genes)) for k, v in adata.layers.items()},
        uns=dict(adata.uns),
    )
    out.uns["feature_set"] = {
        **fs.info(),
        "n_present": n_present,
        "n_absent": int(len(fs.genes) - n_present),
        "n_dropped": int(adata.n_vars - len(used)),
        "duplicates": len(duplicates),
        **report,
    }
    return out


def resolve_feature_set(spec, training: Mapping[str, AnnData], *, name: str) -> FeatureSet:
    """``intersection`` / ``union_hvg``: built from ``training`` (named ``<strategy>-<name>``); else loaded.

    ``spec`` may also be a :class:`FeatureSet`, a stored id (``foundation-v1``) or a feature set file.
    """
    if str(spec) in ("intersection", "union_hvg"):
        return build_feature_set(training, strategy=str(spec), name=f"{spec}-{name}")
    return load_feature_set(spec)


def combine_datasets(
    datasets: Mapping[str, AnnData], feature_set, *, id_column: str | None = None, aliases=None
) -> AnnData:
    """Several datasets mapped onto one feature set and stacked: one AnnData for multi-dataset training.

    ``obs["dataset_id"]`` names each cell's dataset (obs names become ``<cell>:<dataset>``),
    ``uns["absent_genes"]`` maps each dataset to the genes of the list it does not measure (see
    :func:`gene_presence`), and ``uns["feature_set"]`` records the list. ``obs`` columns that only some
    datasets have are kept (missing values elsewhere); layers are kept when every dataset has them.

    Examples
    --------
    >>> import celljepa as cj
    >>> from celljepa.bench import demo_datasets
    >>> d = demo_datasets()
    >>> both = cj.pp.combine_datasets({"norman": d["norman2019"], "sciplex": d["sciplex_gxe"]}, "foundation-v1")
    >>> sorted(both.obs["dataset_id"].unique()), both.n_vars == len(cj.datasets.load_feature_set("foundation-v1").genes)
    (['norman', 'sciplex'], True)
    """
    import anndata as ad

    if len(datasets) < 1:
        raise InputError("combine_datasets needs at least one dataset.")
    fs = load_feature_set(feature_set)
    parts, absent = {}, {}
    for name, adata in datasets.items():
        h = map_genes(adata, fs, name=name, id_column=id_column, aliases=aliases)
        absent[name] = np.asarray(h.var_names[h.var["absent"].to_numpy()], dtype=str)
        h.obs["dataset_id"] = name
        parts[name] = h
    layers = set.intersection(*(set(p.layers) for p in parts.values()))
    for p in parts.values():
        for k in list(p.layers):
            if k not in layers:
                del p.layers[k]
        p.uns = {}
        p.obsm = {}
    out = ad.concat(parts, join="outer", merge=None, index_unique=":")
    out.obs["dataset_id"] = pd.Categorical(out.obs["dataset_id"].astype(str), categories=list(datasets))
    out.var = pd.DataFrame(index=pd.Index(list(fs.genes)))
    out.uns["feature_set"] = fs.info()
    out.uns["absent_genes"] = absent
    return out


def gene_presence(adata: AnnData, *, fallback_to_flags: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """``(group_index, present)`` of a harmonised dataset, or ``None`` when every gene is measured.

    ``present[g, j]`` is False where group ``g`` (a dataset of :func:`combine_datasets`, or the single
    dataset of :func:`celljepa.pp.harmonize_genes`) does not measure gene ``j``; ``group_index[i]`` is cell ``i``'s
    group. Training uses it so that absent genes are never prediction targets.

    ``uns["absent_genes"]`` without an entry for a dataset of these cells is an error, unless
    ``fallback_to_flags``: then the per-gene ``var["absent"]`` flags (one group) are used, as for data that were
    harmonised on their own but carry another combination's records (e.g. a held-out dataset).
    """
    names = np.asarray(adata.var_names, dtype=str)
    if "absent_genes" in adata.uns and "dataset_id" in adata.obs:
        absent = adata.uns["absent_genes"]
        groups = adata.obs["dataset_id"].astype(str).to_numpy()
        order = sorted(set(groups.tolist()))
        unknown = [g for g in order if g not in absent]
        if unknown and fallback_to_flags:
            return _presence_from_flags(adata)
        if unknown:
            raise InputError(
                f"uns['absent_genes'] has no entry for dataset(s) {unknown}; rebuild the data with "
                "cj.pp.combine_datasets."
            )
        present = np.stack([~np.isin(names, np.asarray(absent[g], dtype=str)) for g in order])
        index = np.searchsorted(np.asarray(order), groups)
        return index.astype(np.int64), present
    return _presence_from_flags(adata)


def _presence_from_flags(adata: AnnData) -> tuple[np.ndarray, np.ndarray] | None:
    """One group from ``var["absent"]`` (None when no gene is flagged)."""
    if "absent" in adata.var:
        flags = adata.var["absent"].to_numpy(dtype=bool)
        if flags.any():
            return np.zeros(adata.n_obs, dtype=np.int64), ~flags[None, :]
    return None
