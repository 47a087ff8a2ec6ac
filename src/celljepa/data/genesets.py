"""Gene-set collections (pathways, regulons, hallmarks) for module masks.

Readers for the layouts gene sets come in: GMT files (MSigDB, Reactome, Enrichr/GO), long
``set, gene`` tables, DoRothEA TF regulons and PROGENy pathway weight matrices, plus the gene sets
shipped with the package (MSigDB Hallmark v7.0). Every reader returns ``{set name: [gene, ...]}``
with genes deduplicated within a set and sets in file order, ready for
:func:`gene_module_map`.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import InputError
from ._names import strip_genome_prefix

__all__ = [
    "BUILTIN_GENE_SETS",
    "GENESET_FORMATS",
    "builtin_gene_set_path",
    "builtin_gene_sets",
    "gene_module_map",
    "read_gene_sets",
    "read_gmt",
    "resolve_gene_sets",
]

GENESET_FORMATS = ("auto", "gmt", "long", "dorothea", "progeny")

# name -> (file under celljepa/datasets/_data/genesets, short description for provenance)
BUILTIN_GENE_SETS: dict[str, tuple[str, str]] = {
    "hallmark": ("h.all.v7.0.symbols.gmt", "MSigDB v7.0"),
}

_SET_COLUMNS = ("set", "term", "pathway", "source", "tf")
_GENE_COLUMNS = ("gene", "target", "symbol")
_DOROTHEA_COLUMNS = ("tf", "confidence", "target")
_CONFIDENCE_LEVELS = "ABCDE"
_MISSING = ("", "NA", "NAN")  # PROGENy cells read as weight 0
UNASSIGNED = "unassigned"  # the module of genes in no set
_DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t"}

_LAYOUTS_HELP = (
    "Accepted layouts: GMT (.gmt or .gmt.gz, name<TAB>description<TAB>gene...; pass fmt='gmt' for another "
    "suffix); a long CSV/TSV table with a set column (one of set/term/pathway/source/tf) and a gene column "
    "(one of gene/target/symbol), or any two columns named with set_col= and gene_col=; DoRothEA regulons "
    "(columns tf, confidence, target[, mor]); a PROGENy weight matrix (first column gene, then one numeric "
    "column per pathway)."
)


# ---------------------------------------------------------------------------------------- helpers


def read_gmt(path: str | os.PathLike) -> dict[str, list[str]]:
    r"""Read a GMT gene-set file: one set per line, ``name<TAB>description<TAB>gene<TAB>gene...``.

    Blank lines are skipped, empty gene fields (trailing tabs) ignored and duplicate genes within a
    set dropped (first occurrence kept). Sets keep the file order.

    Raises
    ------
    celljepa.InputError
        A line with fewer than three fields, an empty set name, a set without genes or a set name
        that appears twice.

    Examples
    --------
    >>> import tempfile, os
    >>> from celljepa.data.genesets import read_gmt
    >>> p = os.path.join(tempfile.mkdtemp(), "s.gmt")
    >>> _ = open(p, "w").write("SET_A\tdesc\tTP53\tMYC\n")
    >>> read_gmt(p)
    {'SET_A': ['TP53', 'MYC']}
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"GMT file {str(path)!r} does not exist.")
    sets: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 3:
                raise InputError(
                    f"{path.name}:{lineno}: malformed GMT line (needs name<TAB>description<TAB>genes..., "
                    f"got {len(fields)} tab-separated field(s))."
                )
            name = fields[0].strip()
            if not name:
                raise InputError(f"{path.name}:{lineno}: empty gene-set name.")
            genes = list(dict.fromkeys(g.strip() for g in fields[2:] if g.strip()))
            if not genes:
                raise InputError(f"{path.name}:{lineno}: gene set {name!r} lists no genes.")
            if name in sets:
                raise InputError(f"{path.name}:{lineno}: gene set {name!r} appears twice.")
            sets[name] = genes
    return sets


