"""What the command line prints besides the run itself. check_command_line: an unknown option or a misspelled key
stops in one line naming what exists, before Hydra would print its own many lines (and before torch loads).
quiet_libraries: each log line once, without the libraries' tips and deprecation warnings."""

import difflib
import logging
import re
import shlex
import warnings
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trickbench.checkpoints import check_resume, check_run_dir
from trickbench.config import CONF_DIR
from trickbench.errors import ConfigError, TrickbenchError, exit_with, first_line
from trickbench.sweep.context import is_rank_zero
from trickbench.sweep.folders import FolderLock, check_writable

# Lightning's advertisements (its loggers and checkpoints are what this project uses), its SLURM hint (the slurm
# launcher submits with sbatch; a run started by hand on a login node is not a mistake), and its note that the
# model summary conf/callbacks configures replaces its default one
NOISE = (
    "💡 Tip:",
    "The `srun` command is available on your system but is not used",
    "Trainer already configured with model summary callbacks",
)


# ---- one-line errors for overrides that do not compose -----------------------------------------------------
def check_command_line(config_name: str, argv: list[str]) -> None:
    """Compose the command's config as Hydra will (a sweep: each group option it names, and its first job) and,
    when that fails, print `error: key=value: what exists` and exit 2. Hydra's own flags (--help, --info, ...)
    and other config folders are left to Hydra."""
    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:  # argparse has printed its usage line
        raise
    if args.help or args.hydra_help or args.info or args.shell_completion or args.experimental_rerun:
        return
    if args.config_path or args.config_dir:
        return
    try:
        multirun = args.multirun or "hydra.mode=MULTIRUN" in args.overrides
        command_line_error(args.config_name or config_name, args.overrides, multirun=multirun)
    except TrickbenchError as e:
        exit_with(e)


def command_line_error(config_name: str, overrides: list[str], multirun: bool = False) -> None:
    """Raises ConfigError naming the first override that does not compose and what exists instead (TrickbenchError
    with Hydra's first line for other mistakes)."""
    parsed = _parse(overrides)
    if not multirun:
        for o in parsed:
            if o.is_sweep_override():
                raise _sweep_in_one_run(o)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            for o in parsed:  # every option a sweep names, not only its first job's
                if loader.repository.group_exists(o.key_or_group) and not o.is_delete():
                    for option in _options_asked(o):
                        if option not in _options(loader, o.key_or_group):
                            raise _unknown_option(loader, o, option)
            first_job = [line for o in parsed if (line := _first_job_override(o)) is not None]
            cfg = _compose_or_explain(loader, config_name, first_job, parsed)
            _check_given(cfg, config_name)
            if config_name != "train":
                return
            resume = next((o.value() for o in parsed if o.key_or_group == "resume"), None)
            resume = resume if isinstance(resume, str) and resume else None
            dir_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
            explicit = next((o.value() for o in parsed if o.key_or_group == dir_key), None)
            if not multirun and resume:
                check_resume(resume)
                if is_rank_zero():  # DDP's other ranks rerun this command while rank 0 holds the lock
                    FolderLock(Path(resume), "resume").release()  # a live run there: refused before torch loads
            elif not multirun and explicit:
                check_run_dir(Path(str(explicit)), overrides)
            # reads paths.log_dir and task_name only: resolving hydra's run.dir would create the run's folder
            where = (
                resume or explicit or Path(cfg.paths.log_dir) / cfg.task_name / ("multiruns" if multirun else "runs")
            )
            check_writable(Path(str(where)), "resume" if resume else dir_key if explicit else "paths.log_dir")
    finally:
        GlobalHydra.instance().clear()


def _parse(overrides: list[str]) -> list[Override]:
    """Hydra's reading of the overrides; one it cannot read is named with how to quote its value."""
    parser = OverridesParser.create()
    for line in overrides:
        try:
            parser.parse_override(line)
        except HydraException as e:
            key, eq, value = line.partition("=")
            if not eq:
                raise TrickbenchError(f"{line}: {first_line(e)}; write key=value") from None
            listed = f"a list closes its brackets: {key}=[a,b]; " if value.lstrip().startswith("[") else ""
            raise TrickbenchError(
                f"{line}: Hydra cannot read this value ({first_line(e)}); {listed}a value with spaces, commas, "
                f"brackets, quotes or non-ASCII characters is quoted for Hydra, and the whole for the shell: "
                f"{quoted(key, value)}"
            ) from None
    return parser.parse_overrides(overrides)


def quoted(key: str, value: str) -> str:
    """key=value as a shell passes it to Hydra as one quoted string: "data.source='/tmp/a,b'"."""
    line = f"{key}='{value.replace(chr(39), chr(92) + chr(39))}'"
    return f'"{line}"' if not set(line) & set('"$`\\!') else shlex.quote(line)


def _sweep_in_one_run(o: Override) -> ConfigError | TrickbenchError:
    key, _, value = o.input_line.partition("=")
    sweep = o.value()
    pathlike = any(isinstance(v, str) and re.search(r"[^\w-]", v) for v in getattr(sweep, "list", []))
    if sweep.simple_form and pathlike:  # /tmp/a,b: one path with a comma, more likely than a sweep of two
        return TrickbenchError(
            f"{o.input_line}: a comma separates the values of a sweep, which runs only with -m; one value with a "
            f"comma is quoted for Hydra, and the whole for the shell: {quoted(key, value)}"
        )
    return ConfigError(o.key_or_group, value, "several values sweep only with -m (a list: key=[a,b])")


