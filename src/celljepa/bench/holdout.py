"""Cross-dataset holdout (``S4_holdout_dataset``): does pretraining on *other* datasets help a new one.

One whole dataset is held out. All datasets are mapped onto one feature set
(:func:`celljepa.pp.harmonize_genes`); a CellJEPA encoder is pretrained on the other
datasets together (balanced batches, absent genes never targets) and never sees a cell of the held-out
one. Then, on the held-out dataset:

(a) **embedding transfer**: kNN accuracy of its labels (``cell_type``, ``perturbation_id``) on the
    embedding of the encoder pretrained elsewhere, against 50 PCs fitted on the held-out dataset alone
    and against a JEPA encoder pretrained on the held-out dataset alone (same config; its labels unseen);
(b) **perturbation prediction** on its own splits (S1/S2 folds): the transition models on the encoder
    pretrained elsewhere against the same models on an encoder pretrained on the fold's visible cells
    of the held-out dataset (as ``celljepa benchmark`` does), beside the tuned baselines, all in the
    fold's one evaluation space; paired bootstrap CIs over test conditions.

Both arms of (b) are scored on the harmonised dataset (the feature set's genes), so their evaluation
space is the same, and may differ from a benchmark on the dataset's native genes.

A run resumes: the encoders are saved under ``OUT/encoders/`` and every scored fold under
``OUT/<split>/split_seed<s>/fold<k>/``, each with the digest of its inputs written last; a restarted run
reads back whatever finished with the same inputs and computes the rest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import InputError
from .._io import (
    folder_lock,
    refuse_beside_holder,
    refuse_other_kind,
    staged_folder,
    write_json_atomic,
    write_text_atomic,
)
from .._logging import logger
from ..eval.bootstrap import SeedCube
from ..eval.report import holdout_markdown
from ..eval.report.holdout import holdout_rows, transfer_rows  # noqa: F401 - importable here as before
from ..eval.verdict import apply_holm, claimable, family_rows, holm_over
from .claims import check_claims, fixed_claims
from .config import RunConfig
from .pooling import PRIMARY, paired_difference, pool_conditions, summarize
from .provenance import provenance, versions
from .tasks import (
    config_digest,
    data_fingerprint,
    read_tables,
    stop_on_signals,
    task_indices,
    write_tables,
)

__all__ = ["HOLDOUT_SPLIT", "holdout_run"]

HOLDOUT_SPLIT = "S4_holdout_dataset"


def _pretrain(adata, jepa, *, progress: bool, run_dir: Path | None = None):
    from ..models import CellJEPA

    model = CellJEPA(adata, config=jepa)
    model.train(run_dir=run_dir, progress=progress, handle_signals=False)
    return model


def _finished(marker: Path, digest: str) -> bool:
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("config_digest") == digest
    except (OSError, ValueError):
        return False


def _encoder(path: Path, inputs: dict, train):
    """The encoder saved in ``path`` from the same ``inputs``, or ``train()``'s, saved there (digest last).

    ``train=None``: ``(None, digest)`` when there is no finished encoder.
    """
    from ..models import CellJEPA

    digest = config_digest(inputs)
    if _finished(path / "inputs.json", digest):
        try:
            return CellJEPA.load(path), digest
        except InputError:  # a damaged model file: train again
            pass
    if train is None:
        return None, digest
    model = train()
    with staged_folder(path) as stage:  # the encoder folder appears whole, its digest last
        model.save(stage, overwrite=True)
        write_json_atomic(stage / "inputs.json", {"config_digest": digest})
    return model, digest


def _other_digest(marker: Path, digest: str) -> bool:
    """Whether ``marker`` records a finished task of other inputs (a different digest)."""
    try:
        stored = json.loads(marker.read_text(encoding="utf-8")).get("config_digest")
    except (OSError, ValueError):
        return False
    return stored is not None and stored != digest


def _transfer(held, enc_others, enc_self, *, seed: int, labels, n_pcs: int, progress: bool) -> dict:
    from ..eval.embedding import collapse_diagnostics, knn_table
    from .pretrain import pca_embedding

    x = held.X
    pcs, pca_info = pca_embedding(x, np.arange(held.n_obs), n_pcs, seed)
    emb = {
        "X_jepa_others": enc_others.get_latent_representation(held, progress=progress),
        "X_jepa_self": enc_self.get_latent_representation(held, progress=progress),
        "X_pca_self": pcs,
    }
    knn = knn_table(emb, held.obs, list(labels), seed=seed)
    return {"knn": knn, "pca": pca_info, "diagnostics": {k: collapse_diagnostics(v) for k, v in emb.items()}}


class _Holdout:
    """One holdout run's inputs and its tasks, each computed or read back by the digest of its inputs.

    The tasks are the encoders (from elsewhere per model seed, and on the held-out dataset alone), then the
    held-out dataset's folds.
    """

    def __init__(
        self, datasets: dict, holdout: str, out: Path, run: RunConfig, feature_set, splits, max_folds, progress: bool
    ):
        from ..data._harmonize import map_genes, resolve_feature_set
        from ..splits import make_split_folds

        self.holdout, self.out, self.run, self.progress = holdout, out, run, progress
        self.others = {k: v for k, v in datasets.items() if k != holdout}
        self.fs = resolve_feature_set(feature_set, self.others, name=f"without-{holdout}")
        self.model_seeds = list(run.model_seeds)
        self.jepa, self.transition = run.jepa_for(self.model_seeds[0]), run.transition_for(self.model_seeds[0])
        # GO gene vectors embed any gene of the list: the held-out dataset keeps only the genes it measures
        self.held = map_genes(
            datasets[holdout], self.fs, name=holdout, measured_only=self.jepa.model.gene_embedding == "go"
        )
        # one dataset: no dataset covariate for the held-out dataset's own encoders
        self.own = self.jepa.replace(model={"dataset_covariate": False})
        self.splits = splits or {"S1_unseen_perturbation": 3}
        self.max_folds = max_folds
        others_data = {name: data_fingerprint(a) for name, a in self.others.items()}
        self.encoder_specs = []  # (folder, inputs, config, on other datasets)
        for ms in self.model_seeds:
            cfg = run.jepa_for(ms)
            if len(self.others) > 1:
                cfg = cfg.replace(data={"balance_key": "dataset_id"})
            self.encoder_specs.append(
                (
                    out / "encoders" / f"others_seed{ms}",
                    {"jepa": cfg.to_dict(), "data": others_data, "feature_set": self.fs.info()},
                    cfg,
                    True,
                )
            )
        own_first = self.own.replace(train={"seed": self.model_seeds[0]})
        self.fingerprint = data_fingerprint(self.held)
        self.encoder_specs.append(
            (out / "encoders" / "self", {"jepa": own_first.to_dict(), "data": self.fingerprint}, own_first, False)
        )
        self.encoder_digests = [config_digest(inputs) for _, inputs, _, _ in self.encoder_specs]
        self.folds = [
            (split, s, fold, k)
            for split, k in self.splits.items()
            for s in run.split_seeds
            for fold in make_split_folds(self.held.obs, split, dataset_id=holdout, n_folds=k, seed=s)[:max_folds]
        ]
        self.effects: dict = {}  # each fold's effect filter, when this process computed the claims family

    def claims(self, *, when: str = "before any model was fitted") -> dict:
        """The claims family of the held-out dataset's splits, from the data alone (``OUT/claims.json``)."""
        jobs = [(self.holdout, split, s, fold) for split, s, fold, _ in self.folds]
        claims, self.effects = fixed_claims(
            self.out,
            {self.holdout: self.held},
            jobs,
            self.run,
            progress=self.progress,
            when=when,
            fingerprints={self.holdout: self.fingerprint},
        )
        return claims

    def tasks(self) -> list[tuple[str, str, Path]]:
        """``(kind, label, folder)`` of every task: the encoders first, then the folds."""
        enc = [("encoder", folder.name, folder) for folder, _, _, _ in self.encoder_specs]
        return enc + [
            ("fold", f"{split} split_seed{s} fold{fold['fold']}", self.fold_dir(split, s, fold))
            for split, s, fold, _ in self.folds
        ]

    def fold_dir(self, split: str, s: int, fold: dict) -> Path:
        return self.out / split / f"split_seed{s}" / f"fold{fold['fold']}"

    def encoder(self, i: int, *, train: bool = True):
        """Encoder task ``i``: read back when finished with the same inputs, else trained and saved (or None)."""
        from ..data._harmonize import combine_datasets, map_genes

        folder, inputs, cfg, elsewhere = self.encoder_specs[i]

        def fit():
            if not elsewhere:
                return _pretrain(self.held, cfg, progress=self.progress)
            if len(self.others) > 1:
                return _pretrain(combine_datasets(self.others, self.fs), cfg, progress=self.progress)
            ((name, only),) = self.others.items()
            return _pretrain(map_genes(only, self.fs, name=name), cfg, progress=self.progress)

        return _encoder(folder, inputs, fit if train else None)[0]

    def encoders(self, *, train: bool = True) -> tuple[dict, object]:
        """``({model seed: encoder from elsewhere}, encoder on the held-out dataset)``."""
        models = [self.encoder(i, train=train) for i in range(len(self.encoder_specs))]
        missing = [i for i, m in enumerate(models) if m is None]
        if missing:
            raise InputError(
                f"encoder task(s) {missing} of {self.out} are not finished. Fix: run them first "
                "(celljepa holdout ... --task I; `celljepa slurm holdout` runs the encoders as the first "
                "array)."
            )
        return dict(zip(self.model_seeds, models[:-1], strict=True)), models[-1]

    def check_inputs(self, indices, *, overwrite: bool) -> None:
        """Refuse, before anything is written, encoder or fold folders finished from a run with other inputs."""
        n_enc = len(self.encoder_specs)
        stale = []
        for i in indices:
            if i < n_enc:
                folder = self.encoder_specs[i][0]
                if _other_digest(folder / "inputs.json", self.encoder_digests[i]):
                    stale.append(folder)
            else:
                split, s, fold, k = self.folds[i - n_enc]
                folder = self.fold_dir(split, s, fold)
                if _other_digest(folder / "fold.json", self.fold_digest(split, s, fold, k)):
                    stale.append(folder)
        if not stale:
            return
        if overwrite:
            for name in ("holdout.json", "holdout.md"):
                (self.out / name).unlink(missing_ok=True)
            logger.warning(
                "--overwrite: %d finished task(s) of another run in %s are replaced one by one", len(stale), self.out
            )
            return
        raise InputError(
            f"{stale[0]} holds a finished holdout task made with other inputs (other data, settings, "
            f"seeds or encoders){f' (and {len(stale) - 1} more)' if len(stale) > 1 else ''}. Nothing "
            "was written. Fix: pass a new --out, or --overwrite to replace that run (each finished task "
            "stays until its new one is complete)."
        )

    def fold_digest(self, split: str, s: int, fold: dict, k: int) -> str:
        return config_digest(
            {
                "holdout": self.holdout,
                "split": split,
                "seed": s,
                "fold": fold["fold"],
                "n_folds": k,
                "evaluation": dataclasses.asdict(self.run.evaluation_for(s)),
                "jepa": self.own.to_dict(),
                "transition": None if self.transition is None else self.transition.to_dict(),
                "model_seeds": self.model_seeds,
                "data": self.fingerprint,
                "encoders": self.encoder_digests[:-1],
            }
        )

    def fold(self, j: int, enc_others: dict | None, *, compute: bool = True) -> dict | None:
        """Fold task ``j``: ``{"per_condition", "validation", "per_seed"}`` tables, read back or computed (or None)."""
        from .evaluate import score_fold

        split, s, fold, k = self.folds[j]
        folder, digest = self.fold_dir(split, s, fold), self.fold_digest(split, s, fold, k)
        if _finished(folder / "fold.json", digest):
            try:
                return read_tables(folder / "tables.h5")
            except (OSError, KeyError, ValueError):
                pass
        if not compute:
            return None
        cfg = self.run.evaluation_for(s)
        effects = self.effects.get((self.holdout, split, s, fold["fold"]))  # the claims pass's, when it ran here
        own = score_fold(
            self.held,
            fold,
            config=cfg,
            jepa=self.own,
            transition=self.transition,
            model_seeds=self.model_seeds,
            progress=self.progress,
            pca_twin=True,
            effects=effects,
        )
        other = score_fold(
            self.held,
            fold,
            config=cfg,
            jepa=enc_others,
            transition=self.transition,
            model_seeds=self.model_seeds,
            progress=self.progress,
            effects=effects,
        )
        tables = {}
        for name, frame_own, frame_other in (
            ("per_condition", own.per_condition, other.per_condition),
            ("validation", own.validation, other.validation),
            ("per_seed", own.per_seed, other.per_seed),
        ):
            a = frame_own.copy()
            b = frame_other[frame_other["role"] == "jepa"].copy()
            jepa_rows = a["role"] == "jepa"
            a.loc[jepa_rows, "method"] = a.loc[jepa_rows, "method"] + "_self"
            b["method"] = b["method"] + "_others"
            frame = pd.concat([a, b], ignore_index=True)
            frame["split_seed"], frame["fold"] = s, fold["fold"]
            tables[name] = frame
        with staged_folder(folder) as stage:  # the fold appears whole or not at all
            write_tables(stage / "tables.h5", tables)
            write_json_atomic(stage / "fold.json", {"config_digest": digest})  # last: the fold is finished
        return tables

    def prediction(self, tables: list[dict]) -> dict:
        """Per split: the fold tables pooled over folds and split seeds like a benchmark, and the verdicts."""
        config, split_seeds = self.run.evaluation, list(self.run.split_seeds)
        result = {}
        for split, k in self.splits.items():
            mine = [t for t, (sp_, _, _, _) in zip(tables, self.folds, strict=True) if sp_ == split]
            pooled = pool_conditions([t["per_condition"] for t in mine], effect_alpha=config.effect_alpha)
            per_seed = pd.concat([t["per_seed"] for t in mine], ignore_index=True)
            metrics = summarize(
                pooled,
                pd.concat([t["validation"] for t in mine], ignore_index=True),
                per_seed=per_seed,
                primary=f"{config.primary}_others",
                n_boot=config.n_bootstrap,
                seed=split_seeds[0],
                min_conditions=config.min_conditions,
            )
            first = pooled.drop_duplicates("condition")
            effect = list(first.loc[first["has_effect"].astype(bool), "condition"])
            cube = SeedCube.from_frame(per_seed, effect)
            others_vs_self = {}
            for kind in ("set", "prototype"):
                a_name, b_name = f"jepa_{kind}_others", f"jepa_{kind}_self"
                if {a_name, b_name} <= set(per_seed["method"]):
                    d = paired_difference(
                        cube, a_name, b_name, PRIMARY, effect, n_boot=config.n_bootstrap, seed=split_seeds[0]
                    )
                    d["scale"] = abs(d["diff"]) if np.isfinite(d["diff"]) else 1.0
                    d["claimable"] = claimable(len(effect), config.min_conditions)
                    others_vs_self[kind] = d
            metrics.update(
                {
                    "dataset_id": self.holdout,
                    "split": split,
                    "n_folds": k if self.max_folds is None else min(k, self.max_folds),
                    "split_seeds": split_seeds,
                    "model_seeds": self.model_seeds,
                    "others_vs_self": others_vs_self,
                    "_pooled": pooled,
                }
            )
            result[split] = metrics
        return result