def gene_module_map(
    var_names: Sequence[str],
    gene_sets: Mapping[str, Sequence[str]],
    *,
    priority: str = "given",
    drop_empty: bool = True,
) -> tuple[np.ndarray, list[str]]:
    """Map genes (``adata.var_names``) to modules for ``kind="module"`` masking.

    A gene in several sets takes the first set in the priority order: ``"given"`` = the mapping's
    iteration order (file order for :func:`read_gmt`), ``"size"`` = smallest set first (most
    specific; ties by name), ``"name"`` = sets sorted by name. Gene symbols match exactly
    (case-sensitive); a name with a reference-genome prefix, as Cell Ranger writes for multi-genome
    references (``hg19_ISG15``, ``GRCh38-ISG15``, ``mm10___Actb``), also matches its bare symbol when that
    symbol is not a column of its own. Genes in no set form their own last module named ``"unassigned"``.

    Parameters
    ----------
    var_names
        Gene names of the data columns, in order.
    gene_sets
        Set name → gene symbols (e.g. from :func:`read_gmt`).
    priority
        ``"given"``, ``"size"`` or ``"name"`` (see above).
    drop_empty
        Drop sets that own no gene of ``var_names`` (none of their genes is present, or all of them
        went to earlier sets), so module ids are compact; with ``False`` every set keeps its rank as id.

    Returns
    -------
    ``(gene_to_module, module_names)``: an int32 array with one module id per gene (``-1`` never
    occurs; the "unassigned" bucket has the last id when any gene is unassigned) and the module names.

    Examples
    --------
    >>> from celljepa.data.genesets import gene_module_map
    >>> ids, names = gene_module_map(["A", "B", "C", "D"], {"S1": ["A", "B"], "S2": ["B", "C"]})
    >>> ids.tolist(), names
    ([0, 0, 1, 2], ['S1', 'S2', 'unassigned'])
    >>> gene_module_map(["hg19_A", "hg19_C"], {"S1": ["A", "B"], "S2": ["C"]})[0].tolist()
    [0, 1]
    """
    if priority not in ("given", "size", "name"):
        raise InputError(f"priority must be 'given', 'size' or 'name', got {priority!r}.")
    var_names = [str(v) for v in var_names]
    order = list(gene_sets)
    if priority == "size":
        order.sort(key=lambda s: (len(gene_sets[s]), s))
    elif priority == "name":
        order.sort()
    position: dict[str, list[int]] = {}
    for i, g in enumerate(var_names):
        position.setdefault(g, []).append(i)
    for i, g in enumerate(var_names):  # a reference-genome prefix (hg19_ISG15) matches the bare symbol
        bare = strip_genome_prefix(g)
        if bare != g and bare not in position:
            position.setdefault(bare, []).append(i)
    ids = np.full(len(var_names), -1, dtype=np.int64)
    for rank, s in enumerate(order):
        hits = np.asarray([i for g in gene_sets[s] for i in position.get(g, ())], dtype=np.int64)
        if hits.size:
            hits = hits[ids[hits] < 0]
            ids[hits] = rank
    if drop_empty:  # keep only sets that own at least one gene, renumbered in priority order
        used = np.unique(ids[ids >= 0])
        remap = np.full(len(order), -1, dtype=np.int64)
        remap[used] = np.arange(used.size)
        ids = np.where(ids >= 0, remap[np.maximum(ids, 0)], -1)
        names = [str(order[r]) for r in used]
    else:
        names = [str(s) for s in order]
    if (ids < 0).any():
        ids[ids < 0] = len(names)
        names.append(UNASSIGNED)
    if len(names) > np.iinfo(np.int32).max:
        raise InputError("too many modules for an int32 map.")
    return ids.astype(np.int32), names


def _base_suffix(path: Path) -> tuple[str, bool]:
    """The file suffix without a trailing ``.gz`` (lower case) and whether the file is gzipped."""
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    return (suffixes[-1] if suffixes else ""), gz


def _open_text(path: Path, gz: bool):
    return gzip.open(path, "rt", encoding="utf-8") if gz else path.open(encoding="utf-8")


def _read_gmt_any(path: Path, gz: bool) -> dict[str, list[str]]:
    if not gz:
        return read_gmt(path)
    with tempfile.TemporaryDirectory() as tmp:  # read_gmt reads plain text; keep the name for its messages
        plain = Path(tmp) / path.name[: -len(".gz")]
        with gzip.open(path, "rb") as src, plain.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        return read_gmt(plain)


