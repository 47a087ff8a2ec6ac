"""Perturbation transition predictors in JEPA space: an action encoder, a prototype and a set-level model.

A transition model maps control cells of a context, embedded by a pretrained
:class:`~celljepa.models.CellJEPA`, to the perturbed state of the same context:

* :class:`~celljepa.nn.ActionEncoder` turns a condition into vectors: learned token embeddings summed over its
  ``perturbation_tokens`` (a combination is several tokens), fixed features that let an *unseen*
  action generalise (for ``gene:`` tokens the perturbed gene's own vector of the JEPA encoder and its
  loading in the training PCA; for ``drug:`` tokens target / pathway metadata), a small MLP of log
  dose and time, and a context vector from the mean embedding of the context's control cells.
* ``kind="prototype"``: ``h(mean control embedding, action, context) → mean perturbed embedding``;
  the control cells are shifted by the predicted mean change (a debug model, trained on set means).
* ``kind="set"`` (default): a per-cell residual map ``f(z_i, action, context) = z_i + g(z_i − μ, action,
  context)`` (``μ`` the context's mean control embedding), trained with the batched E-distance set loss
  (:func:`celljepa.kernels.edistance_loss`):
  each step samples conditions, ``n`` control and ``n`` perturbed cells per condition (equal ``n``,
  capped), maps the controls and minimises the E-distance to the observed set; no pseudo-pairing.
* A linear decoder (ridge, fitted on training cells, alpha chosen on validation cells) maps the
  JEPA-space residual to the split's evaluation space: a control cell's predicted coordinates are its
  own evaluation-space coordinates plus the decoded residual (``decoder="residual"``) or the decoded
  predicted embedding (``decoder="absolute"``). Predictions are therefore scored by the harness exactly
  like the baselines.

The models implement :class:`~celljepa.models.base.PerturbationModel`; they need a
:class:`~celljepa.models.base.TrainData` with ``embedding`` (and ``encoder`` for gene vectors), which
:func:`celljepa.bench.evaluate.score_fold` provides when it is given a JEPA config or model.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import Ridge
from torch import nn

from .._errors import InputError
from .._io import load_yaml, torch_save_atomic
from .._logging import logger
from ..data import contract as C
from ..data._keys import suggest
from ..nn.transition import EnsembleNet, TransitionNet
from ..train import distributed as D
from ..train.checkpoint import safe_torch_load
from ..train.config import check_choice, coerce_setting, omit_legacy
from .base import Condition, PerturbationModel, TrainData

__all__ = ["ActionFeaturizer", "JEPATransition", "TransitionConfig", "load_transition_config"]

KINDS = ("set", "prototype")
LOSS_SPACES = ("decoded", "jepa")
DECODERS = ("residual", "absolute")
GENE_FEATURES = ("both", "jepa", "pca", "none")
LR_SCHEDULES = ("constant", "cosine")
#: Settings added after runs were frozen, with the value every earlier run used: left out of ``to_dict`` (and so
#: of every digest) at that value, so that a finished run of the same configuration is still recognised, and
#: read back as that value where a record lacks them (:meth:`TransitionConfig.from_dict`). ``ensemble`` became 3
#: by default later (the reliability sweep, docs/science.md): a record without it is a single network.
_LEGACY_VALUES = {"lr_warmup": 0, "lr_schedule": "constant", "ensemble": 1}
DECODER_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


@dataclass(frozen=True)
class TransitionConfig:
    """Settings of a transition model (every field is recorded in the run's config).

    Attributes
    ----------
    n_hidden, n_layers
        Width and depth of the residual MLP.
    action_dim
        Size of the action and context vectors.
    max_steps, lr, weight_decay
        AdamW optimisation.
    conditions_per_step, set_size
        Conditions sampled per step and cells per set (``n = min(set_size, n_control, n_perturbed)``).
    loss_space
        ``"decoded"``: the set loss is computed in the evaluation space through the fixed linear
        decoder; ``"jepa"``: in the JEPA embedding space.
    decoder
        ``"residual"`` (control cell's evaluation coordinates + decoded residual) or ``"absolute"``.
    gene_features
        Fixed features of ``gene:`` tokens: the JEPA encoder's gene vector and the training-PCA loading
        (``"both"``), one of them, or ``"none"`` (unseen genes then share the "unknown" token).
    use_context
        Give the map the context vector (mean control embedding of the context). Off, the map is the
        same in every context (the state still enters relative to its context's control mean), which
        transfers more safely to unseen contexts when only a few contexts are seen in training.
    token_dropout
        Probability of hiding a token's learned embedding during training, so the fixed features
        (gene vectors, drug metadata) must carry the action, as they will for unseen tokens.
    mean_weight
        Weight of an extra squared error between predicted and observed set means.
    eval_every, patience
        Validation E-distance every ``eval_every`` steps; stop after ``patience`` evaluations without
        improvement and keep the best weights.
    lr_warmup, lr_schedule
        Linear learning-rate warm-up over the first ``lr_warmup`` steps (0: none), then ``"constant"`` or
        ``"cosine"`` decay to a tenth of ``lr`` at ``max_steps``.
    ensemble
        Members trained with different seeds (``seed + 1000 k``) from the same start, each early-stopped on
        validation; the model predicts their mean residual (1: a single network). Three by default: chosen by
        the reliability sweep on validation conditions (the model-seed spread of ``jepa_set`` fell on 4 of 5
        demo splits, e.g. Norman S1 0.136 → 0.020); training takes about three times as long.
    seed, device
        Seed of initialisation and sampling; ``"cpu"``, ``"cuda"`` or ``"auto"``.
    """

    n_hidden: int = 256
    n_layers: int = 2
    action_dim: int = 64
    max_steps: int = 800
    lr: float = 3e-4
    weight_decay: float = 1e-4
    conditions_per_step: int = 32
    set_size: int = 64
    loss_space: str = "decoded"
    decoder: str = "residual"
    token_dropout: float = 0.2
    gene_features: str = "both"
    use_context: bool = True
    mean_weight: float = 0.0
    eval_every: int = 50
    patience: int = 6
    lr_warmup: int = 0
    lr_schedule: str = "constant"
    ensemble: int = 3
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        source = "transition config"
        for f in dataclasses.fields(self):  # types first: YAML's "3e-4" is a string, "no" is not False
            object.__setattr__(self, f.name, coerce_setting(getattr(self, f.name), f.default, f"{source}: {f.name}"))
        check_choice(source, "loss_space", self.loss_space, LOSS_SPACES)
        check_choice(source, "gene_features", self.gene_features, GENE_FEATURES)
        check_choice(source, "decoder", self.decoder, DECODERS)
        check_choice(source, "lr_schedule", self.lr_schedule, LR_SCHEDULES)
        for name in (
            "n_hidden",
            "action_dim",
            "max_steps",
            "conditions_per_step",
            "set_size",
            "eval_every",
            "patience",
            "ensemble",
        ):
            if getattr(self, name) < 1:
                raise InputError(f"{source}: {name} must be >= 1, got {getattr(self, name)}.")
        for name in ("n_layers", "lr", "weight_decay", "mean_weight", "seed", "lr_warmup"):  # lr 0: the untrained map
            if not getattr(self, name) >= 0:
                raise InputError(f"{source}: {name} must be >= 0, got {getattr(self, name)}.")
        if not 0.0 <= self.token_dropout < 1.0:
            raise InputError(f"{source}: token_dropout must be in [0, 1), got {self.token_dropout}.")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise InputError(f"{source}: device must be auto, cpu, cuda or cuda:N, got {self.device!r}.")

    def replace(self, **changes) -> TransitionConfig:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            key = sorted(unknown)[0]
            names = [f.name for f in dataclasses.fields(self)]
            raise InputError(f"unknown transition setting {key!r}.{suggest(key, names)} Settings: {', '.join(names)}.")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Every setting, less those added later while they hold the value earlier runs used."""
        return omit_legacy(dataclasses.asdict(self), _LEGACY_VALUES)

    @classmethod
    def from_dict(cls, record: dict) -> TransitionConfig:
        """The config a :meth:`to_dict` record describes (a setting it lacks has the value earlier runs used).

        >>> TransitionConfig.from_dict(TransitionConfig(ensemble=1).to_dict()).ensemble
        1
        >>> TransitionConfig.from_dict(TransitionConfig().to_dict()) == TransitionConfig()
        True
        """
        return cls(**{**_LEGACY_VALUES, **record})


def _rms_scale(block: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(block**2))) if block.size else 0.0
    return block / rms if rms > 0 else block


@dataclass
class ActionFeaturizer:
    """Fixed features of perturbation tokens: gene vectors and drug metadata (zeros where unknown).

    ``gene_vectors`` maps gene names to ``[JEPA gene vector | training-PCA loading]`` (each block scaled
    to unit RMS over genes); ``drugs`` is a :class:`~celljepa.data.drugs.DrugFeatures` or None. A
    token's feature is ``[gene block, gene known, drug block, drug known]``.
    """

    gene_vectors: dict[str, np.ndarray] = field(default_factory=dict)
    gene_dim: int = 0
    drugs: object | None = None
    #: an encoder with GO gene features: ``{"proj", "centre", "rms"}``, so a perturbed gene it does not measure
    #: gets its GO-projected vector, scaled like the encoder's own (None otherwise)
    go_block: dict | None = field(default=None, repr=False)
    #: genes looked up in the GO table without success (not looked up again)
    _no_go: set = field(default_factory=set, init=False, repr=False, compare=False)

    def _go_vector(self, name: str) -> np.ndarray | None:
        from .jepa import go_features

        proj = self.go_block["proj"]
        feats, found = go_features([name], proj.shape[0])
        if not found[0]:
            return None
        out = np.zeros(self.gene_dim)
        out[: proj.shape[1]] = (feats[0].astype(np.float64) @ proj - self.go_block["centre"]) / self.go_block["rms"]
        return out

    @classmethod
    def build(cls, *, encoder=None, pca_loadings: dict[str, np.ndarray] | None = None, drugs=None) -> ActionFeaturizer:
        blocks: list[dict[str, np.ndarray]] = []
        go_block = None
        if encoder is not None and getattr(encoder, "module_", None) is not None:
            from ..train.loop import embedding_encoder

            enc = embedding_encoder(encoder.module_)
            raw = enc.effective_weight().detach().cpu().numpy().astype(np.float64)
            centre = raw.mean(axis=0)
            rms = float(np.sqrt(np.mean((raw - centre) ** 2))) or 1.0
            blocks.append(dict(zip(encoder.var_names, (raw - centre) / rms, strict=True)))
            if enc.n_gene_features:  # a perturbed gene the encoder does not measure: its GO-projected vector
                go_block = {
                    "proj": enc.gene_proj.detach().cpu().numpy().astype(np.float64),
                    "centre": centre,
                    "rms": rms,
                }
        if pca_loadings:
            names = list(pca_loadings)
            mat = _rms_scale(np.array([pca_loadings[g] for g in names], dtype=np.float64))
            blocks.append(dict(zip(names, mat, strict=True)))
        dims = [len(next(iter(b.values()))) for b in blocks]
        genes = sorted(set().union(*[b.keys() for b in blocks])) if blocks else []
        vectors = {}
        for g in genes:
            vectors[g] = np.concatenate([b[g] if g in b else np.zeros(d) for b, d in zip(blocks, dims, strict=True)])
        return cls(gene_vectors=vectors, gene_dim=int(sum(dims)), drugs=drugs, go_block=go_block)

    @property
    def dim(self) -> int:
        n_drug = self.drugs.n_features if self.drugs is not None else 0
        return self.gene_dim + 1 + n_drug + 1

    def token(self, token: str) -> np.ndarray:
        out = np.zeros(self.dim, dtype=np.float32)
        kind, name = C.token_kind(token), C.token_name(token)
        if kind == "gene" and name not in self.gene_vectors and self.go_block is not None and name not in self._no_go:
            vec = self._go_vector(name)
            if vec is None:
                self._no_go.add(name)
            else:
                self.gene_vectors[name] = vec
        if kind == "gene" and name in self.gene_vectors:
            out[: self.gene_dim] = self.gene_vectors[name]
            out[self.gene_dim] = 1.0
        elif kind in ("drug", "compound") and self.drugs is not None:
            vec = self.drugs.vector(name)
            if vec is not None:
                out[self.gene_dim + 1 : self.gene_dim + 1 + self.drugs.n_features] = vec
                out[-1] = 1.0
        return out


@dataclass
class _Encoded:
    """Tensors of a list of conditions, ready for :class:`~celljepa.nn.ActionEncoder`."""

    token_idx: torch.Tensor
    token_feat: torch.Tensor
    token_mask: torch.Tensor
    dose_time: torch.Tensor
    ctx_mean: torch.Tensor

    def select(self, idx: torch.Tensor) -> _Encoded:
        return _Encoded(*(t[idx] for t in dataclasses.astuple(self)))


class JEPATransition(PerturbationModel):
    """A transition predictor in JEPA space, scored in the evaluation space like every baseline.

    Parameters
    ----------
    kind
        ``"set"`` (per-cell residual map, E-distance set loss) or ``"prototype"`` (mean-to-mean).
    config
        A :class:`TransitionConfig`; keyword arguments override its fields.
    drug_metadata
        Optional :class:`~celljepa.data.drugs.DrugFeatures` (see :func:`~celljepa.data.drugs.read_drug_metadata`).
    name
        Method name in reports (default ``jepa_set`` / ``jepa_prototype``).

    Examples
    --------
    >>> from celljepa.bench import demo_datasets
    >>> from celljepa.bench.evaluate import score_fold
    >>> from celljepa.splits import make_split_folds
    >>> from celljepa.train import JEPAConfig
    >>> adata = demo_datasets()["norman2019"]                               # doctest: +SKIP
    >>> fold = make_split_folds(adata.obs, "S1_unseen_perturbation", dataset_id="norman2019")[0]  # doctest: +SKIP
    >>> result = score_fold(adata, fold, jepa=JEPAConfig().replace(train={"max_steps": 300}))    # doctest: +SKIP
    >>> result.metrics["methods"]["jepa_set"]["edistance"]["mean"]          # doctest: +SKIP
    """

    #: Validation conditions only early-stop the network and choose the decoder's alpha; it is never refitted.
    refits_on_validation = False

    def __init__(
        self,
        kind: str = "set",
        config: TransitionConfig | None = None,
        *,
        drug_metadata=None,
        name: str | None = None,
        space: str = "jepa",
        **overrides,
    ):
        if kind not in KINDS:
            raise InputError(f"kind must be one of {KINDS}, got {kind!r}.")
        if space not in ("jepa", "pca"):
            raise InputError(f"space must be 'jepa' or 'pca', got {space!r}.")
        self.kind = kind
        self.space = space
        # The PCA twin is the same model on the evaluation space's PCA instead of JEPA embeddings: a non-JEPA
        # method, in the comparator pool beside the baselines, and the control that tells a gain of the JEPA
        # space from a gain of the model itself.
        self.role = "pca_twin" if space == "pca" else "jepa"
        base = config or TransitionConfig()
        self.config = base.replace(**overrides) if overrides else base
        self.drug_metadata = drug_metadata
        self.name = name or (f"jepa_{kind}" if space == "jepa" else f"pca_{kind}")
        self.net_: TransitionNet | None = None

    # ------------------------------------------------------------------ setup
    def _device(self) -> torch.device:
        dev = self.config.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(dev)

    def _encode(self, conds: list[Condition], ctx_means: np.ndarray | None = None) -> _Encoded:
        t_max = max(1, max(len(c.tokens) for c in conds))
        n = len(conds)
        idx = np.zeros((n, t_max), dtype=np.int64)
        feat = np.zeros((n, t_max, self.featurizer_.dim), dtype=np.float32)
        mask = np.zeros((n, t_max), dtype=np.float32)
        dose_time = np.zeros((n, 4), dtype=np.float32)
        ctx = np.zeros((n, self._d), dtype=np.float32)
        for i, c in enumerate(conds):
            for j, tok in enumerate(c.tokens):
                idx[i, j] = self.vocab_.get(tok, 0)
                feat[i, j] = self.featurizer_.token(tok)
                mask[i, j] = 1.0
            if np.isfinite(c.dose):
                dose_time[i, :2] = (np.log1p(max(c.dose, 0.0)), 1.0)
            if np.isfinite(c.time_hours):
                dose_time[i, 2:] = (c.time_hours / 24.0, 1.0)
            ctx[i] = self._ctx_mean(c.context_id) if ctx_means is None else ctx_means[i]
        dev = self.device_
        return _Encoded(
            torch.from_numpy(idx).to(dev),
            torch.from_numpy(feat).to(dev),
            torch.from_numpy(mask).to(dev),
            torch.from_numpy(dose_time).to(dev),
            torch.from_numpy(ctx).to(dev),
        )

    def _ctx_mean(self, context_id: str) -> np.ndarray:
        if context_id not in self._ctx_cache:
            self._ctx_cache[context_id] = self._emb[self._train.control_rows(context_id)].mean(axis=0)
        return self._ctx_cache[context_id]

    def _fit_decoder(self, train: TrainData) -> None:
        """Ridge JEPA → evaluation space on training cells; alpha by MSE on validation cells.

        Only rows a method may fit on (``train.fit_mask()``) enter: held-out-context controls are inputs, not
        training data, unless the evaluation is transductive.
        """
        val_rows = np.concatenate([r for _, r in train.val_conditions]) if train.val_conditions else np.array([], int)
        fittable = train.fit_mask()
        fit_mask = fittable.copy()
        fit_mask[val_rows] = False
        x, y = self._emb, train.z
        best = (np.inf, 10.0)
        if val_rows.size >= 2:
            for alpha in DECODER_ALPHAS:
                err = float(
                    np.mean((Ridge(alpha=alpha).fit(x[fit_mask], y[fit_mask]).predict(x[val_rows]) - y[val_rows]) ** 2)
                )
                if err < best[0]:
                    best = (err, alpha)
        self.decoder_alpha_ = best[1]
        ridge = Ridge(alpha=self.decoder_alpha_).fit(x[fit_mask], y[fit_mask])
        if val_rows.size >= 2:
            resid = ((ridge.predict(x[val_rows]) - y[val_rows]) ** 2).sum()
            total = ((y[val_rows] - y[val_rows].mean(axis=0)) ** 2).sum()
            self.decoder_r2_ = float(1.0 - resid / total) if total > 0 else float("nan")
        else:
            self.decoder_r2_ = float("nan")
        ridge = Ridge(alpha=self.decoder_alpha_).fit(x[fittable], y[fittable])
        self._W = torch.as_tensor(ridge.coef_.T, dtype=torch.float32, device=self.device_)  # (d, k)
        self._b = torch.as_tensor(ridge.intercept_, dtype=torch.float32, device=self.device_)

    def _initial_shift(self, train: TrainData, conds) -> np.ndarray:
        """The residual the untrained model predicts for every cell: the mean training shift.

        In JEPA space that is the mean embedding shift ``Δz``; with the set loss in the decoded space
        it is ``Δz`` plus the minimum-norm JEPA vector that corrects the decoder's error on the mean
        evaluation-space shift ``Δe``, so the untrained model predicts exactly the mean-shift baseline
        (``W·g₀ = Δe``) and training starts from the strongest simple answer.
        """
        dz = np.mean([self._emb[r].mean(0) - self._ctx_mean(c.context_id) for c, r in conds], axis=0)
        if self.config.loss_space == "jepa" or self.config.decoder != "residual":
            return dz
        de = np.mean([train.shift(c, r) for c, r in conds], axis=0)
        w = self._W.double().cpu().numpy()  # (d, k)
        correction = np.linalg.pinv(w.T) @ (de - w.T @ dz)
        return dz + correction

    # ------------------------------------------------------------------ model pieces
    def _token_keep(self, shape) -> torch.Tensor | None:
        """Token dropout of one training step (a draw of the seeded generator), or ``None`` without dropout."""
        if self.config.token_dropout <= 0:
            return None
        return torch.rand(shape, generator=self._gen_t, device="cpu") >= self.config.token_dropout

    def _residual(
        self,
        enc: _Encoded,
        state: torch.Tensor,
        sizes: torch.Tensor | None,
        keep: torch.Tensor | None = None,
        net: nn.Module | None = None,
    ) -> torch.Tensor:
        if keep is not None:
            enc = dataclasses.replace(enc, token_idx=enc.token_idx * keep.to(enc.token_idx.device))
        net = self.net_ if net is None else net
        return net(
            state,
            enc.token_idx,
            enc.token_feat,
            enc.token_mask,
            enc.dose_time,
            enc.ctx_mean,
            sizes,
            self.config.use_context,
        )

    def _decode(self, z_state: torch.Tensor, eval_state: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
        if self.config.decoder == "residual":
            return eval_state + resid @ self._W
        return (z_state + resid) @ self._W + self._b

    def _map(
        self,
        enc: _Encoded,
        z: torch.Tensor,
        e: torch.Tensor,
        sizes: torch.Tensor,
        keep: torch.Tensor | None = None,
        net: nn.Module | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted (JEPA, evaluation-space) cells for sets of control cells."""
        if self.kind == "set":
            resid = self._residual(enc, z, sizes, keep, net)
        else:
            offsets = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
            means = torch.stack(
                [z[a:b].mean(0) for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]
            )
            resid = self._residual(enc, means, None, keep, net).repeat_interleave(sizes, dim=0)
        return z + resid, self._decode(z, e, resid)

    # ------------------------------------------------------------------ training
    def fit(self, train: TrainData, *, refit: bool = True) -> JEPATransition:
        """Train on ``train.train_conditions``; early-stop on the validation E-distance (evaluation space).

        ``refit`` is accepted for the interface; the model is never refitted on validation conditions.
        """
        if self.space == "pca":
            train = dataclasses.replace(train, embedding=np.asarray(train.z, dtype=np.float32), encoder=None)
        if train.embedding is None:
            raise InputError(
                f"{self.name} needs JEPA embeddings of the fold's cells (TrainData.embedding). Fix: "
                "score with score_fold(..., jepa=JEPAConfig or CellJEPA), or `celljepa benchmark`."
            )
        t0 = time.perf_counter()
        cfg = self.config
        self.device_ = self._device()
        self._train = train
        self.space_, self.encoder_ = train.space, train.encoder
        self._emb = np.asarray(train.embedding, dtype=np.float32)
        self._d = self._emb.shape[1]
        self._ctx_cache: dict[str, np.ndarray] = {}
        conds = [(c, r) for c, r in train.train_conditions if len(r) >= 2]
        if not conds:
            raise InputError(f"{self.name}: no training condition with at least 2 cells.")
        self.vocab_ = {t: i + 1 for i, t in enumerate(sorted({t for c, _ in conds for t in c.tokens}))}
        gf = cfg.gene_features
        self.featurizer_ = ActionFeaturizer.build(
            encoder=train.encoder if gf in ("both", "jepa") else None,
            pca_loadings=train.gene_embedding if gf in ("both", "pca") else None,
            drugs=self.drug_metadata,
        )
        self._fit_decoder(train)
        init_shift = self._initial_shift(train, conds)
        enc_all = self._encode([c for c, _ in conds])
        z_all = torch.from_numpy(self._emb).to(self.device_)
        e_all = torch.from_numpy(np.asarray(train.z, dtype=np.float32)).to(self.device_)
        ctrl = {c.context_id: train.control_rows(c.context_id) for c, _ in conds}
        target_all = z_all if cfg.loss_space == "jepa" else e_all
        val = self._val_sets(train)
        members = []
        for k in range(cfg.ensemble):
            members.append(
                self._train_member(
                    cfg.seed + 1000 * k, train, conds, init_shift, enc_all, z_all, e_all, ctrl, target_all, val
                )
            )
        if cfg.ensemble == 1:
            self.net_ = members[0]["net"]
            best_val = members[0]["best_val"]
        else:
            self.net_ = EnsembleNet([m["net"] for m in members]).to(self.device_)
            self.net_.eval()
            best_val = D.broadcast_float(self._val_score(val)) if val is not None else float("nan")
        best_step = max(m["best_step"] for m in members)
        step = max(m["steps"] for m in members)
        history = members[0]["history"]
        self.member_best_steps_ = [m["best_step"] for m in members]
        self.init_ = members[0]["init"]
        self.init_val_edistance_ = members[0]["init_val"]
        self.net_.eval()
        self.history_ = history
        self.best_step_, self.val_edistance_, self.steps_run_ = best_step, float(best_val), step
        # early stopping kept the starting model (step 0: the initial parameters, ``init_``): the prediction is
        # the starting map itself (no change or the mean training shift), never a trained one
        self.left_start_ = bool(best_step > 0)
        self.train_seconds_ = time.perf_counter() - t0
        logger.info(
            "%s: %d steps (best %d, val E-distance %.4f) in %.1f s",
            self.name,
            step,
            best_step,
            best_val,
            self.train_seconds_,
        )
        return self

    def _new_net(self, init_shift: np.ndarray | None = None) -> TransitionNet:
        """A network of this model's vocabulary, features and sizes (``init_shift``: the head's bias)."""
        cfg = self.config
        return TransitionNet(
            len(self.vocab_),
            self.featurizer_.dim,
            self._d,
            action_dim=cfg.action_dim,
            n_hidden=cfg.n_hidden,
            n_layers=cfg.n_layers,
            init_shift=init_shift,
        )

    def _lr_factor(self, step: int) -> float:
        """The learning rate of ``step`` (1-based) relative to ``lr``: warm-up, then constant or cosine decay."""
        cfg = self.config
        factor = min(1.0, step / cfg.lr_warmup) if cfg.lr_warmup > 0 else 1.0
        if cfg.lr_schedule == "cosine":
            progress = min(1.0, step / cfg.max_steps)
            factor *= 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))
        return factor

    def _train_member(self, seed, train, conds, init_shift, enc_all, z_all, e_all, ctrl, target_all, val) -> dict:
        """Train one network from the starting map with ``seed``; early-stopped on ``val``; its best weights."""
        from ..kernels import edistance_loss

        cfg = self.config
        torch.manual_seed(seed)
        self._gen_t = torch.Generator().manual_seed(seed + 1)
        self.net_ = self._new_net(init_shift).to(self.device_)
        opt = torch.optim.AdamW(self.net_.parameters(), lr=cfg.lr * self._lr_factor(1), weight_decay=cfg.weight_decay)
        rng = np.random.default_rng([seed, 0x7A5])
        best_val, best_step, best_state, bad, history = np.inf, 0, None, 0, []
        self.init_ = "mean_shift"
        if val is not None:
            # Start from the better of the two simplest answers on validation: the mean training shift
            # or no change (zero residual); the starting model stays a candidate for early stopping.
            best_val = D.broadcast_float(self._val_score(val))
            head = self.net_.body[-1]
            shift = head.bias.detach().clone()
            with torch.no_grad():
                head.bias.zero_()
            zero_val = D.broadcast_float(self._val_score(val))
            if zero_val < best_val:
                best_val, self.init_ = zero_val, "no_change"
            else:
                with torch.no_grad():
                    head.bias.copy_(shift)
            init_val = best_val
            best_state = copy.deepcopy(self.net_.state_dict())
            history.append({"step": 0, "train_loss": float("nan"), "val_edistance": best_val})
        else:
            init_val = float("nan")
        b = min(cfg.conditions_per_step, len(conds))
        # Under torch.distributed every rank draws the same b conditions (and token dropout) and trains on
        # its share of them; the loss is scaled so that DDP's average over ranks is the mean over all b.
        layout = D.current()
        world, rank = (1, 0) if layout is None else (layout.world_size, layout.rank)
        if b < world:
            raise InputError(
                f"{self.name}: {b} conditions per step cannot be shared by {world} ranks. Fix: train "
                "on fewer ranks, or raise conditions_per_step."
            )
        mine = np.array_split(np.arange(b), world)[rank]
        net = self.net_
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # without the context vector its linear map gets no gradient
            net = DistributedDataParallel(self.net_, find_unused_parameters=not cfg.use_context)
        step = 0
        for step in range(1, cfg.max_steps + 1):
            pick = rng.choice(len(conds), b, replace=False)
            ctrl_rows, obs_rows, sizes = [], [], []
            for i in pick:
                cond, rows = conds[i]
                crow = ctrl[cond.context_id]
                n = int(min(cfg.set_size, len(crow), len(rows)))
                ctrl_rows.append(rng.choice(crow, n, replace=False))
                obs_rows.append(rng.choice(rows, n, replace=False))
                sizes.append(n)
            keep = self._token_keep(enc_all.token_idx[:b].shape)
            if world > 1:
                pick, sizes = pick[mine], [sizes[i] for i in mine]
                ctrl_rows, obs_rows = [ctrl_rows[i] for i in mine], [obs_rows[i] for i in mine]
                keep = None if keep is None else keep[torch.from_numpy(mine)]
            cr = torch.from_numpy(np.concatenate(ctrl_rows)).to(self.device_)
            orow = torch.from_numpy(np.concatenate(obs_rows)).to(self.device_)
            size_t = torch.as_tensor(sizes, device=self.device_)
            offsets = torch.cat([size_t.new_zeros(1), size_t.cumsum(0)])
            enc = enc_all.select(torch.as_tensor(pick, device=self.device_))
            pred_z, pred_e = self._map(enc, z_all[cr], e_all[cr], size_t, keep, net)
            pred = pred_z if cfg.loss_space == "jepa" else pred_e
            obs = target_all[orow]
            if self.kind == "set":
                loss = edistance_loss(pred, offsets, obs, offsets).sum() * (world / b)
            else:
                loss = pred.new_zeros(())
            if self.kind == "prototype" or cfg.mean_weight > 0:
                seg = torch.repeat_interleave(torch.arange(len(sizes), device=self.device_), size_t)
                pm = torch.zeros(len(sizes), pred.shape[1], device=self.device_).index_add_(0, seg, pred)
                om = torch.zeros(len(sizes), obs.shape[1], device=self.device_).index_add_(0, seg, obs)
                mse = ((pm - om) / size_t[:, None]).pow(2).sum(1).sum() * (world / b)
                loss = loss + (mse if self.kind == "prototype" else cfg.mean_weight * mse)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for group in opt.param_groups:
                group["lr"] = cfg.lr * self._lr_factor(step + 1)
            if val is not None and (step % cfg.eval_every == 0 or step == cfg.max_steps):
                losses = self._val_losses(val)
                score = D.broadcast_float(float(losses.mean()))
                history.append({"step": step, "train_loss": float(loss.detach()), "val_edistance": score})
                if score < best_val - 1e-6:
                    best_val, best_step, bad = score, step, 0
                    best_state = copy.deepcopy(self.net_.state_dict())
                else:
                    bad += 1
                    if bad >= cfg.patience:
                        break
        if best_state is not None:
            self.net_.load_state_dict(best_state)
        else:
            best_step = step
        self.net_.eval()
        return {
            "net": self.net_,
            "best_step": best_step,
            "best_val": best_val,
            "steps": step,
            "history": history,
            "init": self.init_,
            "init_val": init_val,
        }

    def _val_sets(self, train: TrainData):
        """Fixed validation sets (controls capped at 256, observed cells capped at 256)."""
        conds = [(c, r) for c, r in train.val_conditions if len(r) >= 2]
        if not conds:
            return None
        rng = np.random.default_rng([self.config.seed, 0x7A6])
        ctrl_rows, obs_rows, sizes_c, sizes_o = [], [], [], []
        for c, r in conds:
            crow = train.control_rows(c.context_id)
            crow = rng.choice(crow, min(256, len(crow)), replace=False)
            orow = rng.choice(r, min(256, len(r)), replace=False)
            ctrl_rows.append(crow)
            obs_rows.append(orow)
            sizes_c.append(len(crow))
            sizes_o.append(len(orow))
        crow, orow, dev = np.concatenate(ctrl_rows), np.concatenate(obs_rows), self.device_
        size_c = torch.as_tensor(sizes_c, device=dev)
        size_o = torch.as_tensor(sizes_o, device=dev)
        return (
            self._encode([c for c, _ in conds]),
            torch.from_numpy(self._emb[crow]).to(dev),
            torch.from_numpy(np.asarray(train.z[crow], dtype=np.float32)).to(dev),
            torch.from_numpy(np.asarray(train.z[orow], dtype=np.float32)).to(dev),
            size_c,
            torch.cat([size_c.new_zeros(1), size_c.cumsum(0)]),
            torch.cat([size_o.new_zeros(1), size_o.cumsum(0)]),
        )

    @torch.no_grad()
    def _val_losses(self, val) -> torch.Tensor:
        """The validation E-distance of every validation condition (the fixed sets of :meth:`_val_sets`)."""
        from ..kernels import edistance_loss

        enc, z, e, obs, size_c, off_p, off_o = val
        was = self.net_.training
        self.net_.eval()
        _, pred_e = self._map(enc, z, e, size_c)
        self.net_.train(was)
        return edistance_loss(pred_e, off_p, obs, off_o)

    def _val_score(self, val) -> float:
        return float(self._val_losses(val).mean())

    # ------------------------------------------------------------------ prediction
    def _require_fit(self) -> None:
        if self.net_ is None:
            raise InputError(f"{self.name} is not fitted. Fix: call fit(train) first.")

    @torch.no_grad()
    def predict_cells(
        self, condition: Condition, z_control: np.ndarray, eval_control: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Map control cells (JEPA embeddings and evaluation-space coordinates) to predicted cells.

        Returns ``(predicted JEPA embeddings, predicted evaluation-space coordinates)``.
        """
        self._require_fit()
        if len(z_control) != len(eval_control):
            raise InputError("z_control and eval_control must hold the same cells.")
        dev = self.device_
        z_control = np.asarray(z_control, dtype=np.float32)
        enc = self._encode([condition], ctx_means=z_control.mean(0, keepdims=True))
        z = torch.as_tensor(z_control, device=dev)
        e = torch.as_tensor(np.asarray(eval_control, dtype=np.float32), device=dev)
        pz, pe = self._map(enc, z, e, torch.as_tensor([len(z)], device=dev))
        if self.config.decoder == "residual":
            # Add the decoded residual to the float64 coordinates: a zero residual gives the controls exactly.
            delta = (pe - e).cpu().numpy().astype(np.float64)
            return pz.cpu().numpy().astype(np.float64), np.asarray(eval_control, dtype=np.float64) + delta
        return pz.cpu().numpy().astype(np.float64), pe.cpu().numpy().astype(np.float64)

    def predict_embedding(self, condition: Condition) -> np.ndarray:
        """Predicted cells of ``condition`` in the JEPA embedding space (its context's controls mapped)."""
        self._require_fit()
        rows = self._train.control_rows(condition.context_id)
        return self.predict_cells(condition, self._emb[rows], self._train.z[rows])[0]

    def predict(self, condition: Condition) -> np.ndarray:
        self._require_fit()
        rows = self._train.control_rows(condition.context_id)
        return self.predict_cells(condition, self._emb[rows], self._train.z[rows])[1]

    def n_parameters(self) -> int:
        return int(sum(p.numel() for p in self.net_.parameters())) if self.net_ is not None else 0

    def params(self) -> dict:
        if self.net_ is None:
            return {}
        unseen = sum(1 for c, _ in self._train.val_conditions for t in c.tokens if t not in self.vocab_)
        return {
            "kind": self.kind,
            "steps_run": self.steps_run_,
            "best_step": self.best_step_,
            **({"member_best_steps": list(self.member_best_steps_)} if self.config.ensemble > 1 else {}),
            "left_start": self.left_start_,
            "val_edistance": self.val_edistance_,
            "init": self.init_,
            "init_val_edistance": self.init_val_edistance_,
            "decoder_alpha": self.decoder_alpha_,
            "decoder_val_r2": self.decoder_r2_,
            "n_parameters": self.n_parameters(),
            "train_seconds": round(self.train_seconds_, 2),
            "val_unseen_tokens": unseen,
            **{f"config.{k}": v for k, v in self.config.to_dict().items()},
        }

    # ------------------------------------------------------------------ persistence
    def save(self, dir_path, *, encoder_path: str | None = None) -> Path:
        """Write ``transition.pt`` (weights, vocabulary, decoder, features, evaluation space) into ``dir_path``.

        ``encoder_path`` (relative to ``dir_path`` or absolute) names the saved CellJEPA the model reads
        cells with; :meth:`load` opens it again.
        """
        self._require_fit()
        out = Path(dir_path)
        out.mkdir(parents=True, exist_ok=True)
        drugs = self.featurizer_.drugs
        payload = {
            "format": 1,
            "kind": self.kind,
            "name": self.name,
            "config": self.config.to_dict(),
            "vocab": dict(self.vocab_),
            "state_dict": {k: v.cpu() for k, v in self.net_.state_dict().items()},
            "W": self._W.cpu(),
            "b": self._b.cpu(),
            "n_latent": int(self._d),
            "gene_names": list(self.featurizer_.gene_vectors),
            "gene_vectors": torch.as_tensor(
                np.array(list(self.featurizer_.gene_vectors.values()))
                if self.featurizer_.gene_vectors
                else np.zeros((0, 0))
            ),
            "gene_dim": int(self.featurizer_.gene_dim),
            "go_block": None
            if self.featurizer_.go_block is None
            else {k: torch.as_tensor(np.asarray(v)) for k, v in self.featurizer_.go_block.items()},
            "drugs": None
            if drugs is None
            else {
                "names": list(drugs.names),
                "features": list(drugs.features),
                "matrix": torch.as_tensor(drugs.matrix),
                "source": drugs.source,
            },
            "space": None
            if self.space_ is None
            else {
                "genes": [str(g) for g in self.space_.genes],
                "mean": torch.as_tensor(self.space_.mean),
                "components": torch.as_tensor(self.space_.components),
            },
            "encoder_path": encoder_path,
            "params": {k: v for k, v in self.params().items() if not k.startswith("config.")},
        }
        torch_save_atomic(payload, out / "transition.pt")
        return out

    @classmethod
    def load(cls, dir_path, *, encoder=None, device: str = "cpu") -> JEPATransition:
        """Read a model written by :meth:`save`.

        The CellJEPA encoder is loaded from its recorded path unless ``encoder`` is given.
        """
        from ..data.drugs import DrugFeatures
        from ..eval.space import EvaluationSpace
        from .jepa import CellJEPA

        path = Path(dir_path)
        file = path / "transition.pt" if path.is_dir() else path
        if not file.is_file():
            raise InputError(
                f"no transition model at {dir_path} (expected {file}). Fix: point to a folder written "
                "by JEPATransition.save or `celljepa train-transition`."
            )
        p = safe_torch_load(
            file,
            what="a celljepa transition model",
            fix="point to a folder written by JEPATransition.save or `celljepa train-transition`",
        )
        model = cls(p["kind"], TransitionConfig.from_dict({**p["config"], "device": device}), name=p["name"])
        model.device_ = model._device()
        model.vocab_ = dict(p["vocab"])
        gv = p["gene_vectors"].numpy()
        drugs = None
        if p["drugs"] is not None:
            d = p["drugs"]
            drugs = DrugFeatures(tuple(d["names"]), tuple(d["features"]), d["matrix"].numpy(), d["source"])
        go = p.get("go_block")
        model.featurizer_ = ActionFeaturizer(
            dict(zip(p["gene_names"], gv, strict=True)),
            p["gene_dim"],
            drugs,
            go_block=None
            if go is None
            else {"proj": go["proj"].numpy(), "centre": go["centre"].numpy(), "rms": float(go["rms"])},
        )
        model._d = int(p["n_latent"])
        cfg = model.config
        nets = [model._new_net() for _ in range(cfg.ensemble)]
        model.net_ = (nets[0] if cfg.ensemble == 1 else EnsembleNet(nets)).to(model.device_)
        model.net_.load_state_dict(p["state_dict"])
        model.net_.eval()
        model._W, model._b = p["W"].to(model.device_), p["b"].to(model.device_)
        sp_ = p["space"]
        model.space_ = (
            None
            if sp_ is None
            else EvaluationSpace(np.asarray(sp_["genes"], dtype=object), sp_["mean"].numpy(), sp_["components"].numpy())
        )
        if encoder is None and p["encoder_path"]:
            enc_path = Path(p["encoder_path"])
            encoder = CellJEPA.load(enc_path if enc_path.is_absolute() else file.parent / enc_path)
        model.encoder_ = encoder
        model._ctx_cache, model._train = {}, None
        model.saved_params_ = p["params"]
        return model


def load_transition_config(path=None, overrides: dict | None = None) -> TransitionConfig:
    """A :class:`TransitionConfig` from a YAML file (flat keys, or under ``transition:``) plus overrides."""
    cfg = TransitionConfig()
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"transition config {path} does not exist.")
        loaded = load_yaml(path.read_text(), source=f"transition config {path}") or {}
        if not isinstance(loaded, dict):
            raise InputError(f"{path}: expected a mapping of settings.")
        values = dict(loaded.get("transition", loaded))
    values.update(overrides or {})
    return cfg.replace(**values) if values else cfg
