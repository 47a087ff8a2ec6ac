"""The JEPA pretraining configuration: nested dataclasses, read from YAML, resolved and written back.

A config file names only what differs from the defaults; :func:`load_config` fills in the rest and
rejects unknown keys (with a suggestion), so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .._errors import InputError
from .._io import load_yaml
from ..data._keys import suggest

__all__ = [
    "DataConfig",
    "EvalConfig",
    "JEPAConfig",
    "MaskConfig",
    "ModelConfig",
    "TrainConfig",
    "check_choice",
    "coerce_setting",
    "load_config",
    "omit_legacy",
]

MASK_KINDS = ("random", "block", "module")
#: Settings added after runs were frozen, with the value every earlier run used (see :func:`omit_legacy`). Each
#: equals its current default, so a record without it reads back right through :meth:`JEPAConfig.from_dict`;
#: a changed default needs a record reader that fills these in, as :class:`~celljepa.models.TransitionConfig` has.
_LEGACY_VALUES = {"train": {"thin_views": 0.0}, "data": {"counts_layer": None}}
GENE_EMBEDDINGS = ("free", "go")
TARGETS = ("cell", "hidden")


@dataclass
class ModelConfig:
    """Encoder and predictor sizes."""

    n_latent: int = 128  #: embedding size
    n_hidden: int = 512  #: width of the per-gene vectors and of the encoder MLP
    n_layers: int = 2  #: hidden blocks of the encoder MLP after the gene layer
    predictor_hidden: int = 256  #: width of the predictor MLP
    predictor_layers: int = 2  #: hidden blocks of the predictor MLP
    pointer_dim: int = 64  #: size of the learned "which genes were hidden" pointer
    expander_dim: int = 0  #: > 0: the anti-collapse terms act on an MLP expander of z (VICReg) instead of z
    #: one learned vector per training dataset (obs[data.balance_key], else obs["dataset_id"]) added to the
    #: encoder's gene layer; a dataset the model has not seen adds none
    dataset_covariate: bool = False
    #: free: one learned vector per input gene | go: GO features (go_components wide) @ a learned projection
    #: + a per-gene residual, so genes outside the training data have vectors too (embeds other gene panels)
    gene_embedding: str = "free"
    go_components: int = 64  #: width of the GO gene features (gene_embedding=go)


@dataclass
class MaskConfig:
    """How the student's view is masked."""

    kind: str = "random"  #: random | block | module
    ratio: float = 0.7  #: probability that a unit (gene, block, module) is hidden
    block_size: int = 32  #: genes per block (kind=block)
    gene_sets: str = "hallmark"  #: kind=module: a shipped collection name or a GMT/CSV path
    priority: str = "size"  #: a gene in several sets goes to: given (file order) | size (smallest) | name


@dataclass
class TrainConfig:
    """Optimisation, EMA teacher, loss and anti-collapse."""

    max_steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3  #: peak AdamW learning rate (linear warm-up, cosine decay to lr_min_factor * lr)
    lr_min_factor: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0  #: max gradient norm (0 = off)
    ema: bool = True  #: off: the teacher is the student under stop-gradient
    ema_momentum: float = 0.996  #: start of the momentum schedule
    ema_momentum_end: float = 1.0  #: end of the momentum schedule (cosine)
    loss: str = "cosine"  #: cosine | smooth_l1 | l2
    target: str = "hidden"  #: hidden (teacher embeds only the hidden genes) | cell (the whole cell)
    anticollapse: bool = True  #: VICReg variance + covariance terms on the student embedding
    var_weight: float = 1.0
    cov_weight: float = 0.01
    #: > 0: add the action-conditioned objective with this weight: from the student's embeddings of control
    #: cells and the perturbation, predict the teacher's embeddings of the perturbed cells of the same context
    #: (E-distance set loss in latent space, no pairing); needs the contract's obs columns
    #: last: the model after max_steps | best: the weights of the evaluation (validation-cell) step with the
    #: lowest loss (eval_every apart), e.g. for long pretraining
    keep: str = "last"
    #: > 0: count-aware views. The student encodes a binomially thinned copy of each cell's counts (the share of
    #: reads kept drawn per cell, uniformly in [thin_views, 1]; re-normalised to 10,000 and log1p), the teacher
    #: the full cell, so the embedding learns to ignore sequencing depth; needs data.counts_layer
    thin_views: float = 0.0
    action_weight: float = 0.0
    action_conditions: int = 8  #: conditions per step of the action objective
    action_cells: int = 32  #: cells per control / perturbed set (fewer when a condition has fewer)
    action_token_dropout: float = 0.5  #: share of tokens replaced by "unknown" (unseen perturbations: gene vectors)
    seed: int = 0
    device: str = "auto"  #: auto | cpu | cuda | cuda:N
    log_every: int = 10  #: steps between metrics.jsonl lines
    eval_every: int = 200  #: steps between evaluations on the held-out eval cells (best.pt)
    checkpoint_every: int = 200  #: steps between checkpoints/last.pt writes


