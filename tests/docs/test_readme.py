"""Every command in README.md's code blocks, run as written on tiny data, so README cannot drift from the code.

The rule, per command line (a section added later is covered the same way):
- `python train.py ...` / `python eval.py ...` (or .venv/bin/python): its overrides must compose (the CLI's one-line
  check). It then runs in this process through the script's own Hydra main, on the tiny mirror of the dataset it
  composes to (`data.source` replaced), one batch per split, one epoch; a sweep (-m) runs its first job only (each
  swept value, on the command line or in a preset's hydra.sweeper.params, cut to its first; a search: one trial).
  Not run, only composed: commands that need a GPU, SLURM or other processes: a GPU accelerator, DDP
  (trainer.strategy ddp*), or a launcher other than Hydra's basic one (joblib, submitit, gpus, slurm; their own
  tests start those processes).
- placeholders: `<time>` and `<... path/pattern>` are the newest match among what the commands before wrote;
  `...` (more overrides) and `[... optional ...]` arguments are left out.
- `python -m trickbench.report ...`: runs on those folders. `make X`: `make -n X` succeeds.
  `tensorboard` (or `.venv/bin/tensorboard`): installed in the venv.
- Other lines in a code block (the Output tree, ...) are not commands; a block line that starts with an executable
  this test does not know fails, so that a new kind of command gets a rule here."""

import glob
import logging
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import ONE_BATCH, ROOT
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from trickbench.config.command_line import CONF_DIR, _first_job_override, command_line_error

KNOWN = ("python", ".venv/bin/python", "make", "tensorboard", ".venv/bin/tensorboard")
NOT_CHECKED = ("sbatch", "srun", "squeue", "scancel", "sacct", "nvidia-smi", "pip", ".venv/bin/pip", "cd", "git")
TINY = [
    "data.subset=60",
    "data.batch_size=4",
    "data.eval_batch_size=16",
    *ONE_BATCH,
    "trainer.log_every_n_steps=1",
    "+trainer.num_sanity_val_steps=0",
]


def readme_commands() -> list[tuple[int, str]]:
    """(line number, command) for each command line of README's code blocks (indented or fenced)."""
    commands, fenced, pending = [], False, ""
    for n, line in enumerate((ROOT / "README.md").read_text().splitlines(), 1):
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or line.startswith("    ")) or not line.strip():
            continue
        text = pending + line.strip().removeprefix("$ ")
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        for part in text.split("&&"):
            words = shlex.split(part, comments=True)
            if words and words[0] in KNOWN:
                commands.append((n, " ".join(shlex.quote(w) for w in words)))
            elif words and words[0] in NOT_CHECKED:
                continue
            elif words and re.fullmatch(r"[\w./-]+", words[0]) and any(k in text for k in ("python", "train.py")):
                raise AssertionError(f"README.md:{n}: no rule in tests/docs/test_readme.py for {part.strip()!r}")
    return commands


def _newest(pattern: str) -> str:
    found = sorted(glob.glob(pattern, recursive=True), key=lambda p: Path(p).stat().st_mtime)
    assert found, f"nothing written before matches {pattern}"
    return found[-1]


def resolve(words: list[str]) -> list[str]:
    """Placeholders filled from what earlier commands wrote; `...` and optional [...] arguments left out."""
    merged = []
    for w in words:  # a placeholder with spaces: <its checkpoints/best-*.ckpt>
        if merged and merged[-1].count("<") > merged[-1].count(">"):
            merged[-1] += f" {w}"
        else:
            merged.append(w)
    out, optional = [], False
    for w in merged:
        if w.startswith("[") and not re.match(r"^\[[\w,./-]*\]$", w) and "=" not in w.split("[")[0]:
            optional = "..." in w or not w.endswith("]")
            w = w[1:]
            if "..." in w:
                continue
        if optional:
            optional = not w.endswith("]")
            continue
        w = w[:-1] if w.endswith("]") and "[" not in w else w
        if w == "...":
            continue
        if "<time>" in w:
            key, _, path = w.rpartition("=")
            w = (f"{key}=" if key else "") + _newest(path.replace("<time>", "*"))
        elif m := re.search(r"<[^>]*?([\w./*-]+)>", w):
            w = w[: m.start()] + _newest(f"logs/**/{m.group(1)}") + w[m.end() :]
        out.append(w)
    return out


