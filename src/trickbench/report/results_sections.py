"""One section of docs/results.md: a preset at one scale, from its run records (<root>/<scale>/<preset>/): the
premise checks, what the runs trained, the command, one table per dataset (and per row group), the claims' verdicts,
the curves, the lr schedule and, for Part B, the per-layer gradient norms. Without records: "not measured yet"."""

import os
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from trickbench.report import claims, results_plots, results_tables
from trickbench.report.results_tables import dataset_name

SCALES = {"cpu": "CPU scale", "gpu": "GPU scale"}


@dataclass
class Preset:
    name: str
    results: dict
    setup: str  # the preset's header comment: the lecture's or the paper's setup

    @property
    def part(self) -> str:
        return str(self.results["part"])

    @property
    def metric(self) -> str:
        return self.results.get("metric", "test_last")

    @property
    def datasets(self) -> list[str]:
        return list(self.results.get("datasets") or ["cifar10"])

    def claims(self) -> list[dict]:
        return claims.expand(self.results.get("claims") or [])

    def not_run(self, scale: str) -> dict[str, str]:
        """Configurations (variant or ladder values) this scale leaves out -> why."""
        return dict((self.results.get("not_run") or {}).get(scale) or {})


@dataclass
class Section:
    lines: list[str]
    verdicts: dict = field(default_factory=dict)  # (claim index, dataset) -> claims.Verdict


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _slug(text: str) -> str:
    """A folder name: cifar10 (JPEG q75 copy) -> cifar10_jpeg_q75_copy."""
    return "_".join("".join(c if c.isalnum() else " " for c in text).lower().split())


def _not_run_reason(preset: Preset, scale: str, claim: dict) -> str | None:
    left_out = preset.not_run(scale)
    for overrides in claims.rows_named(claim):
        for o in overrides.split():
            if o.split("=", 1)[-1] in left_out:
                return f"{claims.label(o)}: {left_out[o.split('=', 1)[-1]]}"
    return None


def verdicts(preset: Preset, scale: str, found: list[results_tables.Table]) -> dict:
    """Every claim at this scale, per dataset it names: checked on that dataset's table, or why it is not."""
    out = {}
    for i, claim in enumerate(preset.claims()):
        for dataset in claim.get("datasets") or preset.datasets:
            table = next((t for t in found if t.dataset.split()[0] == dataset), None)
            reason = _not_run_reason(preset, scale, claim)
            premise = bool(claim.get("premise"))
            if reason:
                out[i, dataset] = claims.Verdict(claim["says"], claims.NOT_RUN, reason, premise)
            elif table is None:
                out[i, dataset] = claims.Verdict(claim["says"], claims.NOT_MEASURED, "", premise)
            else:
                chance = 1 / int(preset.results.get("classes", 10))
                out[i, dataset] = claims.check(claim, table, preset.metric, chance)
                out[i, dataset].effect = f"{dataset_name(table.dataset)}: {out[i, dataset].effect}"
    return out


def _size(preset: Preset, tables: list[results_tables.Table], scale: str) -> str:
    """What the runs trained, from their own records: epochs, data, the conv widths of a part whose widths depend on
    the scale, and what this scale leaves out, with why."""
    jobs = [j for t in tables for j in t.jobs if j.ok]
    epochs = sorted({j.results["epochs"] for j in jobs if j.results.get("epochs") is not None})
    out = [f"{'/'.join(map(str, epochs)) or '?'} epoch{'' if epochs == [1] else 's'}"]
    cfg = None
    for table in tables:
        saved = [p for j in table.jobs if j.ok and (p := j.folder / ".hydra" / "config.yaml").exists()]
        cfg = OmegaConf.load(saved[0]) if saved else None
        subset = None if cfg is None else OmegaConf.select(cfg, "data.subset", default=None)
        val = None if cfg is None else OmegaConf.select(cfg, "data.val_size", default=None)
        name = dataset_name(table.dataset)
        out.append(
            f"{name}: all of it, {val} images of its train split held out for val"
            if subset is None
            else f"{name}: a fixed subset, {subset - val} train, {val} val and up to {subset} test images"
        )
    if cfg is not None and (widths := OmegaConf.select(cfg, "results.widths", default=None)) is not None:
        out.append(f"conv widths {list(widths)}")
    return "; ".join(out)


def _commands(folder: Path) -> list[str]:
    """The sweep command(s) that wrote folder, from Hydra's multirun.yaml (resume= dropped: the same command again
    resumes, since hydra.sweep.dir names the folder)."""
    lines = []
    for path in sorted(folder.rglob("multirun.yaml")):
        hydra = OmegaConf.load(path).hydra
        args = [str(o) for o in hydra.overrides.task if not str(o).startswith("resume=")]
        lines.append(" ".join(["python train.py -m", *args, f"hydra.sweep.dir={_sweep_dir(hydra)}"]))
    return lines


