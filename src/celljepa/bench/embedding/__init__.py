"""The embedding benchmark: JEPA, PCA and scVI judged by scib-metrics, and their robustness to dropout.

For every labelled dataset and seed, three representations of the same cells and genes are fitted without
labels and scored with :func:`celljepa.eval.scib.embedding_scores`:

- ``jepa``: :class:`celljepa.models.CellJEPA` with its default configuration (``cj.tl.jepa_embed``'s model),
  on the log-normalised genes;
- ``pca``: 50 principal components of the same log-normalised genes (:func:`scanpy.pp.pca`);
- ``scvi``: scvi-tools' ``SCVI`` with its default model and training rule, on the raw counts of the same genes
  (a real batch, where a dataset has one, as its ``batch_key``). Only where real counts exist: scVI is never
  fed made-up counts.

**Dropout robustness.** Where a dataset has counts, they are thinned binomially to 50, 25, 10 and 5 % of the
reads (:func:`celljepa.data.counts.binomial_thin`, seeded by the seed and the depth, the same thinned cells
for every method) and log-normalised again. Each representation embeds the thinned cells (a) with the model
fitted at full depth (``transfer``) and (b) refitted on the thinned cells (``refit``).

A run is a folder of tasks, one JSON file each under ``OUT/tasks/<dataset>/seed<s>/``, written atomically with
the digest of its inputs: a run that was interrupted resumes where it stopped, and a task whose inputs changed
is computed again. :func:`collect` turns the tasks into the tables (``embedding_quality.md`` /
``robustness.md`` and their JSON) and the statistics of the two claims.

The package: :mod:`.datasets` (what is read, and how counts are recovered or refused), :mod:`.representations`
(JEPA, PCA, scVI), :mod:`.tasks` (one resumable task per fit), :mod:`.report` (tables and claims) and
:mod:`.selection` (encoder changes judged on held-out cells without labels).
"""

from .datasets import DATASETS, PAPALEXI_CELLS, EmbeddingDataset, load_embedding_dataset, log_normalize, prepare_dataset
from .report import (
    _robustness_claim,  # noqa: F401  (tests read the claim's statistics directly)
    collect,
    one_sided_sign_flip,
    quality_markdown,
    robustness_markdown,
    scores_frame,
)
from .representations import N_PCS, REPRESENTATIONS
from .selection import (
    ENCODER_CANDIDATES,
    HELDOUT_FRACTION,
    SELECTION_DATASETS,
    heldout_cells,
    run_encoder_selection,
    selection_decision,
    selection_markdown,
)
from .tasks import CLAIM_DEPTH, DEPTHS, METHODS, run_embedding_benchmark, run_task, task_list, thinned

__all__ = [
    "CLAIM_DEPTH",
    "DATASETS",
    "DEPTHS",
    "ENCODER_CANDIDATES",
    "HELDOUT_FRACTION",
    "METHODS",
    "N_PCS",
    "PAPALEXI_CELLS",
    "REPRESENTATIONS",
    "SELECTION_DATASETS",
    "EmbeddingDataset",
    "collect",
    "heldout_cells",
    "load_embedding_dataset",
    "log_normalize",
    "one_sided_sign_flip",
    "prepare_dataset",
    "quality_markdown",
    "robustness_markdown",
    "run_embedding_benchmark",
    "run_encoder_selection",
    "run_task",
    "scores_frame",
    "selection_decision",
    "selection_markdown",
    "task_list",
    "thinned",
]
