"""One run configuration for a benchmark, a holdout or a sweep task, and the step defaults in one place.

:class:`RunConfig` is the only carrier of the seeds, step counts and device of a run: every stage takes its
settings from it (the evaluation of each split seed, the encoder and transition models of each model seed),
so nothing can say seed 1 in one place and seed 0 in another.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from .._defaults import BENCHMARK_JEPA_STEPS, FAST_DEV_JEPA_STEPS
from .._errors import InputError
from .._io import load_yaml
from ..data._keys import suggest
from ..models.base import PerturbationModel
from ..models.plugins import (
    builtin_method_names,
    check_user_models,
    load_model_class,
    make_model,
    model_identity,
    model_key,
)
from ..models.transition import TransitionConfig
from ..peers import PEERS, PeerModel, parse_peers
from ..train.config import JEPAConfig
from .evaluate import EvalConfig

__all__ = ["BENCHMARK_JEPA_STEPS", "FAST_DEV_JEPA_STEPS", "RunConfig", "parse_model_options"]


def _seeds(name: str, seeds) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in seeds)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be integers, got {seeds!r}.") from None
    if not out or len(set(out)) != len(out) or min(out) < 0:
        raise InputError(f"{name} must be distinct integers >= 0 (at least one), got {list(out)}.")
    return out


def parse_model_options(models: list[str], items: list[str]) -> dict[str, dict]:
    """The ``--model-option`` items of the command line as ``RunConfig.model_options`` (keyed by model spec).

    ``KEY=VALUE`` sets an option of the only user model; ``Name.KEY=VALUE`` one of the model ``Name`` (its class
    name or its ``name`` attribute), required when the run has several. ``VALUE`` is read as plain YAML
    (``0.5`` and ``1e-3`` numbers, ``true`` a boolean, ``[1, 2]`` a list, anything else a string).

    Parameters
    ----------
    models
        The ``--model`` specs (``"package.module:Class"``), as given.
    items
        The ``--model-option`` items.

    Returns
    -------
    dict
        ``{spec: {option: value}}`` for the models that get options.

    Examples
    --------
    >>> from celljepa.bench.config import parse_model_options
    >>> parse_model_options(["celljepa.models.baselines:RidgeShift"], ["alphas=[1, 10]"])
    {'celljepa.models.baselines:RidgeShift': {'alphas': [1, 10]}}
    >>> specs = ["celljepa.models.baselines:RidgeShift", "celljepa.models.baselines:MeanShift"]
    >>> parse_model_options(specs, ["ridge.alphas=[0.5]"])
    {'celljepa.models.baselines:RidgeShift': {'alphas': [0.5]}}
    """
    specs = [str(m).strip() for m in models or []]
    items = list(items or [])
    if items and not specs:
        raise InputError(
            f"--model-option {items[0]!r} is given but no --model. Fix: name the model, --model package.module:Class."
        )
    names: dict[str, list[str]] = {}
    for spec in specs:
        cls = load_model_class(spec)
        own = getattr(cls, "name", None)
        for alias in dict.fromkeys([cls.__name__] + ([own] if own and own != PerturbationModel.name else [])):
            names.setdefault(alias, []).append(spec)
    out: dict[str, dict] = {}
    for item in items:
        left, sep, text = str(item).partition("=")
        left = left.strip()
        if not sep or not left or not text.strip():
            raise InputError(f"--model-option {item!r}: expected KEY=VALUE or Name.KEY=VALUE (e.g. shrinkage=0.5).")
        who, dot, key = left.rpartition(".")
        if not dot:
            if len(specs) > 1:
                raise InputError(
                    f"--model-option {item!r}: this run has {len(specs)} models; say whose option it is: "
                    f"Name.{left}={text.strip()} with Name one of {', '.join(names)}."
                )
            spec = specs[0]
        else:
            owners = names.get(who, [])
            if len(owners) != 1:
                what = "names several models" if owners else "is not a model of this run"
                raise InputError(
                    f"--model-option {item!r}: {who!r} {what}.{suggest(who, names)} Fix: Name.KEY=VALUE with Name "
                    f"one of {', '.join(names)}."
                )
            spec = owners[0]
        if not key.isidentifier():
            raise InputError(f"--model-option {item!r}: {key!r} is not an option name (a Python identifier).")
        if key in out.get(spec, {}):
            raise InputError(f"--model-option {item!r}: option {key!r} of {spec} is given twice. Fix: give it once.")
        out.setdefault(spec, {})[key] = _option_value(text.strip(), source=f"--model-option {item!r}")
    return out


# YAML 1.1 reads 1e-3 (no dot) as text; an option value written so is meant as a number
_EXPONENT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _option_value(text: str, *, source: str):
    value = load_yaml(text, source=source)
    return float(value) if isinstance(value, str) and _EXPONENT.match(value) else value


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
    models
        The user's own models (``docs/bring-your-own-model.md``): ``"package.module:Class"`` strings or
        :class:`~celljepa.models.base.PerturbationModel` subclasses, kept as given (a string stays the string the
        user wrote). Each is loaded here, so a bad one is refused before any fold runs; per fold and model seed
        one instance (:meth:`user_models`) is fitted and scored beside the baselines. It joins the comparator
        pool like any non-JEPA method (role ``"baseline"`` or ``"peer"``) unless ``evaluation.primary`` names it.
        Its class, options and source digest are recorded in every fold's config.
    model_options
        ``{model: {option: value}}``: keyword arguments of a user model's constructor. The key is the model's
        spec as given in ``models``, its class name, ``"module:qualname"`` or its ``name``; it is stored under
        the spec (:func:`~celljepa.models.plugins.model_key`).

    Examples
    --------
    >>> from celljepa.bench.config import RunConfig
    >>> from celljepa.train.config import JEPAConfig
    >>> run = RunConfig(split_seeds=(0, 1, 2), model_seeds=(0, 1, 2), jepa=JEPAConfig(), jepa_steps=400)
    >>> run.jepa_for(1).train.seed, run.jepa_for(1).train.max_steps, run.transition_for(2).seed
    (1, 400, 2)
    >>> run.evaluation_for(2).seed
    2

    A user model (``docs/examples`` on ``sys.path``), its options keyed by class name, stored by spec:

    >>> mine = RunConfig(models=["my_model:ShrunkMeanShift"],                   # doctest: +SKIP
    ...                  model_options={"ShrunkMeanShift": {"shrinkage": 0.5}})
    >>> mine.model_options, [m.name for m in mine.user_models(0)]              # doctest: +SKIP
    ({'my_model:ShrunkMeanShift': {'shrinkage': 0.5}}, ['shrunk_mean_shift'])
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
    models: tuple = ()
    model_options: dict = field(default_factory=dict)

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
        self._check_models()

    def _check_models(self) -> None:
        """Load every user model, key its options by its spec, refuse clashes and an unknown primary (first)."""
        entries = self.models
        if isinstance(entries, (str, type)):
            entries = (entries,)
        entries = tuple(e.strip() if isinstance(e, str) else e for e in entries or ())
        classes = [load_model_class(e) for e in entries]
        keys = [model_key(e) for e in entries]
        if len(set(keys)) != len(keys):
            raise InputError(f"models {list(keys)}: a model is named twice. Fix: give each once.")
        object.__setattr__(self, "models", entries)
        if not isinstance(self.model_options, dict):
            raise InputError(f"model_options must be {{model: {{option: value}}}}, got {self.model_options!r}.")
        # the names a model's options may be keyed by: its spec, class name, module:qualname, class attribute name
        aliases: dict[str, set[str]] = {}
        for key, cls in zip(keys, classes, strict=True):
            for alias in {key, cls.__name__, model_key(cls), getattr(cls, "name", key)}:
                aliases.setdefault(alias, set()).add(key)
        options: dict[str, dict] = {}
        for given, opts in self.model_options.items():
            owners = aliases.get(str(given), set())
            if len(owners) != 1:
                what = "names several models" if owners else "is not a model of this run"
                raise InputError(
                    f"model_options key {given!r} {what} (models: {list(keys)}).{suggest(str(given), aliases)} "
                    "Fix: key the options by the model's spec 'module:Class'."
                )
            if not isinstance(opts, dict):
                raise InputError(f"model_options[{given!r}] must be {{option: value}}, got {opts!r}.")
            (key,) = owners
            if key in options:
                raise InputError(f"model_options give the options of {key} twice (as {given!r} too). Fix: once.")
            options[key] = dict(opts)
        object.__setattr__(self, "model_options", options)
        mine = self.user_models(self.model_seeds[0])
        check_user_models(mine, reserved=PEERS)
        if mine:  # without user models the primary may name one that benchmark(models=...) adds
            self.check_primary(mine)

    def check_primary(self, mine: list[PerturbationModel] | None = None) -> None:
        """Refuse a primary model (``evaluation.primary``) that names no method this run can score.

        It may name a JEPA model (``jepa_set``, ``jepa_prototype``), a user model, a peer of the run or a baseline.
        """
        mine = self.user_models(self.model_seeds[0]) if mine is None else mine
        known = builtin_method_names() | set(self.peers) | {m.name for m in mine}
        primary = self.evaluation.primary
        if primary not in known:
            raise InputError(
                f"the primary model {primary!r} is not a method of this run.{suggest(primary, known)} Fix: name a "
                f"JEPA model (jepa_set, jepa_prototype), a user model ({', '.join(m.name for m in mine) or 'none'})"
                ", a peer or a baseline."
            )

    def user_models(self, seed: int) -> list[PerturbationModel]:
        """A fresh instance of each user model for model seed ``seed`` (given as ``seed=`` if its constructor takes it).

        Examples
        --------
        >>> from celljepa.bench.config import RunConfig
        >>> RunConfig().user_models(0)
        []
        """
        return [make_model(m, seed=int(seed), options=self.model_options.get(model_key(m))) for m in self.models]

    def model_records(self) -> dict[str, dict]:
        """``{name: identity}`` of every user model (:func:`~celljepa.models.plugins.model_identity`), in order."""
        out = {}
        for m in self.models:
            ident = model_identity(m, self.model_options.get(model_key(m)))
            out[ident["name"]] = {**ident, "spec": model_key(m)}
        return out

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

    @classmethod
    def from_options(
        cls,
        *,
        seed: int = 0,
        split_seeds=None,
        model_seeds=None,
        primary: str = "jepa_set",
        transductive: bool = False,
        jepa: bool = True,
        jepa_config=None,
        jepa_overrides=(),
        jepa_steps: int | None = None,
        transition_config=None,
        transition_overrides=(),
        peers=(),
        peer_overrides=(),
        peer_seeds: dict | None = None,
        models=(),
        model_options=None,
    ) -> RunConfig:
        """The run of a benchmark or holdout described by plain options (what the command line gives).

        Every setting is checked here, before any data are read: the configs are loaded and validated, the user
        models loaded, and ``primary`` must name a method of the run, a user model's name included (else an error
        with a did-you-mean).

        Parameters
        ----------
        seed
            Split seed and model seed where ``split_seeds`` / ``model_seeds`` are not given.
        split_seeds, model_seeds
            The split and model seeds (default ``[seed]``).
        primary
            The pre-registered model of the verdict: ``"jepa_set"``, ``"jepa_prototype"`` or the name of a user
            model of ``models`` (its ``name``, else its class name).
        transductive
            Let every method fit on the unlabeled control cells of held-out contexts.
        jepa
            Pretrain encoders and train the transition models (``False``: baselines only, no JEPA config).
        jepa_config
            A JEPA config YAML (``None``: the built-in defaults).
        jepa_overrides
            ``(section, key, value)`` triples or ``{section: {key: value}}``, applied over ``jepa_config``.
        jepa_steps
            ``train.max_steps`` of every encoder. Not given, and neither ``jepa_config`` nor a ``train.max_steps``
            override sets it: :data:`~celljepa._defaults.BENCHMARK_JEPA_STEPS`.
        transition_config
            A transition config YAML (``None``: the built-in defaults).
        transition_overrides
            ``(key, value)`` pairs or ``{key: value}``, applied over ``transition_config``.
        peers
            Published tools scored beside the baselines (``"scgen,gears"`` or a sequence).
        peer_overrides
            ``(peer, key, value)`` triples or ``{peer: {key: value}}``: a peer's settings.
        peer_seeds
            ``{peer: n}`` (``"*"``: every peer): train that peer with the first ``n`` model seeds only.
        models
            User models, ``"package.module:Class"`` each (:mod:`celljepa.models.plugins`).
        model_options
            Their options: ``KEY=VALUE`` strings (``Name.KEY=VALUE`` with several models; parsed by
            :func:`parse_model_options`), or the parsed mapping.

        Returns
        -------
        RunConfig
            The run.

        Raises
        ------
        InputError
            A bad config, override, seed, peer setting, model or option, or an unknown ``primary``; the message
            names the option (CLI flag) and the fix.

        Examples
        --------
        >>> from celljepa.bench.config import RunConfig
        >>> run = RunConfig.from_options(split_seeds=[0, 1], jepa_overrides=[("train", "ema", False)])
        >>> run.split_seeds, run.model_seeds, run.jepa_steps, run.jepa.train.ema
        ((0, 1), (0,), 400, False)
        >>> RunConfig.from_options(jepa=False).jepa is None
        True
        >>> RunConfig.from_options(primary="jepa_sett")
        Traceback (most recent call last):
        ...
        celljepa._errors.InputError: the primary model 'jepa_sett' is not a method of this run. Did you mean ...
        """
        from collections.abc import Mapping

        from ..models.transition import load_transition_config
        from ..train.config import load_config

        def nested(items) -> dict:
            if isinstance(items, Mapping):
                return {k: dict(v) for k, v in items.items()}
            out: dict = {}
            for outer, key, value in items or ():
                out.setdefault(outer, {})[key] = value
            return out

        overrides = nested(jepa_overrides)
        steps = jepa_steps
        if steps is None and not jepa_config and "max_steps" not in overrides.get("train", {}):
            steps = BENCHMARK_JEPA_STEPS
        extra: dict = {}  # the user models only when given: a run without them is built as before
        models = tuple(models or ())
        if models or model_options:
            options = model_options or {}
            if not isinstance(options, Mapping):
                options = parse_model_options(list(models), list(options))
            extra = {"models": models, "model_options": dict(options)}
        run = cls(
            split_seeds=list(split_seeds or [seed]),
            model_seeds=list(model_seeds or [seed]),
            evaluation=EvalConfig(primary=primary, transductive=transductive),
            jepa=load_config(jepa_config, overrides=overrides) if jepa else None,
            transition=load_transition_config(transition_config, dict(transition_overrides or {})),
            jepa_steps=steps if jepa else None,
            peers=peers,
            peer_params=nested(peer_overrides),
            peer_seeds=dict(peer_seeds or {}),
            **extra,
        )
        run.check_primary()  # every model of the run is known here: a misspelt primary fails now
        return run
