"""Every configuration the house can compose, resolved: each group option alone, each experiment preset with each
value it sweeps (every rung, variant and scale), with the Hydra sweeper, launcher and callbacks it runs under.
tests/config/test_composed_snapshot.py compares them with the committed snapshot, so a change to conf/ that is
meant to move values around (one definition per value) is shown to change no run; a change meant to change a run
writes a new snapshot, in the same commit:

    .venv/bin/python tests/config/composed.py --write
"""

import hashlib
import itertools
import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
SNAPSHOT = Path(__file__).with_name("composed_snapshot.json")
HYDRA_KEYS = ("sweeper", "launcher", "callbacks")  # what of hydra.* decides which jobs run and how
MAX_PRODUCT = 64  # a preset sweeping more combinations than this is composed one key at a time
SCALED = "results/"  # presets that take scale=cpu|gpu
# groups composed option by option on the defaults; the other groups' options are single files that set their own
# node (conf/model/, conf/callbacks/, ...), and every variant is composed within the presets that sweep it
ALONE = ("data", "ladder", "scale", "trick")
SHARED_CHARS = 120  # a value longer than this, as JSON, is written once under "shared" and named by its hash


def options(group: str) -> list[str]:
    """The group's options, nested folders included; a common/ folder holds settings options share, not options."""
    paths = (p.relative_to(CONF / group) for p in (CONF / group).rglob("*.yaml"))
    return sorted(str(p.with_suffix("")) for p in paths if "common" not in p.parts)


def groups() -> list[str]:
    return sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")


def _resolved(node) -> object:
    """The node resolved; a key that cannot resolve here (a resolver that reads a sweep folder, a value a preset
    must supply) is kept as written, key by key."""
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception:
        if OmegaConf.is_dict(node):
            return {str(k): _resolved(node._get_node(k)) if OmegaConf.is_config(node._get_node(k))
                    else _leaf(node, k) for k in node.keys()}
        return OmegaConf.to_container(node, resolve=False)


def _leaf(node, key):
    try:
        return node[key]
    except Exception:
        return f"<unresolved> {node._get_node(key)._value()}"


def compose_one(overrides: list[str]) -> dict:
    cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        hydra = cfg.hydra
        del cfg.hydra
        cfg.paths.output_dir = "<output_dir>"  # the run folder: made per start, not part of the composition
    out = {"job": _resolved(cfg)}
    out["hydra"] = {k: _resolved(hydra[k]) for k in HYDRA_KEYS if k in hydra}
    out["hydra"]["choices"] = OmegaConf.to_container(hydra.runtime.choices)
    return out


def sweep_values(overrides: list[str]) -> dict[str, list[str]]:
    """hydra.sweeper.params of a composition, each split into its values (seed and search ranges left out)."""
    cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    params = cfg.hydra.sweeper.get("params") or {}
    out = {}
    for key in params:
        if key == "seed":
            continue
        try:
            value = params[key]
            (o,) = OverridesParser.create().parse_overrides([f"{key}={value}"])
            if o.is_sweep_override():
                out[key] = [str(v) for v in o.sweep_iterator()]
        except Exception:
            continue  # an Optuna range (interval, tag) or a value read from a folder: not a list of jobs
    return out


def cases() -> list[tuple[list[str], list[str]]]:
    """(overrides, the overrides of the composition it is written as a difference from): a preset's jobs against
    the preset, everything else against the defaults."""
    out = [([f"{g}={o}"], []) for g in ALONE for o in options(g)]
    for preset in options("experiment"):
        for scale in (["cpu", "gpu"] if preset.startswith(SCALED) else [None]):  # a results sweep names its scale
            base = [f"experiment={preset}", *([f"scale={scale}"] if scale else [])]
            out.append((base, []))
            try:
                values = sweep_values(base)
            except Exception:
                continue  # a preset that does not compose at this scale: its error is the snapshot
            combos = list(itertools.product(*values.values()))
            if len(combos) <= MAX_PRODUCT:
                jobs = [[f"{k}={v}" for k, v in zip(values, combo)] for combo in combos]
            else:
                jobs = [[f"{k}={v}"] for k, vs in values.items() for v in vs]
            out += [(base + job, base) for job in jobs if job]
    return out


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def _share(value, shared: dict):
    text = json.dumps(value, sort_keys=True, default=str)
    if len(text) <= SHARED_CHARS:
        return value
    key = hashlib.sha256(text.encode()).hexdigest()[:12]
    shared[key] = value
    return f"<shared {key}>"


def file_values(path: Path, group: str = "") -> dict:
    """The key=values a conf/ file sets, its defaults list aside, under its package: the group's, or the top level
    for a `# @package _global_` file (and for conf/train.yaml, group "")."""
    package = "" if "@package _global_" in path.read_text() else group.replace("/", ".")
    body = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    body.pop("defaults", None)
    return flat(body, f"{package}." if package else "")


def snapshot() -> dict:
    """{"base": every leaf of the default composition, "cases": {command: [the command it differs from, the
    leaves that differ]}, "shared": long values by hash}; a leaf the case lacks is listed under "<removed>", a
    composition that fails as "<error>"."""
    GlobalHydra.instance().clear()
    composed, shared = {}, {}
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        composed[""] = flat(compose_one([]))
        result = {"base": composed[""], "cases": {}}
        for overrides, reference in cases():
            key, ref = " ".join(overrides), " ".join(reference)
            try:
                leaves = composed[key] = flat(compose_one(overrides))
            except Exception as e:
                result["cases"][key] = [ref, {"<error>": str(e).splitlines()[0]}]
                continue
            against = composed[ref]
            diff = {k: _share(v, shared) for k, v in leaves.items() if k not in against or against[k] != v}
            removed = sorted(k for k in against if k not in leaves)
            result["cases"][key] = [ref, {**diff, **({"<removed>": removed} if removed else {})}]
    GlobalHydra.instance().clear()
    result["shared"] = shared
    return result


def dumps(snap: dict) -> str:
    """One line per case, so a diff of the snapshot shows which compositions changed."""
    def line(k, v):
        return f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True, default=str)}"
    parts = [f'"{name}": {{\n' + ",\n".join(line(k, v) for k, v in sorted(snap[name].items())) + "\n}"
             for name in ("base", "cases", "shared")]
    return "{\n" + ",\n".join(parts) + "\n}\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/config/composed.py --write   (writes tests/config/composed_snapshot.json)")
    SNAPSHOT.write_text(dumps(snapshot()))
    print(f"wrote {SNAPSHOT.relative_to(ROOT)}")