def _read_table(path: Path, gz: bool) -> pd.DataFrame:
    suffix, _ = _base_suffix(path)
    try:
        with _open_text(path, gz) as fh:
            header = fh.readline()
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise InputError(f"gene-set file '{path}' is not a readable text table ({err}). {_LAYOUTS_HELP}") from None
    if not header.strip():
        raise InputError(f"gene-set file '{path}' is empty (no header line). {_LAYOUTS_HELP}")
    sep = _DELIMITERS.get(suffix) or ("\t" if "\t" in header else ",")
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, na_filter=False, compression="gzip" if gz else None)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as err:
        raise InputError(f"gene-set file '{path}' could not be parsed as a table ({err}). {_LAYOUTS_HELP}") from None
    table.columns = [str(c).strip() for c in table.columns]
    return table


def _find_column(columns: list[str], wanted: str | None, candidates: tuple[str, ...]) -> str | None:
    """``wanted`` (exact, else case-insensitive) or the first of ``candidates`` present (case-insensitive)."""
    lower = {c.lower(): c for c in reversed(columns)}  # first column wins on case-insensitive clashes
    if wanted is not None:
        return wanted if wanted in columns else lower.get(wanted.lower())
    for name in candidates:
        if name in lower:
            return lower[name]
    return None


def _numeric_columns(table: pd.DataFrame, columns: list[str]) -> dict[str, pd.Series] | None:
    """The columns as floats (empty and NA cells = 0), or None if any holds a non-numeric value."""
    out = {}
    for c in columns:
        values = table[c].str.strip()
        numbers = pd.to_numeric(values.where(~values.str.upper().isin(_MISSING), "0"), errors="coerce")
        if numbers.isna().any():
            return None
        out[c] = numbers
    return out


