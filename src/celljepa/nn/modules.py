"""Pure ``nn.Module`` building blocks of the JEPA encoder (no AnnData, no I/O).

* :class:`MaskedGeneEncoder`: a masked sparse encoding of the cell (one learned vector per gene,
  weighted by its expression; :func:`celljepa.kernels.masked_encode`) followed by an MLP with
  LayerNorm; maps a CSR batch of cells to embeddings ``z``.
* :class:`MaskPointer`: a learned summary of *which genes were hidden* (a mean of per-gene query
  vectors over the hidden genes, independent of their expression, so nothing of the hidden values leaks).
* :class:`JEPAPredictor`: ``(z_context, pointer) -> predicted teacher embedding``.
* :class:`ActionPredictor`: ``(control embeddings, action) -> predicted embeddings of the perturbed cells``
  (the action-conditioned objective, trained with the E-distance set loss in latent space).
* :func:`mlp`: the Linear-GELU stack every head uses.
* Losses: :func:`predictive_loss` (cosine, smooth-L1 or L2 to a stop-gradient target),
  :func:`variance_loss` and :func:`covariance_loss` (VICReg-style anti-collapse terms).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import InputError
from ..kernels import mask_for, masked_encode

__all__ = [
    "LOSSES",
    "ActionPredictor",
    "CSRBatch",
    "JEPAPredictor",
    "MaskPointer",
    "MaskedGeneEncoder",
    "covariance_loss",
    "mlp",
    "predictive_loss",
    "variance_loss",
]

LOSSES = ("cosine", "smooth_l1", "l2")


@dataclass(frozen=True)
class CSRBatch:
    """A cells × genes batch in CSR form on one device (int64 indices, float values)."""

    crow: torch.Tensor
    col: torch.Tensor
    values: torch.Tensor
    n_genes: int

    @property
    def n_rows(self) -> int:
        return int(self.crow.numel()) - 1

    @classmethod
    def from_scipy(cls, x, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> CSRBatch:
        """Convert a scipy CSR matrix (sorted, duplicate-free columns) to a batch on ``device``."""
        x = x.tocsr()
        if not x.has_sorted_indices:
            x = x.sorted_indices()
        device = torch.device(device)
        return cls(
            crow=torch.from_numpy(x.indptr.astype("int64", copy=False)).to(device),
            col=torch.from_numpy(x.indices.astype("int64", copy=False)).to(device),
            values=torch.from_numpy(x.data).to(device=device, dtype=dtype),
            n_genes=int(x.shape[1]),
        )

    def as_tuple(self) -> tuple:
        return (self.crow, self.col, self.values, self.n_genes)


@dataclass(frozen=True)
class MaskParams:
    """What :func:`celljepa.kernels.masked_encode` needs to hide genes of one batch."""

    kind: str = "none"
    ratio: float = 0.0
    seed: int = 0
    block_size: int = 16
    gene_to_module: torch.Tensor | None = None
    #: Row ``i`` of the batch is cell ``cell_offset + i`` of the step's global batch (its rank's slice
    #: under DDP), so every rank draws the masks a single process would draw for those rows.
    cell_offset: int = 0

    def kwargs(self) -> dict:
        return {
            "kind": self.kind,
            "ratio": self.ratio,
            "seed": self.seed,
            "block_size": self.block_size,
            "gene_to_module": self.gene_to_module,
            "cell_offset": self.cell_offset,
        }

    def hidden(self, n_rows: int, n_genes: int, device: torch.device) -> torch.Tensor:
        """The ``(n_rows, n_genes)`` boolean hidden mask (True = hidden), as the kernel draws it."""
        if self.kind == "none":
            return torch.zeros(n_rows, n_genes, dtype=torch.bool, device=device)
        return mask_for(
            self.seed,
            n_rows,
            n_genes,
            kind=self.kind,
            ratio=self.ratio,
            block_size=self.block_size,
            gene_to_module=self.gene_to_module,
            cell_offset=self.cell_offset,
            device=device,
        )


def mlp(n_in: int, n_hidden: int, n_out: int, n_layers: int) -> nn.Sequential:
    """``n_layers`` hidden blocks ``Linear → LayerNorm → GELU`` then a linear head (n_layers >= 0)."""
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(n_layers):
        layers += [nn.Linear(width, n_hidden), nn.LayerNorm(n_hidden), nn.GELU()]
        width = n_hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class MaskedGeneEncoder(nn.Module):
    """Cell encoder: ``z = MLP(LayerNorm((x ⊙ keep) · W + b))``.

    ``W`` holds one learned ``n_hidden`` vector per gene, so the first layer is a sum of gene vectors
    weighted by the cell's (log-normalised) expression, computed over the nonzeros only; hidden genes
    (the keep mask) are skipped inside the kernel. The batch's columns are gene tokens: a cell is the set
    of its nonzero ``(gene id, value)`` pairs, and a gene a dataset does not measure is simply absent.

    With ``gene_features`` (one row of GO features per gene, :func:`celljepa.data.go.go_gene_embedding`)
    ``W = F · P + R``: a learned projection ``P`` of the features plus a per-gene residual ``R`` that
    starts at zero. Genes outside the training data then still have vectors (:meth:`feature_weight`), so
    the encoder embeds data on other gene panels without a gene intersection.

    Parameters
    ----------
    n_genes
        Number of input genes ``G``.
    n_hidden
        Width of the gene vectors and of the MLP.
    n_latent
        Embedding size.
    n_layers
        Hidden blocks of the MLP after the gene layer.
    n_covariates
        Learned per-dataset vectors added to the gene layer (0 = none).
    gene_features
        ``(n_genes, k)`` GO features; ``None`` = free gene vectors.

    Examples
    --------
    >>> import scipy.sparse as sp, torch
    >>> from celljepa.nn.modules import CSRBatch, MaskedGeneEncoder
    >>> enc = MaskedGeneEncoder(50, n_hidden=16, n_latent=8, n_layers=1)
    >>> x = CSRBatch.from_scipy(sp.random(4, 50, density=0.2, format="csr", dtype="float32", random_state=0))
    >>> enc(x).shape
    torch.Size([4, 8])
    """

    def __init__(
        self,
        n_genes: int,
        *,
        n_hidden: int = 256,
        n_latent: int = 128,
        n_layers: int = 2,
        n_covariates: int = 0,
        gene_features: torch.Tensor | None = None,
    ):
        super().__init__()
        if n_genes < 1 or n_hidden < 1 or n_latent < 1 or n_layers < 0:
            raise InputError(
                f"encoder sizes must be positive, got n_genes={n_genes}, n_hidden={n_hidden}, "
                f"n_latent={n_latent}, n_layers={n_layers}."
            )
        self.n_genes, self.n_hidden, self.n_latent = int(n_genes), int(n_hidden), int(n_latent)
        if gene_features is None:
            self.gene_weight = nn.Parameter(torch.randn(n_genes, n_hidden) * (1.0 / n_hidden**0.5))
            self.gene_proj = None
        else:
            feats = torch.as_tensor(gene_features, dtype=torch.float32)
            if feats.dim() != 2 or feats.shape[0] != n_genes or feats.shape[1] < 1:
                raise InputError(f"gene_features must be (n_genes={n_genes}, k) with k >= 1, got {tuple(feats.shape)}.")
            # Gene vectors = GO features @ a learned projection + a per-gene residual (zero at the start), so a
            # gene the encoder never saw still has a vector (its GO part), and seen genes can move off it.
            self.register_buffer("gene_features", feats.contiguous())
            self.gene_proj = nn.Parameter(torch.randn(feats.shape[1], n_hidden) * (1.0 / n_hidden**0.5))
            self.gene_weight = nn.Parameter(torch.zeros(n_genes, n_hidden))
        self.gene_bias = nn.Parameter(torch.zeros(n_hidden))
        self.norm = nn.LayerNorm(n_hidden)
        self.mlp = mlp(n_hidden, n_hidden, n_latent, n_layers)
        # Covariate 0 is "none" (a dataset the model has not seen) and stays a zero vector.
        self.covariate = nn.Embedding(n_covariates + 1, n_hidden, padding_idx=0) if n_covariates else None
        if self.covariate is not None:
            nn.init.normal_(self.covariate.weight, std=0.02)
            with torch.no_grad():
                self.covariate.weight[0].zero_()

    @property
    def n_gene_features(self) -> int:
        """Width of the GO gene features (0: free gene vectors)."""
        return 0 if self.gene_proj is None else int(self.gene_proj.shape[0])

    def effective_weight(self) -> torch.Tensor:
        """The ``(n_genes, n_hidden)`` gene vectors the first layer uses."""
        if self.gene_proj is None:
            return self.gene_weight
        return self.gene_weight + self.gene_features @ self.gene_proj

    def feature_weight(self, features: torch.Tensor) -> torch.Tensor:
        """Gene vectors of genes the encoder was not built on, from their GO features (``(n, k)``)."""
        if self.gene_proj is None:
            raise InputError(
                "this encoder has free gene vectors (model.gene_embedding='free'); only an encoder "
                "with GO gene features embeds genes it was not trained on."
            )
        return torch.as_tensor(features, dtype=self.gene_proj.dtype, device=self.gene_proj.device) @ self.gene_proj

    def forward(
        self,
        x: CSRBatch,
        mask: MaskParams | None = None,
        *,
        keep: torch.Tensor | None = None,
        covariate: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed a batch; ``mask`` hides genes (default: full view), ``keep`` is an explicit keep mask.

        ``covariate`` (one index per cell, 0 = none) adds the learned vector of each cell's dataset.
        ``weight`` replaces the gene vectors (e.g. the encoder's genes followed by genes it embeds from
        their GO features, :meth:`feature_weight`); the batch's columns index its rows.
        """
        w = self.effective_weight() if weight is None else weight
        if x.n_genes != w.shape[0]:
            raise InputError(f"the batch has {x.n_genes} genes but the encoder was built for {w.shape[0]}.")
        if keep is not None:
            h = masked_encode(x.as_tuple(), w, self.gene_bias, kind="explicit", keep=keep, validate=False)
        else:
            h = masked_encode(x.as_tuple(), w, self.gene_bias, validate=False, **(mask or MaskParams()).kwargs())
        if self.covariate is not None and covariate is not None:
            h = h + self.covariate(covariate)
        return self.mlp(F.gelu(self.norm(h)))


