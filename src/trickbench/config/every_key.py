"""Every key a run is given is read. Hydra's `+key=value` adds a key to a struct config by design, and a key nothing
reads trains as if absent; so after the rules (rules.py), each leaf must be read by something: a Rule or Relation
on it (or on a node no _target_ builds: every key below it), a NodeCheck that refuses what it does not read (whole),
the keywords of the _target_ its node builds, an interpolation of another key, or code that reads a whole node
(READ_BY). Anything else is refused in one line naming what its node takes."""

import re
from collections.abc import Iterator

from omegaconf import DictConfig, OmegaConf

from trickbench.errors import ConfigError
from trickbench.rules import NodeCheck, choice_name, keywords_of, options_with

# Nodes read whole by code that checks them itself, and why (tests/config/test_every_key.py: their values).
READ_BY = {
    "results": "the results presets' metadata (title, claims, epochs per scale): read by make results-page",
    "hparams_search.from": "read by hparams_search=fine (best.json of the coarse search)",
    "scale": "make reproduce's sizes per scale, read through the results presets' interpolations",
    "teacher_ckpt": "a preset's slot for the distill rung's distill.teacher_ckpt (a sweep job reads it)",
}
# Nodes of plug-ins by name: validate's _entries check reads each entry (null: off, else a node with a _target_).
PLUG_INS = ("callbacks", "logger", "step")
INTERPOLATION = re.compile(r"\$\{(?:oc\.select:)?([A-Za-z_][\w.]*)")


def _interpolated(cfg: DictConfig) -> set[str]:
    """The keys that other keys' interpolations name (${teacher_ckpt}, ${oc.select:results.epochs.cpu,5})."""
    found, stack = set(), [OmegaConf.to_container(cfg, resolve=False)]
    while stack:
        node = stack.pop()
        if isinstance(node, dict | list):
            stack.extend(node.values() if isinstance(node, dict) else node)
        elif isinstance(node, str):
            found.update(m.rstrip(".") for m in INTERPOLATION.findall(node))
    return found


def unread(cfg: DictConfig, rules: list) -> Iterator[tuple[str, str | None]]:
    """(key, the target its node builds or None) for every leaf nothing reads."""
    ruled = {
        r.key
        for r in rules
        if not isinstance(r, NodeCheck) or r.whole or not isinstance(OmegaConf.select(cfg, r.key), DictConfig)
    }
    leaves = {k for k in _interpolated(cfg) if not isinstance(OmegaConf.select(cfg, k, default=None), DictConfig)}
    read = ruled | leaves | set(READ_BY)

    def covered(key: str) -> bool:
        return any(key == k or key.startswith(f"{k}.") for k in read)

    def walk(node: DictConfig, prefix: str):
        own = node.get("_target_") if "_target_" in node else None
        target = own if isinstance(own, str) else None
        keywords = keywords_of(target) if target else ()
        for k in node.keys():
            key, child = f"{prefix}{k}", node._get_node(k)
            builds = isinstance(child, DictConfig) and not child._is_none() and "_target_" in child
            if str(k).startswith("_") or (not builds and (keywords is None or (target and k in keywords))):
                continue
            if isinstance(child, DictConfig) and not child._is_none():
                if covered(key) and "_target_" not in child:
                    continue  # a ruled node no class builds (e.g. augment.color_jitter): its rule reads it whole
                yield from walk(child, f"{key}.")
            elif not covered(key) and prefix.rstrip(".") not in PLUG_INS:
                yield key, target

    yield from walk(cfg, "")


def check_every_key_read(cfg: DictConfig, rules: list) -> None:
    """The first key nothing reads, refused in one line: what its node takes, and which option of its group reads it
    (`+optimizer.momentum=0.9` with Adam: momentum is optimizer=sgd's)."""
    for key, target in unread(cfg, rules):
        parent, name = key.rpartition(".")[::2]
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if target:
            keywords = sorted(keywords_of(target) or ())
            takes = f"{choice_name(parent, target)} takes {', '.join(keywords)}"
        else:
            siblings = sorted(str(k) for k in node.keys() if str(k) != name and not str(k).startswith("_"))
            takes = f"nothing reads it; {parent or 'the config'} has {', '.join(siblings)}"
        raise ConfigError(key, node[name], f"an unknown key: {takes}{options_with(key)}")
