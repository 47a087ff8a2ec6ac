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


def _names(condition: Condition) -> list[str]:
    return [t.split(":", 1)[1] if ":" in t else t for t in condition.tokens]


def _kind(condition: Condition) -> str:
    kinds = {C.token_kind(t) for t in condition.tokens}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _write_gene_go(work: Path, genes, names: pd.Series, queries: list[dict]) -> None:
    """``gene_go.tsv``: the GO biological-process terms of the fold's genes and of the perturbed genes.

    From the table shipped with celljepa: a GO-graph tool (GEARS) builds its gene graph from them instead of a
    download.
    """
    from ..data.go import read_go_table

    table = read_go_table()
    wanted = set(map(str, genes))
    for joined in names.unique():
        wanted.update(n for n in str(joined).split("+") if n)
    for q in queries:
        wanted.update(q["names"])
    lines = ["symbol\tterms"] + [f"{g}\t{';'.join(table[g])}" for g in sorted(wanted) if table.get(g)]
    (work / "gene_go.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


# what a runner may read besides train.h5ad and request.json (PeerSpec.inputs): name -> writer
_INPUTS = {"gene_go": _write_gene_go}


class PeerModel(PerturbationModel):
    """A published perturbation model (scGen, GEARS, CPA, State) trained on a fold and scored in its evaluation space.

    The peer is trained with its own code and published defaults, in its own environment (see
    :func:`~celljepa.peers.install_peer`), on the fold's *training* conditions: the log-expression of the
    evaluation space's genes of the training cells and of their contexts' control cells. It never sees a
    validation or test condition's cells, so its validation scores are honest, as the JEPA models' are (it is
    fitted once, not refitted on validation conditions). For each condition it predicts one cell per control
    cell the prediction starts from (:meth:`~celljepa.models.base.TrainData.start_rows`), in gene space; those
    cells are projected into the fold's evaluation space like every other method's. A condition the peer cannot
    predict (an unseen perturbation for scGen, a drug for GEARS) is answered with the context's control cells
    (no change) and marked not covered.

    Parameters
    ----------
    name
        ``"scgen"``, ``"gears"``, ``"cpa"`` or ``"state"`` (:data:`~celljepa.peers.PEERS`).
    seed
        The peer's seed (Python, numpy, torch and the tool's own).
    params
        Overrides of the peer's settings (e.g. ``{"max_epochs": 5}`` for a smoke test); the defaults are its
        published ones.
    threads
        CPU threads of the peer's process (default: ``OMP_NUM_THREADS``, else every core).
    workdir
        Folder for the exchange files and the peer's log (default: a temporary folder, removed afterwards).
        The training and prediction ``.h5ad`` files are removed once read unless ``keep_files``.
    timeout_s
        Stop the peer after this many seconds (None: no limit).

    Examples
    --------
    >>> from celljepa.peers import PeerModel                        # doctest: +SKIP
    >>> model = PeerModel("gears", seed=0).fit(train)               # doctest: +SKIP
    >>> cells = model.predict(condition)                            # doctest: +SKIP
    >>> model.params()["fit_s"]                                     # doctest: +SKIP
    """

    role = "peer"
    refits_on_validation = False
    #: How its validation score was obtained (the comparator table of a report shows it).
    val_selection_ = ("trained once on training conditions with its published settings; validation conditions "
                      "unseen")

    def __init__(self, name: str, *, seed: int = 0, params: dict | None = None, threads: int | None = None,
                 workdir: str | os.PathLike | None = None, keep_files: bool = False,
                 timeout_s: float | None = None):
        self.spec = peer_spec(name)
        self.name = self.spec.name
        self.seed = int(seed)
        self.settings = dict(params or {})
        self.threads = int(threads or os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
        self.workdir = Path(workdir).resolve() if workdir is not None else None
        self.keep_files = bool(keep_files)
        self.timeout_s = timeout_s
        self._train: TrainData | None = None
        self._predicted: dict[Condition, np.ndarray] = {}
        self.native_: dict[Condition, np.ndarray] = {}
        self.not_covered_: dict[str, str] = {}
        self.result_: dict = {}

    # ------------------------------------------------------------------ PerturbationModel
    def fit(self, train: TrainData, *, refit: bool = True) -> PeerModel:
        if train.source is None or train.space is None:
            raise InputError(f"peer {self.name!r} learns in gene space: the fold's TrainData needs its AnnData "
                             "(source) and evaluation space (celljepa.bench.evaluate.prepare_fold sets both).")
        self._train = train
        self._predicted, self.native_, self.not_covered_, self.result_ = {}, {}, {}, {}
        return self

    def predict(self, condition: Condition) -> np.ndarray:
        return self.predict_many([condition])[condition]

    def predict_many(self, conditions: list[Condition]) -> dict[Condition, np.ndarray]:
        if self._train is None:
            raise InputError(f"peer {self.name!r}: call fit(train) before predicting.")
        todo = list(dict.fromkeys(c for c in conditions if c not in self._predicted))
        if todo:
            if self.result_:
                logger.warning("peer %s: %d new condition(s) after a run; training it again (ask for every "
                               "condition in one predict_many call to train once)", self.name, len(todo))
            self._run(todo)
        return {c: self._predicted[c] for c in conditions}

    def covers(self, condition: Condition) -> bool:
        return condition.key not in self.not_covered_

    def params(self) -> dict:
        keys = ("version", "seed", "params", "epochs", "fit_s", "predict_s", "wall_s", "environment", "notes")
        out = {k: self.result_[k] for k in keys if k in self.result_}
        out["n_not_covered"] = len(self.not_covered_)
        return {"peer": self.spec.title, **out}

    # ------------------------------------------------------------------ the run
    def _run(self, conditions: list[Condition]) -> None:
        env = locate_peer(self.name)
        if env is None:
            reason = peer_status(self.name, check_import=False)["reason"]
            raise PeerError(f"peer {self.name!r} is not available: {reason}.")
        own = self.workdir is None
        work = Path(tempfile.mkdtemp(prefix=f"celljepa-{self.name}-")) if own else self.workdir
        work.mkdir(parents=True, exist_ok=True)
        try:
            queries = self._write_inputs(work, conditions)
            t0 = time.perf_counter()
            self._call(env.python, work, keep_log=own)
            wall = time.perf_counter() - t0
            self._read_outputs(work, conditions, queries)
            self.result_.update(wall_s=round(wall, 2), environment=env.kind)
            record = environment_record(env)
            if record:
                self.result_["environment"] = f"isolated (Python {record.get('python')}, {env.path})"
            logger.info("peer %s: fitted and predicted %d condition(s) in %.1f s (%d not covered)", self.name,
                        len(conditions), wall, len(self.not_covered_))
        finally:
            if own:
                shutil.rmtree(work, ignore_errors=True)
            elif not self.keep_files:
                for fname in ("train.h5ad", "predictions.h5ad"):
                    (work / fname).unlink(missing_ok=True)

    def _write_inputs(self, work: Path, conditions: list[Condition]) -> list[dict]:
        import anndata as ad

        train = self._train
        obs = train.obs
        is_ctrl = obs[C.IS_CONTROL].to_numpy(dtype=bool)
        fit = train.fit_mask()
        role = np.full(len(obs), "", dtype=object)
        for _, rows in train.train_conditions:
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
        blocks = [np.asarray(b.toarray() if hasattr(b, "toarray") else b, dtype=np.float32)
                  for b in iter_blocks(adata, train.positions[rows], cols)]
        x = np.vstack(blocks) if blocks else np.zeros((0, len(cols)), dtype=np.float32)
        sub = obs.iloc[rows]
        names = ["" if ctrl else "+".join(n.split(":", 1)[1] if ":" in n else n for n in C.split_tokens(tok))
                 for ctrl, tok in zip(sub[C.IS_CONTROL].to_numpy(dtype=bool),
                                      sub[C.PERTURBATION_TOKENS].astype(str), strict=True)]
        frame = pd.DataFrame({
            "context": sub[C.CONTEXT_ID].astype(str).to_numpy(),
            "perturbation": sub[C.PERTURBATION_ID].astype(str).to_numpy(),
            "names": names,
            "is_control": sub[C.IS_CONTROL].to_numpy(dtype=bool),
            "dose": sub[C.DOSE].to_numpy(dtype=float) if C.DOSE in sub else np.nan,
            "role": role[rows].astype(str),
            "start": start[rows],
        }, index=pd.Index([f"c{i}" for i in rows]))
        frame.loc[frame["is_control"], "perturbation"] = C.CONTROL_ID
        exchange = ad.AnnData(x, obs=frame, var=pd.DataFrame(index=pd.Index([str(g) for g in space.genes])))
        exchange.write_h5ad(work / "train.h5ad")
        queries = [{"key": c.key, "context": c.context_id, "perturbation": c.perturbation_id,
                    "tokens": list(c.tokens), "names": _names(c), "kind": _kind(c),
                    "dose": None if not np.isfinite(c.dose) else float(c.dose)} for c in conditions]
        for item in self.spec.inputs:
            if item not in _INPUTS:
                raise InputError(f"peer {self.name!r} asks for input {item!r}; known inputs: {', '.join(_INPUTS)}.")
            _INPUTS[item](work, exchange.var_names, exchange.obs["names"], queries)
        request = {"peer": self.name, "seed": self.seed, "threads": self.threads, "params": self.settings,
                   "queries": queries}
        (work / "request.json").write_text(json.dumps(request, indent=1), encoding="utf-8")
        for stale in ("predictions.h5ad", "result.json"):
            (work / stale).unlink(missing_ok=True)
        return queries

    def _call(self, python: str, work: Path, *, keep_log: bool) -> None:
        runner = RUNNERS / self.spec.runner
        log = work / _LOG
        with open(log, "w", encoding="utf-8") as fh:
            try:
                done = subprocess.run([python, str(runner), str(work)], stdout=fh, stderr=subprocess.STDOUT,
                                      env=_child_env(self.threads), timeout=self.timeout_s, cwd=work)
            except subprocess.TimeoutExpired:
                raise PeerError(f"peer {self.name!r} ran past {self.timeout_s:g} s and was stopped") from None
        if done.returncode != 0 or not (work / "result.json").is_file():
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
            keep = (shutil.copy(log, Path(tempfile.gettempdir()) / f"celljepa-{self.name}-{os.getpid()}.log")
                    if keep_log else log)  # a temporary work folder is removed: its log is kept beside it
            raise PeerError(f"peer {self.name!r} failed (exit status {done.returncode}); last lines of its log "
                            f"(kept at {keep}):\n" + "\n".join(tail))

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
                self._predicted[cond] = train.control_cells(cond.context_id)
                continue
            if mask.sum() != n_start:
                raise PeerError(f"peer {self.name!r} predicted {int(mask.sum())} cells for {cond.key}, expected one "
                                f"per start cell ({n_start}); its log: {work / _LOG}")
            if not np.isfinite(x[mask]).all():
                raise PeerError(f"peer {self.name!r} predicted non-finite values for {cond.key}; its log: "
                                f"{work / _LOG}")
            self.native_[cond] = x[mask]
            self._predicted[cond] = train.space.transform(x[mask])
        self.result_ = result