@dataclass
class DataConfig:
    """Which matrix is read and how."""

    layer: str | None = None  #: None = X (log-normalised); or a layer name
    backed: bool = False  #: stream chunks from a backed .h5ad instead of loading it
    chunk_size: int = 65_536  #: cells per chunk (backed mode; bounds memory)
    eval_cells: int = 2048  #: cells of the fixed evaluation batch that picks best.pt (a split's val cells if given)
    balance_key: str | None = None  #: obs column whose groups get equal shares of every batch (e.g. dataset_id)
    counts_layer: str | None = None  #: raw counts of the same cells and genes (train.thin_views reads them)


@dataclass
class EvalConfig:
    """The embedding evaluation written to eval.json."""

    labels: list[str] = field(default_factory=lambda: ["cell_type", "perturbation_id"])
    knn_k: int = 15
    knn_folds: int = 5
    n_pcs: int = 50  #: PCA comparison: components on the same genes, fitted on the cells the encoder saw
    max_cells: int = 20_000  #: subsample above this for kNN and diagnostics


@dataclass
class JEPAConfig:
    """Everything a pretraining run depends on.

    Examples
    --------
    >>> from celljepa.train.config import JEPAConfig
    >>> cfg = JEPAConfig.from_dict({"train": {"max_steps": 50, "ema": "off"}, "mask": {"kind": "random"}})
    >>> cfg.train.max_steps, cfg.train.ema, cfg.mask.kind
    (50, False, 'random')
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, raw: dict | None, *, source: str = "config") -> JEPAConfig:
        """Build a config from nested mappings; unknown sections/keys and bad values raise InputError."""
        raw = dict(raw or {})
        kwargs = {}
        for f in fields(cls):
            section = raw.pop(f.name, None) or {}
            if not isinstance(section, dict):
                raise InputError(f"{source}: section {f.name!r} must be a mapping, got {type(section).__name__}.")
            kwargs[f.name] = _section(f.default_factory, section, f"{source}: {f.name}")
        if raw:
            bad = sorted(raw)[0]
            names = [f.name for f in fields(cls)]
            raise InputError(f"{source}: unknown section {bad!r}.{suggest(bad, names)} Sections: {', '.join(names)}.")
        cfg = cls(**kwargs)
        cfg.check(source)
        return cfg

    def to_dict(self) -> dict:
        return omit_legacy(asdict(self), _LEGACY_VALUES)

    def replace(self, **sections: dict) -> JEPAConfig:
        """A copy with some keys changed: ``cfg.replace(train={"seed": 1})``."""
        merged = self.to_dict()
        for name, values in sections.items():
            if name not in merged:
                raise InputError(f"unknown config section {name!r}.")
            merged[name].update(values)
        return JEPAConfig.from_dict(merged)

    def digest(self) -> str:
        """sha256 of the resolved config except run-time-only keys (device, log/eval/checkpoint cadence)."""
        d = self.to_dict()
        for key in ("device", "log_every", "checkpoint_every"):
            d["train"].pop(key)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    def check(self, source: str = "config") -> None:
        m, k, t, d, e = self.model, self.mask, self.train, self.data, self.eval
        _positive(source, "model", m, ("n_latent", "n_hidden", "predictor_hidden", "pointer_dim"))
        _nonnegative(source, "model", m, ("n_layers", "predictor_layers", "expander_dim"))
        check_choice(source, "model.gene_embedding", m.gene_embedding, GENE_EMBEDDINGS)
        _positive(source, "model", m, ("go_components",))
        check_choice(source, "mask.kind", k.kind, MASK_KINDS)
        if not 0.0 < k.ratio < 1.0:
            raise InputError(f"{source}: mask.ratio must be in (0, 1), got {k.ratio}.")
        _positive(source, "mask", k, ("block_size",))
        check_choice(source, "mask.priority", k.priority, ("given", "size", "name"))
        _positive(source, "train", t, ("max_steps", "batch_size", "log_every", "eval_every", "checkpoint_every"))
        _nonnegative(
            source,
            "train",
            t,
            ("warmup_steps", "weight_decay", "grad_clip", "var_weight", "cov_weight", "seed", "action_weight"),
        )
        _positive(source, "train", t, ("action_conditions",))
        if t.action_cells < 2:
            raise InputError(f"{source}: train.action_cells must be at least 2, got {t.action_cells}.")
        if not 0.0 <= t.action_token_dropout < 1.0:
            raise InputError(f"{source}: train.action_token_dropout must be in [0, 1), got {t.action_token_dropout}.")
        if t.batch_size < 2:
            raise InputError(f"{source}: train.batch_size must be at least 2 (the anti-collapse terms need a batch).")
        if not 0.0 <= t.thin_views < 1.0:
            raise InputError(f"{source}: train.thin_views must be in [0, 1), got {t.thin_views}.")
        if t.thin_views > 0 and d.counts_layer is None:
            raise InputError(f"{source}: train.thin_views needs the raw counts: set data.counts_layer (e.g. 'counts').")
        if not t.lr > 0:
            raise InputError(f"{source}: train.lr must be positive, got {t.lr}.")
        if not 0.0 <= t.lr_min_factor <= 1.0:
            raise InputError(f"{source}: train.lr_min_factor must be in [0, 1], got {t.lr_min_factor}.")
        for key in ("ema_momentum", "ema_momentum_end"):
            if not 0.0 <= getattr(t, key) <= 1.0:
                raise InputError(f"{source}: train.{key} must be in [0, 1], got {getattr(t, key)}.")
        from ..nn.modules import LOSSES

        check_choice(source, "train.loss", t.loss, LOSSES)
        check_choice(source, "train.target", t.target, TARGETS)
        check_choice(source, "train.keep", t.keep, ("last", "best"))
        if t.device != "auto" and not (t.device == "cpu" or t.device.startswith("cuda")):
            raise InputError(f"{source}: train.device must be auto, cpu, cuda or cuda:N, got {t.device!r}.")
        _positive(source, "data", d, ("chunk_size", "eval_cells"))
        _positive(source, "eval", e, ("knn_k", "n_pcs", "max_cells"))
        if e.knn_folds < 2:
            raise InputError(f"{source}: eval.knn_folds must be at least 2, got {e.knn_folds}.")


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> JEPAConfig:
    """Read a YAML (or JSON) config file and apply ``overrides`` (nested dict); ``None`` = defaults.

    Examples
    --------
    >>> from celljepa.train.config import load_config
    >>> load_config(overrides={"model": {"n_latent": 32}}).model.n_latent
    32
    """
    raw: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise InputError(f"config file {source!r} does not exist (see configs/ for examples).")
        raw = load_yaml(path.read_text(encoding="utf-8"), source=f"config file {source!r}") or {}
        if not isinstance(raw, dict):
            raise InputError(f"config file {source!r} must hold a mapping of sections, got {type(raw).__name__}.")
    for name, values in (overrides or {}).items():
        raw.setdefault(name, {})
        if not isinstance(raw[name], dict):
            raw[name] = {}
        raw[name].update(values)
    return JEPAConfig.from_dict(raw, source=source)


# ---------------------------------------------------------------------------------------- helpers
_ON = {"on", "true", "yes", "1"}
_OFF = {"off", "false", "no", "0"}


def omit_legacy(record: dict, legacy: dict) -> dict:
    """``record`` less the settings that hold the value every run before them used (nested like ``record``).

    A setting added after runs were frozen then leaves the record, and every digest made from it, as it was, so
    that a finished run of the same configuration is still recognised; a reader fills it back in with that value.

    >>> omit_legacy({"a": 1, "s": {"b": 0, "c": 2}}, {"s": {"b": 0}})
    {'a': 1, 's': {'c': 2}}
    >>> omit_legacy({"a": 3}, {"a": 1})
    {'a': 3}
    """
    out = dict(record)
    for key, value in legacy.items():
        if isinstance(value, dict):
            out[key] = omit_legacy(out[key], value)
        elif key in out and out[key] == value:
            del out[key]
    return out


def coerce_setting(value: Any, default: Any, where: str) -> Any:
    """``value`` as the type of ``default``, or an InputError naming ``where``.

    Booleans take on/off, true/false, yes/no, 1/0; integers take integral floats; floats take numeric
    strings (YAML reads ``3e-4`` as a string).

    Examples
    --------
    >>> coerce_setting("3e-4", 1e-3, "lr"), coerce_setting("no", True, "use_context")
    (0.0003, False)
    """
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _ON | _OFF:
            return value.lower() in _ON
        raise InputError(f"{where} must be on/off (true/false), got {value!r}.")
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise InputError(f"{where} must be an integer, got {value!r}.")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                return float(value)
            except (TypeError, ValueError):
                raise InputError(f"{where} must be a number, got {value!r}.") from None
        return float(value)
    if isinstance(default, list):
        if isinstance(value, str):
            return [value]
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where} must be a list, got {value!r}.")
        return [str(v) for v in value]
    if value is not None and not isinstance(value, str):
        raise InputError(f"{where} must be a string, got {value!r}.")
    return value


def _section(factory, values: dict, where: str):
    obj = factory()
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in values.items():
        if key not in names:
            raise InputError(f"{where}: unknown key {key!r}.{suggest(key, names)} Keys: {', '.join(names)}.")
        setattr(obj, key, coerce_setting(value, getattr(obj, key), f"{where}.{key}"))
    return obj


def _positive(source, section, obj, keys) -> None:
    for key in keys:
        if not getattr(obj, key) > 0:
            raise InputError(f"{source}: {section}.{key} must be positive, got {getattr(obj, key)}.")


def _nonnegative(source, section, obj, keys) -> None:
    for key in keys:
        if not getattr(obj, key) >= 0:
            raise InputError(f"{source}: {section}.{key} must be >= 0, got {getattr(obj, key)}.")


def check_choice(source, key, value, options) -> None:
    """An InputError naming ``source`` and ``key`` (with a suggestion) unless ``value`` is among ``options``."""
    if value not in options:
        raise InputError(
            f"{source}: {key} must be one of {', '.join(options)}, got {value!r}.{suggest(str(value), options)}"
        )
