"""The action-conditioned JEPA objective.

Predict the teacher's embeddings of perturbed cells from the student's embeddings of control cells of the
same context and the perturbation (no pairing).

Each step samples ``train.action_conditions`` training conditions; for each, up to ``train.action_cells``
perturbed cells and as many control cells of its context. The student embeds the control cells (full
view), :class:`~celljepa.nn.modules.ActionPredictor` moves them by the action, the EMA teacher embeds the
perturbed cells (no gradient), and the loss is the mean E-distance between the predicted and the observed
sets in latent space (:func:`celljepa.kernels.edistance_loss`). A gene token's action feature is the
encoder's own vector of the perturbed gene (its GO-projected vector when the encoder does not measure the
gene but has GO gene features), so the gene vectors learn what perturbing a gene does and an unseen gene
perturbation gets an action through them.

Only the cells the caller names carry labels into training (a benchmark fold passes its training
conditions and control cells, never validation or test conditions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .._errors import InputError
from ..data import contract as C

__all__ = ["ActionSampler"]

MIN_CELLS = 4


@dataclass
class ActionSampler:
    """Training conditions, their perturbed and control rows, and their tokens, sampled per step.

    Attributes
    ----------
    tokens
        The token vocabulary (index ``i + 1``; 0 is "unknown").
    cond_rows, ctrl_rows
        Per condition: source rows of its perturbed cells, and of its context's control cells.
    token_idx, token_mask
        ``(n_conditions, T)`` token indices and a 0/1 mask of real tokens.
    gene_col
        ``(n_conditions, T)`` the encoder gene column of each gene token (−1: none).
    gene_feat
        ``(n_conditions, T, k)`` GO features of gene tokens the encoder does not measure (zeros otherwise),
        or ``None`` without GO gene features.
    """

    tokens: list[str]
    names: list[str]
    cond_rows: list[np.ndarray]
    ctrl_rows: list[np.ndarray]
    token_idx: np.ndarray
    token_mask: np.ndarray
    gene_col: np.ndarray
    gene_feat: np.ndarray | None
    n_conditions_per_step: int
    n_cells: int
    dropout: float
    seed: int

    @classmethod
    def from_obs(
        cls, obs: pd.DataFrame, rows: np.ndarray, var_names, *, cfg, go_features=None, tokens: list[str] | None = None
    ) -> ActionSampler:
        """Conditions of ``obs`` restricted to ``rows`` (the cells whose labels training may use).

        ``go_features(symbols) -> (features, found)`` gives GO features of perturbed genes the encoder does not
        measure; ``tokens`` fixes the vocabulary (a resumed run), else it is every token of the conditions.
        """
        missing = [
            c for c in (C.IS_CONTROL, C.CONTEXT_ID, C.PERTURBATION_ID, C.PERTURBATION_TOKENS) if c not in obs.columns
        ]
        if missing:
            raise InputError(
                f"train.action_weight > 0 needs the perturbation columns {missing} in adata.obs (the "
                "celljepa data contract). Fix: cj.pp.standardize(adata, ...), or train.action_weight=0."
            )
        t = cfg.train
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        sub = obs.iloc[rows]
        is_ctrl = sub[C.IS_CONTROL].astype(bool).to_numpy()
        ctx = sub[C.CONTEXT_ID].astype(str).to_numpy()
        pid = sub[C.PERTURBATION_ID].astype(str).to_numpy()
        toks = sub[C.PERTURBATION_TOKENS].astype(str).to_numpy()
        controls = {c: rows[is_ctrl & (ctx == c)] for c in np.unique(ctx[is_ctrl])}
        groups: dict[tuple[str, str], list[int]] = {}
        for i in np.flatnonzero(~is_ctrl):
            groups.setdefault((ctx[i], pid[i]), []).append(i)
        names, cond_rows, ctrl_rows, cond_tokens = [], [], [], []
        for (c, p), idx in sorted(groups.items()):
            if len(idx) < MIN_CELLS or controls.get(c, np.zeros(0)).size < MIN_CELLS:
                continue
            names.append(f"{c}|{p}")
            cond_rows.append(rows[np.asarray(idx)])
            ctrl_rows.append(controls[c])
            cond_tokens.append([tk for tk in C.split_tokens(toks[idx[0]]) if C.token_kind(tk) != "control"])
        if not names:
            raise InputError(
                f"train.action_weight > 0 needs training conditions with at least {MIN_CELLS} perturbed "
                f"cells and {MIN_CELLS} control cells of their context; these {rows.size} cells have "
                "none."
            )
        if tokens is None:
            tokens = sorted({tk for ts in cond_tokens for tk in ts})
        lookup = {tk: i + 1 for i, tk in enumerate(tokens)}
        width = max(1, max(len(ts) for ts in cond_tokens))
        n = len(names)
        token_idx = np.zeros((n, width), dtype=np.int64)
        token_mask = np.zeros((n, width), dtype=np.float32)
        gene_col = np.full((n, width), -1, dtype=np.int64)
        genes = {str(g).upper(): j for j, g in enumerate(var_names)}
        unmeasured: list[tuple[int, int, str]] = []
        for i, ts in enumerate(cond_tokens):
            for j, tk in enumerate(ts):
                token_idx[i, j], token_mask[i, j] = lookup.get(tk, 0), 1.0
                if C.token_kind(tk) == "gene":
                    col = genes.get(C.token_name(tk).upper(), -1)
                    gene_col[i, j] = col
                    if col < 0:
                        unmeasured.append((i, j, C.token_name(tk)))
        gene_feat = None
        if go_features is not None and unmeasured:
            feats, found = go_features([u[2] for u in unmeasured])
            if np.asarray(found).any():
                gene_feat = np.zeros((n, width, feats.shape[1]), dtype=np.float32)
                for (i, j, _), f, ok in zip(unmeasured, feats, found, strict=True):
                    if ok:
                        gene_feat[i, j] = f
        return cls(
            tokens=list(tokens),
            names=names,
            cond_rows=cond_rows,
            ctrl_rows=ctrl_rows,
            token_idx=token_idx,
            token_mask=token_mask,
            gene_col=gene_col,
            gene_feat=gene_feat,
            n_conditions_per_step=int(t.action_conditions),
            n_cells=int(t.action_cells),
            dropout=float(t.action_token_dropout),
            seed=int(t.seed),
        )

    @property
    def n_conditions(self) -> int:
        return len(self.names)

    def sample(self, step: int) -> dict:
        """The conditions, rows and set sizes of one step (a pure function of ``seed`` and ``step``)."""
        rng = np.random.default_rng([self.seed, int(step), 0xAC7])
        k = min(self.n_conditions_per_step, self.n_conditions)
        conds = np.sort(rng.choice(self.n_conditions, k, replace=False))
        ctrl, pert, sizes = [], [], []
        for c in conds:
            n = min(self.n_cells, self.cond_rows[c].size, self.ctrl_rows[c].size)
            pert.append(rng.choice(self.cond_rows[c], n, replace=False))
            ctrl.append(rng.choice(self.ctrl_rows[c], n, replace=False))
            sizes.append(n)
        token_idx = self.token_idx[conds].copy()
        if self.dropout > 0:
            token_idx[rng.random(token_idx.shape) < self.dropout] = 0
        return {
            "conditions": conds,
            "ctrl_rows": np.concatenate(ctrl),
            "pert_rows": np.concatenate(pert),
            "sizes": np.asarray(sizes, dtype=np.int64),
            "token_idx": token_idx,
        }

    def gene_vectors(self, encoder, conds: np.ndarray) -> torch.Tensor:
        """``(B, T, H)``: the encoder's vector of each gene token of ``conds`` (zeros for other tokens)."""
        weight = encoder.effective_weight()
        col = torch.as_tensor(self.gene_col[conds], device=weight.device)
        out = weight[col.clamp_min(0)] * (col >= 0).unsqueeze(-1).to(weight.dtype)
        if self.gene_feat is not None and encoder.n_gene_features:
            feat = torch.as_tensor(self.gene_feat[conds], device=weight.device)
            out = out + encoder.feature_weight(feat.reshape(-1, feat.shape[-1])).reshape(*feat.shape[:2], -1)
        return out
