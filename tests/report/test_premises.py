"""Premise checks a run can fail, on hand-written records: each check fed a record set that fails it and one that
passes it; a failed premise turns its part's summary rows into "premise failed: ..."; the claim schema (digest id,
the source's wording and figure, the project's own claims, the claims not run) on the page; the smallest effect
the seeds resolve and the count chance alone would decide."""

import math
from pathlib import Path

import pytest
from fake_records import job

from trickbench.report import claims, premises, results_page, results_tables

T_975_2 = 4.302653  # Student t 97.5% quantile, 2 degrees of freedom
S = range(3)  # seeds


def table(folder: Path, rows: dict) -> results_tables.Table:
    """rows: variant -> {seed: dict of job() keywords}; one table of their records."""
    n = 0
    for variant, seeds in rows.items():
        for seed, kw in seeds.items():
            job(folder / str(n), [f"variant=p/{variant}"], seed, **kw)
            n += 1
    (found,), _ = results_tables.tables(folder, None)
    return found


def test_does_not_learn_fails_on_test_too(tmp_path):
    flat = table(tmp_path / "a", {"net": {s: {"train": 0.10, "test_last": 0.11} for s in range(3)}})
    assert premises.at_chance(flat.row("variant=p/net"), 0.1).passed is True
    # train at chance but the test split well above it: the net learned something
    learned = table(tmp_path / "b", {"net": {s: {"train": 0.105, "test_last": 0.30} for s in range(3)}})
    outcome = premises.at_chance(learned.row("variant=p/net"), 0.1)
    assert outcome.passed is False and "train 10.50, test 30.00" in outcome.effect


def test_overfits_reads_the_clean_train_pass_and_only_it(tmp_path):
    far = table(tmp_path / "a", {"net": {s: {"train": 0.6, "train_clean": 0.9 + s / 100, "test_last": 0.5} for s in S}})
    outcome = premises.overfits(far.row("variant=p/net"))
    half = T_975_2 * 0.01 / math.sqrt(3)  # gaps .40 .41 .42: sd 1 point
    assert outcome.passed is True and math.isclose(outcome.half_width, half, rel_tol=1e-6)
    assert "clean train - test gap +41.00" in outcome.effect
    near = {"net": {s: {"train": 0.9, "train_clean": 0.52 + s / 100, "test_last": 0.5} for s in S}}
    near = table(tmp_path / "b", near)
    assert premises.overfits(near.row("variant=p/net")).passed is False  # augmented train far above: not read
    # no clean pass in the records: not judged, even with the augmented train accuracy far above test
    old = table(tmp_path / "c", {"net": {s: {"train": 0.95, "test_last": 0.5} for s in range(3)}})
    outcome = premises.overfits(old.row("variant=p/net"))
    assert outcome.passed is None and "train_clean.acc" in outcome.effect


@pytest.mark.parametrize(("gain", "passed"), [(0.03, False), (0.005, True)])
def test_converged_compares_the_run_twice_as_long_paired_by_seed(tmp_path, gain, passed):
    base = table(tmp_path / "base", {"baseline": {s: {"train": 0.7, "test_last": 0.6 + s / 100} for s in range(3)}})
    twice = {"baseline": {s: {"train": 0.8, "test_last": 0.6 + s / 100 + gain} for s in range(3)}}
    long = table(tmp_path / "long", twice)
    spec = {"row": "variant=p/baseline", "twice_as_long": {"records": "long", "row": "variant=p/baseline"}}
    outcome = premises.converged(spec, base.row("variant=p/baseline"), [long])
    assert outcome.passed is passed and f"{100 * gain:+.2f}" in outcome.effect and "over 3 seed(s)" in outcome.effect
    assert premises.converged(spec, base.row("variant=p/baseline"), []).passed is None  # no pilot records
    # the old form (a row alone, judged by a rise over the last epochs) is no check
    assert premises.converged("variant=p/baseline", base.row("variant=p/baseline"), [long]).passed is None


PRESET = """\
# @package _global_
# A test part.
results:
  part: A
  story: test
  baseline: variant=p/base
  departs: batch 128 (the source's, 256)
  not_run_claims: {A2: "no outcome in the text"}
  claims:
    - id: A0
      says: the base net overfits
      premise: true
      overfits: variant=p/base
    - id: A1
      source_says: "a better net does better"
      says: better beats base
      metric: test
      source_figure: "lecture: test ~89%"
      note: lr x0.96 per epoch as the source, whatever the length
      better: [variant=p/better, variant=p/base]
    - says: better trains better than base
      project: true
      metric: train
      better: [variant=p/better, variant=p/base]
"""


# a row's setup against the source's: the claim's note, then its part's departures
SETUP = " (setup: lr x0.96 per epoch as the source, whatever the length; batch 128 (the source's, 256))"


def _page(tmp_path: Path, clean: float, preset: str = PRESET) -> str:
    conf = tmp_path / "conf" / "experiment" / "results"
    conf.mkdir(parents=True)
    (conf / "t.yaml").write_text(preset)
    sweep = tmp_path / "runs" / "cpu" / "t"
    for s in range(3):
        job(sweep / str(s), ["variant=p/base"], s, 0.7, 0.50 + s / 100, train_clean=clean)
        job(sweep / str(3 + s), ["variant=p/better"], s, 0.8, 0.52 + 2 * s / 100, train_clean=clean)
    (sweep / "multirun.yaml").write_text("hydra:\n  overrides:\n    task: [experiment=results/t]\n  sweep: {dir: x}\n")
    return results_page.page(tmp_path / "runs", tmp_path / "docs" / "results.md", tmp_path / "conf")