def _check_given(cfg: DictConfig, config_name: str) -> None:
    """A mandatory value (??? in conf/) the command did not give: named with what to write."""
    raw = OmegaConf.to_container(cfg, resolve=False)  # unresolved: paths.output_dir needs a running job
    raw.pop("hydra", None)
    missing = _missing(raw)
    if missing:
        key = missing[0]
        example = "logs/train/runs/<time>/checkpoints/last.ckpt" if key == "ckpt_path" else "<value>"
        raise TrickbenchError(f"{key}=???: a value is required; write python {config_name}.py {key}={example}")


def _missing(node, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [m for k, v in node.items() for m in _missing(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")] if node == "???" else []


def _options(loader, group: str) -> list[str]:
    """A group's options, those in its sub-folders included (experiment=ablation/norms)."""
    found = list(loader.get_group_options(group))
    for sub in loader.list_groups(group):
        found += [f"{sub}/{o}" for o in _options(loader, f"{group}/{sub}")]
    return sorted(found)


def _options_asked(o: Override) -> list[str]:
    value = o.value()
    values = value.list if isinstance(value, ChoiceSweep) else [value]
    flat = []
    for v in values:
        flat += [str(x) for x in v] if isinstance(v, list) else [str(v)]
    return [v for v in flat if v not in ("null", "None")]  # group=null: no option chosen


def _unknown_option(loader, o: Override, option: str) -> ConfigError:
    options = _options(loader, o.key_or_group)
    close = difflib.get_close_matches(option, options, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return ConfigError(o.key_or_group, option, f"no such option; {hint}{o.key_or_group} has: {', '.join(options)}")


def _first_job_override(o: Override) -> str | None:
    """The override as the sweep's first job sees it (a sweep value replaced by its first one); None: left out
    (an interval or glob sweep, whose values the sweeper draws)."""
    if not o.is_sweep_override():
        return o.input_line
    try:
        first = next(iter(o.sweep_string_iterator()))
    except Exception:  # noqa: BLE001  (interval, glob: not enumerable)
        return None
    prefix = "++" if o.is_force_add() else "+" if o.is_add() else ""
    key = o.key_or_group + (f"@{o.package}" if o.package else "")
    return f"{prefix}{key}={first}"


def _compose_or_explain(loader, config_name: str, overrides: list[str], parsed: list[Override]) -> DictConfig:
    try:
        return compose(config_name, overrides=overrides, return_hydra_config=True)
    except MissingConfigException as e:
        group, _, option = str(e.missing_cfg_file).rpartition("/")
        o = next((p for p in parsed if p.key_or_group == group), None)
        if group and o is not None and loader.repository.group_exists(group):
            raise _unknown_option(loader, o, option) from None
        raise TrickbenchError(first_line(e)) from None
    except ConfigCompositionException as e:
        key = str(getattr(e.__cause__, "full_key", None))
        o = next((p for p in parsed if p.key_or_group == key or p.key_or_group.startswith(f"{key}.")), None)
        if o is None or not o.input_line or o.input_line not in overrides:
            raise TrickbenchError(first_line(e)) from None
        without = [line for line in overrides if line != o.input_line]
        base = _compose_or_explain(loader, config_name, without, parsed)
        raise _unknown_key(loader, base, o) from None
    except (HydraException, OmegaConfBaseException) as e:
        raise TrickbenchError(first_line(e)) from None


def _unknown_key(loader, cfg: DictConfig, o: Override) -> ConfigError:
    """key=value for a key the config does not have: the closest keys of the deepest node that exists."""
    parts = o.key_or_group.split(".")
    depth = len(parts) - 1
    while depth > 0 and not isinstance(OmegaConf.select(cfg, ".".join(parts[:depth])), DictConfig):
        depth -= 1
    prefix = ".".join(parts[:depth])
    node = OmegaConf.select(cfg, prefix) if prefix else cfg
    keys = [str(k) for k in node.keys() if not str(k).startswith("_")]
    if not prefix:  # the top level: its groups are keys too (model=..., trainer.max_epochs=...)
        keys = sorted({*keys, *(g for g in loader.list_groups("") if g != "hydra")} - {"hydra"})
    close = difflib.get_close_matches(parts[depth], keys, n=3)
    hint = f"did you mean {' or '.join(f'{prefix}.{c}' if prefix else c for c in close)}? " if close else ""
    where = f"{prefix} has" if prefix else "the keys and groups are"
    value = o.input_line.split("=", 1)[-1] if o.is_sweep_override() else o.value()
    return ConfigError(o.key_or_group, value, f"no such key; {hint}{where}: {', '.join(keys) or '(none)'}")


# ---- a console that prints each line once ------------------------------------------------------------------
class DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISE)


def quiet_libraries() -> None:
    """Once per job, before Lightning starts: Lightning's own console handler goes when Hydra's logging is
    configured (it printed every Lightning line a second time), its tips go, and deprecation warnings raised in
    library code (not this project's) are not shown: the versions are pinned, and a user cannot act on them."""
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"^(?!trickbench)")
    warnings.filterwarnings("ignore", message=f".*{NOISE[1]}")
    import lightning  # noqa: F401  adds its own handler on import

    if logging.getLogger().handlers:  # Hydra's console and file handlers take every line
        lightning_log = logging.getLogger("lightning")
        for handler in list(lightning_log.handlers):
            lightning_log.removeHandler(handler)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNoise) for f in logger.filters):
            logger.addFilter(DropNoise())