def _sweep_dir(hydra) -> str:
    """The folder as the command named it (resume= or hydra.sweep.dir=), never resolved: the resolver behind
    hydra.sweep.dir makes a new folder (and older records name a resolver no longer registered)."""
    for key, where in (("resume=", "overrides.task"), ("hydra.sweep.dir=", "overrides.hydra")):
        named = [str(o).removeprefix(key) for o in OmegaConf.select(hydra, where, default=[]) if str(o).startswith(key)]
        if named:
            return named[-1]
    return str(OmegaConf.to_container(hydra.sweep)["dir"])


def section(preset: Preset, scale: str, root: Path, out: Path, lr_png: Path | None) -> Section:
    folder = root / scale / preset.name
    has_runs = folder.is_dir() and any(folder.rglob("results.json"))
    lines = [f"#### {SCALES[scale]}", ""]
    left_out = preset.not_run(scale)
    if left_out:
        lines += [
            "Not run at this scale: " + "; ".join(f"{claims.label(k)} ({why})" for k, why in left_out.items()) + ".",
            "",
        ]
    if lr_png is not None:
        lines += [f"![learning rate per step]({os.path.relpath(lr_png, out.parent)})", ""]
    if not has_runs:
        missing = "GPU: not measured yet" if scale == "gpu" else "CPU: not measured yet"
        return Section(
            lines + [f"{missing} (`make reproduce SCALE={scale}` writes `{_shown(folder)}/`).", ""],
            verdicts(preset, scale, []),
        )
    found, not_ok = results_tables.tables(folder, preset.results.get("baseline"))
    checked = verdicts(preset, scale, found)
    failed = [v for v in checked.values() if v.premise and v.verdict != claims.SUPPORTS]
    for v in failed:
        lines += [
            f"**Premise failed:** {v.says}: {v.verdict} ({v.effect}). The comparisons below do not test what "
            "the part is about until it holds.",
            "",
        ]
    if not failed and any(v.premise for v in checked.values()):
        lines += ["Premise checks: all hold (see the claims below).", ""]
    lines += [f"Trained: {_size(preset, found, scale)}.", ""]
    lines += ["Command (`make reproduce SCALE=" + scale + "` runs it):", "", "```", *_commands(folder), "```", ""]
    for table in found:
        if len(found) > 1:
            lines += [f"##### {dataset_name(table.dataset)}", ""]
        for title, rows in _groups(preset, table):
            lines += ([f"{title}:", ""] if title else []) + results_tables.markdown(table, preset.metric, rows) + [""]
        pictures = results_plots.curves(table, out.with_suffix("") / scale / _slug(f"{preset.name}_{table.dataset}"))
        lines += [" ".join(f"![{p.stem}]({os.path.relpath(p, out.parent)})" for p in pictures), ""]
        mine = [v for (_, d), v in checked.items() if table.dataset.split()[0] == d]
        if mine:
            lines += results_tables.verdict_lines(mine) + [""]
    lines += _grad_norms(preset, found, scale, out)
    if not_ok:
        lines += (
            ["Jobs that did not finish ok:", ""]
            + [
                f"- `{j.folder.name}` ({' '.join(j.config)}, seed {j.seed}): {j.results.get('status')}, "
                f"{j.results.get('error')}"
                for j in not_ok
            ]
            + [""]
        )
    return Section(lines, checked)


def _groups(preset: Preset, table: results_tables.Table) -> list[tuple[str, list]]:
    """The table's rows split as results.groups says (title -> overrides), each group with the baseline first."""
    groups = preset.results.get("groups") or []
    if not groups:
        return [("", table.rows)]
    out = []
    for g in groups:
        rows = [r for o in g["rows"] if (r := table.row(o)) is not None and not r.baseline]
        out.append((g["title"], [table.base, *rows]))
    return out


def _grad_norms(preset: Preset, tables, scale: str, out: Path) -> list[str]:
    runs = {}
    for table in tables:
        for overrides in preset.results.get("grad_norms") or []:
            row = table.row(overrides)
            ok = sorted((j for j in row.jobs if j.ok), key=lambda j: str(j.seed)) if row else []
            if ok:
                runs[f"{row.label} (seed {ok[0].seed})"] = ok[0].folder
    png = results_plots.grad_norm_plot(runs, out.with_suffix("") / scale / f"{preset.name}_grad_norm.png")
    if png is None:
        return []
    return [
        f"![per-layer gradient norm]({os.path.relpath(png, out.parent)})",
        "",
        "Per-layer gradient norm of the conv and FC weights at the first and last logged step (each run's "
        "`grad_norm/*`, kept in its record as grad_norm.json): a norm that falls by orders of magnitude from the "
        "output back to the first layers is the vanishing gradient.",
        "",
    ]