def test_a_failed_premise_stops_the_claims_of_its_part(tmp_path):
    text = _page(tmp_path, clean=0.52)  # clean train 52 vs test 50-52: no overfitting
    summary = text[text.index("## Summary") : text.index("## Method")]
    departs = " (setup: batch 128 (the source's, 256))"
    assert f"| A0 | [Part A: premise: the base net overfits{departs}](#t) | lecture | - | **fails** |" in summary
    claim = f"| A1 | [Part A: a better net does better{SETUP}](#t) | lecture | lecture: test ~89% |"
    assert f"{claim} **premise failed: the base net overfits** |" in summary
    assert "**Premise failed:** the base net overfits." in text and "**supports**" not in summary


def test_a_premise_of_named_claims_stops_those_alone(tmp_path):
    scoped = PRESET.replace("      premise: true\n", "      premise: true\n      premise_of: [A1]\n", 1)
    text = _page(tmp_path, clean=0.52, preset=scoped)
    summary = text[text.index("## Summary") : text.index("## Method")]
    a1 = f"| A1 | [Part A: a better net does better{SETUP}](#t) | lecture | lecture: test ~89% | "
    assert f"{a1}**premise failed: the base net overfits** |" in summary
    other = "[Part A: better trains better than base (setup: batch 128 (the source's, 256))](#t) | project | - | "
    assert f"| - | {other}**inconclusive** |" in summary  # judged: the failed premise is A1's, not this claim's
    assert "**Premise failed:** the base net overfits. A1 is not judged at this scale." in text


def test_claims_carry_ids_source_figures_units_and_what_seeds_resolve(tmp_path):
    text = _page(tmp_path, clean=0.95)
    summary = text[text.index("## Summary") : text.index("## Method")]
    half = 100 * T_975_2 * 0.01 / math.sqrt(3)  # better - base: +2, +3, +4 points, sd 1
    assert (
        f"| A1 | [Part A: a better net does better{SETUP}](#t) | lecture | lecture: test ~89% | **supports** | "
        f"CIFAR-10 (JPEG q75 copy): Δ +3.00 [{3 - half:+.2f}, {3 + half:+.2f}] points of test accuracy "
        f"| ±{half:.2f} |"
    ) in summary
    # +10 points every seed: zero variance, flagged, no interval and nothing it resolves
    assert (
        "| - | [Part A: better trains better than base (setup: batch 128 (the source's, 256))](#t) | project | - | "
        "**inconclusive** | CIFAR-10 (JPEG q75 "
        "copy): Δ +10.00 (zero variance: every seed gave the same, no interval) points of train accuracy | - |"
    ) in summary
    assert "| A2 | [Part A](#t) | - | - | **not run at this scale** | no outcome in the text | - |" in summary
    # one claim's interval (A1; a premise's is no claim): 5% of one decided by chance, one decided on the page
    assert "1 claim verdict(s) above rest on a 95% interval; were every effect zero,\nabout 0.1 of them (5%)" in text
    assert "*supports* or *contradicts*. The page shows 1." in text
    assert f"- **A1** a better net does better (checked as: better beats base; lecture: test ~89%){SETUP}" in text
    assert "- **A2** not run at this scale: no outcome in the text" in text


def test_reaches_params_and_cited_claims(tmp_path):
    base = table(tmp_path / "a", {"net": {s: {"train": 0.9, "test_last": 0.88, "extra": {"params": 61706}} for s in S}})
    row = base.row("variant=p/net")
    assert premises.reaches({"row": "variant=p/net", "at_least": 0.85}, row, "test_last").passed is True
    assert premises.reaches({"row": "variant=p/net", "at_least": 0.89}, row, "test_last").passed is False
    assert premises.params({"row": "variant=p/net", "equals": 61706}, row).passed is True
    assert premises.params({"row": "variant=p/net", "equals": 61707}, row).effect == (
        "61,706 parameters (structural check: 61,707)"
    )
    cited = claims.check({"says": "fp16", "cited": "docs/benchmarks.md"}, base, "test_last", 0.1)
    assert (cited.verdict, cited.effect) == (claims.CITED, "docs/benchmarks.md")


def test_an_interval_wider_than_the_source_effect_asks_for_more_seeds(tmp_path):
    # better - base per seed: +1, -1, +3 points: inconclusive, half-width 4.30 * 2 / sqrt(3) = 4.97 points
    runs = {"base": {s: {"train": 0.5, "test_last": 0.5} for s in S},
            "better": {s: {"train": 0.5, "test_last": 0.5 + d} for s, d in zip(S, (0.01, -0.01, 0.03))}}
    t = table(tmp_path, runs)
    claim = {"says": "x", "better": ["variant=p/better", "variant=p/base"], "metric": "test"}
    half = T_975_2 * 0.02 / math.sqrt(3)
    assert claims.check({**claim, "source_effect": 6.0}, t, "test_last", 0.1).verdict == claims.INCONCLUSIVE
    asked = claims.check({**claim, "source_effect": 0.4}, t, "test_last", 0.1)
    assert asked.verdict == (
        f"inconclusive: ±{100 * half:.2f} cannot resolve the source's +0.40 at 3 seeds, add seeds (up to 5)"
    )
    assert claims.check(claim, t, "test_last", 0.1).verdict == claims.INCONCLUSIVE  # no source effect: nothing asked
