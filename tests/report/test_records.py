"""`make records`: a resumed job's config is copied from where Hydra wrote it, a job without one stops the copy in
one line, and no committed file names a machine's absolute path (the committed page and records included)."""

import json
from pathlib import Path

import pytest
from conftest import ROOT
from fake_records import job

from trickbench.report import records
from trickbench.report.record_paths import machine_paths, sanitize, sanitize_records


def test_a_resumed_job_keeps_its_config_and_a_job_without_one_stops_the_copy(tmp_path, capsys):
    logs = tmp_path / "logs" / "results" / "cpu" / "part_d"
    job(logs / "0", ["variant=part_d/baseline"], 0, 0.5, 0.4)
    job(logs / "1", ["variant=part_d/baseline"], 1, 0.5, 0.4, config=False)
    for sitting, lr in (("resumed-2026-01-02_10-00-00", 0.1), ("resumed-2026-01-03_10-00-00", 0.2)):
        (logs / "1" / ".hydra" / sitting).mkdir(parents=True)
        (logs / "1" / ".hydra" / sitting / "config.yaml").write_text(f"optimizer: {{lr: {lr}}}\n")
    runs = tmp_path / "runs"
    assert len(records.copy_records(tmp_path / "logs" / "results", runs)) == 2
    # the sitting that first ran the job, saved where every record keeps its config
    assert (runs / "cpu/part_d/1/.hydra/config.yaml").read_text() == "optimizer: {lr: 0.1}\n"
    job(logs / "2", ["variant=part_d/baseline"], 2, 0.5, 0.4, config=False)
    code = records.main(["--from", str(tmp_path / "logs" / "results"), "--to", str(tmp_path / "again")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("error: 1 job(s) have no .hydra/config.yaml")
    assert not (tmp_path / "again").exists()  # nothing copied


def test_copied_records_name_paths_relative_to_the_repository(tmp_path, monkeypatch):
    repo = tmp_path / "checkout"
    sweep = repo / "logs" / "results" / "cpu" / "part_a"
    extra = {"checkpoints": {"last": f"{sweep}/0/checkpoints/last.ckpt"}, "data": "/home/me/data/cifar.tar.gz"}
    job(sweep / "0", ["variant=part_a/lenet5", f"resume={sweep}"], 0, 0.9, 0.8, extra=extra)
    (sweep / "multirun.yaml").write_text(
        f"hydra:\n  overrides:\n    task: [experiment=results/part_a, resume={sweep}]\n"
        f"  runtime:\n    cwd: /tmp/elsewhere\n    config_sources: [{{path: /tmp/elsewhere/conf}}]\n"
    )
    monkeypatch.chdir(repo)
    records.copy_records(Path("logs/results"), repo / "docs" / "results" / "runs")
    runs = repo / "docs" / "results" / "runs" / "cpu" / "part_a"
    saved = json.loads((runs / "0" / "results.json").read_text())
    assert saved["checkpoints"]["last"] == "logs/results/cpu/part_a/0/checkpoints/last.ckpt"
    assert "resume=logs/results/cpu/part_a" in saved["overrides"]
    assert saved["data"] == "<outside the repository>/cifar.tar.gz"
    sweep_text = (runs / "multirun.yaml").read_text()
    assert "resume=logs/results/cpu/part_a]" in sweep_text and "cwd: .\n" in sweep_text and "path: conf}" in sweep_text
    assert not sanitize_records(repo / "docs" / "results" / "runs")  # a second pass changes nothing


def test_the_rule_names_the_sweep_folder_from_the_records_alone(tmp_path):
    # records copied on another machine: the results folder is found from the sweep's own absolute path
    (tmp_path / "cpu" / "part_d").mkdir(parents=True)
    (tmp_path / "cpu" / "part_d" / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task: [resume=/work/main/logs/results/cpu/part_d]\n  runtime: {cwd: /tmp/pwt}\n"
    )
    sanitize_records(tmp_path)
    assert "resume=logs/results/cpu/part_d]" in (tmp_path / "cpu" / "part_d" / "multirun.yaml").read_text()
    assert sanitize("/tmp/pwt2/x and /tmp/pwt", {"/tmp/pwt": ""}) == "<outside the repository>/x and ."


@pytest.mark.parametrize("where", ["docs/results.md", "docs/results"])
def test_no_committed_page_or_record_names_a_machine_path(where):
    files = [ROOT / where] if where.endswith(".md") else sorted((ROOT / where).rglob("*"))
    found = {
        str(p.relative_to(ROOT)): paths[:2]
        for p in files
        if p.is_file() and p.suffix != ".png" and (paths := machine_paths(p.read_text()))
    }
    assert not found