class MaskPointer(nn.Module):
    """Which genes were hidden, as the mean of learned per-gene query vectors over the hidden genes.

    The pointer depends on the mask only (not on the hidden values), so the predictor learns *where*
    to predict without seeing *what* is there. Cells with nothing hidden get a zero pointer.
    """

    def __init__(self, n_genes: int, dim: int = 64):
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_genes, dim) * 0.02)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        h = hidden.to(self.query.dtype)
        return (h @ self.query) / h.sum(1, keepdim=True).clamp_min(1.0)


class JEPAPredictor(nn.Module):
    """Predict the teacher's embedding from the student's context embedding and the mask pointer."""

    def __init__(self, n_latent: int, *, pointer_dim: int = 64, n_hidden: int = 256, n_layers: int = 2):
        super().__init__()
        self.net = mlp(n_latent + pointer_dim, n_hidden, n_latent, n_layers)

    def forward(self, z_context: torch.Tensor, pointer: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z_context, pointer], dim=1))


def predictive_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """JEPA loss between predictions and a (detached) target, averaged over cells.

    ``"cosine"``: ``2 - 2 cos(pred, target)`` (0 when aligned); ``"smooth_l1"``/``"l2"``: Huber / squared
    error against the target normalised per cell (``layer_norm``), so its scale cannot shrink the loss.
    """
    target = target.detach()
    if kind == "cosine":
        return (2.0 - 2.0 * F.cosine_similarity(pred, target, dim=1)).mean()
    normed = F.layer_norm(target, target.shape[1:])
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, normed)
    if kind == "l2":
        return F.mse_loss(pred, normed)
    raise InputError(f"loss must be one of {LOSSES}, got {kind!r}.")


