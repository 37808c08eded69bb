"""results.json (the contract in ../shared/DESIGN.md) and the provenance it records."""

import json
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent


def git_info(repo: Path = REPO) -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        return {"commit": commit or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def versions() -> dict:
    out = {}
    for pkg in ("torch", "torchvision", "lightning", "torchmetrics", "hydra-core", "kornia", "trickbench"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def device_name(device: torch.device) -> str:
    return f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type


def write_json(path: Path, data: dict) -> None:
    """Whole or not at all: a temporary file beside it, renamed; removed when the write fails (a full disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None or str(e.filename) == str(tmp):
            e.filename = str(path)
        raise
