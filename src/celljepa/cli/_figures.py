"""The figure makers the commands hand to the workflows (``figure_maker=``): PNGs in run folders, never windows."""

from __future__ import annotations

from pathlib import Path


def headless_pyplot():
    """Return pyplot on the Agg backend: run folders get PNGs, never windows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fold_figures(result, out: Path) -> list[Path]:
    """A fold run's figures: the metrics with CIs and the E-distance heatmap (``OUT/figures/``)."""
    from .. import pl

    plt = headless_pyplot()
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    bars = fig_dir / "metrics_ci.png"
    plt.close(pl.benchmark(result.metrics, save=bars, show=False, return_fig=True))
    heat = fig_dir / "edistance_heatmap.png"
    table = result.per_condition.pivot(index="condition", columns="method", values="edistance")
    table = table[list(dict.fromkeys(result.per_condition["method"]))]
    table.index.name, table.columns.name = "test condition", "method"
    plt.close(pl.edistance(distances=table, cluster=False, save=heat, show=False, return_fig=True))
    return [bars, heat]


def report_figure(verdicts: list[dict], path: Path) -> Path:
    """The consolidated report's figure: where JEPA helps."""
    from .. import pl

    plt = headless_pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.close(pl.where_jepa_helps(verdicts, save=path, show=False, return_fig=True))
    return path


def combined_figures(combined: dict, out: Path) -> list[Path]:
    """A benchmark's figures: one per dataset x split (all folds), and the verdict."""
    from .. import pl

    plt = headless_pyplot()
    paths = []
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for key, metrics in combined.items():
        path = out / "figures" / f"{key.replace('/', '__')}.png"
        plt.close(
            pl.benchmark(
                metrics,
                metrics_to_show=["edistance", "delta_pearson", "mse", "mrr"],
                title=f"{key} (all folds, 95% bootstrap CIs)",
                save=path,
                show=False,
                return_fig=True,
            )
        )
        paths.append(path)
    if any("verdict" in m for m in combined.values()):
        path = out / "figures" / "verdict.png"
        plt.close(pl.verdict(combined, save=path, show=False, return_fig=True))
        paths.insert(0, path)
    return paths
