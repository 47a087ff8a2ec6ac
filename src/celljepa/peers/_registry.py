"""The published tools celljepa scores as peers: what each is, what it needs, how its environment is made."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._errors import InputError

__all__ = ["PEERS", "PeerSpec", "peer_spec"]


@dataclass(frozen=True)
class PeerSpec:
    """One peer tool.

    Attributes
    ----------
    name
        The name on the command line (``--peers scgen``).
    title
        The tool and its paper.
    module
        The Python module whose import means the tool is there.
    runner
        The runner script in ``celljepa/peers/_runners`` (run by the peer's own interpreter).
    install
        The ``pip install`` argument lists that make its isolated environment, in order (the first pins the
        local CPU build of torch where the tool accepts it, so no CUDA build is fetched).
    python
        The interpreter version the tool needs (``"3.10"``), or None for this one's.
    predicts
        What the tool can predict, in the words of the benchmark's splits.
    defaults
        Its published training settings, as the runner uses them (documentation; the runner reads its own, and
        sizes batch, epochs or steps to the data with its rule in ``_runners/_rules.py``, named in
        ``scaling``). ``num_similar_genes_go_graph`` also sets the GO graph written for a ``"go_graph"`` input.
    scaling
        The rule by which the runner sizes its training to the cells it fits on (documentation of
        ``_runners/_rules.py``).
    inputs
        What the runner reads besides ``train.h5ad`` and ``request.json``: ``"go_graph"`` writes
        ``gene_go.tsv`` (the GO biological-process terms of every gene of the table shipped with celljepa) and
        ``go_graph.npz`` (GEARS's GO gene graph over all of them, :func:`celljepa.peers._gograph.go_graph`,
        cached across folds), for a tool that builds a gene graph from GO.
    disk_gb
        The size of its environment as installed (measured), for the free-space check of
        :func:`~celljepa.peers.install_peer`; files identical to another environment's are shared, so it
        usually takes less.
    coverage
        What a condition needs so that the tool *may* predict it, mirroring the first check of its runner:
        ``"seen_perturbation"`` (the perturbation has cells in the data it fits on), ``"seen_names_in_context"``
        (every perturbed name seen in them, in a context seen in them), ``"genes"`` (one or two perturbed genes).
        A fit asked only for conditions that fail it is not run (their predictions are n/a, as the runner
        would say); the runner decides every other condition.
    """

    name: str
    title: str
    module: str
    runner: str
    install: tuple[tuple[str, ...], ...]
    python: str | None = None
    predicts: str = ""
    defaults: dict = field(default_factory=dict)
    scaling: str = ""
    inputs: tuple[str, ...] = ()
    disk_gb: float = 2.0
    coverage: str = ""


PEERS: dict[str, PeerSpec] = {
    spec.name: spec
    for spec in (
        PeerSpec(
            name="scgen",
            coverage="seen_perturbation",
            title="scGen 2.1.0 (Lotfollahi, Wolf & Theis 2019, Nat Methods 16:715)",
            module="scgen",
            runner="scgen.py",
            # scgen 2.1.0 imports from scvi-tools before 0.20 (0.20 made scvi._compat raise on import); scvi-tools 0.19
            # needs pytorch-lightning 1.7, whose metadata (torch>=1.9.*) pip >= 24.1 refuses; jax before
            # jaxlib.xla_extension was dropped; numpy < 2 and pandas < 3 for anndata 0.9.
            install=(
                ("torch==2.13.0",),
                ("pip==24.0",),
                (
                    "scgen==2.1.0",
                    "scvi-tools==0.19.0",
                    "pytorch-lightning==1.7.7",
                    "torchmetrics==0.10.3",
                    "anndata==0.9.2",
                    "numpy==1.26.4",
                    "pandas==2.3.3",
                    "jax==0.4.30",
                    "jaxlib==0.4.30",
                    "flax==0.8.5",
                    "chex==0.1.86",
                    "optax==0.2.3",
                    "numpyro==0.15.0",
                    "setuptools<81",
                    "torch==2.13.0",
                ),
            ),
            predicts="a perturbation seen in training, in a new context (S2, unseen cell type or cell line)",
            defaults={"max_epochs": 100, "batch_size": 32, "early_stopping": True, "early_stopping_patience": 25},
            scaling="max_epochs = max(100, min(400, round(400 * 20,000 / n_cells))), batch = min(32, max(8, "
            "0.9 * n_cells / 20)), patience 25 on scvi-tools' seeded 10 % validation split",
            disk_gb=2.3,
        ),
        PeerSpec(
            name="gears",
            coverage="genes",
            title="GEARS, cell-gears 0.1.2 (Roohani, Huang & Leskovec 2023, Nat Biotechnol 42:927)",
            module="gears",
            runner="gears.py",
            # scipy >= 1.15 breaks GEARS.__init__ on a sparse matrix ('Series' object has no attribute 'nonzero')
            install=(
                ("torch==2.13.0",),
                (
                    "cell-gears==0.1.2",
                    "torch-geometric==2.8.1",
                    "scipy==1.14.1",
                    "pandas==2.3.3",
                    "numpy==2.2.6",
                    "torch==2.13.0",
                ),
            ),
            predicts="gene perturbations, single and combinations, including genes never perturbed in training "
            "(S1, S3), through a GO gene graph",
            defaults={"epochs": 20, "lr": 1e-3, "hidden_size": 64, "batch_size": 32, "num_similar_genes_go_graph": 20},
            scaling="batch = clip(n_train / 100, 8, 32), 20 epochs; best epoch on a seeded 10 % of its perturbations",
            inputs=("go_graph",),
            disk_gb=1.8,
        ),
        PeerSpec(
            name="cpa",
            coverage="seen_names_in_context",
            title="CPA, cpa-tools 0.8.8 (Lotfollahi et al. 2023, Mol Syst Biol 19:e11517)",
            module="cpa",
            runner="cpa.py",
            python="3.10",
            # cpa-tools 0.8.8 needs Python < 3.11 and torch <= 2.0.1 (PyPI's CUDA build; it runs on the CPU). Its
            # dependencies pinned to a set that resolves without backtracking (pyarrow 14: ray 2.9 fails on newer
            # ones; chex 0.1.7: numpy < 1.24), then CPA itself without its notebook, lint and test clutter, which it
            # never imports (torchaudio 2.0.1 would demand torch 2.0.0).
            install=(
                (
                    "torch==2.0.1",
                    "numpy==1.23.5",
                    "scipy==1.12.0",
                    "pandas==2.3.3",
                    "anndata==0.9.2",
                    "scanpy==1.10.4",
                    "scvi-tools==0.20.3",
                    "lightning==2.2.5",
                    "pytorch-lightning==1.9.5",
                    "torchmetrics==1.9.0",
                    "jax==0.4.23",
                    "jaxlib==0.4.23",
                    "flax==0.8.4",
                    "chex==0.1.7",
                    "optax==0.2.1",
                    "orbax-checkpoint==0.5.16",
                    "tensorstore==0.1.78",
                    "ml-dtypes==0.5.4",
                    "numpyro==0.15.0",
                    "pyro-ppl==1.9.2",
                    "mudata==0.2.3",
                    "ml-collections==1.1.0",
                    "numba==0.58.1",
                    "llvmlite==0.41.1",
                    "ray==2.9.3",
                    "pyarrow==14.0.2",
                    "setuptools==70.0.0",
                    "rdkit-pypi==2022.9.5",
                    "seaborn==0.13.2",
                    "adjustText==1.4.0",
                    "packaging==24.2",
                    "etils==1.13.0",
                    "networkx==3.4.2",
                ),
                ("--no-deps", "cpa-tools==0.8.8"),
            ),
            predicts="combinations of perturbations seen in training, in contexts seen in training (S3)",
            defaults={
                "max_epochs": 2000,
                "batch_size": 2048,
                "early_stopping_patience": 5,
                "n_latent": 32,
                "recon_loss": "gauss",
            },
            scaling="batch = clip(n_train / 20, 32, 2048), up to 2,000 epochs, early stopping (5 checks, every 5 "
            "epochs) on a seeded 15 % of its cells, best state restored",
            disk_gb=5.7,
        ),
        PeerSpec(
            name="state",
            coverage="seen_perturbation",
            title="State transition model, arc-state (Adduri et al. 2025, bioRxiv 2025.06.26.661135)",
            module="state",
            runner="state.py",
            install=(("torch==2.13.0",), ("arc-state==0.11.1", "torch==2.13.0")),
            predicts="perturbations seen in training, in new contexts (S2)",
            defaults={"model": "state_sm", "batch_size": 8, "lr": 1e-4},
            scaling="max_steps = clip(250 passes over its training cells, 1,000, 4,000), validation every 100 steps on "
            "a seeded 10 % of its conditions, best weights kept, at most 60 minutes",
            disk_gb=2.5,
        ),
    )
}


def peer_spec(name: str) -> PeerSpec:
    """The :class:`PeerSpec` of ``name`` (an error listing the known peers otherwise)."""
    key = str(name).strip().lower()
    if key not in PEERS:
        raise InputError(f"unknown peer {name!r}; known: {', '.join(PEERS)} (celljepa peers list).")
    return PEERS[key]
