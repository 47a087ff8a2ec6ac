"""A peer tool as a :class:`~celljepa.models.base.PerturbationModel`: trained in its own process, scored alike."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import InputError, PeerError
from .._logging import logger
from ..data import contract as C
from ..eval.space import iter_blocks
from ..models.base import Condition, PerturbationModel, TrainData
from ._env import RUNNERS, _child_env, environment_record, locate_peer, peer_status
from ._registry import peer_spec

__all__ = ["PeerModel"]

_LOG = "runner.log"
#: What a fit used, by its ``refit`` flag.
FITTED_ON = {False: "training conditions", True: "training + validation conditions"}


def _names(condition: Condition) -> list[str]:
    return [t.split(":", 1)[1] if ":" in t else t for t in condition.tokens]


def _kind(condition: Condition) -> str:
    kinds = {C.token_kind(t) for t in condition.tokens}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _write_go_graph(work: Path, genes, names: pd.Series, queries: list[dict], settings: dict, spec) -> dict:
    """``gene_go.tsv`` and ``go_graph.npz``: GEARS's GO gene graph over every gene with GO terms.

    ``gene_go.tsv`` holds the GO biological-process terms of every gene of the table shipped with celljepa
    (:func:`celljepa.data.go.read_go_table`); ``go_graph.npz`` the graph GEARS builds from them
    (:func:`celljepa.peers._gograph.go_graph`: Jaccard similarity of GO term sets > 0.1, the ``k + 1`` best
    neighbours of each gene), computed once and cached across folds. A GO-graph tool builds its gene graph from
    them instead of a download. Returns what the run's record keeps of it.
    """
    from ..data.go import read_go_table
    from ._gograph import go_graph

    key = "num_similar_genes_go_graph"
    k = int(settings.get(key, spec.defaults.get(key, 20)))
    layers = int(settings.get("num_go_gnn_layers", spec.defaults.get("num_go_gnn_layers", 1)))
    t0 = time.perf_counter()
    whole = go_graph(k)
    perturbed = {n for joined in names.unique() for n in str(joined).split("+") if n}
    perturbed.update(n for q in queries for n in q["names"])
    graph = whole.receptive_field(perturbed, layers=layers)  # what GEARS reads of the whole graph, exactly
    graph.save(work / "go_graph.npz")
    table = read_go_table()
    lines = ["symbol\tterms"] + [f"{g}\t{';'.join(table[g])}" for g in graph.genes]
    (work / "gene_go.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {
        "go_graph": {
            "genes": int(len(whole.genes)),
            "edges": whole.n_edges,
            "pairs_jaccard_gt_0.1": whole.n_pairs,
            "k": whole.k,
            "table_sha256": whole.digest,
            "build_s": whole.build_s,
            "from_cache": whole.cached,
            "receptive_field": {"genes": int(len(graph.genes)), "edges": graph.n_edges, "layers": layers},
            "write_s": round(time.perf_counter() - t0, 2),
        }
    }


# what a runner may read besides train.h5ad and request.json (PeerSpec.inputs): name -> writer
_INPUTS = {"go_graph": _write_go_graph}


class PeerModel(PerturbationModel):
    """A published perturbation model (scGen, GEARS, CPA, State) trained on a fold and scored in its evaluation space.

    The peer is trained with its own code in its own environment (see :func:`~celljepa.peers.install_peer`), on
    the same cells as the refitted baselines: ``fit(train, refit=False)`` on the fold's *training* conditions
    (its predictions of the validation conditions are its validation score: it never saw them), ``fit(train,
    refit=True)`` on training + validation conditions (the model that predicts the test conditions), each time
    with the control cells of their contexts (:meth:`~celljepa.models.base.TrainData.fit_mask`): the
    log-expression of the evaluation space's genes. Inside the cells it is given, the peer draws its own seeded
    validation split for its early stopping or best-checkpoint choice, and sizes its batches, epochs or steps
    to the data by a rule written in its runner (``celljepa/peers/_runners/<peer>.py``); every fit records
    what it did (:meth:`params`).

    For each condition it predicts one cell per control cell the prediction starts from
    (:meth:`~celljepa.models.base.TrainData.start_rows`), in gene space; those cells are projected into the
    fold's evaluation space like every other method's. A condition the peer cannot predict (an unseen
    perturbation for scGen, a drug for GEARS) gets no prediction: ``None``, and :meth:`covers` is False
    (scored n/a, and counted against the peer's coverage).

    A fit is lazy: the peer runs when :meth:`predict_many` first asks for conditions (ask for all of them in
    one call), and every :meth:`fit` starts over (a refit trains again).

    Parameters
    ----------
    name
        ``"scgen"``, ``"gears"``, ``"cpa"`` or ``"state"`` (:data:`~celljepa.peers.PEERS`).
    seed
        The peer's seed (Python, numpy, torch, the tool's own, and its internal validation split).
    params
        Overrides of the peer's settings (e.g. ``{"max_epochs": 5}`` for a smoke test); the defaults are its
        published ones, scaled to the data by its runner's rule.
    threads
        CPU threads of the peer's process (default: ``OMP_NUM_THREADS``, else every core).
    workdir
        Folder for the exchange files and the peer's log (default: a temporary folder, removed afterwards);
        each fit has its own subfolder, ``train_seed<seed>`` (training conditions) or ``trainval_seed<seed>``
        (training + validation conditions). The training and prediction ``.h5ad`` files are removed once read
        unless ``keep_files``.
    timeout_s
        Stop the peer after this many seconds (None: no limit).

    Examples
    --------
    >>> from celljepa.peers import PeerModel                        # doctest: +SKIP
    >>> model = PeerModel("gears", seed=0).fit(train, refit=True)   # doctest: +SKIP
    >>> cells = model.predict(condition)                            # doctest: +SKIP
    >>> model.params()["fitted_on"], model.params()["best_epoch"]   # doctest: +SKIP
    ('training + validation conditions', 7)
    """

    role = "peer"
    refits_on_validation = True
    #: Its early stopping and checkpoint choice use a validation split drawn from the cells it is fitted on,
    #: never the fold's validation conditions: their predictions by the fit on training conditions are out of
    #: sample as they are.
    tunes_on_validation = False
    #: How its validation score was obtained (the comparator table of a report shows it).
    val_selection_ = "fitted on training conditions only; validation conditions unseen"

    def __init__(
        self,
        name: str,
        *,
        seed: int = 0,
        params: dict | None = None,
        threads: int | None = None,
        workdir: str | os.PathLike | None = None,
        keep_files: bool = False,
        timeout_s: float | None = None,
    ):
        self.spec = peer_spec(name)
        self.name = self.spec.name
        self.seed = int(seed)
        self.settings = dict(params or {})
        self.threads = int(threads or os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
        self.workdir = Path(workdir).resolve() if workdir is not None else None
        self.keep_files = bool(keep_files)
        self.timeout_s = timeout_s
        self._train: TrainData | None = None
        self._refit = True
        self._predicted: dict[Condition, np.ndarray | None] = {}
        self.native_: dict[Condition, np.ndarray] = {}
        self.not_covered_: dict[str, str] = {}
        self.result_: dict = {}
        #: The record of each fit of the current fold, by ``fitted_on`` (see :meth:`params`).
        self.fits_: dict[str, dict] = {}

    # ------------------------------------------------------------------ PerturbationModel
    @property
    def fitted_on(self) -> str:
        """``"training conditions"`` or ``"training + validation conditions"`` (the current fit's cells)."""
        return FITTED_ON[self._refit]

    def fit(self, train: TrainData, *, refit: bool = True) -> PeerModel:
        """Take the fold's data; the peer trains on its first :meth:`predict_many` call.

        ``refit=False``: training conditions only (to predict the validation conditions honestly);
        ``refit=True``: training + validation conditions (to predict the test conditions).
        """
        if train.source is None or train.space is None:
            raise InputError(
                f"peer {self.name!r} learns in gene space: the fold's TrainData needs its AnnData "
                "(source) and evaluation space (celljepa.bench.evaluate.prepare_fold sets both)."
            )
        if train is not self._train:
            self.fits_ = {}
        self._train = train
        self._refit = bool(refit)
        self._predicted, self.native_, self.not_covered_, self.result_ = {}, {}, {}, {}
        return self

    def predict(self, condition: Condition) -> np.ndarray | None:
        """Predicted cells of ``condition`` in the evaluation space, or None when the peer cannot predict it."""
        return self.predict_many([condition])[condition]

    def predict_many(self, conditions: list[Condition]) -> dict[Condition, np.ndarray | None]:
        """Train the peer (first call after :meth:`fit`) and predict every condition; None where not covered."""
        if self._train is None:
            raise InputError(f"peer {self.name!r}: call fit(train) before predicting.")
        todo = list(dict.fromkeys(c for c in conditions if c not in self._predicted))
        if todo:
            if self.result_:
                logger.warning(
                    "peer %s: %d new condition(s) after a run; training it again (ask for every "
                    "condition in one predict_many call to train once)",
                    self.name,
                    len(todo),
                )
            why = self._cannot_predict(todo)
            if why is None:
                self._run(todo)
            else:  # nothing it was asked for can be predicted: no fit, every answer n/a
                self._predicted.update({c: None for c in todo})
                self.not_covered_.update({c.key: why for c in todo})
                self.result_ = {"skipped": why}
                self.fits_[self.fitted_on] = {
                    "fitted_on": self.fitted_on,
                    "seed": self.seed,
                    "skipped": why,
                    "n_not_covered": len(self.not_covered_),
                }
                logger.info("peer %s: not fitted on %s: %s", self.name, self.fitted_on, why)
        return {c: self._predicted[c] for c in conditions}

    def _cannot_predict(self, conditions: list[Condition]) -> str | None:
        """Why the peer can predict none of ``conditions`` from this fit's data (its coverage rule), or None.

        The rule (:attr:`~celljepa.peers.PeerSpec.coverage`) mirrors the first check of the peer's runner, so a
        fit that would answer every condition n/a is not run; whenever one condition passes, the peer runs and
        its runner decides every condition.
        """
        rule = self.spec.coverage
        fitting = self._train.fitting_conditions(self._refit)
        if rule == "seen_perturbation":
            seen = {c.perturbation_id for c, _ in fitting}
            if not any(c.perturbation_id in seen for c in conditions):
                return "no condition asked of this fit has a perturbation seen in the data it fits on"
        elif rule == "seen_names_in_context":
            names = {n for c, _ in fitting for n in _names(c)}
            obs = self._train.obs  # the contexts of every cell it fits on, control cells included
            fit_ctrl = obs[C.IS_CONTROL].to_numpy(dtype=bool) & self._train.fit_mask()
            contexts = {c.context_id for c, _ in fitting} | set(obs.loc[fit_ctrl, C.CONTEXT_ID].astype(str))
            if not any(c.context_id in contexts and set(_names(c)) <= names for c in conditions):
                return (
                    "no condition asked of this fit has every perturbed name seen, in a context seen, in the "
                    "data it fits on"
                )
        elif rule == "genes":
            if not any(_kind(c) == "gene" and 1 <= len(c.tokens) <= 2 for c in conditions):
                return "no condition asked of this fit perturbs one or two genes"
        return None

    def covers(self, condition: Condition) -> bool:
        return condition.key not in self.not_covered_

    def params(self) -> dict:
        """The record of the current fit (what the run's ``config.json`` stores).

        ``fitted_on``, ``n_cells_fit``, ``n_conditions_fit``, ``seed``, the epochs (or steps) trained and the
        most allowed, the best one chosen by the peer's own validation, the last values of its training and
        validation loss curves, the settings its scaling rule chose, its internal validation split, fit /
        predict / wall seconds, version, environment and notes. :attr:`fits_` keeps the record of each fit of
        the fold (the fit on training conditions and the refit).
        """
        return {"peer": self.spec.title, **self._record()}

    def _record(self) -> dict:
        if not self.result_:
            return {"fitted_on": self.fitted_on, "seed": self.seed, "n_not_covered": len(self.not_covered_)}
        return dict(self.fits_.get(self.fitted_on) or {})

    # ------------------------------------------------------------------ the run
    def _folder(self) -> Path | None:
        if self.workdir is None:
            return None
        return self.workdir / f"{'trainval' if self._refit else 'train'}_seed{self.seed}"

    def _run(self, conditions: list[Condition]) -> None:
        env = locate_peer(self.name)
        if env is None:
            reason = peer_status(self.name, check_import=False)["reason"]
            raise PeerError(f"peer {self.name!r} is not available: {reason}.")
        own = self.workdir is None
        work = Path(tempfile.mkdtemp(prefix=f"celljepa-{self.name}-")) if own else self._folder()
        work.mkdir(parents=True, exist_ok=True)
        try:
            queries, sent = self._write_inputs(work, conditions)
            t0 = time.perf_counter()
            self._call(env.python, work, keep_log=own)
            wall = time.perf_counter() - t0
            self._read_outputs(work, conditions, queries)
            self.result_.update(wall_s=round(wall, 2), environment=env.kind)
            record = environment_record(env)
            if record:
                self.result_["environment"] = f"isolated (Python {record.get('python')}, {env.path})"
            self.fits_[self.fitted_on] = self._summarise(sent)
            logger.info(
                "peer %s: fitted on %s (%d cells) and predicted %d condition(s) in %.1f s (%d not covered)",
                self.name,
                self.fitted_on,
                sent["n_cells_fit"],
                len(conditions),
                wall,
                len(self.not_covered_),
            )
        finally:
            if own:
                shutil.rmtree(work, ignore_errors=True)
            elif not self.keep_files:
                for fname in ("train.h5ad", "predictions.h5ad"):
                    (work / fname).unlink(missing_ok=True)

    def _summarise(self, sent: dict) -> dict:
        """The flat per-fit record of :meth:`params`, from what was sent and the runner's ``result.json``."""
        res = self.result_
        fit = dict(res.get("fit") or {})
        unit = str(fit.pop("unit", "epoch"))
        out = {"fitted_on": self.fitted_on, **sent, "seed": res.get("seed", self.seed), "version": res.get("version")}
        out[f"{unit}s_trained"] = fit.pop("trained", None)
        out[f"max_{unit}s"] = fit.pop("max", None)
        out[f"best_{unit}"] = fit.pop("best", None)
        out.update(fit)
        for key in ("fit_s", "predict_s", "wall_s", "params", "environment", "inputs", "notes"):
            if key in res:
                out[key] = res[key]
        out["n_not_covered"] = len(self.not_covered_)
        return out

    def _write_inputs(self, work: Path, conditions: list[Condition]) -> tuple[list[dict], dict]:
        import anndata as ad

        train = self._train
        obs = train.obs
        is_ctrl = obs[C.IS_CONTROL].to_numpy(dtype=bool)
        fit = train.fit_mask()
        fitting = train.fitting_conditions(self._refit)
        role = np.full(len(obs), "", dtype=object)
        for _, rows in fitting:
            role[rows] = "train"
        role[is_ctrl & fit] = "train"
        role[is_ctrl & ~fit] = "input"
        start = np.zeros(len(obs), dtype=bool)
        for ctx in sorted({c.context_id for c in conditions}):
            start[train.start_rows(ctx)] = True
        rows = np.flatnonzero(role != "")
        space = train.space
        adata = train.source
        cols = space.gene_indices(adata.var_names)
        blocks = [
            np.asarray(b.toarray() if hasattr(b, "toarray") else b, dtype=np.float32)
            for b in iter_blocks(adata, train.positions[rows], cols)
        ]
        x = np.vstack(blocks) if blocks else np.zeros((0, len(cols)), dtype=np.float32)
        sub = obs.iloc[rows]
        names = [
            "" if ctrl else "+".join(n.split(":", 1)[1] if ":" in n else n for n in C.split_tokens(tok))
            for ctrl, tok in zip(
                sub[C.IS_CONTROL].to_numpy(dtype=bool), sub[C.PERTURBATION_TOKENS].astype(str), strict=True
            )
        ]
        frame = pd.DataFrame(
            {
                "context": sub[C.CONTEXT_ID].astype(str).to_numpy(),
                "perturbation": sub[C.PERTURBATION_ID].astype(str).to_numpy(),
                "names": names,
                "is_control": sub[C.IS_CONTROL].to_numpy(dtype=bool),
                "dose": sub[C.DOSE].to_numpy(dtype=float) if C.DOSE in sub else np.nan,
                "role": role[rows].astype(str),
                "start": start[rows],
            },
            index=pd.Index([f"c{i}" for i in rows]),
        )
        frame.loc[frame["is_control"], "perturbation"] = C.CONTROL_ID
        exchange = ad.AnnData(x, obs=frame, var=pd.DataFrame(index=pd.Index([str(g) for g in space.genes])))
        exchange.write_h5ad(work / "train.h5ad")
        queries = [
            {
                "key": c.key,
                "context": c.context_id,
                "perturbation": c.perturbation_id,
                "tokens": list(c.tokens),
                "names": _names(c),
                "kind": _kind(c),
                "dose": None if not np.isfinite(c.dose) else float(c.dose),
            }
            for c in conditions
        ]
        inputs = {}
        for item in self.spec.inputs:
            if item not in _INPUTS:
                raise InputError(f"peer {self.name!r} asks for input {item!r}; known inputs: {', '.join(_INPUTS)}.")
            inputs.update(
                _INPUTS[item](work, exchange.var_names, exchange.obs["names"], queries, self.settings, self.spec) or {}
            )
        sent = {
            "n_cells_fit": int((role == "train").sum()),
            "n_conditions_fit": len(fitting),
            "n_control_cells_fit": int((is_ctrl & (role == "train")).sum()),
        }
        request = {
            "peer": self.name,
            "seed": self.seed,
            "threads": self.threads,
            "params": self.settings,
            "fitted_on": self.fitted_on,
            "refit": self._refit,
            **sent,
            "queries": queries,
        }
        (work / "request.json").write_text(json.dumps(request, indent=1), encoding="utf-8")
        for stale in ("predictions.h5ad", "result.json"):
            (work / stale).unlink(missing_ok=True)
        if inputs:
            sent["inputs"] = inputs
        return queries, sent

    def _call(self, python: str, work: Path, *, keep_log: bool) -> None:
        runner = RUNNERS / self.spec.runner
        log = work / _LOG
        with open(log, "w", encoding="utf-8") as fh:
            try:
                done = subprocess.run(
                    [python, str(runner), str(work)],
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    env=_child_env(self.threads),
                    timeout=self.timeout_s,
                    cwd=work,
                )
            except subprocess.TimeoutExpired:
                raise PeerError(f"peer {self.name!r} ran past {self.timeout_s:g} s and was stopped") from None
        if done.returncode != 0 or not (work / "result.json").is_file():
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
            keep = (
                shutil.copy(log, Path(tempfile.gettempdir()) / f"celljepa-{self.name}-{os.getpid()}.log")
                if keep_log
                else log
            )  # a temporary work folder is removed: its log is kept beside it
            raise PeerError(
                f"peer {self.name!r} failed (exit status {done.returncode}); last lines of its log "
                f"(kept at {keep}):\n" + "\n".join(tail)
            )

    def _read_outputs(self, work: Path, conditions: list[Condition], queries: list[dict]) -> None:
        import anndata as ad

        train = self._train
        result = json.loads((work / "result.json").read_text(encoding="utf-8"))
        pred = ad.read_h5ad(work / "predictions.h5ad")
        if list(map(str, pred.var_names)) != [str(g) for g in train.space.genes]:
            raise PeerError(f"peer {self.name!r} returned other genes than it was given; its log: {work / _LOG}")
        keys = pred.obs["query"].astype(str).to_numpy()
        x = np.asarray(pred.X, dtype=np.float64)
        self.not_covered_ = {str(k): str(v) for k, v in result.get("not_covered", {}).items()}
        for cond in conditions:
            mask = keys == cond.key
            n_start = len(train.start_rows(cond.context_id))
            if cond.key in self.not_covered_:
                if mask.any():
                    raise PeerError(
                        f"peer {self.name!r} predicted cells for {cond.key}, which it says it does not "
                        f"cover; its log: {work / _LOG}"
                    )
                self._predicted[cond] = None  # n/a: no other method's answer stands in for the peer's
                continue
            if mask.sum() != n_start:
                raise PeerError(
                    f"peer {self.name!r} predicted {int(mask.sum())} cells for {cond.key}, expected one "
                    f"per start cell ({n_start}); its log: {work / _LOG}"
                )
            if not np.isfinite(x[mask]).all():
                raise PeerError(
                    f"peer {self.name!r} predicted non-finite values for {cond.key}; its log: {work / _LOG}"
                )
            self.native_[cond] = x[mask]
            self._predicted[cond] = train.space.transform(x[mask])
        self.result_ = result
