"""The head of docs/results.md: one summary row per claim (its digest id, the source's wording and figure, and at
each scale the verdict, the measured effect with its unit and the smallest effect its seeds resolve), how many
verdicts chance alone would turn, the measured wall time, and the claims listed per part."""

import json
from pathlib import Path

from trickbench.report import claims
from trickbench.report.results_sections import SCALES, Preset, dataset_name

CHANCE_RATE = 0.05  # a 95% interval excludes 0 for about 5% of null effects


def _points(half: float | None) -> str:
    return "-" if half is None else f"±{100 * half:.2f}"


def summary(found: list[tuple[Preset, dict]]) -> list[str]:
    """One row per claim and dataset (and per claim of the digest not run), linked to its section."""
    head = ["id", "claim", "source", "source's figure"]
    for scale in SCALES:
        name = scale.upper()
        head += [f"{name} verdict", f"{name} effect", f"{name} resolves"]
    lines = [
        "## Summary",
        "",
        "Each claim of the lecture and of the Bag of Tricks paper (and the project's own, labelled), checked at each",
        "scale (the rule: Method, below). *resolves*: the half-width of the claim's 95% interval, the smallest effect",
        "its seeds can tell from zero, to set beside the source's effect.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for preset, by_scale in found:
        for key in by_scale["cpu"]:
            i, dataset = key
            claim = preset.claims()[i]
            where = f" ({dataset_name(dataset)})" if len(claim.get("datasets") or preset.datasets) > 1 else ""
            said = f"{'premise: ' if claim.get('premise') else ''}{claims.text(claim)}{where}"
            said += claims.setup_notes(claim, preset.results.get("departs"))
            cells = [claim.get("id") or "-", f"[Part {preset.part}: {said}](#{preset.name})", claims.source(claim)]
            cells.append(claim.get("source_figure") or "-")
            for scale in SCALES:
                v = by_scale[scale][key]
                cells += [f"**{v.verdict}**", v.effect or "-", _points(v.half_width)]
            lines.append("| " + " | ".join(cells) + " |")
        for claim_id, why in preset.claims_not_run().items():
            cells = [claim_id, f"[Part {preset.part}](#{preset.name})", "-", "-"]
            lines.append("| " + " | ".join(cells + [f"**{claims.NOT_RUN}**", why, "-"] * len(SCALES)) + " |")
    return lines + ["", *chance_line(found), ""]


def chance_line(found: list[tuple[Preset, dict]]) -> list[str]:
    """How many supports or contradicts the page would show by chance, at its number of intervals."""
    verdicts = [v for _, by_scale in found for scale in SCALES for v in by_scale[scale].values()]
    intervals = [v for v in verdicts if v.half_width is not None and not v.premise]
    decided = [v for v in intervals if v.verdict in (claims.SUPPORTS, claims.CONTRADICTS)]
    return [
        f"By chance alone: {len(intervals)} claim verdict(s) above rest on a 95% interval; were every effect zero,",
        f"about {CHANCE_RATE * len(intervals):.1f} of them ({100 * CHANCE_RATE:.0f}%) would still exclude zero and "
        f"read *supports* or *contradicts*. The page shows {len(decided)}.",
    ]


def claim_lines(preset: Preset) -> list[str]:
    """The preset's claims as its section lists them: id, the source's wording, the metric judged, the source's
    figure; then the digest's claims of this part that no run here checks, with why."""
    lines = []
    for c in sorted(preset.claims(), key=lambda c: not c.get("premise")):
        head = f"**{c['id']}** " if c.get("id") else ""
        tail = [f"{claims.source(c)}'s" if c.get("project") else ""]
        if c.get("source_says") and c.get("says") and c["says"] != c["source_says"]:
            tail.append(f"checked as: {c['says']}")
        if c.get("source_figure"):
            tail.append(str(c["source_figure"]))
        extra = "; ".join(t for t in tail if t)
        premise = "premise: " if c.get("premise") else ""
        notes = claims.setup_notes(c, preset.results.get("departs"))
        lines.append(f"- {premise}{head}{claims.text(c)}" + (f" ({extra})" if extra else "") + notes)
    lines += [f"- **{i}** {claims.NOT_RUN}: {why}" for i, why in preset.claims_not_run().items()]
    return lines


def _seconds(folder: Path) -> list[float]:
    paths = sorted(folder.rglob("results.json")) if folder.is_dir() else []
    return [float(json.loads(p.read_text()).get("wall_time_s") or 0) for p in paths]


def wall_time(root: Path, parts: list[str]) -> list[str]:
    """The measured wall time of each scale: the sittings `make reproduce` logged and the sum over the same jobs
    (the parts' sweeps); jobs outside the sittings (the pilots) summed on their own line."""
    lines = []
    for scale in SCALES:
        sittings = root / scale / "sittings.txt"
        times = [float(w.split()[2]) for w in sittings.read_text().splitlines() if len(w.split()) >= 3] if (
            sittings.exists()
        ) else []
        jobs = [s for part in parts for s in _seconds(root / scale / part)]
        if times:
            lines += [
                f"- {SCALES[scale]}: {sum(times) / 3600:.2f} h of wall time over {len(times)} sitting(s) of `make "
                f"reproduce`, which ran the parts' {len(jobs)} jobs",
                f"  ({sum(jobs) / 3600:.2f} h summed over them: jobs ran several at a time).",
            ]
        elif jobs:
            lines.append(f"- {SCALES[scale]}: {len(jobs)} jobs, {sum(jobs) / 3600:.2f} h summed (no sitting logged).")
        else:
            lines.append(f"- {SCALES[scale]}: not measured yet.")
        others = sorted(d.name for d in (root / scale).iterdir() if d.is_dir()) if (root / scale).is_dir() else []
        for other in (o for o in others if o not in parts):
            extra = _seconds(root / scale / other)
            if extra:
                lines.append(
                    f"  - outside the sittings, `{other}`: {len(extra)} job(s), {sum(extra) / 3600:.2f} h summed."
                )
    return ["**Wall time.**", "", *lines, ""]
