"""Every claim of a preset at one scale, per dataset it names: its premises checked first, then each claim judged
on its table, unless a premise of the same dataset failed ("premise failed: <the premise>"), the scale leaves out a
configuration it names ("not run at this scale") or nothing ran ("not measured yet"). A premise with `premise_of:
[ids]` is the premise of those claims only (B2's "the 3-block net fits" is not B3's); one without, of every claim."""

from pathlib import Path

from trickbench.report import claims, results_tables
from trickbench.report.results_tables import dataset_name


def not_run_reason(preset, scale: str, claim: dict) -> str | None:
    left_out = preset.not_run(scale)
    for overrides in claims.rows_named(claim):
        for o in overrides.split():
            if o.split("=", 1)[-1] in left_out:
                return f"{claims.label(o)}: {left_out[o.split('=', 1)[-1]]}"
    return None


def pilot_tables(claim: dict, root: Path, scale: str, dataset: str) -> list:
    """The tables of the records a converged check compares with (its twice_as_long run), for this dataset."""
    spec = claim.get("converged")
    if not isinstance(spec, dict) or not isinstance(spec.get("twice_as_long"), dict):
        return []
    folder = root / scale / str(spec["twice_as_long"].get("records", ""))
    if not folder.is_dir() or not any(folder.rglob("results.json")):
        return []
    found, _ = results_tables.tables(folder, None)
    return [t for t in found if t.dataset.split()[0] == dataset]


def _judge(preset, scale, claim, table, root, dataset) -> claims.Verdict:
    chance = 1 / int(preset.results.get("classes", 10))
    verdict = claims.check(claim, table, preset.metric, chance, pilot_tables(claim, root, scale, dataset))
    verdict.effect = f"{dataset_name(table.dataset)}: {verdict.effect}"
    return verdict


def verdicts(preset, scale: str, found: list, root: Path) -> dict:
    """(claim index, dataset) -> claims.Verdict, in the preset's order."""
    listed = preset.claims()
    out = {}
    for premise_pass in (True, False):
        for i, claim in enumerate(listed):
            if bool(claim.get("premise")) != premise_pass:
                continue
            for dataset in claim.get("datasets") or preset.datasets:
                table = next((t for t in found if t.dataset.split()[0] == dataset), None)
                reason = not_run_reason(preset, scale, claim)
                premise = bool(claim.get("premise"))
                failed = [
                    v
                    for (_, d), v in out.items()
                    if d == dataset and v.premise and v.verdict == claims.FAILS and _premise_of(v, claim)
                ]
                if reason:
                    out[i, dataset] = claims.Verdict(claims.text(claim), claims.NOT_RUN, reason, premise)
                elif table is None:
                    out[i, dataset] = claims.Verdict(claims.text(claim), claims.NOT_MEASURED, "", premise)
                elif failed and not premise:
                    verdict = f"{claims.PREMISE_FAILED}: {failed[0].says}"
                    out[i, dataset] = claims.Verdict(claims.text(claim), verdict, failed[0].effect)
                else:
                    out[i, dataset] = _judge(preset, scale, claim, table, root, dataset)
                    out[i, dataset].premise_of = tuple(claim.get("premise_of") or ())
    return {key: out[key] for key in sorted(out, key=lambda k: (k[0], _order(listed[k[0]], preset).index(k[1])))}


def _premise_of(premise: claims.Verdict, claim: dict) -> bool:
    return not premise.premise_of or claim.get("id") in premise.premise_of


def _order(claim: dict, preset) -> list[str]:
    return list(claim.get("datasets") or preset.datasets)
