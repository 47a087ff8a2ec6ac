"""One run configuration for a benchmark, a holdout or a sweep task, and the step defaults in one place.

:class:`RunConfig` is the only carrier of the seeds, step counts and device of a run: every stage takes its
settings from it (the evaluation of each split seed, the encoder and transition models of each model seed),
so nothing can say seed 1 in one place and seed 0 in another.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from .._defaults import BENCHMARK_JEPA_STEPS, FAST_DEV_JEPA_STEPS
from .._errors import InputError
from ..models.transition import TransitionConfig
from ..peers import PeerModel, parse_peers
from ..train.config import JEPAConfig
from .evaluate import EvalConfig

__all__ = ["BENCHMARK_JEPA_STEPS", "FAST_DEV_JEPA_STEPS", "RunConfig"]


def _seeds(name: str, seeds) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in seeds)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be integers, got {seeds!r}.") from None
    if not out or len(set(out)) != len(out) or min(out) < 0:
        raise InputError(f"{name} must be distinct integers >= 0 (at least one), got {list(out)}.")
    return out


@dataclass(frozen=True)
class RunConfig:
    """Seeds, step counts, device and stage settings of one benchmark, holdout or sweep task.

    Attributes
    ----------
    split_seeds
        Split seeds: the folds are drawn per seed, and each seeds the evaluation of its folds (E-distance
        subsampling, bootstrap).
    model_seeds
        Model seeds: per fold and model seed an encoder is pretrained and the transition models trained.
        Headline results use at least 3 of each; fewer make the report say its verdict is provisional.
    evaluation
        The evaluation settings (``primary``, ``transductive``, evaluation space, ...). Its ``seed`` is not a
        setting of its own: it is the split seed of each fold (``evaluation_for``).
    jepa
        The encoder's config (``None``: baselines only). Its ``train.seed`` and ``train.device`` come from
        here; its ``train.max_steps`` from ``jepa_steps`` when that is given.
    transition
        The transition models' config; its ``seed`` and ``device`` come from here.
    jepa_steps
        ``train.max_steps`` of every encoder (``None``: the one ``jepa`` holds).
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` for the encoders and the transition models (``None``:
        the device each config holds).
    peers
        Published tools scored beside the baselines (``("scgen", "gears")``; :mod:`celljepa.peers`): each is
        trained per fold and model seed, like every other trained method, and joins the comparator pool.
    peer_seeds
        ``{peer: n}``: train that peer with the first ``n`` model seeds only, where its compute does not fit
        (``{"state": 1}``; key ``"*"`` for every peer). Stated in every fold's config and the report.
    peer_params
        ``{peer: {setting: value}}`` overrides of a peer's published settings (e.g. fewer epochs for a smoke
        run); stated in every fold's config.

    Examples
    --------
    >>> from celljepa.bench.config import RunConfig
    >>> from celljepa.train.config import JEPAConfig
    >>> run = RunConfig(split_seeds=(0, 1, 2), model_seeds=(0, 1, 2), jepa=JEPAConfig(), jepa_steps=400)
    >>> run.jepa_for(1).train.seed, run.jepa_for(1).train.max_steps, run.transition_for(2).seed
    (1, 400, 2)
    >>> run.evaluation_for(2).seed
    2
    """

    split_seeds: tuple[int, ...] = (0,)
    model_seeds: tuple[int, ...] = (0,)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    jepa: JEPAConfig | None = None
    transition: TransitionConfig = field(default_factory=TransitionConfig)
    jepa_steps: int | None = None
    device: str | None = None
    peers: tuple[str, ...] = ()
    peer_params: dict = field(default_factory=dict)
    peer_seeds: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "peers", parse_peers(self.peers))
        unknown = [p for p in self.peer_params if p not in self.peers]
        if unknown:
            raise InputError(f"settings for peer(s) {unknown} that the run does not score (peers: {list(self.peers)}).")
        bad = {
            p: n
            for p, n in self.peer_seeds.items()
            if (p != "*" and p not in self.peers) or isinstance(n, bool) or not isinstance(n, int) or n < 1
        }
        if bad:
            raise InputError(
                f"peer_seeds {bad}: give {{peer: number of model seeds >= 1}} for peers the run scores "
                f"({list(self.peers)}), or '*' for all."
            )
        object.__setattr__(self, "split_seeds", _seeds("split_seeds", self.split_seeds))
        object.__setattr__(self, "model_seeds", _seeds("model_seeds", self.model_seeds))
        if self.evaluation.seed not in (EvalConfig().seed, self.split_seeds[0]):
            raise InputError(
                f"EvalConfig.seed={self.evaluation.seed} and split_seeds={list(self.split_seeds)}: the "
                "split seeds are given once, in split_seeds (each fold's evaluation takes its own)."
            )
        object.__setattr__(self, "evaluation", dataclasses.replace(self.evaluation, seed=self.split_seeds[0]))
        if self.jepa_steps is not None and (isinstance(self.jepa_steps, bool) or int(self.jepa_steps) < 1):
            raise InputError(f"jepa_steps must be a positive integer, got {self.jepa_steps!r}.")
        if self.device not in (None, "auto", "cpu") and not str(self.device).startswith("cuda"):
            raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}.")
        if self.jepa is not None:
            self.jepa.check("run config: jepa")

    def evaluation_for(self, split_seed: int) -> EvalConfig:
        """The evaluation settings of the folds of ``split_seed``."""
        return dataclasses.replace(self.evaluation, seed=int(split_seed))

    def jepa_for(self, model_seed: int) -> JEPAConfig:
        """The encoder config of ``model_seed`` (seed, device and steps from this run)."""
        if self.jepa is None:
            raise InputError("this run has no JEPA config (baselines only).")
        train = {"seed": int(model_seed)}
        if self.device is not None:
            train["device"] = self.device
        if self.jepa_steps is not None:
            train["max_steps"] = int(self.jepa_steps)
        return self.jepa.replace(train=train)

    def seeds_of_peer(self, name: str) -> tuple[int, ...]:
        """The model seeds ``name`` is trained with: every model seed, or the first ``peer_seeds[name]``."""
        n = self.peer_seeds.get(name, self.peer_seeds.get("*", len(self.model_seeds)))
        return self.model_seeds[:n]

    def peer_models(self, workdir=None, seed: int | None = None) -> list:
        """The :class:`~celljepa.peers.PeerModel` of every peer trained with model seed ``seed`` (default: the first).

        Each keeps its exchange files and log under ``workdir/<peer>/seed<k>`` when ``workdir`` is given.
        """
        seed = self.model_seeds[0] if seed is None else int(seed)
        return [
            PeerModel(
                name,
                seed=seed,
                params=self.peer_params.get(name),
                workdir=None if workdir is None else Path(workdir) / name / f"seed{seed}",
            )
            for name in self.peers
            if seed in self.seeds_of_peer(name)
        ]

    def transition_for(self, model_seed: int) -> TransitionConfig:
        """The transition config of ``model_seed`` (seed and device from this run)."""
        changes = {"seed": int(model_seed)}
        if self.device is not None:
            changes["device"] = self.device
        return self.transition.replace(**changes)
