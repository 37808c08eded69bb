"""Smoke tests of the benchmark scripts (they measure speed; these only check that they run): each runs with
--device cpu for a few steps on a tiny mirror and prints its markdown row; the speedrun's export for airbench
round-trips. In-process (main(argv)), as `python benchmarks/<script>.py` would run them: a subprocess would spend
most of the time budget importing torch and Lightning again."""

import json
import re
import statistics
import sys

import pytest
import torch
from conftest import CIFAR_CLASSES, ROOT

from trickbench.data.sources import load_imagefolder

sys.path.insert(0, str(ROOT / "benchmarks"))  # what running a script there puts first on the path
import cpu  # noqa: E402
import overhead  # noqa: E402
import parity  # noqa: E402
import speedrun  # noqa: E402
import sync_check  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def row_cells(out: str, marker: str) -> list[str]:
    """The cells after the date of the one table row that contains marker."""
    rows = [line for line in out.splitlines() if line.startswith("| ") and marker in line]
    assert len(rows) == 1, out[-3000:]
    day, *cells = (cell.strip() for cell in rows[0].strip().strip("|").split("|"))
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", day)
    return cells


def number(cell: str) -> float:
    """The leading number of a cell such as '0.38 (0.37, 0.38)' or '**0.916**' or '1,234'."""
    return float(re.match(r"[*+]*(-?[\d,.]+)", cell).group(1).replace(",", ""))


def runs(cell: str) -> list[float]:
    """The per-run values in a cell's parentheses."""
    return [float(v.replace(",", "")) for v in cell.split("(")[1].rstrip(")").split(", ")]


def test_overhead_smoke(fmnist_mirror, tmp_path, capsys):
    overhead.main(
        ["--device", "cpu", "--setting", "cpu_default", "--source", str(fmnist_mirror), "--data-root", str(tmp_path)]
        + ["--warmup", "0", "--repeats", "2", "--epochs", "2", "--subset", "160", "--limit-batches", "2"]
        + ["--set", "model.channels=[4,8]", "--set", "model.head=[16]", "--json", str(tmp_path / "o.json")]
    )
    out = capsys.readouterr().out
    cells = row_cells(out, "cpu_default")
    assert cells[0].startswith("CPU") and cells[1] == "cpu_default, 2 ep x 2 pairs"
    assert len(runs(cells[2])) == len(runs(cells[3])) == 2
    # the ratio is the median of the pairs' ratios of steady epochs (the second here), from the unrounded numbers
    measured = json.loads((tmp_path / "o.json").read_text())["measured"][0]
    bare, ours = ([run["epoch_s"][1] for run in measured[side]] for side in ("bare", "trickbench"))
    assert min(bare + ours) > 0
    ratio = statistics.median(o / b for o, b in zip(ours, bare, strict=True))
    assert number(cells[4]) == pytest.approx(ratio, abs=1e-3)
    assert number(cells[5]) > 0 and number(cells[6]) > 0 and number(cells[7]) > 0
    assert "python benchmarks/overhead.py --device cpu --setting cpu_default" in out


def test_speedrun_smoke_and_airbench_export(cifar_tarball, tmp_path, capsys):
    export = tmp_path / "export"
    speedrun.main(
        ["--device", "cpu", "--source", str(cifar_tarball), "--data-root", str(tmp_path), "--export-dir", str(export)]
        + ["--warmup", "0", "--seeds", "1", "--subset", "160", "--limit-batches", "2"]
        # CPU: no torch.compile (minutes of C++ builds), fp32, a narrow net; 4 of the preset's 10 epochs: its
        # Lookahead starts after epoch 3
        + ["--set", "compile=false", "--set", "trainer.precision=null", "--set", "model.widths=[8,16,16]"]
        + ["--set", "trainer.max_epochs=4"]
    )
    out = capsys.readouterr().out
    assert "airbench94: not run: it needs CUDA" in out
    cells = row_cells(out, "train 128 / 200 images")
    assert cells[3:6] == ["n/a"] * 3 and cells[9:] == ["n/a"] * 3
    acc, fit_s, wall_s = (number(c) for c in cells[6:9])
    assert 0 <= acc <= 100 and 0 < fit_s <= wall_s

    decoded = load_imagefolder(cifar_tarball, 3, CIFAR_CLASSES)  # what the template's datamodule reads
    for split, images, labels in (
        ("train", decoded.train_x, decoded.train_y),
        ("test", decoded.test_x, decoded.test_y),
    ):
        saved = torch.load(export / "cifar10" / f"{split}.pt")  # what airbench.CifarLoader loads
        assert saved["images"].dtype == torch.uint8 and saved["images"].shape == (len(labels), 32, 32, 3)
        assert torch.equal(saved["images"], images.permute(0, 2, 3, 1))
        assert torch.equal(saved["labels"], labels) and saved["labels"].dtype == torch.int64
        assert saved["classes"] == CIFAR_CLASSES