def variance_loss(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """VICReg variance term: mean over dimensions of ``relu(gamma - std)``; zero once every std ≥ gamma."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """VICReg covariance term: sum of squared off-diagonal covariances divided by the dimension."""
    n, d = z.shape
    zc = z - z.mean(0)
    cov = (zc.T @ zc) / max(n - 1, 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return off.pow(2).sum() / d


class ActionPredictor(nn.Module):
    """Action-conditioned JEPA predictor: control-cell embeddings + an action → predicted perturbed embeddings.

    ``action = Σ_tokens [E(token) + W_g · gene_vector(token)]`` (a combination is several tokens; token 0 is
    "unknown", used for unseen tokens and token dropout; ``gene_vector`` is the encoder's own vector of a
    perturbed gene, zero for other tokens), and every control cell is moved by a residual
    ``z + g([z − μ, action])`` (``μ`` the mean of its set; the head starts at zero, so the predictor starts
    as "no change").
    """

    def __init__(
        self,
        n_tokens: int,
        gene_dim: int,
        n_latent: int,
        *,
        action_dim: int = 64,
        n_hidden: int = 256,
        n_layers: int = 2,
    ):
        super().__init__()
        self.embed = nn.Embedding(n_tokens + 1, action_dim)
        nn.init.normal_(self.embed.weight, std=0.1)
        self.gene = nn.Linear(gene_dim, action_dim)
        self.net = mlp(n_latent + action_dim, n_hidden, n_latent, n_layers)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(
        self,
        z: torch.Tensor,
        sizes: torch.Tensor,
        token_idx: torch.Tensor,
        gene_vec: torch.Tensor,
        token_mask: torch.Tensor,
    ) -> torch.Tensor:
        """``z``: control embeddings (set k covers sizes[k] rows); tokens ``(B, T)``; ``gene_vec`` ``(B, T, H)``."""
        action = ((self.embed(token_idx) + self.gene(gene_vec)) * token_mask.unsqueeze(-1)).sum(1)
        rep = torch.repeat_interleave(torch.arange(len(sizes), device=z.device), sizes)
        centre = z.new_zeros(len(sizes), z.shape[1]).index_add_(0, rep, z) / sizes.to(z.dtype).clamp_min(1)[:, None]
        return z + self.net(torch.cat([z - centre[rep], action[rep]], dim=1))