def composed(config: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config, overrides=overrides, return_hydra_config=True)


def first_job(config: str, overrides: list[str]) -> list[str]:
    """A sweep cut to its first job: command-line sweeps and a preset's sweeper params at their first value."""
    cut = [line for o in OverridesParser.create().parse_overrides(overrides) if (line := _first_job_override(o))]
    cfg = composed(config, cut)
    for key, value in (OmegaConf.select(cfg, "hydra.sweeper.params") or {}).items():
        (o,) = OverridesParser.create().parse_overrides([f"{key}={value}"])
        if o.is_sweep_override() and (first := _first_job_override(o)) is not None:
            cut.append(f"hydra.sweeper.params.{key}={first.split('=', 1)[1]}")
    if OmegaConf.select(cfg, "hydra.sweeper.n_trials") is not None:
        cut.append("hydra.sweeper.n_trials=1")
    return cut


def needs_other_processes(cfg) -> bool:
    trainer = cfg.trainer
    ddp = "ddp" in str(trainer.get("strategy", "auto")) or str(trainer.get("devices", 1)) not in ("1", "auto")
    gpu = str(trainer.get("accelerator", "auto")) in ("gpu", "cuda")
    return ddp or gpu or not str(cfg.hydra.launcher._target_).endswith("BasicLauncher")


def run_script(script: str, argv: list[str]) -> None:
    """`python script argv...` in this process: the script as __main__, its command-line check and Hydra main."""
    old = sys.argv
    sys.argv = [str(ROOT / script), *argv]
    try:
        GlobalHydra.instance().clear()
        runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as e:
        assert e.code in (0, None), f"{script} {' '.join(argv)} exited {e.code}"
    finally:
        sys.argv = old


def hydra_command(words: list[str], mirrors: dict, tmp: Path) -> str:
    script, args = words[1], words[2:]
    multirun = "-m" in args or "--multirun" in args
    if "--help" in args or "-h" in args:
        proc = subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "== Configuration groups ==" in proc.stdout, proc.stderr
        return "help"
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    config = "eval" if script == "eval.py" else "train"
    command_line_error(config, overrides, multirun=multirun)  # composes, or the one line a user would see
    if config == "eval":
        run_script(script, [*overrides, *[t for t in TINY if t.startswith("trainer.")]])
        return "ran"
    job = first_job(config, overrides) if multirun else overrides
    cfg = composed(config, job)
    if needs_other_processes(cfg):
        return "composed"
    tiny = [f"data.source={mirrors[cfg.data.name]}", f"data.root={tmp / 'data'}", *TINY]
    run_script(script, [*(["-m"] if multirun else []), *[o for o in job if not o.startswith("data.source=")], *tiny])
    return "ran"


def test_every_readme_command_runs_or_composes(fmnist_mirror, cifar_tarball, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mirrors = {"fashion_mnist": fmnist_mirror, "cifar10": cifar_tarball}
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    done = []
    try:
        for n, command in readme_commands():
            words = resolve(shlex.split(command))
            exe = words[0]
            if exe in ("python", ".venv/bin/python") and len(words) > 1 and words[1] in ("train.py", "eval.py"):
                done.append((n, hydra_command(words, mirrors, tmp_path)))
            elif exe in ("python", ".venv/bin/python") and words[1:3] == ["-m", "trickbench.report"]:
                from trickbench.report import main as report

                assert report(words[3:]) == 0, command
                done.append((n, "ran"))
            elif exe in ("python", ".venv/bin/python"):
                assert (ROOT / words[1]).is_file(), f"README.md:{n}: {words[1]} does not exist"
                done.append((n, "exists"))
            elif exe == "make":
                for target in words[1:]:
                    if "=" not in target:
                        subprocess.run(["make", "-n", target], cwd=ROOT, check=True, capture_output=True)
                done.append((n, "make -n"))
            else:  # tensorboard: the venv's
                assert (Path(sys.executable).parent / Path(exe).name).is_file(), f"README.md:{n}: {exe} not installed"
                done.append((n, "installed"))
    finally:
        root.handlers[:], root.level = handlers, level
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
    kinds = {kind for _, kind in done}
    assert {"ran", "composed", "help", "make -n", "installed"} <= kinds, done
    assert sum(kind == "ran" for _, kind in done) >= 10, done
