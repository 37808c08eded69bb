"""docs/results.md from run records, without training: hand-written records in a tmp dir give the numbers, verdicts,
flags and summary the page prints, byte for byte the same on a rebuild; `records` copies nothing large; the
committed page is what `make results-page` rebuilds from the committed records (docs/results/runs/)."""

import filecmp
import math
import re
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, compose_cfg
from fake_records import job

from trickbench.report import records, results_lr, results_page, results_tables
from trickbench.report.lr_curves import first_decay_problem
from trickbench.report.results_sections import Preset

T_975_2 = 4.302653  # Student t 97.5% quantile, 2 degrees of freedom


def build(root: Path, out: Path) -> str:
    results_page.main(["--root", str(root), "--out", str(out)])
    return out.read_text()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Part B at CPU scale, 3 seeds: sigmoid_9conv at chance with one class (zero variance against sigmoid_3block),
    relu_9conv training; sigmoid_3block run in another precision. Part D: a baseline whose records log the lr each
    epoch trained at, a warmup rung whose records predate that (and one of its records without a config); a pilot
    outside the sittings."""
    tmp = tmp_path_factory.mktemp("site")
    logs = tmp / "logs" / "results"
    b = logs / "cpu" / "part_b" / "sweep"
    n = 0
    rows = {
        "sigmoid_9conv": {s: (0.10, 0.10) for s in range(3)},
        "sigmoid_3block": {s: (0.10, 0.10) for s in range(3)},
        "relu_9conv": {0: (0.60, 0.40), 1: (0.64, 0.43), 2: (0.68, 0.43)},
    }
    for variant, accs in rows.items():
        for seed, (train, test) in accs.items():
            precision = "bf16-mixed" if variant == "sigmoid_3block" else "32-true"
            job(b / str(n), [f"variant=part_b/{variant}"], seed, train, test, precision=precision)
            n += 1
    (b / "multirun.yaml").write_text(
        "hydra:\n  sweep:\n    dir: logs/results/cpu/part_b\n"
        "  overrides:\n    task: [experiment=results/part_b, scale=cpu, resume=x]\n"
    )
    d = logs / "cpu" / "part_d" / "sweep"
    for seed in range(3):
        lr = [0.1 * (e + 1) / 2 if e < 2 else 0.1 for e in range(8)]
        job(d / str(seed), ["variant=part_d/baseline"], seed, 0.5, 0.45, curve=[0.1 * e for e in range(8)], lr=lr)
        job(d / str(3 + seed), ["variant=part_d/warmup"], seed, 0.5, 0.46 + seed / 100)
    job(logs / "cpu" / "pilot" / "0", ["variant=part_d/baseline"], 0, 0.5, 0.45)
    (logs / "cpu" / "part_b" / "sweep" / "0" / "checkpoints").mkdir()
    (logs / "cpu" / "part_b" / "sweep" / "0" / "checkpoints" / "last.ckpt").write_bytes(b"large")
    runs = tmp / "docs" / "results" / "runs"
    copied = records.copy_records(logs, runs)
    (runs / "cpu" / "part_d" / "sweep" / "4" / ".hydra" / "config.yaml").unlink()  # a record copied before the fix
    (runs / "cpu" / "sittings.txt").write_text("0 100 3600\n100 200 1800\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)  # the page names folders relative to where the command runs
        text = build(Path("docs/results/runs"), Path("docs/results.md"))
    return runs, tmp / "docs" / "results.md", text, len(copied)


def test_records_copy_only_the_small_files(site):
    runs, _, _, copied = site
    assert copied == 16
    files = sorted(str(p.relative_to(runs)) for p in runs.rglob("*") if p.is_file())
    assert "cpu/part_b/sweep/0/results.json" in files and "cpu/part_b/sweep/multirun.yaml" in files
    assert not [f for f in files if "ckpt" in f or "tensorboard" in f]
    names = {"results.json", "metrics.csv", "config.yaml", "multirun.yaml", "sittings.txt"}
    assert {Path(f).name for f in files} == names


def test_numbers_paired_intervals_and_flags(site):
    text = site[2]
    # relu_9conv - sigmoid_9conv on train (Part B's figure): .50 .54 .58 -> mean 54, sd 4 points
    half = 100 * T_975_2 * 0.04 / math.sqrt(3)
    assert f"Δ +54.00 [{54 - half:+.2f}, {54 + half:+.2f}] points of train accuracy | ±{half:.2f} |" in text
    # the table: train, best val, test (best val), test (last), then Δ train vs the baseline; precision differs
    assert (
        "| relu_9conv | 0 1 2 | 64.00 ± 4.00 | 43.00 ± 1.73 | 42.00 ± 1.73 | 42.00 ± 1.73 "
        f"| +54.00 [{54 - half:+.2f}, {54 + half:+.2f}] | 8 | 11 | 32-true | cpu "
        "| CIFAR-10 (JPEG q75 copy) |"
    ) in text
    assert "| sigmoid_3block | 0 1 2 | 10.00 ± 0.00 |" in text and "| bf16-mixed | cpu |" in text
    # every seed the same difference: flagged, never "+0.00 [+0.00, +0.00]"
    assert "+0.00 (zero variance: every seed gave the same, no interval)" in text
    assert "[+0.00, +0.00]" not in text


def test_verdicts_premises_and_summary(site):
    text = site[2]
    part_b = text[text.index('<a id="part_b">') : text.index('<a id="part_b_solutions">')]
    # premises first, before what the runs trained; "does not learn" reads the test split's own accuracy
    assert part_b.index("Premises, checked first") < part_b.index("Trained:")
    assert (
        "- 9 sigmoid convs: the network does not learn (vanishing gradient): **holds** (CIFAR-10 (JPEG q75 copy): train 10.00, test 10.00 vs "
        "chance 10 (absolute check: both within 2 points))" in part_b
    )
    assert "- the same 9 convs with ReLU train: **holds** (CIFAR-10 (JPEG q75 copy): train 64.00" in part_b
    assert "| 9 sigmoid convs train worse than 3 blocks | **inconclusive** |" in text  # zero variance
    assert "| 9 convs with ReLU: training accuracy reaches 99% | **supports** |" in text
    b_setup = " (setup: batch 128 at the CPU scale (the lecture's 256 at the GPU scale))"  # results.departs
    assert ("| B5 | [Part B: 12 ReLU convs, Glorot uniform, [0,1] data: the network does not learn"
            f"{b_setup}](#part_b) | lecture | lecture: not stated (at chance) | **not measured yet** |") in text
    # Part D's preset names no run twice as long: its premise cannot be judged, and the page says so
    assert "- the baseline has converged for its length (twice as long gains under 1.5 points of test accuracy): **cannot be judged**" in text
    assert "**Premise not checked:** the baseline has converged for its length (twice as long gains under 1.5 points of test accuracy)." in text
    summary = text[text.index("## Summary") : text.index("## Method")]
    relu = (f"| B4 | [Part B: 9 convs with ReLU: training accuracy reaches 99%{b_setup}](#part_b) | lecture | "
            "lecture: train ~99% | **supports** |")
    vgg = ("| - | [Part A: VGG16 beats LeNet-5 (setup: batch 128 (the slides' 1024, drop_last))](#part_a) | project | - "
           "| **not run at this scale** | vgg16: 15 M")
    assert relu in summary and vgg in summary
    assert summary.count("| **not measured yet** | - | - |") > 20  # the GPU columns, and what did not run
    assert text.count("GPU: not measured yet") == 5 and text.count("CPU: not measured yet") == 3
    assert '<a id="part_b"></a>' in text and "Verdicts and Δ use the\nlast epoch's test accuracy" in text


def test_precision_records_without_config_lr_and_wall_time(site):
    text = site[2]
    assert "conv widths [16, 32, 64, 128]; precision 32-true, bf16-mixed." in text
    assert "Records without a config (1 of 6: jobs first started in a `resume=` sitting" in text
    assert "`.hydra/resumed-<time>/`): jobs 4." in text
    # the lr drawn is the one the records logged; the warmup rung's records predate that log: said, not simulated
    assert "The lr each epoch trained at, as the runs logged it (metrics.csv `lr`: the lr of each epoch's first" in text
    assert "lr schedule of warmup: not drawn. These records predate the per-epoch lr" in text
    # the sittings' 1.50 h beside the parts' 15 jobs (part_b 9 of 10 + seed s, part_d 6): 165 s; the pilot apart
    assert "1.50 h of wall time over 2 sitting(s) of `make reproduce`, which ran the parts' 15 jobs" in text
    assert f"({165 / 3600:.2f} h summed over them" in text
    assert f"- outside the sittings, `pilot`: 1 job(s), {10 / 3600:.2f} h summed." in text


def test_page_and_pngs_rebuild_byte_for_byte(site, tmp_path):
    runs, out, text, _ = site
    again = tmp_path / "docs" / "results.md"
    shutil.copytree(runs, tmp_path / "docs" / "results" / "runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)  # the same relative paths as the first build
        build(Path("docs/results/runs"), Path("docs/results.md"))
    first = out.with_suffix("")
    pngs = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert [p for p in pngs if p.name.endswith("_lr.png")] == [Path("cpu/part_d_lr.png")]  # the logged lr only
    assert Path("cpu/part_b_cifar10_jpeg_q75_copy/val_acc.png") in pngs
    assert all(filecmp.cmp(first / p, again.with_suffix("") / p, shallow=False) for p in pngs)
    assert again.read_text() == text


def test_schedule_rule_refuses_a_decay_right_after_the_warmup():
    # the old CPU Part D: milestones [0, 1] after 2 warmup epochs of 4: the lr falls tenfold at the warmup's end
    cfg = compose_cfg(
        [
            "experiment=results/part_d",
            "scale=cpu",
            "variant=part_d/warmup",
            "trainer.max_epochs=4",
            "scheduler.warmup_epochs=2",
            "scheduler.lr_scheduler.milestones=[0,1]",
        ]
    )
    assert "within 10% of the run after the warmup" in first_decay_problem(cfg)
    assert first_decay_problem(compose_cfg(["experiment=results/part_d", "scale=cpu", "variant=part_d/warmup"])) is None


def test_committed_page_is_rebuilt_from_committed_records(tmp_path):
    out = tmp_path / "results.md"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        text = build(Path("docs/results/runs"), out)
    assert text == (ROOT / "docs" / "results.md").read_text()
    committed = ROOT / "docs" / "results"
    made = sorted(p.relative_to(out.with_suffix("")) for p in out.with_suffix("").rglob("*.png"))
    assert made == sorted(p.relative_to(committed) for p in committed.glob("[cg]pu/**/*.png"))
    assert all(filecmp.cmp(out.with_suffix("") / p, committed / p, shallow=False) for p in made)


def test_lr_plot_draws_the_lr_each_epoch_logged(tmp_path, monkeypatch):
    lr = [0.05, 0.1, 0.1, 0.01]
    for seed in (1, 0):
        job(tmp_path / "sweep" / str(seed), ["variant=part_d/baseline"], seed, 0.5, 0.4, curve=[0.5] * 4, lr=lr)
    (found,), _ = results_tables.tables(tmp_path / "sweep", None)
    drawn = {}
    monkeypatch.setattr(results_lr.results_plots, "lr_plot", lambda curves, title, out: drawn.update(curves) or out)
    preset = Preset("part_d", {"part": "D", "baseline": "variant=part_d/baseline"}, "")
    lines = results_lr.lr_lines(preset, "cpu", [found], tmp_path / "results.md")
    assert drawn == {"baseline (seed 0)": (lr, 1)} and "not drawn" not in "\n".join(lines)


DIGEST = ROOT.parent / "shared" / "sources" / "lecture-claims.md"
UNJUDGED_KINDS = ("none", "setup", "general")  # the digest's rows with no claim to check (A2, A4, D0, D13, E1-E9)


@pytest.mark.skipif(not DIGEST.exists(), reason="../shared/sources/lecture-claims.md is not on this machine")
def test_every_claim_of_the_digest_is_on_the_page():
    table = DIGEST.read_text().split("## 7. Claims table", 1)[1]
    ids = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"[A-D]\d+b?", cells[0]) and cells[3] not in UNJUDGED_KINDS:
            ids.append(cells[0])
    assert len(ids) == 41  # A1 A3 A5 A6 A7, B0-B12 and B2b, C0-C9, D1-D12
    page = (ROOT / "docs" / "results.md").read_text()
    summary = page[page.index("## Summary") : page.index("## Method")]
    shown = {line.split("|")[1].strip() for line in summary.splitlines() if line.startswith("| ")}
    assert sorted(set(ids) - shown) == []
