"""docs/results.md from run records, without training: hand-written records in a tmp dir give the numbers, verdicts,
flags and summary the page prints, byte for byte the same on a rebuild; `records` copies nothing large; the
committed page is what `make results-page` rebuilds from the committed records (docs/results/runs/)."""

import filecmp
import math
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, compose_cfg
from fake_records import job

from trickbench.report import records, results_page
from trickbench.report.lr_curves import first_decay_problem

T_975_2 = 4.302653  # Student t 97.5% quantile, 2 degrees of freedom


def build(root: Path, out: Path) -> str:
    results_page.main(["--root", str(root), "--out", str(out)])
    return out.read_text()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Part B at CPU scale, 3 seeds: sigmoid_9conv at chance with one class (zero variance against sigmoid_3block),
    relu_9conv training; sigmoid_3block run in another precision. Part D: a baseline still rising (premise failed)."""
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
        job(d / str(seed), ["variant=part_d/baseline"], seed, 0.5, 0.45, curve=[0.1 * e for e in range(8)])
    (logs / "cpu" / "part_b" / "sweep" / "0" / "checkpoints").mkdir()
    (logs / "cpu" / "part_b" / "sweep" / "0" / "checkpoints" / "last.ckpt").write_bytes(b"large")
    runs = tmp / "docs" / "results" / "runs"
    copied = records.copy_records(logs, runs)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)  # the page names folders relative to where the command runs
        text = build(Path("docs/results/runs"), Path("docs/results.md"))
    return runs, tmp / "docs" / "results.md", text, len(copied)


def test_records_copy_only_the_small_files(site):
    runs, _, _, copied = site
    assert copied == 12
    files = sorted(str(p.relative_to(runs)) for p in runs.rglob("*") if p.is_file())
    assert "cpu/part_b/sweep/0/results.json" in files and "cpu/part_b/sweep/multirun.yaml" in files
    assert not [f for f in files if "ckpt" in f or "tensorboard" in f]
    assert {Path(f).name for f in files} == {"results.json", "metrics.csv", "config.yaml", "multirun.yaml"}


def test_numbers_paired_intervals_and_flags(site):
    text = site[2]
    # relu_9conv - sigmoid_9conv on train (Part B's figure): .50 .54 .58 -> mean 54, sd 4 points
    half = 100 * T_975_2 * 0.04 / math.sqrt(3)
    assert f"Δ final train accuracy +54.00 [{54 - half:+.2f}, {54 + half:+.2f}]" in text
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
    assert (
        "| premise: 9 sigmoid convs stay at chance (10%) | **supports** | CIFAR-10 (JPEG q75 copy): train 10.00, "
        "test 10.00 vs chance 10 (absolute check: both within 2 points) |" in text
    )
    assert "| premise: the same 9 convs with ReLU train | **supports** |" in text
    assert "| 9 sigmoid convs train worse than 3 blocks | **inconclusive** |" in text  # zero variance
    assert "| ReLU trains the 9 convs better than sigmoid | **supports** |" in text
    assert "| 12 ReLU convs train worse than 9 (Glorot init, no batch norm) | **not measured yet** |" in text
    # Part D's baseline still rose 0.1 an epoch: its premise fails, said plainly above its table
    assert "**Premise failed:** the baseline trains close to convergence for its length: contradicts" in text
    summary = text[text.index("## Summary") : text.index("## Method")]
    assert "| [Part B: ReLU trains the 9 convs better than sigmoid](#part_b) | lecture | **supports** |" in summary
    assert "| [Part A: VGG16 beats LeNet-5](#part_a) | lecture | **not run at this scale** | vgg16: 15 M" in summary
    assert summary.count("| **not measured yet** | - |") > 20  # the GPU columns, and what did not run
    assert text.count("GPU: not measured yet") == 5 and text.count("CPU: not measured yet") == 3
    assert '<a id="part_b"></a>' in text and "Verdicts and Δ use the\nlast epoch's test accuracy" in text


def test_page_and_pngs_rebuild_byte_for_byte(site, tmp_path):
    runs, out, text, _ = site
    again = tmp_path / "docs" / "results.md"
    shutil.copytree(runs, tmp_path / "docs" / "results" / "runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)  # the same relative paths as the first build
        build(Path("docs/results/runs"), Path("docs/results.md"))
    first = out.with_suffix("")
    pngs = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert Path("cpu/part_b_lr.png") in pngs and Path("gpu/part_d_lr.png") in pngs
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
