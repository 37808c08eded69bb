"""The sweep report's numbers against hand computations, on job folders written by the test."""

import csv
import json
import math
from pathlib import Path

import pytest

from trickbench.loggers import COLUMNS
from trickbench.report import main, paired_ci, write_report

T_975 = {1: 12.706205, 2: 4.302653}  # Student t 97.5% quantiles (printed tables) for 1 and 2 degrees of freedom


def _job(folder: Path, overrides: list[str], seed: int, acc: float | None, val_curve=(), status="ok", error=None):
    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    results = {
        "status": status,
        "error": error,
        "overrides": [*overrides, f"seed={seed}", "hydra.launcher.n_jobs=2"],
        "seed": seed,
    }
    if status == "ok":
        results |= {
            "test": {"acc": acc, "loss": 0.5},
            "val": {"acc_best": max(val_curve), "acc_last": val_curve[-1]},
            "train": {"acc_last": acc + 0.1, "loss_last": 0.3},
            "wall_time_s": 10.0 + seed,
            "params": 1234,
            "dataset": "fashion_mnist",
        }
        with open(folder / "metrics.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, COLUMNS)
            w.writeheader()
            for e, v in enumerate(val_curve):
                w.writerow({"epoch": e, "step": 10 * (e + 1), "train_loss": 1.0 / (e + 1), "val_acc": v})
    (folder / "results.json").write_text(json.dumps(results))


@pytest.fixture
def sweep(tmp_path):
    """trick=none (baseline, first) and trick=bn over seeds 0-2, trick=he over seed 0 only, one failed job."""
    root = tmp_path / "sweep"
    fixed = ["data.subset=100"]
    base = {0: 0.80, 1: 0.82, 2: 0.84}
    bn = {0: 0.85, 1: 0.86, 2: 0.90}
    n = 0
    for name, accs in (("none", base), ("bn", bn)):
        for seed, acc in accs.items():
            _job(root / str(n), [*fixed, f"trick={name}"], seed, acc, val_curve=(acc - 0.1, acc - 0.02, acc))
            n += 1
    _job(root / str(n), [*fixed, "trick=he"], 0, 0.70, val_curve=(0.5, 0.6, 0.7))
    _job(root / str(n + 1), [*fixed, "trick=bad"], 0, None, status="failed", error="optimizer.lr=-1: a number > 0")
    _job(root / ".submitit" / "123", [*fixed, "trick=ghost"], 0, 0.99, val_curve=(0.99,))  # launcher files: ignored
    return root, base, bn


def _csv_rows(path: Path) -> dict[str, dict]:
    with open(path) as fh:
        return {r["config"]: r for r in csv.DictReader(fh)}


def test_report_numbers_match_a_hand_computation(sweep):
    root, base, bn = sweep
    write_report([root], target_acc=0.835)
    rows = _csv_rows(root / "report.csv")
    assert set(rows) == {"trick=none", "trick=bn", "trick=he", "trick=bad"}  # fixed overrides dropped from labels

    b = rows["trick=none"]
    assert b["baseline"] == "True" and b["n_ok"] == "3"
    assert float(b["test_acc_mean"]) == pytest.approx(0.82)
    assert float(b["test_acc_std"]) == pytest.approx(0.02)  # sample std of .80 .82 .84

    r = rows["trick=bn"]
    diffs = [bn[s] - base[s] for s in (0, 1, 2)]  # 0.05, 0.04, 0.06
    half = T_975[2] * 0.01 / math.sqrt(3)  # sd of the diffs is 0.01
    assert float(r["diff_mean"]) == pytest.approx(sum(diffs) / 3)
    assert float(r["diff_ci_low"]) == pytest.approx(0.05 - half, rel=1e-5)
    assert float(r["diff_ci_high"]) == pytest.approx(0.05 + half, rel=1e-5)
    assert float(r["test_acc_mean"]) == pytest.approx(0.87)
    assert float(r["val_acc_best_mean"]) == pytest.approx(0.87)
    assert float(r["train_acc_last_mean"]) == pytest.approx(0.97)
    assert float(r["wall_time_s_mean"]) == pytest.approx(11.0)
    # val curves (acc-0.1, acc-0.02, acc) against 0.835: seed 0 .75 .83 .85 -> 3 epochs; seed 1 .76 .84 -> 2;
    # seed 2 .80 .88 -> 2
    assert float(r["epochs_to_target_mean"]) == pytest.approx((3 + 2 + 2) / 3)
    assert r["target_reached"] == "3/3"

    he = rows["trick=he"]  # one seed: a difference but no interval
    assert float(he["diff_mean"]) == pytest.approx(0.70 - 0.80)
    assert he["diff_ci_low"] == "" and he["test_acc_std"] == ""
    assert rows["trick=bad"]["status"] == "1 failed" and rows["trick=bad"]["n_ok"] == "0"
    # sorted by mean test acc, configurations without a finished run last
    assert list(rows) == ["trick=bn", "trick=none", "trick=he", "trick=bad"]


def test_report_markdown_and_plots(sweep):
    root, _, _ = sweep
    write_report([root], target_acc=0.835)
    md = (root / "report.md").read_text()
    assert "| **trick=none** (baseline) | 0 1 2 | 82.00 ± 2.00 | baseline |" in md
    half = 100 * T_975[2] * 0.01 / math.sqrt(3)
    assert f"| trick=bn | 0 1 2 | 87.00 ± 2.65 | +5.00 [{5 - half:+.2f}, {5 + half:+.2f}] |" in md
    assert "| trick=he | 0 | 70.00 | -10.00 n/a (one seed) |" in md
    assert "optimizer.lr=-1: a number > 0" in md and "ghost" not in md
    for png in ("val_acc.png", "train_loss.png", "test_acc_delta.png"):
        assert (root / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({png})" in md


def test_report_merges_folders_and_takes_a_named_baseline(sweep, tmp_path, capsys):
    root, base, _ = sweep
    more = tmp_path / "more"
    _job(more / "0", ["data.subset=100", "trick=he"], 1, 0.74, val_curve=(0.7, 0.74))
    assert main([str(root), str(more), "--baseline", "trick=he", "--target-acc", "0.5"]) == 0
    rows = _csv_rows(root / "report.csv")
    he = rows["trick=he"]
    assert he["baseline"] == "True" and he["seeds"] == "0 1" and float(he["test_acc_mean"]) == pytest.approx(0.72)
    # paired over the seeds both have: none - he at seeds 0 and 1 = 0.10, 0.08
    assert float(rows["trick=none"]["diff_mean"]) == pytest.approx(0.09)
    low = 0.09 - T_975[1] * math.sqrt(0.0002) / math.sqrt(2)
    assert float(rows["trick=none"]["diff_ci_low"]) == pytest.approx(low, rel=1e-5)
    assert "report" in capsys.readouterr().out.lower()


def test_report_cli_rejects_a_bad_folder_and_baseline(sweep, tmp_path, capsys):
    root, _, _ = sweep
    assert main([str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main([str(root), "--baseline", "trick=absent"]) == 2
    assert "report.baseline='trick=absent': one of the configurations" in capsys.readouterr().err


def test_paired_ci_edge_cases():
    assert paired_ci([]) == (None, None, None)
    assert paired_ci([0.03]) == (0.03, None, None)
    mean, low, high = paired_ci([0.01, 0.03])
    assert mean == pytest.approx(0.02) and high - mean == pytest.approx(T_975[1] * math.sqrt(0.0002) / math.sqrt(2))


def test_report_shows_precision_only_where_rows_differ(sweep):
    root, _, _ = sweep
    write_report([root], target_acc=0.835)
    header = next(line for line in (root / "report.md").read_text().splitlines() if line.startswith("| config |"))
    assert "precision" not in header  # every run in the same (unrecorded) precision
    for path in root.glob("*/results.json"):  # trick=bn ran in bf16 (another machine), the rest in fp32
        results = json.loads(path.read_text())
        results["precision"] = "bf16-mixed" if "trick=bn" in results["overrides"] else "32-true"
        path.write_text(json.dumps(results))
    write_report([root], target_acc=0.835)
    md = (root / "report.md").read_text()
    assert "| wall s | params | precision | status |" in md
    assert "| 1234 | bf16-mixed | 3 ok |" in md and "| 1234 | 32-true | 3 ok |" in md
    assert _csv_rows(root / "report.csv")["trick=bn"]["precision"] == "bf16-mixed"
