"""``cj.models.CellJEPA``: JEPA pretraining of cell embeddings on an AnnData (scvi-tools-style model)."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .._errors import CelljepaWarning, InputError
from .._io import write_json_atomic
from .._logging import logger
from ..data._normalize import require_log_expression

__all__ = ["CellJEPA"]

MODEL_FILE = "model.pt"
MIN_GENE_OVERLAP = 0.5


def _as_config(config):
    from ..train.config import JEPAConfig, load_config

    if config is None:
        return JEPAConfig()
    if isinstance(config, JEPAConfig):
        return JEPAConfig.from_dict(config.to_dict())
    if isinstance(config, dict):
        return JEPAConfig.from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    raise InputError(f"config must be a JEPAConfig, a dict or a path to a YAML file, got {type(config).__name__}.")


def _check_var_names(var_names, where: str) -> list[str]:
    names = pd.Index(var_names).astype(str)
    if names.has_duplicates:
        dup = names[names.duplicated()][0]
        raise InputError(
            f"{where}.var_names has duplicates (e.g. {dup!r}); genes must be unique. Fix: "
            "adata.var_names_make_unique()."
        )
    return list(names)


def module_map(var_names, gene_sets, priority: str) -> tuple[np.ndarray, list[str], str]:
    """Module id per gene from a gene-set spec; errors when the sets do not cover the genes."""
    from ..data.genesets import gene_module_map, resolve_gene_sets

    sets, description = resolve_gene_sets(gene_sets)
    ids, names = gene_module_map(var_names, sets, priority=priority)
    n_assigned = int((np.asarray(names)[ids] != "unassigned").sum()) if len(names) else 0
    n_modules = len([n for n in names if n != "unassigned"])
    if n_modules < 2:
        raise InputError(
            f"module masks need genes in at least 2 gene sets, but only {n_assigned} of {len(var_names)} genes are in "
            f"{description} ({n_modules} set(s)); gene names must match the set's symbols (e.g. "
            f"{list(var_names)[:3]}). Fix: mask.kind='random' or 'block', or gene sets with your identifiers."
        )
    if n_assigned < 0.05 * len(var_names):
        warnings.warn(
            f"only {n_assigned} of {len(var_names)} genes are in a module of {description}; the rest form "
            "one 'unassigned' module that is hidden as a whole.",
            CelljepaWarning,
            stacklevel=3,
        )
    return ids, names, description


def _measured(adata, presence=False) -> np.ndarray:
    """Per gene of ``adata``: measured by at least one of its datasets (not flagged absent everywhere).

    ``presence``: ``gene_presence(adata)`` when the caller has it already.
    """
    from ..data._harmonize import gene_presence

    if presence is False:
        presence = gene_presence(adata, fallback_to_flags=True)
    if presence is None:
        return np.ones(adata.n_vars, dtype=bool)
    return presence[1].any(axis=0)


@functools.lru_cache(maxsize=1)
def _genome_aliases() -> dict[str, str]:
    """The ``genome-v1`` alias table (alias → current NCBI symbol), read once per process."""
    from ..data._harmonize import _read_aliases, feature_set_aliases, load_feature_set

    return _read_aliases(feature_set_aliases(load_feature_set("genome-v1")))


def _symbols(adata) -> list[str]:
    """Gene symbols of ``adata`` (the symbol column when var_names are Ensembl IDs; versions stripped)."""
    from ..data._harmonize import gene_keys

    return gene_keys(adata)[0]


def go_features(names, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """``(features, found)``: the GO gene embedding's row per gene symbol (zeros where a gene has none).

    A symbol without GO annotations is looked up again under its current NCBI symbol (the ``genome-v1``
    alias table), so data with older symbols get the same features.
    """
    from ..data.go import go_gene_embedding

    names = [str(n) for n in names]
    feats, found = go_gene_embedding(n_components).matrix_for(names)
    if not found.all():
        aliases = _genome_aliases()
        retry = np.flatnonzero(~found)
        current = [aliases.get(names[i].strip().upper(), "") for i in retry]
        more, more_found = go_gene_embedding(n_components).matrix_for(current)
        feats[retry[more_found]] = more[more_found]
        found[retry[more_found]] = True
    return feats, found


def _peak_rss() -> int | None:
    """Peak resident memory of this process so far, in bytes (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class CellJEPA:
    """Joint-embedding predictive pretraining of cell embeddings.

    A student encoder sees each cell with some genes hidden (random genes, gene blocks or whole gene
    modules) and, with a pointer to what was hidden, predicts the embedding an EMA teacher computes
    from the whole cell; variance/covariance terms keep the embedding from collapsing. The teacher's
    full-view embedding is the cell representation.

    Parameters
    ----------
    adata
        Cells × genes, log-normalised in ``X`` (or ``layer``); may be backed (``read_h5ad(..., backed="r")``),
        then cells are streamed from disk in chunks.
    layer
        Layer to read instead of ``X``.
    n_latent
        Embedding size (default 128, or the config's).
    config
        A :class:`~celljepa.train.config.JEPAConfig`, a nested dict or a YAML path; the keyword
        arguments below override it.
    n_hidden, n_layers
        Encoder width and depth.
    mask, mask_ratio
        Mask kind (``"random"``, ``"block"``, ``"module"``) and the hidden share of units.
    gene_sets
        Module masks: a shipped collection (``"hallmark"``) or a GMT/CSV path.

    Examples
    --------
    >>> import celljepa as cj
    >>> adata = cj.datasets.demo()
    >>> model = cj.models.CellJEPA(adata, n_latent=32, mask="random")
    >>> model.train(max_steps=20, batch_size=128, progress=False)  # doctest: +ELLIPSIS
    CellJEPA(...trained 20 steps...)
    >>> model.get_latent_representation().shape
    (5961, 32)
    """

    def __init__(
        self,
        adata,
        layer: str | None = None,
        n_latent: int | None = None,
        *,
        config=None,
        n_hidden: int | None = None,
        n_layers: int | None = None,
        mask: str | None = None,
        mask_ratio: float | None = None,
        gene_sets: str | os.PathLike | None = None,
    ):
        cfg = _as_config(config)
        model_over = {
            k: v for k, v in {"n_latent": n_latent, "n_hidden": n_hidden, "n_layers": n_layers}.items() if v is not None
        }
        mask_over = {
            k: v
            for k, v in {
                "kind": mask,
                "ratio": mask_ratio,
                "gene_sets": None if gene_sets is None else str(gene_sets),
            }.items()
            if v is not None
        }
        data_over = {"layer": layer} if layer is not None else {}
        self.config = cfg.replace(model=model_over, mask=mask_over, data=data_over)
        self.adata = adata
        self.var_names = _check_var_names(adata.var_names, "adata")
        require_log_expression(adata, self.config.data.layer)
        self.columns_: np.ndarray | None = None
        self.gene_features_: np.ndarray | None = None
        self.go_info_: dict = {}
        self.action_tokens_: list[str] = []
        self._presence = False  # gene_presence(adata), computed once (False: not yet)
        if self.config.model.gene_embedding == "go":
            self._init_gene_features()
        self._init_modules_meta()
        self.module_ = None
        self.covariate_key_: str | None = None
        self.covariate_names_: list[str] = []
        self.history_: list[dict] = []
        self.is_trained_ = False
        self.train_info_: dict = {}

    def _gene_presence(self):
        """``gene_presence(self.adata)`` (which genes each of its datasets measures), computed once."""
        from ..data._harmonize import gene_presence

        if self._presence is False:
            self._presence = gene_presence(self.adata)
        return self._presence

    def _init_gene_features(self) -> None:
        """GO gene features of the encoder's genes: those measured in at least one training dataset."""
        measured = _measured(self.adata, self._gene_presence())
        if not measured.all():
            self.columns_ = np.flatnonzero(measured).astype(np.int64)
            self.var_names = [self.var_names[i] for i in self.columns_]
        if not self.var_names:
            raise InputError("no gene of the AnnData is measured (every gene is flagged absent).")
        symbols = _symbols(self.adata)
        if self.columns_ is not None:
            symbols = [symbols[i] for i in self.columns_]
        self.gene_features_, found = go_features(symbols, self.config.model.go_components)
        self.go_info_ = {
            "n_genes": len(self.var_names),
            "n_with_go": int(found.sum()),
            "n_dropped_absent": int(self.adata.n_vars - len(self.var_names)),
        }

    def _init_modules_meta(self) -> None:
        k = self.config.mask
        if k.kind == "module":
            self.gene_to_module_, self.module_names_, self.gene_sets_source_ = module_map(
                self.var_names, k.gene_sets, k.priority
            )
        else:
            self.gene_to_module_, self.module_names_, self.gene_sets_source_ = None, [], None

    def __repr__(self) -> str:
        state = f"trained {self.train_info_.get('steps', 0)} steps" if self.is_trained_ else "not trained"
        m, k = self.config.model, self.config.mask
        return (
            f"CellJEPA(n_genes={len(self.var_names)}, n_latent={m.n_latent}, mask={k.kind}@{k.ratio}, "
            f"ema={'on' if self.config.train.ema else 'off'}, "
            f"anticollapse={'on' if self.config.train.anticollapse else 'off'}; {state})"
        )

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_steps: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        device: str | None = None,
        seed: int | None = None,
        *,
        train_indices=None,
        eval_indices=None,
        run_dir: str | os.PathLike | None = None,
        resume: bool = True,
        progress: bool = True,
        handle_signals: bool | None = None,
        callback=None,
        action_indices=None,
    ) -> CellJEPA:
        """Train from a fresh initialisation (or resume a run folder's checkpoint).

        Parameters
        ----------
        max_steps, batch_size, lr, device, seed
            Override the config's ``train`` section (``device="auto"`` picks CUDA when available).
        train_indices
            Cells (integer positions or obs names) to train on, e.g. a split's training cells; default all.
        eval_indices
            Cells of the fixed evaluation batch used to choose ``best.pt``; default a seeded sample of
            ``data.eval_cells`` training cells.
        run_dir
            Write ``metrics.jsonl`` and ``checkpoints/{last,best}.pt`` there; with ``resume`` an existing
            ``last.pt`` of the same config is continued.
        progress
            Show a progress bar with the loss and collapse metrics.
        handle_signals
            Checkpoint and stop on SIGTERM/SIGUSR1 (default: when ``run_dir`` is given).
        callback
            ``callback(step, record)`` after each step.
        action_indices
            With ``train.action_weight > 0``: the cells whose perturbation labels the action-conditioned
            objective may use (their conditions and the control cells of their contexts); default
            ``train_indices``. A benchmark fold passes its training conditions and control cells only.

        Returns
        -------
        ``self``, trained; ``history_`` holds the metrics records.
        """
        from ..train.data import CellSource
        from ..train.distributed import training_device
        from ..train.loop import build_modules, fit, resolve_device

        over = {
            k: v
            for k, v in {
                "max_steps": max_steps,
                "batch_size": batch_size,
                "lr": lr,
                "seed": seed,
                "device": None if device is None else str(device),
            }.items()
            if v is not None
        }
        self.config = self.config.replace(train=over)
        cfg = self.config
        dev = resolve_device(training_device(cfg.train.device))
        source = CellSource.from_adata(self.adata, cfg.data.layer, chunk_size=cfg.data.chunk_size)
        if self.columns_ is not None:
            source.select_columns(self.columns_)
        counts_source = None
        if cfg.train.thin_views > 0:
            from ..data._normalize import check_counts

            layer = cfg.data.counts_layer
            if layer not in self.adata.layers:
                raise InputError(
                    f"train.thin_views needs raw counts in adata.layers[{layer!r}]; layers: "
                    f"{', '.join(self.adata.layers) or 'none'}. Fix: keep the counts there (cj.pp.normalize does)."
                )
            check_counts(self.adata.layers[layer], where=f"adata.layers[{layer!r}]")
            counts_source = CellSource.from_adata(self.adata, layer, chunk_size=cfg.data.chunk_size)
            if self.columns_ is not None:
                counts_source.select_columns(self.columns_)
        train_rows = self._positions(train_indices, "train_indices")
        if eval_indices is None:
            rng = np.random.default_rng([cfg.train.seed, 0xE7A1])
            eval_rows = np.sort(rng.choice(train_rows, min(cfg.data.eval_cells, train_rows.size), replace=False))
        else:
            eval_rows = self._positions(eval_indices, "eval_indices")
            if eval_rows.size > cfg.data.eval_cells:
                rng = np.random.default_rng([cfg.train.seed, 0xE7A1])
                eval_rows = np.sort(rng.choice(eval_rows, cfg.data.eval_cells, replace=False))
        groups = None
        if cfg.data.balance_key is not None:
            if cfg.data.balance_key not in self.adata.obs:
                raise InputError(
                    f"data.balance_key {cfg.data.balance_key!r} is not an obs column; obs has "
                    f"{list(self.adata.obs.columns)[:12]}."
                )
            groups = self.adata.obs[cfg.data.balance_key].astype(str).to_numpy()
        covariates = self._fit_covariates()
        action = None
        self.action_tokens_ = []
        if cfg.train.action_weight > 0:
            from ..train.action import ActionSampler

            rows = train_rows if action_indices is None else self._positions(action_indices, "action_indices")
            k = cfg.model.go_components
            action = ActionSampler.from_obs(
                self.adata.obs,
                rows,
                self.var_names,
                cfg=cfg,
                go_features=(lambda names: go_features(names, k)) if cfg.model.gene_embedding == "go" else None,
            )
            self.action_tokens_ = list(action.tokens)
        modules = build_modules(
            len(self.var_names),
            cfg,
            cfg.train.seed,
            len(self.covariate_names_),
            gene_features=self._feature_tensor(),
            n_action_tokens=len(self.action_tokens_),
        )
        presence = self._gene_presence()
        if presence is not None and self.columns_ is not None:
            presence = (presence[0], presence[1][:, self.columns_])
        extra = {
            "module_names": list(self.module_names_),
            "covariate_key": self.covariate_key_,
            "action_tokens": list(self.action_tokens_),
            "covariate_names": list(self.covariate_names_),
            "gene_to_module": None if self.gene_to_module_ is None else torch.from_numpy(self.gene_to_module_),
        }
        try:
            result = fit(
                modules,
                source,
                cfg=cfg,
                var_names=self.var_names,
                train_rows=train_rows,
                eval_rows=eval_rows,
                device=dev,
                gene_to_module=self.gene_to_module_,
                run_dir=run_dir,
                resume=resume,
                progress=progress,
                handle_signals=handle_signals,
                callback=callback,
                extra_payload=extra,
                groups=groups,
                gene_present=presence,
                action=action,
                covariates=covariates,
                counts_source=counts_source,
            )
        finally:
            source.close()
            if counts_source is not None:
                counts_source.close()
        self.module_ = modules
        self.history_ = result.history
        self.is_trained_ = True
        self.train_info_ = {
            "steps": result.step,
            "resumed_from": result.resumed_from,
            "device": str(dev),
            "n_train_cells": int(train_rows.size),
            "n_eval_cells": int(eval_rows.size),
            "best": result.best,
            "peak_rss_bytes": _peak_rss(),
            "kept": cfg.train.keep,
            "kept_step": (result.best or {}).get("step") if cfg.train.keep == "best" else result.step,
        }
        return self

    def _feature_tensor(self) -> torch.Tensor | None:
        return None if self.gene_features_ is None else torch.from_numpy(np.asarray(self.gene_features_, np.float32))

    def _positions(self, indices, name: str) -> np.ndarray:
        n = self.adata.n_obs
        if indices is None:
            return np.arange(n, dtype=np.int64)
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.size != n:
                raise InputError(f"{name} as a boolean mask must have one entry per cell ({n}), got {idx.size}.")
            return np.flatnonzero(idx).astype(np.int64)
        if idx.dtype.kind in "iu":
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise InputError(f"{name} must be positions in [0, {n}).")
            return np.unique(idx.astype(np.int64))
        pos = pd.Index(self.adata.obs_names).get_indexer(idx.astype(str))
        if (pos < 0).any():
            raise InputError(f"{name} names cells that are not in adata.obs_names, e.g. {idx[pos < 0][0]!r}.")
        return np.unique(pos.astype(np.int64))

    # ------------------------------------------------------------------ inference
    def _require_trained(self) -> None:
        if not self.is_trained_ or self.module_ is None:
            raise InputError("the model is not trained yet. Fix: call model.train() first, or CellJEPA.load(...).")

    def _aligner(self, var_names, measured: np.ndarray | None = None, symbols: list[str] | None = None):
        """``(align, overlap, extra_features)`` for an AnnData on ``var_names``.

        ``align`` maps its CSR onto the model's genes (``None`` when they are the same); with GO gene
        features (``model.gene_embedding='go'``) the genes the model was not trained on but that have GO
        features are appended after the model's genes, and ``extra_features`` holds their rows. ``measured``
        flags the genes the AnnData measures (genes flagged absent are not appended); ``symbols`` are the
        names GO features are looked up by (default ``var_names``).
        """
        names = _check_var_names(var_names, "adata")
        if names == self.var_names:
            return None, 1.0, None
        go = self.config.model.gene_embedding == "go"
        pos = pd.Index(names).get_indexer(self.var_names)
        present = pos >= 0
        measured = np.ones(len(names), dtype=bool) if measured is None else np.asarray(measured, dtype=bool)
        extra_cols = np.zeros(0, dtype=np.int64)
        extra_features = None
        if go:
            known = np.zeros(len(names), dtype=bool)
            known[pos[present]] = True
            candidates = np.flatnonzero(~known & measured)
            lookup = names if symbols is None else list(symbols)
            feats, found = go_features([lookup[i] for i in candidates], self.config.model.go_components)
            extra_cols, extra_features = candidates[found], feats[found]
            n_measured = max(int(measured.sum()), 1)
            overlap = (int(measured[pos[present]].sum()) + extra_cols.size) / n_measured
            if overlap < MIN_GENE_OVERLAP:
                raise InputError(
                    f"only {overlap:.0%} of this AnnData's {n_measured} measured genes are genes of the model or "
                    f"have GO features (at least {MIN_GENE_OVERLAP:.0%} are needed); gene names must be symbols (e.g. "
                    f"{names[:3]}). Fix: harmonise gene identifiers (cj.pp.harmonize_genes(adata, 'genome-v1'))."
                )
        else:
            overlap = float(present.mean())
            if overlap < MIN_GENE_OVERLAP:
                raise InputError(
                    f"only {int(present.sum())} of the model's {len(self.var_names)} genes ({overlap:.0%}) are in "
                    f"this AnnData; at least {MIN_GENE_OVERLAP:.0%} are needed. Fix: use data measured on the same "
                    "genes (or harmonise gene identifiers, e.g. symbols vs Ensembl IDs), or an encoder with GO gene "
                    "features (model.gene_embedding='go'), which embeds other gene panels."
                )
            if not present.all():
                missing = [g for g, p in zip(self.var_names, present, strict=True) if not p]
                warnings.warn(
                    f"{len(missing)} of the model's {len(self.var_names)} genes are missing from this "
                    f"AnnData (e.g. {missing[:3]}); they count as zero expression.",
                    CelljepaWarning,
                    stacklevel=3,
                )
        n_out = len(self.var_names) + extra_cols.size
        rows = np.concatenate([pos[present], extra_cols])
        cols = np.concatenate([np.flatnonzero(present), len(self.var_names) + np.arange(extra_cols.size)])
        select = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(len(names), n_out))

        def align(x):
            out = (x @ select).tocsr()
            out.sort_indices()
            return out

        return align, overlap, extra_features

    def _fit_covariates(self) -> np.ndarray | None:
        """With ``model.dataset_covariate``: the datasets of the training AnnData and each cell's index."""
        cfg = self.config
        if not cfg.model.dataset_covariate:
            self.covariate_key_, self.covariate_names_ = None, []
            return None
        key = cfg.data.balance_key or "dataset_id"
        if key not in self.adata.obs:
            raise InputError(
                f"model.dataset_covariate needs obs[{key!r}] (the dataset of every cell). Fix: train on "
                "several files (celljepa pretrain A.h5ad B.h5ad) or set data.balance_key."
            )
        self.covariate_key_ = key
        self.covariate_names_ = sorted(self.adata.obs[key].astype(str).unique().tolist())
        return self._covariate_index(self.adata)

    def _covariate_index(self, adata) -> np.ndarray | None:
        """Each cell's covariate (1-based position of its dataset; 0 for a dataset the model has not seen)."""
        if not self.covariate_names_:
            return None
        if self.covariate_key_ not in adata.obs:
            return np.zeros(adata.n_obs, dtype=np.int64)
        lookup = {name: i + 1 for i, name in enumerate(self.covariate_names_)}
        return np.array([lookup.get(v, 0) for v in adata.obs[self.covariate_key_].astype(str)], dtype=np.int64)

    @torch.no_grad()
    def get_latent_representation(
        self,
        adata=None,
        *,
        batch_size: int = 2048,
        layer: str | None = None,
        device: str | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """The teacher's full-view embedding of every cell of ``adata`` (default: the training AnnData).

        A different AnnData is aligned to the model's genes by name: genes it lacks count as zero (with
        a warning), genes the model does not know are ignored, and less than 50% overlap is an error.

        Returns
        -------
        ``(n_obs, n_latent)`` float32 array.
        """
        from tqdm.auto import tqdm

        from ..nn.modules import CSRBatch
        from ..train.data import CellSource
        from ..train.loop import embedding_encoder, resolve_device

        self._require_trained()
        adata = self.adata if adata is None else adata
        if adata is None:
            raise InputError("no AnnData: pass adata (a loaded model has none attached).")
        go = self.config.model.gene_embedding == "go"
        align, _, extra = self._aligner(
            adata.var_names, _measured(adata) if go else None, _symbols(adata) if go else None
        )
        layer = self.config.data.layer if layer is None else layer
        dev = resolve_device(device if device is not None else self.config.train.device)
        encoder = embedding_encoder(self.module_).to(dev).eval()
        weight = None
        if extra is not None and len(extra):
            weight = torch.cat([encoder.effective_weight(), encoder.feature_weight(extra)])
        source = CellSource.from_adata(adata, layer, chunk_size=max(self.config.data.chunk_size, batch_size))
        out = np.empty((adata.n_obs, self.config.model.n_latent), dtype=np.float32)
        cov = self._covariate_index(adata)
        try:
            for rows, x in tqdm(
                source.iter_rows(np.arange(adata.n_obs), batch_size),
                desc="embedding",
                total=-(-adata.n_obs // batch_size),
                disable=not progress or None,
                leave=False,
            ):
                if align is not None:
                    x = align(x)
                c = None if cov is None else torch.as_tensor(cov[rows], device=dev)
                out[rows] = encoder(CSRBatch.from_scipy(x, dev), covariate=c, weight=weight).float().cpu().numpy()
        finally:
            source.close()
        return out

    # ------------------------------------------------------------------ persistence
    def _payload(self) -> dict:
        self._require_trained()
        return {
            "config": self.config.to_dict(),
            "var_names": list(self.var_names),
            "module_names": list(self.module_names_),
            "gene_sets_source": self.gene_sets_source_,
            "covariate_key": self.covariate_key_,
            "covariate_names": list(self.covariate_names_),
            "gene_to_module": None if self.gene_to_module_ is None else torch.from_numpy(self.gene_to_module_),
            "modules": {k: {n: t.detach().cpu() for n, t in v.state_dict().items()} for k, v in self.module_.items()},
            "history": self.history_,
            "train_info": self.train_info_,
            "go_info": dict(self.go_info_),
            "action_tokens": list(self.action_tokens_),
        }

    def save(self, dir_path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``dir_path/model.pt`` (weights, config, genes) and a readable ``dir_path/model.json``.

        ``model.pt`` holds tensors and plain containers only, so it loads with ``weights_only=True``.

        Examples
        --------
        >>> import tempfile, celljepa as cj
        >>> model = cj.models.CellJEPA(cj.datasets.demo(), n_latent=16, mask="random")
        >>> _ = model.train(max_steps=5, progress=False)
        >>> path = model.save(tempfile.mkdtemp() + "/jepa")
        >>> cj.models.CellJEPA.load(path).config.model.n_latent
        16
        """
        from ..train.checkpoint import save_checkpoint

        out = Path(dir_path)
        target = out / MODEL_FILE
        if target.exists() and not overwrite:
            raise InputError(f"{target} exists. Fix: pass overwrite=True or choose another folder.")
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(target, self._payload())
        write_json_atomic(
            out / "model.json",
            {
                "config": self.config.to_dict(),
                "n_genes": len(self.var_names),
                "gene_sets": self.gene_sets_source_,
                "train_info": self.train_info_,
                "go_features": dict(self.go_info_) or None,
                "final": self.history_[-1] if self.history_ else None,
            },
        )
        return out

    @classmethod
    def load(cls, path: str | os.PathLike, adata=None, *, device: str = "cpu") -> CellJEPA:
        """Load a model saved with :meth:`save` (a folder or its ``model.pt``) or a run's checkpoint.

        A ``celljepa pretrain`` run folder (its ``model/``) and a run's ``checkpoints/best.pt`` or
        ``last.pt`` work too; weights are read with ``weights_only=True``.

        ``adata`` (optional) is attached for :meth:`get_latent_representation`; it is aligned to the
        model's genes by name (missing genes → zero with a warning; < 50% overlap → error).
        """
        from ..train.checkpoint import load_checkpoint
        from ..train.config import JEPAConfig
        from ..train.loop import build_modules, embedding_encoder

        path = Path(path)
        if path.is_dir() and not (path / MODEL_FILE).is_file() and (path / "model" / MODEL_FILE).is_file():
            path = path / "model"  # a `celljepa pretrain` run folder
        file = path / MODEL_FILE if path.is_dir() else path
        payload = load_checkpoint(file, map_location=device)
        model = cls.__new__(cls)
        model.config = JEPAConfig.from_dict(payload["config"], source=str(file))
        model.var_names = list(payload["var_names"])
        g2m = payload.get("gene_to_module")
        model.gene_to_module_ = None if g2m is None else g2m.numpy().astype(np.int32)
        model.module_names_ = list(payload.get("module_names") or [])
        model.gene_sets_source_ = payload.get("gene_sets_source")
        model.covariate_key_ = payload.get("covariate_key")
        model.covariate_names_ = list(payload.get("covariate_names") or [])
        model.columns_ = None
        model._presence = False
        model.go_info_ = dict(payload.get("go_info") or {})
        model.action_tokens_ = list(payload.get("action_tokens") or [])
        modules = build_modules(
            len(model.var_names),
            model.config,
            model.config.train.seed,
            len(model.covariate_names_),
            n_action_tokens=len(model.action_tokens_),
        )
        for name, module in modules.items():
            module.load_state_dict(payload["modules"][name])
        model.module_ = modules.eval()
        enc = embedding_encoder(modules)
        model.gene_features_ = enc.gene_features.numpy() if enc.n_gene_features else None
        model.history_ = list(payload.get("history") or [])
        model.train_info_ = dict(payload.get("train_info") or {"steps": payload.get("step")})
        model.is_trained_ = True
        model.adata = None
        if adata is not None:
            go = model.config.model.gene_embedding == "go"
            model._aligner(
                adata.var_names,
                _measured(adata) if go else None,  # fail early on a gene mismatch
                _symbols(adata) if go else None,
            )
            model.adata = adata
        logger.info("loaded %s (%d genes)", file, len(model.var_names))
        return model

    def diagnostics(self, adata=None, **kwargs) -> dict:
        """Collapse diagnostics (:func:`celljepa.eval.embedding.collapse_diagnostics`) of the embedding."""
        from ..eval.embedding import collapse_diagnostics

        return collapse_diagnostics(self.get_latent_representation(adata, **kwargs))