def _holm_family(prediction: dict) -> int:
    """Label every claim of a holdout run, its own family.

    The verdict rows of each split, and the claimable elsewhere-vs-own rows in the primary metric's family.
    """
    holm_over(list(prediction.values()))
    extra = [d for m in prediction.values() for d in m["others_vs_self"].values() if d.get("claimable")]
    rows = family_rows(list(prediction.values())) + extra
    apply_holm(rows)
    for m in prediction.values():
        for d in m["others_vs_self"].values():
            if not d.get("claimable"):
                d.update(p_holm=None, outcome="not claimable", family_size=0)
        if m.get("verdict"):
            m["verdict"]["outcome"] = m["verdict"]["edistance"]["outcome"]
            m["verdict"]["family_sizes"]["edistance"] = len(rows)
    return len(rows)


def holdout_tasks(
    datasets: dict,
    holdout: str,
    *,
    out: str | os.PathLike,
    run: RunConfig,
    feature_set="foundation-v1",
    splits: dict[str, int] | None = None,
    max_folds: int | None = None,
) -> list[tuple[str, str, Path]]:
    """The tasks of a holdout run, in the order task indices count them: ``(kind, label, folder)``.

    The encoders (one from elsewhere per model seed, then the one on the held-out dataset alone) come first,
    then the held-out dataset's folds (split × split seed × fold).
    """
    _check(datasets, holdout, run)
    return _Holdout(datasets, holdout, Path(out), run, feature_set, splits, max_folds, False).tasks()


