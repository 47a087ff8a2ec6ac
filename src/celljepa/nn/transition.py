r"""Pure ``nn.Module``\ s of the transition predictors (plain sizes in, tensors out; no AnnData).

* :class:`ActionEncoder`: a condition's tokens, token features and dose/time → an action vector, and the
  mean control embedding of its context → a context vector.
* :class:`TransitionNet`: ``g(state, action, context)``, the residual a perturbation adds to a cell's
  embedding (the AnnData-aware model around it is :class:`celljepa.models.JEPATransition`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .modules import mlp

__all__ = ["ActionEncoder", "EnsembleNet", "TransitionNet"]


class ActionEncoder(nn.Module):
    """Condition → (action vector, context vector).

    ``action = Σ_tokens [E(token) + W_f · features(token)] + MLP(log1p dose, time)``;
    ``context = W_c · mean control embedding``. Token index 0 is "unknown" (unseen tokens, token dropout).
    """

    def __init__(self, n_tokens: int, feature_dim: int, n_latent: int, action_dim: int):
        super().__init__()
        self.embed = nn.Embedding(n_tokens + 1, action_dim)
        nn.init.normal_(self.embed.weight, std=0.1)
        self.features = nn.Linear(feature_dim, action_dim)
        self.dose_time = nn.Sequential(nn.Linear(4, 32), nn.GELU(), nn.Linear(32, action_dim))
        self.context = nn.Linear(n_latent, action_dim)

    def forward(
        self,
        token_idx: torch.Tensor,
        token_feat: torch.Tensor,
        token_mask: torch.Tensor,
        dose_time: torch.Tensor,
        ctx_mean: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        per_token = self.embed(token_idx) + self.features(token_feat)  # (B, T, A)
        action = (per_token * token_mask.unsqueeze(-1)).sum(1) + self.dose_time(dose_time)
        return action, self.context(ctx_mean)


class TransitionNet(nn.Module):
    """``g(state, action, context)``: the residual in JEPA space (zero-initialised head, bias = mean shift)."""

    def __init__(
        self,
        n_tokens: int,
        feature_dim: int,
        n_latent: int,
        *,
        action_dim: int,
        n_hidden: int,
        n_layers: int,
        init_shift: np.ndarray | None = None,
    ):
        super().__init__()
        self.action = ActionEncoder(n_tokens, feature_dim, n_latent, action_dim)
        self.body = mlp(n_latent + 2 * action_dim, n_hidden, n_latent, n_layers)
        head = self.body[-1]
        nn.init.zeros_(head.weight)
        with torch.no_grad():
            head.bias.copy_(
                torch.zeros(n_latent) if init_shift is None else torch.as_tensor(init_shift, dtype=head.bias.dtype)
            )

    def forward(
        self,
        state: torch.Tensor,
        token_idx: torch.Tensor,
        token_feat: torch.Tensor,
        token_mask: torch.Tensor,
        dose_time: torch.Tensor,
        ctx_mean: torch.Tensor,
        sizes: torch.Tensor | None,
        use_context: bool,
    ) -> torch.Tensor:
        """Residuals of ``state`` rows; condition ``i`` covers ``sizes[i]`` rows (one row each when ``None``)."""
        action, context = self.action(token_idx, token_feat, token_mask, dose_time, ctx_mean)
        centre = ctx_mean
        if not use_context:
            context = torch.zeros_like(context)
        if sizes is not None:
            action = action.repeat_interleave(sizes, dim=0)
            context = context.repeat_interleave(sizes, dim=0)
            centre = centre.repeat_interleave(sizes, dim=0)
        # The state enters relative to its context's control mean: the map is the same wherever a context
        # sits in the embedding (the context itself enters through ``context``), so it can transfer to
        # contexts it has not seen.
        return self.body(torch.cat([state - centre, action, context], dim=1))


class EnsembleNet(nn.Module):
    """The mean residual of several :class:`TransitionNet` members (an ensemble of seeds), same call signature."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return torch.stack([m(*args, **kwargs) for m in self.members]).mean(0)
