"""The PNGs of docs/results.md: each table's val-accuracy and train-loss curves (the sweep report's own plots), and
for Part B the per-layer gradient norms of two runs (sigmoid vs ReLU), read from their TensorBoard event files,
where GradientNorms (callbacks/monitors.py) logs grad_norm/<parameter> every trainer.log_every_n_steps."""

import json
import re
from pathlib import Path

from trickbench.report.plots import pyplot, write_png, write_plots
from trickbench.report.results_tables import Table


def curves(table: Table, folder: Path) -> list[Path]:
    """val_acc.png, train_loss.png and test_acc_delta.png of the table's rows, in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    return [folder / name for name in write_plots(table.rows, folder)]


def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def layer_norms(run_folder: Path) -> dict[str, list[tuple[int, float]]]:
    """grad_norm/<parameter> -> [(step, norm), ...] from a run's tensorboard/ folder, layers input to output; from
    its record's grad_norm.json (first and last step, report/records.py) where the event files are not kept."""
    saved = run_folder / "grad_norm.json"
    if saved.exists():
        norms = json.loads(saved.read_text())
        return {k: [tuple(p) for p in norms[k]] for k in sorted(norms, key=_natural)}
    if not (run_folder / "tensorboard").is_dir():
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_folder / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    tags = sorted((t for t in events.Tags().get("scalars", []) if t.startswith("grad_norm/")), key=_natural)
    return {t.removeprefix("grad_norm/"): [(e.step, e.value) for e in events.Scalars(t)] for t in tags}


def grad_norm_plot(runs: dict[str, Path], out: Path) -> Path | None:
    """Per-layer gradient norm (log scale) of each run, at its first logged step (solid) and its last (dashed):
    a vanishing gradient is a norm that falls by orders of magnitude from the last layer back to the first."""
    norms = {label: layer_norms(folder) for label, folder in runs.items()}
    norms = {label: n for label, n in norms.items() if n}
    if not norms:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    for color, (label, layers) in zip(("tab:red", "tab:blue", "tab:green", "tab:orange"), norms.items(), strict=False):
        x = range(1, len(layers) + 1)
        first = [values[0] for values in layers.values()]
        last = [values[-1] for values in layers.values()]
        ax.plot(x, [v for _, v in first], "o-", color=color, label=f"{label}, step {first[0][0]}")
        ax.plot(x, [v for _, v in last], "s--", color=color, alpha=0.7, label=f"{label}, step {last[0][0]}")
    names = list(next(iter(norms.values())))
    ax.set_xticks(range(1, len(names) + 1), [_layer_name(n) for n in names], rotation=45, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set(xlabel="layer (input -> output)", ylabel="gradient L2 norm of its weights", title="per-layer gradient norm")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    write_png(fig, out)
    return out


def lr_plot(curves: dict[str, tuple[list[float], int]], title: str, out: Path) -> Path:
    """A small PNG of each configuration's lr per optimizer step (x in epochs): label -> (lrs, steps per epoch)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 2.6), dpi=80)
    for (name, (lrs, spe)), style in zip(curves.items(), ("-", "--", "-.", ":") * 4, strict=False):
        ax.plot([t / spe for t in range(len(lrs))], lrs, style, lw=1.5, label=name)
    ax.set(xlabel="epoch", ylabel="lr", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    write_png(fig, out)
    return out


def _layer_name(parameter: str) -> str:
    """net.features.1.convs.2.0.weight -> conv 2.3 (block 2, its third conv); net.head.1.layers.0.weight -> fc 1."""
    if m := re.search(r"features\.(\d+)\.convs\.(\d+)", parameter):
        return f"conv {int(m[1]) + 1}.{int(m[2]) + 1}"
    if m := re.search(r"head\.(\d+)", parameter):
        return f"fc {m[1]}"
    return parameter.removeprefix("net.").removesuffix(".weight")
