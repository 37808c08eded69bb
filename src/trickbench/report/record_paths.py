"""No machine's absolute path in a committed record: every text file of a records folder with each path of a checkout
rewritten relative to the repository, and any other absolute path of a machine cut to its last part.

A record names its checkout in several ways: Hydra's runtime cwd (and conf/ under it), the sweep folder as the command
named it (resume=/abs/logs/results/cpu/part_d), the checkpoints' paths under it. The checkouts are found from the
records themselves (each sweep's multirun.yaml), so the rule holds for records copied on any machine, and
rewriting already rewritten records changes nothing."""

import re
from pathlib import Path

from omegaconf import OmegaConf

RESULTS = "logs/results"  # where `make reproduce` writes the sweeps, relative to the repository
OUTSIDE = "<outside the repository>"
# the home, scratch and temporary folders of Linux and macOS machines
MACHINE_PATH = re.compile(
    r"(?<![\w.~/-])/(?:work|tmp|home|root|Users|mnt|scratch|private|var/folders|data)(?![\w.-])(?:/[^\s\"',;:\]}]*)?"
)
TEXT_FILES = {".json", ".yaml", ".csv", ".txt"}


def sanitize(text: str, roots: dict[str, str]) -> str:
    """text with each root (an absolute folder) replaced by its relative name ("" for the repository itself),
    longest first; then any absolute path of a machine left cut to OUTSIDE/<its last part>."""
    for root in sorted(roots, key=len, reverse=True):
        name = roots[root].strip("/")
        pattern = re.escape(root.rstrip("/")) + r"(/|(?![\w.-]))"
        text = re.sub(pattern, lambda m, name=name: (name + m[1] if name else "") if m[1] else (name or "."), text)
    return MACHINE_PATH.sub(lambda m: f"{OUTSIDE}/{m[0].rstrip('/').rsplit('/', 1)[-1]}", text)


def _sweep_folder(hydra) -> str | None:
    for key, where in (("resume=", "overrides.task"), ("hydra.sweep.dir=", "overrides.hydra")):
        for o in OmegaConf.select(hydra, where, default=None) or []:
            if str(o).startswith(key):
                return str(o).removeprefix(key)
    return None


def checkout_roots(records: Path) -> dict[str, str]:
    """The absolute folders the records name -> their names relative to the repository: each sweep's runtime cwd
    (a checkout: "") and, where the command named its sweep folder by an absolute path ending in the record's own
    <scale>/<part>, the results folder above it (logs/results)."""
    roots = {}
    for sweep in sorted(records.rglob("multirun.yaml")):
        hydra = OmegaConf.load(sweep).get("hydra")
        if hydra is None:
            continue
        cwd = OmegaConf.select(hydra, "runtime.cwd", default=None)
        if cwd and str(cwd).startswith("/"):
            roots[str(cwd)] = ""
        folder = _sweep_folder(hydra)
        inside = sweep.parent.relative_to(records).as_posix()
        if folder and folder.startswith("/") and folder.rstrip("/").endswith("/" + inside):
            roots[folder.rstrip("/")[: -len(inside) - 1]] = RESULTS
    return roots


def sanitize_records(records: Path, roots: dict[str, str] | None = None) -> list[Path]:
    """Rewrite every text file under records in place (roots: more folders -> names, beside those the records
    name themselves); the files changed."""
    roots = {**checkout_roots(records), **(roots or {})}
    changed = []
    for path in sorted(p for p in records.rglob("*") if p.is_file() and p.suffix in TEXT_FILES):
        text = path.read_text()
        clean = sanitize(text, roots)
        if clean != text:
            path.write_text(clean)
            changed.append(path)
    return changed


def machine_paths(text: str) -> list[str]:
    """The absolute paths of a machine in text (the check docs/ must pass)."""
    return MACHINE_PATH.findall(text)
