"""The report as text: report.csv (every row's numbers) and report.md (the table, the plots, the jobs that did
not finish, and a search's best trial)."""

import csv
import json
from pathlib import Path

from trickbench.report.collect import Row

# every key of stats.compute's row.stats, in the CSV's column order (DictWriter refuses a key not listed)
CSV_COLUMNS = [
    "config",
    "baseline",
    "seeds",
    "n_ok",
    "n_not_ok",
    "test_acc_mean",
    "test_acc_std",
    "diff_mean",
    "diff_ci_low",
    "diff_ci_high",
    "diff_pairs",
    "val_acc_best_mean",
    "train_acc_last_mean",
    "epochs_to_target_mean",
    "target_reached",
    "wall_time_s_mean",
    "params",
    "precision",
    "status",
]


def _pct(v, digits=2) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}"


def _diff_cell(s: dict) -> str:
    if s["baseline"]:
        return "baseline"
    if s["diff_mean"] is None:
        return "n/a"
    ci = (
        "n/a (one seed)"
        if s["diff_ci_low"] is None
        else f"[{100 * s['diff_ci_low']:+.2f}, {100 * s['diff_ci_high']:+.2f}]"
    )
    return f"{100 * s['diff_mean']:+.2f} {ci}"


def write_csv(rows: list[Row], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, CSV_COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow(r.stats)


def write_markdown(rows, jobs, missing, folders, target_acc, path: Path, plots: list[str]) -> None:
    common = sorted(set.intersection(*(set(r.config) for r in rows))) if rows else []
    datasets = sorted({str(j.results.get("dataset")) for j in jobs if j.results.get("dataset")})
    base = next((r for r in rows if r.baseline), None)
    by_precision = len({p for r in rows if (p := r.stats.get("precision"))}) > 1  # e.g. runs from two machines
    lines = [
        "# Sweep report",
        "",
        f"Folders: {', '.join(f'`{f}`' for f in folders)}  ",
        f"Runs: {len(jobs)} ({sum(j.ok for j in jobs)} ok, {sum(not j.ok for j in jobs)} not ok"
        + (f", {len(missing)} without results.json" if missing else "")
        + f") · dataset: {', '.join(datasets) or 'n/a'} · baseline: **{base.label if base else 'n/a'}**  ",
        f"Same in every run: {' '.join(f'`{o}`' for o in common) or '(nothing beyond the defaults)'}",
        *_search_line(folders[0]),
        "",
        "Accuracies in %, mean ± std over seeds (test acc of the best-val checkpoint). Δ: mean paired per-seed"
        " difference to the baseline in points, with a 95% t-interval over seeds; an interval that excludes 0"
        " says the difference is larger than seed-to-seed noise. A final train acc far above best val acc means"
        f" overfitting. Epochs to {_pct(target_acc, 1)}%: mean over seeds that reached it (reached/ok).",
        "",
        f"| config | seeds | test acc | Δ vs baseline [95% CI] | best val acc | final train acc "
        f"| epochs to {_pct(target_acc, 1)}% | wall s | params | {'precision | ' if by_precision else ''}status |",
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if by_precision else ""),
    ]
    for r in rows:
        s = r.stats
        acc = _pct(s["test_acc_mean"]) + ("" if s["test_acc_std"] is None else f" ± {_pct(s['test_acc_std'])}")
        epochs = "n/a" if s["epochs_to_target_mean"] is None else f"{s['epochs_to_target_mean']:.1f}"
        wall = "n/a" if s["wall_time_s_mean"] is None else f"{s['wall_time_s_mean']:.1f}"
        name = f"**{s['config']}** (baseline)" if r.baseline else s["config"]
        lines.append(
            f"| {name} | {s['seeds'] or '-'} | {acc} | {_diff_cell(s)} | {_pct(s['val_acc_best_mean'])} "
            f"| {_pct(s['train_acc_last_mean'])} | {epochs} ({s['target_reached']}) | {wall} "
            f"| {s['params'] if s['params'] is not None else 'n/a'} "
            + (f"| {s['precision'] or 'n/a'} " if by_precision else "")
            + f"| {s['status']} |"
        )
    lines += [""] + [f"![{p}]({p})" for p in plots]
    bad = [j for j in jobs if not j.ok]
    if bad or missing:
        lines += [
            "",
            "## Jobs that did not finish",
            "",
            "| job | config | seed | status | error |",
            "|---|---|---|---|---|",
        ]
        for j in bad:
            lines.append(
                f"| `{j.folder}` | {' '.join(j.config)} | {j.seed} | {j.results.get('status')} "
                f"| {j.results.get('error')} |"
            )
        lines += [f"| `{m}` | ? | ? | no results.json | killed before it finished? |" for m in missing]
    path.write_text("\n".join(lines) + "\n")


def _search_line(folder: Path) -> list[str]:
    """A search's sweep folder (hparams_search=...): its best trial by the value it optimized, from best.json."""
    try:
        best = json.loads((Path(folder) / "best.json").read_text())
    except (OSError, ValueError):
        return []
    b = best.get("best")
    if not b:
        return ["", f"Search: {best.get('n_trials')} trials, none finished ok (best.json)"]
    return [
        "",
        f"Search: {best.get('n_trials')} trials ({best.get('n_ok')} ok); best by {best.get('objective')}: trial "
        f"{b['trial']} (job {b['job']}), {_pct(b['value'])}%: {' '.join(f'`{o}`' for o in b['overrides'])} (best.json)",
    ]
