"""One section of docs/results.md: a preset at one scale, from its run records (<root>/<scale>/<preset>/): the
premise checks first, what the runs trained (and in which precision), the command, one table per dataset (and per
row group), the claims' verdicts, the curves, the lr each epoch trained at and, for Part B, the per-layer gradient
norms. Without records: "not measured yet"."""

import os
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from trickbench.report import claims, results_lr, results_plots, results_tables
from trickbench.report.results_tables import dataset_name
from trickbench.report.results_verdicts import verdicts

SCALES = {"cpu": "CPU scale", "gpu": "GPU scale"}


def preset_header(path: Path) -> str:
    """A preset's header comment after `# @package`, up to its command line, less its line on docs/results.md: the
    setup a section prints, what a pilot asks."""
    said = []
    for line in path.read_text().splitlines()[1:]:
        text = line[1:].strip()
        if not line.startswith("#") or text.startswith("python "):
            break
        if not text.startswith("docs/results.md"):
            said.append(text)
    return " ".join(said)


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

    def claims_not_run(self) -> dict[str, str]:
        """The digest's claims of this part that no run here checks (id -> why), results.not_run_claims."""
        return {str(k): str(v) for k, v in (self.results.get("not_run_claims") or {}).items()}


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
    precisions = sorted({str(j.results.get("precision")) for j in jobs if j.results.get("precision")})
    out.append(f"precision {', '.join(precisions) or 'not recorded'}")
    return "; ".join(out)


def _without_config(tables: list[results_tables.Table]) -> list[str]:
    """Records with no .hydra/config.yaml: said, never passed over (they were copied before `make records` took a
    resumed job's config from .hydra/resumed-<time>/, and their run folders are gone)."""
    jobs = sorted({j.folder.name for t in tables for j in t.jobs if not (j.folder / ".hydra" / "config.yaml").exists()})
    if not jobs:
        return []
    total = sum(len(t.jobs) for t in tables)
    return [
        f"Records without a config ({len(jobs)} of {total}: jobs first started in a `resume=` sitting, copied before "
        "`make records` took their config from `.hydra/resumed-<time>/`): jobs "
        + ", ".join(sorted(jobs, key=lambda n: (len(n), n)))
        + ".",
        "",
    ]


def premise_lines(checked: dict) -> list[str]:
    """The premises at this scale, printed before anything else, with what each means for the claims."""
    premises = [v for v in checked.values() if v.premise]
    if not premises:
        return []
    lines = ["Premises, checked first (a claim is judged only where its part's premises hold):", ""]
    for v in premises:
        lines.append(f"- {v.says}: **{v.verdict}** ({v.effect or '-'})")
    lines.append("")
    for v in premises:
        if v.verdict == claims.FAILS:
            verb = "is" if len(v.premise_of) == 1 else "are"
            which = f"{' and '.join(v.premise_of)} {verb}" if v.premise_of else "The claims on its dataset are"
            lines += [f"**Premise failed:** {v.says}. {which} not judged at this scale.", ""]
        elif v.verdict == claims.UNJUDGED:
            lines += [f"**Premise not checked:** {v.says}. The claims below are judged without it.", ""]
    return lines


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


def section(preset: Preset, scale: str, root: Path, out: Path) -> Section:
    folder = root / scale / preset.name
    has_runs = folder.is_dir() and any(folder.rglob("results.json"))
    lines = [f"#### {SCALES[scale]}", ""]
    left_out = preset.not_run(scale)
    if left_out:
        lines += [
            "Not run at this scale: " + "; ".join(f"{claims.label(k)} ({why})" for k, why in left_out.items()) + ".",
            "",
        ]
    if not has_runs:
        missing = "GPU: not measured yet" if scale == "gpu" else "CPU: not measured yet"
        return Section(
            lines + [f"{missing} (`make reproduce SCALE={scale}` writes `{_shown(folder)}/`).", ""],
            verdicts(preset, scale, [], root),
        )
    found, not_ok = results_tables.tables(folder, preset.results.get("baseline"))
    checked = verdicts(preset, scale, found, root)
    lines += premise_lines(checked)
    lines += [f"Trained: {_size(preset, found, scale)}.", ""] + _without_config(found)
    lines += ["Command (`make reproduce SCALE=" + scale + "` runs it):", "", "```", *_commands(folder), "```", ""]
    lines += results_lr.lr_lines(preset, scale, found, out)
    for table in found:
        if len(found) > 1:
            lines += [f"##### {dataset_name(table.dataset)}", ""]
        for title, rows in _groups(preset, table):
            lines += ([f"{title}:", ""] if title else []) + results_tables.markdown(table, preset.metric, rows) + [""]
        pictures = results_plots.curves(table, out.with_suffix("") / scale / _slug(f"{preset.name}_{table.dataset}"))
        lines += [" ".join(f"![{p.stem}]({os.path.relpath(p, out.parent)})" for p in pictures), ""]
        mine = [v for (_, d), v in checked.items() if table.dataset.split()[0] == d and not v.premise]
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
