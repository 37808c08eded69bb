"""The report's PNGs: val acc and train loss per epoch (mean and min-max over seeds) for every row, and each
row's test-acc difference to the baseline with its 95% interval."""

import statistics
from pathlib import Path

from trickbench.report.collect import Row

# no matplotlib version or date in the PNG, one bundled font: the same records give the same bytes (docs/results.md)
PNG_METADATA = {"Software": None}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.family": "DejaVu Sans", "svg.hashsalt": "trickbench", "path.simplify": True})
    return plt


def write_png(fig, path: Path) -> None:
    """The finished figure to path (its folder made), without the metadata that would change its bytes; closed."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata=PNG_METADATA)
    pyplot().close(fig)


def write_plots(rows: list[Row], folder: Path) -> list[str]:
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()

    colors = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20").colors
    written = []
    for column, title, name in (
        ("val_acc", "validation accuracy", "val_acc.png"),
        ("train_loss", "training loss", "train_loss.png"),
    ):
        fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
        for i, r in enumerate(rows):
            curves = [
                {int(m["epoch"]) + 1: m[column] for m in j.metrics if m.get(column) is not None} for j in r.jobs if j.ok
            ]
            epochs = sorted({e for c in curves for e in c})
            if not epochs:
                continue
            values = [[c[e] for c in curves if e in c] for e in epochs]
            color = "black" if r.baseline else colors[i % len(colors)]
            label = f"{r.label} (baseline)" if r.baseline else r.label
            ax.plot(
                epochs,
                [statistics.fmean(v) for v in values],
                color=color,
                lw=2,
                marker="o",
                ms=3,
                label=label,
                ls="--" if r.baseline else "-",
            )
            ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], color=color, alpha=0.15, lw=0)
        ax.set(xlabel="epoch", ylabel=title, title=f"{title} per epoch (line: mean over seeds, band: min-max)")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        write_png(fig, folder / name)
        written.append(name)
    written.append(_plot_deltas(rows, folder, plt))
    return written


def _plot_deltas(rows: list[Row], folder: Path, plt) -> str:
    """Test-acc difference to the baseline with its 95% interval: the sweep's answer in one picture."""
    shown = [r for r in rows if not r.baseline and r.stats["diff_mean"] is not None]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(shown) + 1.8), dpi=110)
    for y, r in enumerate(reversed(shown)):
        s = r.stats
        d = 100 * s["diff_mean"]
        color = "tab:green" if d >= 0 else "tab:red"
        if s["diff_ci_low"] is not None:
            ax.errorbar(
                d,
                y,
                xerr=[[d - 100 * s["diff_ci_low"]], [100 * s["diff_ci_high"] - d]],
                fmt="o",
                color=color,
                capsize=4,
            )
        else:
            ax.plot(d, y, "o", color=color)
    base = next((r.label for r in rows if r.baseline), "?")
    ax.axvline(0, color="black", lw=1)
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.set_yticks(range(len(shown)), [r.label for r in reversed(shown)])
    ax.set(xlabel="test accuracy - baseline (points), 95% CI over seeds", title=f"difference to the baseline: {base}")
    ax.grid(axis="x", alpha=0.3)
    write_png(fig, folder / "test_acc_delta.png")
    return "test_acc_delta.png"
