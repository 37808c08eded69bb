"""The Pilots section of docs/results.md: each curve pilot's train accuracy along its steps, read from metrics.csv."""

from conftest import ROOT
from fake_records import job

from trickbench.report import results_pilots


def test_off_chance_is_the_first_epoch_above_the_at_chance_margin():
    metrics = [{"step": 36, "train_acc": 0.119}, {"step": 72, "train_acc": 0.12}, {"step": 108, "train_acc": 0.1201}]
    assert results_pilots.off_chance(metrics) == 108
    assert results_pilots.off_chance(metrics[:2]) is None


def test_curve_pilot_tabulates_each_job_along_its_steps(tmp_path):
    folder = tmp_path / "runs" / "cpu" / "part_b_pilot_long"
    curve = [0.1, 0.1, 0.11, 0.2, 0.3, 0.35, 0.4, 0.45]
    job(folder / "0", ["variant=part_b/sigmoid_2block"], 0, 0.35, 0.30, curve=curve)
    job(folder / "1", ["variant=part_b/relu_12conv"], 0, 0.10, 0.10, curve=[0.1] * 8)
    out = tmp_path / "docs" / "results.md"
    lines = results_pilots.curve_pilot("part_b_pilot_long", tmp_path / "runs", ROOT / "conf", out)
    table = [line for line in lines if line.startswith("|")]
    # 8 epochs of 57 steps in 4 columns: epochs 2, 4, 6, 8
    steps = " | ".join(f"train, step {s}" for s in (114, 228, 342, 456))
    assert table[0] == f"| configuration (seed) | {steps} | off chance at step | last-epoch test |"
    assert table[2] == "| sigmoid_2block (0) | 10.0 | 20.0 | 35.0 | 45.0 | 228 | 30.0 |"
    assert table[3] == "| relu_12conv (0) | 10.0 | 10.0 | 10.0 | 10.0 | never | 10.0 |"
    assert (out.parent / "results" / "cpu" / "pilot_part_b_pilot_long.png").stat().st_size > 0
    assert "2 job(s) recorded;" in " ".join(lines)
    assert "4500 CIFAR-10 training images" in lines[0]  # what the pilot asks, from its preset's header


def test_a_pilot_without_records_says_so(tmp_path):
    lines = results_pilots.curve_pilot("part_b_solutions_pilot", tmp_path, ROOT / "conf", tmp_path / "results.md")
    assert "Pilot: not run yet." in lines