def _columns_text(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    shown = ", ".join(repr(c) for c in cols[:20])
    return f"[{shown}{', ...' if len(cols) > 20 else ''}] ({len(cols)} columns)"


def _group(set_names, genes) -> dict[str, list[str]]:
    """``{set: genes}`` in order of first appearance, genes deduplicated, blank names dropped."""
    sets: dict[str, dict[str, None]] = {}
    for s, g in zip(set_names, genes, strict=True):
        s, g = str(s).strip(), str(g).strip()
        if s and g:
            sets.setdefault(s, {})[g] = None
    return {s: list(g) for s, g in sets.items()}


def _check_confidence(min_confidence) -> str:
    level = str(min_confidence).strip().upper() if isinstance(min_confidence, str) else None
    if level is None or len(level) != 1 or level not in _CONFIDENCE_LEVELS:
        raise InputError(
            f"min_confidence must be one DoRothEA confidence letter from 'A' (best) to 'E' (worst), "
            f"got {min_confidence!r}."
        )
    return level


# ---------------------------------------------------------------------------------------- layouts
def _long(table: pd.DataFrame, path: Path, set_col: str | None, gene_col: str | None) -> dict[str, list[str]]:
    columns = list(table.columns)
    s = _find_column(columns, set_col, _SET_COLUMNS)
    g = _find_column(columns, gene_col, _GENE_COLUMNS)
    for given, found, role, options in ((set_col, s, "set", _SET_COLUMNS), (gene_col, g, "gene", _GENE_COLUMNS)):
        if found is None:
            what = f"{role}_col={given!r} is not a column" if given else f"no {role} column ({'/'.join(options)})"
            raise InputError(
                f"gene-set table '{path}': {what}; columns found {_columns_text(table)}. "
                f"Name the columns with set_col= and gene_col=. {_LAYOUTS_HELP}"
            )
    if s == g:
        raise InputError(f"gene-set table '{path}': the set and gene columns are both {s!r}; pick two columns.")
    return _group(table[s].tolist(), table[g].tolist())


def _dorothea(table: pd.DataFrame, path: Path, min_confidence: str) -> dict[str, list[str]]:
    columns = list(table.columns)
    tf, conf, target = (_find_column(columns, name, ()) for name in _DOROTHEA_COLUMNS)
    if None in (tf, conf, target):
        raise InputError(
            f"DoRothEA file '{path}' needs the columns tf, confidence, target; columns found {_columns_text(table)}."
        )
    levels = table[conf].str.strip().str.upper()
    bad = sorted(set(levels.unique()) - set(_CONFIDENCE_LEVELS))
    if bad:
        raise InputError(
            f"DoRothEA file '{path}': column {conf!r} has values {bad[:10]} outside the confidence letters A-E."
        )
    keep = (levels <= min_confidence).to_numpy()
    return _group(table[tf].to_numpy()[keep].tolist(), table[target].to_numpy()[keep].tolist())


def _progeny(table: pd.DataFrame, path: Path, gene_col: str | None) -> dict[str, list[str]]:
    columns = list(table.columns)
    g = columns[0] if gene_col is None else _find_column(columns, gene_col, ())
    if g is None:
        raise InputError(
            f"PROGENy file '{path}': gene_col={gene_col!r} is not a column; columns found {_columns_text(table)}."
        )
    pathways = [c for c in columns if c != g]
    if not pathways:
        raise InputError(f"PROGENy file '{path}' has no pathway columns besides the gene column {g!r}.")
    weights = _numeric_columns(table, pathways)
    if weights is None:
        bad = [c for c in pathways if _numeric_columns(table, [c]) is None]
        raise InputError(
            f"PROGENy file '{path}': pathway columns {bad[:10]} hold non-numeric values; every column after "
            f"the gene column {g!r} must be a numeric weight."
        )
    genes = table[g].str.strip()
    sets = {}
    for pathway in pathways:
        hit = (weights[pathway] != 0).to_numpy()
        sets[pathway] = list(dict.fromkeys(x for x in genes[hit].tolist() if x))
    return sets


def _detect(table: pd.DataFrame, set_col: str | None, gene_col: str | None) -> str | None:
    columns = list(table.columns)
    lower = {c.lower() for c in columns}
    if set_col is not None or gene_col is not None:
        return "long"
    if set(_DOROTHEA_COLUMNS) <= lower:
        return "dorothea"
    if len(columns) >= 2 and columns[0].lower() == "gene" and _numeric_columns(table, columns[1:]) is not None:
        return "progeny"
    if _find_column(columns, None, _SET_COLUMNS) and _find_column(columns, None, _GENE_COLUMNS):
        return "long"
    return None


# ---------------------------------------------------------------------------------------- public
def read_gene_sets(
    path: str | os.PathLike,
    *,
    fmt: str = "auto",
    set_col: str | None = None,
    gene_col: str | None = None,
    min_confidence: str = "C",
    min_size: int = 1,
) -> dict[str, list[str]]:
    r"""Read a gene-set collection into ``{set name: [gene, ...]}``.

    Layouts (``fmt``; ``"auto"`` decides from the suffix and the header line):

    ``"gmt"``
        GMT (``.gmt``, optionally ``.gmt.gz``): ``name<TAB>description<TAB>gene...`` per line, read
        with :func:`read_gmt` (MSigDB, Reactome, Enrichr libraries).
    ``"dorothea"``
        DoRothEA TF regulons, a table with columns ``tf, confidence, target`` (and ``mor``): one set per
        TF holding its targets of confidence ``min_confidence`` or better. The sign (``mor``) is ignored.
    ``"progeny"``
        PROGENy weight matrix: first column ``gene``, then one numeric column per pathway; one set per
        pathway holding the genes with a nonzero weight.
    ``"long"``
        Two columns, set and gene, one row per membership. The columns are ``set_col`` / ``gene_col``
        or the first present of ``set/term/pathway/source/tf`` and ``gene/target/symbol``
        (case-insensitive).

    Tables are CSV (``.csv``) or tab-separated (``.tsv``, ``.tab``, ``.txt``), optionally gzipped
    (``.gz``); other suffixes are read with the delimiter of the header line. In ``"auto"`` a table
    with DoRothEA's columns is read as DoRothEA, one whose first column is ``gene`` and the others all
    numeric as PROGENy, and one with a set and a gene column (or with ``set_col``/``gene_col`` given)
    as a long table.

    Parameters
    ----------
    path
        The file.
    fmt
        ``"auto"``, ``"gmt"``, ``"long"``, ``"dorothea"`` or ``"progeny"``.
    set_col, gene_col
        Column names of a long table (case-insensitive fallback); ``gene_col`` also names the gene column
        of a PROGENy matrix (default: its first column).
    min_confidence
        DoRothEA only: the worst confidence letter kept, ``"A"`` (best) to ``"E"`` (worst). ``"C"``
        keeps A, B and C, the usual choice.
    min_size
        Sets with fewer genes (after deduplication) are dropped.

    Returns
    -------
    ``dict[str, list[str]]``: set name → genes, genes deduplicated within a set (first occurrence kept),
    sets in order of first appearance in the file.

    Raises
    ------
    celljepa.InputError
        A missing file, an unknown ``fmt`` or layout (the message lists the columns found and the
        accepted layouts), a column that is not there, malformed values, or no set left.

    Examples
    --------
    >>> import os, tempfile
    >>> from celljepa.data.genesets import read_gene_sets
    >>> p = os.path.join(tempfile.mkdtemp(), "regulons.csv")
    >>> _ = open(p, "w").write("tf,confidence,target,mor\nSTAT1,A,IRF1,1\nSTAT1,D,GBP1,1\nMYC,B,NPM1,1\n")
    >>> read_gene_sets(p)
    {'STAT1': ['IRF1'], 'MYC': ['NPM1']}
    >>> read_gene_sets(p, min_confidence="D")
    {'STAT1': ['IRF1', 'GBP1'], 'MYC': ['NPM1']}
    >>> read_gene_sets(p, set_col="tf", gene_col="target")  # a plain long table: every edge
    {'STAT1': ['IRF1', 'GBP1'], 'MYC': ['NPM1']}
    """
    if fmt not in GENESET_FORMATS:
        raise InputError(f"fmt must be one of {GENESET_FORMATS}, got {fmt!r}.")
    level = _check_confidence(min_confidence)
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
        raise InputError(f"min_size must be an integer >= 1, got {min_size!r}.")
    path = Path(path)
    if not path.exists():
        raise InputError(
            f"gene-set file '{path}' does not exist. Give a .gmt file, a CSV/TSV gene-set table or a builtin "
            f"collection name ({', '.join(BUILTIN_GENE_SETS)})."
        )
    if not path.is_file():
        raise InputError(f"gene-set file '{path}' is not a file.")
    suffix, gz = _base_suffix(path)
    kind = fmt
    if kind == "auto" and suffix == ".gmt":
        kind = "gmt"
    if kind == "gmt":
        sets = _read_gmt_any(path, gz)
    else:
        table = _read_table(path, gz)
        if kind == "auto":
            kind = _detect(table, set_col, gene_col)
            if kind is None:
                raise InputError(
                    f"could not recognise the layout of gene-set file '{path}': columns found "
                    f"{_columns_text(table)}. {_LAYOUTS_HELP}"
                )
        if kind == "dorothea":
            sets = _dorothea(table, path, level)
        elif kind == "progeny":
            sets = _progeny(table, path, gene_col)
        else:
            sets = _long(table, path, set_col, gene_col)
    n_read = len(sets)
    sets = {name: genes for name, genes in sets.items() if len(genes) >= min_size}
    if not sets:
        hint = f"; lower min_size (now {min_size})" if n_read else ""
        if kind == "dorothea":
            hint += f"; allow lower confidence with min_confidence (now {level!r})"
        raise InputError(f"gene-set file '{path}' ({kind}) gave no gene sets ({n_read} read{hint}).")
    return sets


def builtin_gene_set_path(name: str) -> Path:
    """Path of a gene-set collection shipped with celljepa.

    Parameters
    ----------
    name
        A builtin collection: ``"hallmark"`` (MSigDB Hallmark v7.0, 50 sets, human symbols; CC BY 4.0,
        cite Liberzon et al., Cell Syst 2015).

    Returns
    -------
    The :class:`~pathlib.Path` of the file (a GMT).

    Examples
    --------
    >>> from celljepa.data.genesets import builtin_gene_set_path
    >>> builtin_gene_set_path("hallmark").name
    'h.all.v7.0.symbols.gmt'
    """
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in BUILTIN_GENE_SETS:
        raise InputError(
            f"unknown builtin gene-set collection {name!r}; available: {', '.join(BUILTIN_GENE_SETS)}. "
            "For other collections pass the path of a .gmt file or a gene-set table."
        )
    filename = BUILTIN_GENE_SETS[key][0]
    path = Path(str(resources.files("celljepa.datasets").joinpath("_data", "genesets", filename)))
    if not path.is_file():  # pragma: no cover - a broken installation
        raise InputError(f"the builtin gene-set file {path} is missing from the installation; reinstall celljepa.")
    return path


def builtin_gene_sets(name: str = "hallmark") -> dict[str, list[str]]:
    """Load a gene-set collection shipped with celljepa.

    ``"hallmark"``: MSigDB Hallmark v7.0 (50 sets, human gene symbols), unchanged from GSEApy's test
    data. Licence CC BY 4.0 (MSigDB v6.0-v7.5.1); cite Liberzon A et al., Cell Syst 1:417-425 (2015).

    Parameters
    ----------
    name
        The collection (see :data:`BUILTIN_GENE_SETS`).

    Returns
    -------
    ``dict[str, list[str]]``: set name → gene symbols, in file order.

    Examples
    --------
    >>> from celljepa.data.genesets import builtin_gene_sets
    >>> sets = builtin_gene_sets("hallmark")
    >>> len(sets), "ISG15" in sets["HALLMARK_INTERFERON_ALPHA_RESPONSE"]
    (50, True)
    """
    return read_gmt(builtin_gene_set_path(name))


def resolve_gene_sets(spec) -> tuple[dict[str, list[str]], str]:
    """Gene sets from a builtin name, a file or a mapping, with a description for provenance.

    Parameters
    ----------
    spec
        A builtin collection name (``"hallmark"``; builtin names take precedence over a file of the same
        name in the working directory, write ``"./hallmark"`` for the file), the path (``str`` or
        ``os.PathLike``) of any file :func:`read_gene_sets` reads with its defaults, or a mapping
        set name → genes (copied; genes deduplicated, empty sets dropped).

    Returns
    -------
    ``(gene_sets, description)``: the sets and ``"builtin:hallmark (MSigDB v7.0)"``, the absolute path of
    the file, or ``"mapping (N sets)"``.

    Examples
    --------
    >>> from celljepa.data.genesets import resolve_gene_sets
    >>> sets, source = resolve_gene_sets("hallmark")
    >>> len(sets), source
    (50, 'builtin:hallmark (MSigDB v7.0)')
    >>> resolve_gene_sets({"S1": ["A", "B", "A"]})
    ({'S1': ['A', 'B']}, 'mapping (1 sets)')
    """
    if isinstance(spec, Mapping):
        sets = {}
        for name, genes in spec.items():
            if isinstance(genes, (str, bytes)) or not hasattr(genes, "__iter__"):
                raise InputError(
                    f"gene set {name!r} must be a list of gene names, got {type(genes).__name__} {genes!r:.60}."
                )
            unique = list(dict.fromkeys(str(g).strip() for g in genes if str(g).strip()))
            if unique:
                sets[str(name)] = unique
        if not sets:
            raise InputError("the gene-set mapping holds no genes; give at least one non-empty set.")
        return sets, f"mapping ({len(sets)} sets)"
    if isinstance(spec, str) and spec.strip().lower() in BUILTIN_GENE_SETS:
        key = spec.strip().lower()
        return builtin_gene_sets(key), f"builtin:{key} ({BUILTIN_GENE_SETS[key][1]})"
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        return read_gene_sets(path), str(path.resolve())
    raise InputError(
        f"gene sets must be a builtin name ({', '.join(BUILTIN_GENE_SETS)}), a file path or a mapping "
        f"set -> genes; got {type(spec).__name__}."
    )