def test_sync_check_smoke(cifar_tarball, tmp_path, capsys):
    """On a CPU nothing is counted (set_sync_debug_mode watches CUDA calls), but the watched run and the verdict
    row run as on a GPU: the checked batches are the first, Lightning's logging batches and each epoch's last."""
    code = sync_check.main(
        ["--device", "cpu", "--source", str(cifar_tarball), "--data-root", str(tmp_path), "--subset", "160"]
        + ["--batches", "12", "--set", "data.batch_size=8", "--set", "model.width=4"]
        + ["--set", "data.eval_batch_size=32"]
    )
    cells = row_cells(capsys.readouterr().out, "resnet18_bf16")
    assert code == 0 and cells[2] == "24"
    assert cells[3] == "5"  # steps 0, 9 (logging), 11 (epoch end), 19 (logging), 23 (epoch end)
    assert cells[4:] == ["0", "0", "CPU: no CUDA calls to watch"]


def test_cpu_benchmark_smoke(fmnist_mirror, tmp_path, capsys):
    """The four sides run in one process; each row's GFLOP/s is its images/s times the counted FLOPs per image."""
    cpu.main(
        ["--net", "cnn", "--source", str(fmnist_mirror), "--data-root", str(tmp_path), "--subset", "160"]
        + ["--batches", "2", "--rounds", "1", "--warmup", "0", "--json", str(tmp_path / "c.json")]
    )
    out = capsys.readouterr().out
    measured = json.loads((tmp_path / "c.json").read_text())["measured"][0]
    assert measured["flops_per_image"] > 0
    for side in cpu.SIDES:
        cells = row_cells(out, f"| {side} |")
        ips = measured["images_per_s"][side][0]
        assert number(cells[3]) == pytest.approx(ips, abs=1)
        assert number(cells[4]) == pytest.approx(ips * measured["flops_per_image"] / 1e9, rel=0.05, abs=0.06)
    assert "fp32 lanes x 2 FLOP x" in out or "native bf16: False" in out


def test_parity_table_pairs_seeds(tmp_path, capsys):
    """The parity row from a case's sweep folder: the paired bf16 - fp32 difference per seed and its interval."""
    accs = {("32-true", 0): 0.80, ("32-true", 1): 0.70, ("32-true", 2): 0.75}
    accs |= {("bf16-mixed", 0): 0.81, ("bf16-mixed", 1): 0.70, ("bf16-mixed", 2): 0.76}
    for job, ((precision, seed), acc) in enumerate(accs.items()):
        (tmp_path / "cnn_fashion" / str(job)).mkdir(parents=True)
        results = {"status": "ok", "seed": seed, "overrides": [f"trainer.precision={precision}", f"seed={seed}"]}
        results |= {"test": {"acc": acc}, "train": {"acc_last": acc}, "images_per_s": 100 if "32" in precision else 150}
        (tmp_path / "cnn_fashion" / str(job) / "results.json").write_text(json.dumps(results))
    with pytest.raises(SystemExit) as done:
        parity.main(["--case", "cnn_fashion", "--out", str(tmp_path), "--table-only"])
    assert done.value.code == 0
    cells = row_cells(capsys.readouterr().out, "| cnn_fashion |")
    diffs = [1.0, 0.0, 1.0]  # points, seed by seed (unpaired, the seeds' spread of 5 points would hide them)
    assert number(cells[4]) == pytest.approx(statistics.fmean(diffs), abs=0.01)
    half = 4.303 * statistics.stdev(diffs) / 3**0.5  # t(2) at 97.5%
    low, high = (float(v) for v in re.findall(r"[-+][\d.]+", cells[4].split("[")[1]))
    assert (low, high) == pytest.approx((statistics.fmean(diffs) - half, statistics.fmean(diffs) + half), abs=0.01)
    assert cells[5] == "**yes**" and number(cells[7]) == pytest.approx(1.5)
