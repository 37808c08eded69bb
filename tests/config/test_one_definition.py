"""Each value is written once in conf/: a preset (any `# @package _global_` file outside conf/trick/: experiments,
ladder rungs, variants, scales, debug and search presets) never restates a key=value that a trick sets, whether it
includes that trick or not, nor one that a shared default already gives it (conf/train.yaml, conf/data/common/, the
option file of each group its composition selects). It includes the trick (`- /trick/<name>`) or leaves the default
alone instead, so changing a trick's value changes every preset that uses it."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from composed import CONF, SNAPSHOT, file_values

GLOBAL = "# @package _global_"


def _yaml(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}


def choices(path: Path) -> dict:
    """group -> option of the file's `override /group: option` entries."""
    out = {}
    for entry in _yaml(path).get("defaults") or []:
        if isinstance(entry, dict):
            for key, option in entry.items():
                if key.startswith("override /"):
                    out[key.removeprefix("override /")] = option
    return out


def presets() -> list[Path]:
    return sorted(p for p in CONF.rglob("*.yaml") if p.read_text().startswith(GLOBAL) and p.parent.name != "trick")


def tricks() -> dict[str, tuple[dict, dict]]:
    return {p.stem: (file_values(p), choices(p)) for p in sorted((CONF / "trick").glob("*.yaml"))}


def _selection(preset: Path) -> str:
    """The group=option that selects a preset, as the snapshot names its cases."""
    rel = preset.relative_to(CONF).with_suffix("")
    return f"{rel.parts[0]}={'/'.join(rel.parts[1:])}"


def composed_choices() -> dict[str, dict]:
    """Each preset's group choices, from a snapshot case that selects it (test_composed_snapshot keeps it current)."""
    snap = json.loads(SNAPSHOT.read_text())
    base = {k.removeprefix("hydra.choices."): v for k, v in snap["base"].items() if k.startswith("hydra.choices.")}
    out = {}
    for preset in presets():
        name = _selection(preset)
        case = next((c for k, c in snap["cases"].items() if name in k.split()), None)
        if case is None:
            continue
        ref, diff = case
        own = {k.removeprefix("hydra.choices."): v for k, v in diff.items() if k.startswith("hydra.choices.")}
        before = {}
        if ref:
            ref_diff = snap["cases"][ref][1]
            before = {k.removeprefix("hydra.choices."): v for k, v in ref_diff.items() if k.startswith("hydra.choices.")}
        out[str(preset.relative_to(CONF))] = {**base, **before, **own}
    return out


def shared_defaults(selected: dict) -> dict:
    out = file_values(CONF / "train.yaml") | file_values(CONF / "data" / "common" / "image.yaml", "data")
    for group, option in selected.items():
        path = CONF / group / f"{option}.yaml"
        if option and "/" not in group and path.is_file() and not path.read_text().startswith(GLOBAL):
            out |= file_values(path, group)
    return out


def restated(preset: Path, selected: dict, trick_table: dict) -> list[str]:
    own, own_choices = file_values(preset), choices(preset)
    found = []
    for name, (values, groups) in trick_table.items():
        found += [f"{k}={v} (trick={name})" for k, v in own.items() if k in values and values[k] == v]
        found += [f"{g}={o} (trick={name})" for g, o in own_choices.items() if groups.get(g) == o]
    defaults = shared_defaults(selected)
    found += [f"{k}={v} (a default)" for k, v in own.items() if k in defaults and defaults[k] == v]
    return found


@pytest.mark.slow
def test_no_preset_restates_a_trick_or_a_default():
    table, selected = tricks(), composed_choices()
    assert len(selected) > 60, "the snapshot names too few presets"
    problems = {}
    for preset in presets():
        key = str(preset.relative_to(CONF))
        if found := restated(preset, selected.get(key, {}), table):
            problems[key] = found
    assert not problems, "restated values (include the trick, or drop the default):\n" + "\n".join(
        f"  {k}: {', '.join(v)}" for k, v in problems.items())


@pytest.mark.parametrize("line,expected", [("loss:\n  label_smoothing: 0.1\n", "loss.label_smoothing=0.1"),
                                           ("defaults:\n  - override /norm: batch\n", "norm=batch")])
def test_the_scan_finds_a_restated_trick(tmp_path, line, expected):
    preset = tmp_path / "p.yaml"
    preset.write_text(f"{GLOBAL}\n{line}")
    assert any(f.startswith(expected) for f in restated(preset, {}, tricks()))


def test_the_scan_finds_a_restated_default(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text(f"{GLOBAL}\noptimizer:\n  lr: 1.0e-3\ndata:\n  batch_size: 128\n")
    found = restated(preset, {"optimizer": "adam"}, {})
    assert found == ["optimizer.lr=0.001 (a default)", "data.batch_size=128 (a default)"]
    assert restated(preset, {"optimizer": "nesterov"}, {}) == ["data.batch_size=128 (a default)"]