def _check(datasets: dict, holdout: str, run: RunConfig) -> None:
    if holdout not in datasets:
        raise InputError(f"the held-out dataset {holdout!r} is not among the datasets {list(datasets)}.")
    if run.jepa is None:
        raise InputError("a holdout run pretrains encoders: give the RunConfig a JEPA config (run.jepa).")
    if len(datasets) < 2:
        raise InputError("a holdout run needs at least two datasets: the held-out one and one to pretrain on.")


def holdout_run(
    datasets: dict,
    holdout: str,
    *,
    out: str | os.PathLike,
    run: RunConfig,
    feature_set="foundation-v1",
    splits: dict[str, int] | None = None,
    max_folds: int | None = None,
    labels=("cell_type", "perturbation_id"),
    n_pcs: int = 50,
    progress: bool = True,
    tasks=None,
    collect: bool = False,
    overwrite: bool = False,
) -> dict:
    """Hold ``holdout`` out of ``datasets``, pretrain on the others, evaluate transfer and prediction on it.

    Parameters
    ----------
    datasets
        ``{dataset id: AnnData}`` in the celljepa contract (log-normalised ``X``), at least two.
    holdout
        The dataset held out.
    out
        Folder for ``holdout.json``, ``holdout.md`` and ``feature_set.txt``.
    run
        The :class:`~celljepa.bench.config.RunConfig`: ``run.jepa`` for every encoder (the one pretrained on the
        other datasets, the one on the held-out dataset alone, and the per-fold ones), ``run.transition`` for
        the transition models, the split seeds of the held-out dataset's folds, the model seeds of every
        encoder (the transfer part uses the first) and the evaluation settings (``primary``, ``transductive``;
        the verdict's primary is ``primary`` on the encoder from elsewhere).
    feature_set
        The gene list every dataset is mapped onto (a stored id or file; ``intersection`` /
        ``union_hvg`` are built from the *other* datasets only).
    splits
        The held-out dataset's own splits and fold counts (default ``{"S1_unseen_perturbation": 3}``).
    max_folds
        Score only the first folds of each split.
    labels, n_pcs
        Labels scored by kNN and the PCA size of the transfer comparison.
    progress
        Progress bars.
    tasks
        Run only these tasks (indices into :func:`holdout_tasks`: the encoders first, then the folds; one Slurm
        array task each) and write their folders, nothing combined; a fold task needs the encoders finished.
        SIGUSR1/SIGTERM stop a task (:class:`~celljepa.bench.tasks.TaskInterrupted`).
    collect
        Compute nothing: read every task back and write ``holdout.json``; unfinished tasks are an error that
        lists them.
    overwrite
        Replace encoder and fold folders that ``out`` holds finished from a run with other inputs; without it
        such a run is refused before anything is written.

    Returns
    -------
    The content of ``holdout.json``.
    """
    _check(datasets, holdout, run)
    if tasks is not None and collect:
        raise InputError(
            "tasks= runs holdout tasks and collect= merges them: pass one of the two (CLI: --task or --collect)."
        )
    out = Path(out)
    h = _Holdout(datasets, holdout, out, run, feature_set, splits, max_folds, progress)
    n_enc = len(h.encoder_specs)
    if tasks is not None:
        listed = h.tasks()
        tasks = task_indices(tasks, len(listed), "holdout")
        refuse_beside_holder(out, "a task")
        refuse_other_kind(out, "holdout")
        h.check_inputs(tasks, overwrite=overwrite)
        states = {}
        with stop_on_signals():
            enc_others = None
            for i in tasks:
                with folder_lock(listed[i][2]):
                    if i < n_enc:
                        h.encoder(i)
                    else:
                        if enc_others is None:  # refused here, before anything is written, while encoders run
                            enc_others = h.encoders(train=False)[0]
                            # the first fold task fixes the claims family before it fits a model
                            h.claims(when="before the first fold task fitted a model")
                        h.fold(i - n_enc, enc_others)
                states[i] = "done"
                logger.info("holdout task %d (%s %s): done", i, listed[i][0], listed[i][1])
        return {"tasks": states}
    refuse_other_kind(out, "holdout")
    with folder_lock(out):
        h.check_inputs(range(len(h.tasks())), overwrite=overwrite)
        return _combined(h, out, labels=labels, n_pcs=n_pcs, collect=collect)


