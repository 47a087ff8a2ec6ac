"""Predictions as AnnData: every method's predicted cells beside the observed ones, in cell-eval's layout.

A fold's predictions are sets of cells in the evaluation space (:class:`~celljepa.eval.space.EvaluationSpace`).
:func:`predictions_anndata` puts them, the observed test cells and the control cells of every test context in
one AnnData over the space's genes, with the evaluation-space coordinates of every cell in
``obsm["X_eval"]``. A predicted set without a gene-space prediction of its own is mapped back to genes by the
reconstruction the benchmark's Pearson-Δ uses (``_score_test`` in :mod:`celljepa.bench.evaluate`): each
predicted cell ``z`` becomes ``control mean (genes) + (z − mean of the control cells' coordinates)·components``,
so a set's mean is exactly the gene-space prediction the benchmark scores.

:func:`cell_eval_inputs` cuts the file into the ``(adata_pred, adata_real)`` pair that the ``cell-eval``
package's ``MetricsEvaluator`` reads (one method, one model seed, one context); ``docs/cell-eval.md`` compares
its metrics with the benchmark's. :func:`write_cell_eval_pairs` writes every such pair of a fold as files that
``cell-eval run -ap <method>/pred.h5ad -ar real.h5ad`` reads with no other option (``celljepa benchmark
--predictions`` writes them into each fold's ``cell_eval/`` folder); :func:`export_cell_eval` does the same for the
``predictions.h5ad`` of a finished run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._errors import InputError
from .._io import staged_folder, write_h5ad_atomic, write_text_atomic
from ..data import contract as C
from .space import EvaluationSpace

__all__ = [
    "CELL_EVAL_DIR",
    "CONTROL_LABEL",
    "EVAL_KEY",
    "PERT_COL",
    "cell_eval_inputs",
    "export_cell_eval",
    "predictions_anndata",
    "write_cell_eval_pairs",
    "write_predictions",
]

#: cell-eval's default control label, used in :data:`PERT_COL` for the control cells.
CONTROL_LABEL = "non-targeting"
#: The obs column cell-eval groups cells by (its ``pert_col``).
PERT_COL = "target_gene"
#: obsm key of the evaluation-space coordinates (cell-eval's ``embed_key`` for metrics in that space).
EVAL_KEY = "X_eval"
#: varm key of the evaluation space's loadings (genes × PCs), as scanpy stores a PCA.
PCS_KEY = "PCs"
#: The ``method`` of observed cells (test cells and controls).
OBSERVED = "observed"
#: The folder of a fold's cell-eval pairs (:func:`write_cell_eval_pairs`), beside ``predictions.h5ad``.
CELL_EVAL_DIR = "cell_eval"
#: The file in that folder that says what the pairs are and how to run cell-eval on them.
CELL_EVAL_README = "README.txt"
_CATEGORICAL = ("method", "role", "condition", "context_id", "perturbation_id", PERT_COL, "gene_space")


def _dense(x, what: str, n_cols: int) -> np.ndarray:
    arr = x.toarray() if sp.issparse(x) else np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != n_cols:
        raise InputError(f"{what} must be a cells × {n_cols} array, got shape {arr.shape}.")
    if arr.shape[0] == 0:
        raise InputError(f"{what} has no cells.")
    arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise InputError(f"{what} has {int((~np.isfinite(arr)).sum())} NaN/inf value(s).")
    return arr


def _condition_info(conditions: Mapping, key: str, what: str) -> tuple[str, str]:
    if key not in conditions:
        raise InputError(
            f"{what} names condition {key!r}, which `conditions` does not describe; give "
            "conditions[key] = dict(context_id=..., perturbation_id=...)."
        )
    info = conditions[key]
    try:
        return str(info["context_id"]), str(info["perturbation_id"])
    except (KeyError, TypeError):
        raise InputError(
            f"conditions[{key!r}] must be a dict with 'context_id' and 'perturbation_id', got {info!r}."
        ) from None


def _seed_text(seed) -> str:
    return "-" if seed is None else str(seed)


def predictions_anndata(
    space: EvaluationSpace,
    *,
    observed: Mapping,
    controls: Mapping,
    predicted: Mapping,
    conditions: Mapping,
    roles: Mapping,
    native: Mapping | None = None,
    dtype=np.float32,
) -> AnnData:
    """Observed, control and predicted cells of one fold in one AnnData (cell-eval's layout).

    Parameters
    ----------
    space
        The fold's evaluation space; ``var_names`` are its genes.
    observed
        ``{condition key: cells × genes}`` observed log-expression of each test condition over ``space.genes``.
    controls
        ``{context_id: cells × genes}`` observed log-expression of the control cells of each test context (all
        of them: their means are the reference of every delta).
    predicted
        ``{(method, model_seed or None, condition key): cells × n_pcs}`` predicted cells in the evaluation space.
    conditions
        ``{condition key: dict(context_id=..., perturbation_id=...)}`` for every condition named above.
    roles
        ``{method: role}`` (``"baseline"``, ``"jepa"``, ``"peer"``, ...) of every predicting method.
    native
        ``{(method, model_seed, condition key): cells × genes}`` gene-space predictions of methods that predict
        genes natively (peer tools); their cells keep these values (``gene_space="native"``) and their
        evaluation coordinates are ``space.transform`` of them unless ``predicted`` holds the same key.
    dtype
        dtype of ``X`` (``obsm["X_eval"]`` is always float64).

    Returns
    -------
    AnnData
        ``X``: log-expression over ``space.genes`` of every cell, in the order observed test cells, control
        cells, predicted cells. A predicted set without a native prediction is reconstructed per cell as
        ``controls[ctx].mean(0) + (z − space.transform(controls[ctx]).mean(0)) · space.components``
        (``gene_space="reconstructed"``; values may fall below 0, see :func:`cell_eval_inputs`).
        ``obs``: ``method`` (``"observed"`` for real cells), ``role``, ``model_seed`` (NaN when none),
        ``condition``, ``context_id``, ``perturbation_id``, ``target_gene`` (cell-eval's perturbation
        column: the perturbation id, ``"non-targeting"`` for controls), ``is_control``, ``gene_space``
        (``"observed"``, ``"native"`` or ``"reconstructed"``). ``obsm["X_eval"]``: evaluation-space
        coordinates. ``varm["PCs"]``: the space's loadings (``components.T``). ``uns``: ``space``
        (:meth:`EvaluationSpace.describe`), ``control_label``, ``pert_col``.

    Examples
    --------
    >>> import numpy as np
    >>> from celljepa.eval.space import EvaluationSpace
    >>> rng = np.random.default_rng(0)
    >>> space = EvaluationSpace(genes=np.array(["g0", "g1", "g2"], dtype=object), mean=np.ones(3),
    ...                         components=np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    >>> ctrl = rng.uniform(1, 2, size=(4, 3))
    >>> pred = predictions_anndata(
    ...     space, observed={"k562|A": rng.uniform(1, 2, size=(3, 3))}, controls={"k562": ctrl},
    ...     predicted={("no_change", None, "k562|A"): space.transform(ctrl)},
    ...     conditions={"k562|A": {"context_id": "k562", "perturbation_id": "A"}},
    ...     roles={"no_change": "baseline"})
    >>> pred.shape, pred.obsm["X_eval"].shape
    ((11, 3), (11, 2))
    >>> pred.obs["gene_space"].value_counts().to_dict()
    {'observed': 7, 'reconstructed': 4}
    """
    if not isinstance(space, EvaluationSpace):
        raise InputError(f"space must be an EvaluationSpace, got {type(space).__name__}.")
    native = dict(native or {})
    n_genes, k = len(space.genes), space.n_pcs
    if not observed:
        raise InputError("observed is empty: give the observed cells of at least one test condition.")
    if not predicted and not native:
        raise InputError("predicted (and native) are empty: give at least one predicted set.")
    for key in list(predicted) + list(native):
        if not (isinstance(key, tuple) and len(key) == 3):
            raise InputError(f"prediction keys must be (method, model_seed or None, condition key), got {key!r}.")
        if str(key[0]) == OBSERVED:
            raise InputError(f"{OBSERVED!r} is reserved for the real cells; rename that method.")
        if key[0] not in roles:
            raise InputError(f"method {key[0]!r} has no role; give roles[{key[0]!r}] (e.g. 'baseline').")

    # control references per context: mean genes and mean evaluation coordinates of every control cell
    ctrl_x, ctrl_z = {}, {}
    for ctx, x in controls.items():
        ctrl_x[str(ctx)] = _dense(x, f"controls[{ctx!r}]", n_genes)
        ctrl_z[str(ctx)] = space.transform(ctrl_x[str(ctx)])

    def _need_context(ctx: str, what: str) -> None:
        if ctx not in ctrl_x:
            raise InputError(
                f"{what} is in context {ctx!r}, which has no control cells in `controls` "
                f"(contexts given: {sorted(ctrl_x)})."
            )

    blocks_x, blocks_z, frames = [], [], []

    def _add(x, z, *, method, role, seed, condition, ctx, pid, target, is_control, gene_space, prefix):
        n = x.shape[0]
        blocks_x.append(x.astype(dtype, copy=False))
        blocks_z.append(np.asarray(z, dtype=np.float64))
        frames.append(
            pd.DataFrame(
                {
                    "method": method,
                    "role": role,
                    "model_seed": np.nan if seed is None else float(seed),
                    "condition": condition,
                    "context_id": ctx,
                    "perturbation_id": pid,
                    PERT_COL: target,
                    "is_control": is_control,
                    "gene_space": gene_space,
                },
                index=[f"{prefix}|{i}" for i in range(n)],
            )
        )

    for key, x in observed.items():
        ctx, pid = _condition_info(conditions, key, f"observed[{key!r}]")
        _need_context(ctx, f"observed condition {key!r}")
        x = _dense(x, f"observed[{key!r}]", n_genes)
        _add(
            x,
            space.transform(x),
            method=OBSERVED,
            role=OBSERVED,
            seed=None,
            condition=str(key),
            ctx=ctx,
            pid=pid,
            target=pid,
            is_control=False,
            gene_space="observed",
            prefix=f"{OBSERVED}|{key}",
        )
    for ctx in ctrl_x:
        _add(
            ctrl_x[ctx],
            ctrl_z[ctx],
            method=OBSERVED,
            role=OBSERVED,
            seed=None,
            condition=f"{ctx}|{C.CONTROL_ID}",
            ctx=ctx,
            pid=C.CONTROL_ID,
            target=CONTROL_LABEL,
            is_control=True,
            gene_space="observed",
            prefix=f"{OBSERVED}|{ctx}|{C.CONTROL_ID}",
        )

    for key in list(predicted) + [k_ for k_ in native if k_ not in predicted]:
        method, seed, cond = key
        what = f"prediction {key!r}"
        ctx, pid = _condition_info(conditions, cond, what)
        _need_context(ctx, what)
        z = _dense(predicted[key], f"predicted[{key!r}]", k) if key in predicted else None
        if key in native:
            x = _dense(native[key], f"native[{key!r}]", n_genes)
            if z is None:
                z = space.transform(x)
            elif z.shape[0] != x.shape[0]:
                raise InputError(f"predicted[{key!r}] has {z.shape[0]} cells but native[{key!r}] has {x.shape[0]}.")
            gene_space = "native"
        else:
            # the reconstruction of _score_test's Pearson-Δ, cell by cell: ctrl genes + (z − ctrl z)·components
            x = ctrl_x[ctx].mean(axis=0) + (z - ctrl_z[ctx].mean(axis=0)) @ space.components
            gene_space = "reconstructed"
        _add(
            x,
            z,
            method=str(method),
            role=str(roles[method]),
            seed=seed,
            condition=str(cond),
            ctx=ctx,
            pid=pid,
            target=pid,
            is_control=False,
            gene_space=gene_space,
            prefix=f"{method}|{_seed_text(seed)}|{cond}",
        )

    obs = pd.concat(frames)
    if not obs.index.is_unique:
        obs.index = pd.Index([f"{name}#{i}" for i, name in enumerate(obs.index)])
    for col in _CATEGORICAL:
        obs[col] = pd.Categorical(obs[col].astype(str))
    obs["is_control"] = obs["is_control"].astype(bool)
    obs["model_seed"] = obs["model_seed"].astype(np.float64)
    adata = AnnData(X=np.vstack(blocks_x), obs=obs, var=pd.DataFrame(index=pd.Index(space.genes.astype(str))))
    adata.obsm[EVAL_KEY] = np.vstack(blocks_z)
    adata.varm[PCS_KEY] = np.asarray(space.components, dtype=np.float64).T.copy()
    adata.uns["space"] = space.describe()
    adata.uns["control_label"] = CONTROL_LABEL
    adata.uns["pert_col"] = PERT_COL
    return adata


def write_predictions(path: str | os.PathLike, adata: AnnData, *, compression: str | None = None) -> Path:
    """Write a predictions AnnData (:func:`predictions_anndata`) to ``path`` (.h5ad) atomically.

    Examples
    --------
    >>> write_predictions("fold0/predictions.h5ad", pred)                       # doctest: +SKIP
    PosixPath('fold0/predictions.h5ad')
    """
    if not isinstance(adata, AnnData):
        raise InputError(f"adata must be an AnnData, got {type(adata).__name__}.")
    path = Path(path)
    if path.suffix != ".h5ad":
        raise InputError(f"predictions are written as .h5ad; got {str(path)!r}.")
    return write_h5ad_atomic(adata, path, compression=compression)


def _levels(values) -> list:
    return sorted({v for v in values})


def cell_eval_inputs(
    pred: AnnData,
    method: str,
    *,
    context_id: str | None = None,
    model_seed=None,
    pred_controls: str = "matched",
    clip_negative: bool = True,
) -> tuple[AnnData, AnnData]:
    """The ``(adata_pred, adata_real)`` pair that cell-eval's ``MetricsEvaluator`` scores, for one method.

    ``adata_real`` holds the observed test cells and the control cells, ``adata_pred`` the method's predicted
    cells and the control cells (cell-eval reads its control reference from each file). cell-eval has no
    notion of context, so one context is evaluated at a time (``context_id``; required when the method predicts
    more than one); a method with several model seeds needs ``model_seed``. Only the conditions the method
    predicted are kept on both sides (cell-eval requires the same perturbations in both).

    Parameters
    ----------
    pred
        A predictions AnnData from :func:`predictions_anndata` (or read back from :func:`write_predictions`).
    method
        The predicting method.
    context_id, model_seed
        Which context and model seed to cut out (needed only when there is more than one).
    pred_controls
        The control cells of ``adata_pred``. ``"matched"`` (default): in the gene space of the method's cells,
        i.e. the control cells' own reconstruction ``control mean + (z − mean z)·components`` when the method's
        cells are reconstructed, the observed control cells when it predicts genes natively. ``"observed"``:
        always the observed control cells; ``"reconstructed"``: always their reconstruction. Without
        matching, cell-eval's cell-level DE test (pdex) compares low-rank reconstructed cells with real ones
        and calls hundreds of genes "DE" for a prediction of no change at all. The reconstruction has exactly
        the observed control mean, so mean-level metrics do not depend on this choice (up to clipping).
    clip_negative
        cell-eval refuses log-expression below 0, which a reconstructed cell can reach; clip ``adata_pred`` at
        0 (default). Clipping moves a set's mean where it acts, so cell-eval's mean-level metrics then drift
        from the benchmark's; ``uns["cell_eval"]["n_clipped"]`` counts the values clipped. With ``False`` the
        exact reconstruction is kept (for cell-eval's metric functions, not its evaluator).

    Returns
    -------
    tuple of AnnData
        ``(adata_pred, adata_real)`` with perturbation column ``target_gene`` and control label
        ``"non-targeting"`` (both in ``uns``), evaluation coordinates in ``obsm["X_eval"]``. When two
        conditions of the context share a perturbation id (doses, times), their ``target_gene`` is the
        condition key without the context, so cell-eval keeps them apart.

    Examples
    --------
    >>> from cell_eval import MetricsEvaluator                                   # doctest: +SKIP
    >>> adata_pred, adata_real = cell_eval_inputs(pred, "mean_shift")            # doctest: +SKIP
    >>> ev = MetricsEvaluator(adata_pred, adata_real, pert_col="target_gene",    # doctest: +SKIP
    ...                       control_pert="non-targeting", outdir="cell-eval-out")
    >>> results, agg = ev.compute(profile="full")                                # doctest: +SKIP
    """
    if not isinstance(pred, AnnData):
        raise InputError(f"pred must be an AnnData from predictions_anndata, got {type(pred).__name__}.")
    if pred_controls not in ("matched", "observed", "reconstructed"):
        raise InputError(f"pred_controls must be 'matched', 'observed' or 'reconstructed', got {pred_controls!r}.")
    missing = [
        c
        for c in ("method", "model_seed", "condition", "context_id", "perturbation_id", "is_control", "gene_space")
        if c not in pred.obs
    ]
    missing += [f"obsm[{EVAL_KEY!r}]"] if EVAL_KEY not in pred.obsm else []
    missing += [f"varm[{PCS_KEY!r}]"] if PCS_KEY not in pred.varm else []
    if missing:
        raise InputError(
            f"pred is not a predictions AnnData (missing {missing}); make it with "
            "celljepa.eval.predictions.predictions_anndata."
        )
    obs = pred.obs
    methods_col = obs["method"].astype(str).to_numpy()
    methods = _levels(m for m in methods_col if m != OBSERVED)
    if method not in methods:
        raise InputError(f"method {method!r} has no predicted cells here; methods: {methods}.")
    is_method = methods_col == method
    seeds = obs["model_seed"].to_numpy(dtype=float)
    method_seeds = _levels(float(s) for s in seeds[is_method] if np.isfinite(s))
    if model_seed is None:
        if len(method_seeds) > 1:
            raise InputError(
                f"method {method!r} has {len(method_seeds)} model seeds "
                f"{[int(s) for s in method_seeds]}; choose one with model_seed=."
            )
    else:
        if float(model_seed) not in method_seeds:
            raise InputError(
                f"method {method!r} has no model seed {model_seed!r}; seeds: "
                f"{[int(s) for s in method_seeds] or 'none'}."
            )
        is_method &= seeds == float(model_seed)
    ctx_col = obs["context_id"].astype(str).to_numpy()
    contexts = _levels(ctx_col[is_method])
    if context_id is None:
        if len(contexts) > 1:
            raise InputError(
                f"method {method!r} predicts {len(contexts)} contexts {contexts}; cell-eval has no "
                "notion of context, so evaluate one at a time with context_id=."
            )
        context_id = contexts[0]
    elif str(context_id) not in contexts:
        raise InputError(f"method {method!r} has no predictions in context {context_id!r}; contexts: {contexts}.")
    context_id = str(context_id)
    in_ctx = ctx_col == context_id
    is_control = obs["is_control"].to_numpy(dtype=bool)
    observed = methods_col == OBSERVED
    sel_pred = is_method & in_ctx
    cond_col = obs["condition"].astype(str).to_numpy()
    conds = _levels(cond_col[sel_pred])
    sel_ctrl = observed & is_control & in_ctx
    sel_obs = observed & ~is_control & in_ctx & np.isin(cond_col, conds)
    if not sel_ctrl.any():
        raise InputError(f"context {context_id!r} has no control cells in pred.")
    lacking = sorted(set(conds) - set(cond_col[sel_obs]))
    if lacking:
        raise InputError(
            f"{len(lacking)} predicted condition(s) of {method!r} have no observed cells, e.g. {lacking[:5]}."
        )
    dropped = sorted(set(cond_col[observed & ~is_control & in_ctx]) - set(conds))

    # one cell-eval label per condition: the perturbation id, or the condition key when two share it
    both = sel_pred | sel_obs
    pid_of = dict(zip(cond_col[both], obs["perturbation_id"].astype(str).to_numpy()[both], strict=True))
    counts = pd.Series(list(pid_of.values()), dtype=object).value_counts()
    label = {c: (p if counts[p] == 1 else c.split("|", 1)[1]) for c, p in pid_of.items()}

    def _part(rows: np.ndarray) -> AnnData:
        out = pred[rows].copy()
        out.obs[PERT_COL] = pd.Categorical(
            [
                CONTROL_LABEL if c else label[k]
                for c, k in zip(
                    out.obs["is_control"].to_numpy(dtype=bool), out.obs["condition"].astype(str), strict=True
                )
            ]
        )
        for col in _CATEGORICAL:
            if col in out.obs and isinstance(out.obs[col].dtype, pd.CategoricalDtype):
                out.obs[col] = out.obs[col].cat.remove_unused_categories()
        return out

    ctrl_rows = np.flatnonzero(sel_ctrl)
    real = _part(np.concatenate([np.flatnonzero(sel_obs), ctrl_rows]))
    predicted = _part(np.concatenate([np.flatnonzero(sel_pred), ctrl_rows]))
    spaces = set(obs["gene_space"].astype(str).to_numpy()[sel_pred])
    reconstruct = pred_controls == "reconstructed" or (pred_controls == "matched" and spaces == {"reconstructed"})
    x = predicted.X.toarray() if sp.issparse(predicted.X) else np.array(predicted.X)
    if reconstruct:
        xc = real.X[-len(ctrl_rows) :]
        xc = np.asarray(xc.toarray() if sp.issparse(xc) else xc, dtype=np.float64)
        zc = np.asarray(real.obsm[EVAL_KEY][-len(ctrl_rows) :], dtype=np.float64)
        pcs = np.asarray(pred.varm[PCS_KEY], dtype=np.float64)
        x[-len(ctrl_rows) :] = xc.mean(axis=0) + (zc - zc.mean(axis=0)) @ pcs.T
        gene_space = predicted.obs["gene_space"].astype(str).to_numpy().copy()
        gene_space[-len(ctrl_rows) :] = "reconstructed"
        predicted.obs["gene_space"] = pd.Categorical(gene_space)
    n_clipped = 0
    if clip_negative:
        neg = x < 0
        n_clipped = int(neg.sum())
        x[neg] = 0
    predicted.X = x
    info = {
        "method": method,
        "context_id": context_id,
        "model_seed": "none" if model_seed is None else str(model_seed),
        "n_conditions": len(conds),
        "dropped_conditions": dropped,
        "pred_controls": "reconstructed" if reconstruct else "observed",
        "clip_negative": bool(clip_negative),
        "n_clipped": n_clipped,
        "n_values": int(x.size),
    }
    for part in (predicted, real):
        part.uns["cell_eval"] = dict(info)
    return predicted, real


# ------------------------------------------------------------------------------ cell-eval pairs as files


def _file_names(values: list[str], what: str) -> dict[str, str]:
    """A folder name for each value: itself when it is one, else with other characters replaced by ``_``."""
    names: dict[str, str] = {}
    for v in values:
        name = re.sub(r"[^A-Za-z0-9._+-]", "_", v).lstrip(".") or "_"
        if name in names.values():
            raise InputError(
                f"two {what}s map to the same folder name {name!r} ({[k for k, n in names.items() if n == name]} "
                f"and {v!r}); rename one."
            )
        names[v] = name
    return names


def _seed_label(seed: float) -> str:
    return f"seed{int(seed)}" if float(seed).is_integer() else f"seed{seed}"


def _for_file(part: AnnData, info: dict) -> AnnData:
    """``part`` with ``uns["cell_eval"]`` set to ``info`` in a form h5ad stores (strings, numbers, string arrays)."""
    clean = {}
    for key, value in info.items():
        if isinstance(value, list | tuple):
            value = np.asarray([str(v) for v in value], dtype=object) if value else np.zeros(0, dtype="S1")
        clean[key] = value
    part.uns["cell_eval"] = clean
    return part


_README_HEAD = """\
cell-eval pairs of this fold, written by celljepa {version}

Each pair is what `cell-eval run` (cell-eval 0.8.2, Arc Institute) reads: a predicted file and a real file,
each holding its own control cells, over the evaluation space's {n_genes} genes (the training HVGs), with
cell-eval's default perturbation column `{pert_col}` (the perturbation id) and control label `{control}`.
No other option is needed: its defaults are --pert-col {pert_col} --control-pert {control}.

  real.h5ad          observed test cells of every condition + all control cells of the context
  <method>/pred.h5ad the method's predicted cells + control cells in the same gene space
  <method>/real.h5ad only for a method that predicts fewer conditions than real.h5ad holds (cell-eval needs
                     the same perturbations on both sides)
{extra_layout}
Gene space and clipping: methods predict cells in the {n_pcs}-PC evaluation space. A predicted cell z is decoded
to log-expression as  control mean (genes) + (z - mean control coordinates) . components,  so a set's mean is
the gene-space prediction celljepa's Pearson-Delta scores. The pred file's control cells are decoded the same
way ("matched controls"; observed controls for methods that predict genes natively). cell-eval refuses
negative log-expression, so decoded values below 0 are CLIPPED AT 0 (predicted and matched control cells;
uns["cell_eval"]["n_clipped"] counts them). Clipping moves means: cell-eval's gene-space metrics then differ
from celljepa's unclipped numbers (see docs/cell-eval.md for the measured differences). The evaluation-space
coordinates are in obsm["X_eval"] of both files; `--embed-key X_eval` moves cell-eval's discrimination_score_l2
and _cosine there (discrimination_score_l2 then equals celljepa's rank: rank = 1 + N (1 - score)).

Commands, from this folder (-o keeps each method's results apart; without it they go to ./cell-eval-outdir):
"""


def write_cell_eval_pairs(
    pred_adata: AnnData, folder: str | os.PathLike, *, compression: str | None = "gzip"
) -> list[Path]:
    """Write every (predicted, real) pair of a fold as the two .h5ad files ``cell-eval run`` reads directly.

    One pair per method (and per model seed when a method has several: each seed's model is scored on its
    own, as ``per_condition_seeds.csv`` does; seeds are not pooled), cut by :func:`cell_eval_inputs` with its
    defaults (matched controls, values clipped at 0, see there). The layout under ``folder``::

        README.txt                   what the files are, the clipping, and the cell-eval command of every pair
        real.h5ad                    observed test cells + control cells
        <method>/pred.h5ad           predicted cells + control cells in the same gene space
        <method>/real.h5ad           only when the method predicts fewer conditions than real.h5ad holds
        <method>/seed<S>/pred.h5ad   instead of <method>/pred.h5ad when the method has several model seeds

    cell-eval has no notion of context, so a fold with several test contexts gets this layout once per context
    under ``<context_id>/``. Each pair then runs with no option but the two paths:
    ``cell-eval run -ap ridge/pred.h5ad -ar real.h5ad`` (its defaults ``--pert-col target_gene
    --control-pert non-targeting`` are this file's columns). Every file is written atomically, README.txt last.

    Parameters
    ----------
    pred_adata
        A predictions AnnData (:func:`predictions_anndata`, or ``predictions.h5ad`` read back).
    folder
        Where to write (created if missing); ``celljepa benchmark --predictions`` uses ``<fold>/cell_eval``.
    compression
        h5ad compression of the files (``None`` for none).

    Returns
    -------
    list of Path
        The files written, README.txt last.

    Examples
    --------
    >>> write_cell_eval_pairs(pred, "fold0/cell_eval")                           # doctest: +SKIP
    [PosixPath('fold0/cell_eval/ridge/pred.h5ad'), PosixPath('fold0/cell_eval/real.h5ad'), ...]
    """
    if not isinstance(pred_adata, AnnData):
        raise InputError(f"pred_adata must be a predictions AnnData, got {type(pred_adata).__name__}.")
    for col in ("method", "model_seed", "context_id", "condition", "is_control"):
        if col not in pred_adata.obs:
            raise InputError(
                f"pred_adata is not a predictions AnnData (no obs[{col!r}]); make it with "
                "celljepa.eval.predictions.predictions_anndata."
            )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from .._version import __version__

    obs = pred_adata.obs
    methods_col = obs["method"].astype(str).to_numpy()
    ctx_col = obs["context_id"].astype(str).to_numpy()
    cond_col = obs["condition"].astype(str).to_numpy()
    seeds_col = obs["model_seed"].to_numpy(dtype=float)
    is_control = obs["is_control"].to_numpy(dtype=bool)
    predicted = methods_col != OBSERVED
    if not predicted.any():
        raise InputError("pred_adata holds no predicted cells (only 'observed' ones); nothing to write for cell-eval.")
    contexts = _levels(ctx_col[predicted])
    ctx_dirs = _file_names(contexts, "context")
    method_dirs = _file_names(_levels(methods_col[predicted]), "method")

    written: list[Path] = []
    commands: list[str] = []
    for ctx in contexts:
        base = Path(ctx_dirs[ctx]) if len(contexts) > 1 else Path()
        in_ctx = ctx_col == ctx
        all_conds = set(cond_col[in_ctx & ~predicted & ~is_control])
        shared_real: tuple[Path, list[str]] | None = None
        for method in _levels(methods_col[predicted & in_ctx]):
            rows = (methods_col == method) & in_ctx
            seeds = _levels(float(s) for s in seeds_col[methods_col == method] if np.isfinite(s))
            for seed in seeds if len(seeds) > 1 else [None]:
                if seed is not None and not (rows & (seeds_col == seed)).any():
                    continue
                p, r = cell_eval_inputs(pred_adata, method, context_id=ctx, model_seed=seed)
                info = dict(p.uns["cell_eval"])
                where = base / method_dirs[method] / (_seed_label(seed) if seed is not None else "")
                pred_rel = where / "pred.h5ad"
                written.append(write_h5ad_atomic(_for_file(p, info), folder / pred_rel, compression=compression))
                real_conds = set(r.obs["condition"].astype(str)[~r.obs["is_control"].to_numpy(dtype=bool)])
                labels = sorted(r.obs_names)
                if real_conds == all_conds and (shared_real is None or shared_real[1] == labels):
                    real_rel = base / "real.h5ad"
                    if shared_real is None:
                        real_info = {k: info[k] for k in ("context_id", "n_conditions")}
                        real_info["note"] = "observed cells; shared by every pred.h5ad of this context"
                        written.append(
                            write_h5ad_atomic(_for_file(r, real_info), folder / real_rel, compression=compression)
                        )
                        shared_real = (real_rel, labels)
                else:
                    real_rel = where / "real.h5ad"
                    written.append(write_h5ad_atomic(_for_file(r, info), folder / real_rel, compression=compression))
                out_rel = where / "cell-eval-outdir"
                commands.append(f"cell-eval run -ap {pred_rel.as_posix()} -ar {real_rel.as_posix()}")
                commands[-1] += f" -o {out_rel.as_posix()}"
    extra = ""
    if len(contexts) > 1:
        extra += (
            f"\nThis fold has {len(contexts)} test contexts ({', '.join(contexts)}); cell-eval has no notion of "
            "context,\nso each has its own pairs under <context_id>/ (real.h5ad, <method>/pred.h5ad, ...).\n"
        )
    if any(len(_levels(float(s) for s in seeds_col[methods_col == m] if np.isfinite(s))) > 1 for m in method_dirs):
        extra += (
            "\nA method with several model seeds has one pair per seed (seeds are not pooled):\n"
            "  <method>/seed<S>/pred.h5ad, scored against real.h5ad like any other method.\n"
        )
    text = _README_HEAD.format(
        version=__version__,
        n_genes=pred_adata.n_vars,
        n_pcs=pred_adata.obsm[EVAL_KEY].shape[1] if EVAL_KEY in pred_adata.obsm else "?",
        pert_col=PERT_COL,
        control=CONTROL_LABEL,
        extra_layout=extra,
    )
    text += "".join(f"  {c}\n" for c in commands)
    written.append(write_text_atomic(folder / CELL_EVAL_README, text))
    return written


def export_cell_eval(predictions_h5ad_path: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Write the cell-eval pairs (:func:`write_cell_eval_pairs`) of a finished run's ``predictions.h5ad``.

    ``out_dir`` is written whole or not at all (staged beside it, then swapped in); an existing ``out_dir`` is
    replaced only when it is an earlier export (holds ``README.txt``) or empty, so a run folder is never
    overwritten by mistake.

    Examples
    --------
    >>> export_cell_eval("run/norman2019/S1_unseen_perturbation/fold0/predictions.h5ad", "ce")  # doctest: +SKIP
    [PosixPath('ce/no_change/pred.h5ad'), PosixPath('ce/real.h5ad'), ...]
    """
    import anndata as ad

    src = Path(predictions_h5ad_path)
    if src.suffix != ".h5ad" or not src.is_file():
        raise InputError(
            f"{str(src)!r} is not a predictions .h5ad file; give the predictions.h5ad that "
            "`celljepa benchmark --predictions` writes in each fold folder."
        )
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise InputError(f"out_dir {str(out)!r} is a file; give a folder.")
        if any(out.iterdir()) and not (out / CELL_EVAL_README).is_file():
            raise InputError(
                f"out_dir {str(out)!r} holds files that are not an earlier cell-eval export (no {CELL_EVAL_README}); "
                "it would be replaced whole. Choose a new or empty folder."
            )
        if src.resolve().is_relative_to(out.resolve()):
            raise InputError(f"out_dir {str(out)!r} holds the predictions file itself; choose another folder.")
    try:
        pred = ad.read_h5ad(src)
    except (OSError, KeyError, ValueError) as err:
        raise InputError(f"cannot read {str(src)!r} as AnnData ({err}).") from None
    with staged_folder(out) as stage:
        written = write_cell_eval_pairs(pred, stage)
    return [out / p.relative_to(stage) for p in written]