def _combined(h: _Holdout, out: Path, *, labels, n_pcs: int, collect: bool) -> dict:
    """Every task computed (or, with ``collect``, only read back: unfinished ones are an error), then combined."""
    t0 = time.perf_counter()
    n_enc = len(h.encoder_specs)
    timings = {}
    claims = None
    if not collect:  # from the data alone, before any model is fitted (its effect tables feed the folds)
        claims = h.claims()
    t1 = time.perf_counter()
    models = [h.encoder(i, train=not collect) for i in range(n_enc)]  # each loaded or trained once
    timings["pretrain_s"] = time.perf_counter() - t1
    enc_others = None if None in models else dict(zip(h.model_seeds, models[:-1], strict=True))
    t1 = time.perf_counter()
    tables = [h.fold(j, enc_others, compute=not collect) for j in range(len(h.folds))]
    missing = [i for i, m in enumerate(models) if m is None] + [n_enc + j for j, t in enumerate(tables) if t is None]
    if missing:
        raise InputError(
            f"{len(missing)} of {n_enc + len(h.folds)} holdout tasks are not finished in {out}: "
            f"task(s) {', '.join(map(str, missing[:20]))}. Fix: run them (celljepa holdout ... "
            "--task I), then --collect again; nothing combined was written."
        )
    if collect:  # written by the first fold task; fold tasks of a version that did not write it: the same pass, now
        claims = h.claims(when="at collect (no fold task recorded it): from the data alone, as before fitting")
    prediction = h.prediction(tables)
    check_claims(claims, {f"{h.holdout}/{split}": m for split, m in prediction.items()})
    timings["prediction_s"] = time.perf_counter() - t1
    h.fs.write(out / "feature_set.txt")
    enc_self, seed = models[-1], h.model_seeds[0]
    t1 = time.perf_counter()
    transfer = _transfer(h.held, enc_others[seed], enc_self, seed=seed, labels=labels, n_pcs=n_pcs, progress=h.progress)
    timings["transfer_s"] = time.perf_counter() - t1
    family = _holm_family(prediction)
    for split, m in prediction.items():
        m["holm_family_size"] = family
        write_text_atomic(out / split / "per_condition.csv", m.pop("_pooled").to_csv(index=False))
    config, held = h.run.evaluation, h.held
    enc_first = enc_others[seed]
    result = {
        "split": HOLDOUT_SPLIT,
        "holdout": h.holdout,
        "pretrained_on": list(h.others),
        "seed": list(h.run.split_seeds)[0],
        "split_seeds": list(h.run.split_seeds),
        "model_seeds": h.model_seeds,
        "primary": config.primary,
        "transductive": bool(config.transductive),
        "feature_set": h.fs.info(),
        "genes_present_in_holdout": int((~held.var["absent"]).sum()),
        "n_cells": {"holdout": int(held.n_obs), **{k: int(v.n_obs) for k, v in h.others.items()}},
        "jepa": h.jepa.to_dict(),
        "transition": None if h.transition is None else h.transition.to_dict(),
        "encoders": {
            "others": {**enc_first.train_info_, "n_genes": len(enc_first.var_names)},
            "self": {**enc_self.train_info_, "n_genes": len(enc_self.var_names)},
        },
        "transfer": transfer,
        "prediction": prediction,
        "claims": claims,
        "timings": timings,
        "wall_time_s": time.perf_counter() - t0,
        "versions": versions(),
        "provenance": provenance(),
    }
    write_json_atomic(out / "holdout.json", result)
    write_text_atomic(out / "holdout.md", holdout_markdown(result))
    logger.info("holdout %s: written to %s in %.0f s", h.holdout, out, result["wall_time_s"])
    return result
