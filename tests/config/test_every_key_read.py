"""Every key a run is given is read (config/every_key.py). Each option of each group is composed, and each node it
sets, and each node of it that builds a class, is given a key nothing reads: the check refuses it in one line naming
the key and what the node takes; with no key added, every composed config passes (no key of conf/ is dead)."""

import pytest
from composed import file_values
from conftest import compose_cfg
from omegaconf import DictConfig, OmegaConf, open_dict
from test_every_key import options

from trickbench.config.every_key import READ_BY, unread
from trickbench.config.validate import CORE_RULES, target_rules, validate
from trickbench.errors import ConfigError

UNKNOWN = "not_a_key"


def nodes_set_by(group: str, path, cfg) -> list[str]:
    """The nodes an option's yaml sets (its group's node, or a global preset's top-level ones), and every node below
    them that builds a class (a _target_)."""
    tops = {k.split(".", 1)[0] for k in file_values(path, group) if not k.startswith("hydra.")}
    found = []
    for top in sorted(tops):
        node = cfg.get(top)
        if not isinstance(node, DictConfig) or node._is_none():
            continue
        stack = [(top, node)]
        while stack:
            key, n = stack.pop()
            if key == top or "_target_" in n:
                found.append(key)
            children = ((k, n._get_node(k)) for k in n.keys())  # unresolved: a rung alone lacks its preset's slots
            stack += [(f"{key}.{k}", v) for k, v in children if isinstance(v, DictConfig) and not v._is_none()]
    return found


def refusal(cfg, node: str) -> str | None:
    """validate's one line refusing node.not_a_key (a builder's own check, a rule or config/every_key.py), or what
    went wrong."""
    with open_dict(cfg):
        OmegaConf.update(cfg, f"{node}.{UNKNOWN}" if node else UNKNOWN, 1, force_add=True)
    try:
        validate(cfg)
    except ConfigError as e:
        expected = f"{node}.{UNKNOWN}" if node else UNKNOWN
        return None if e.key == expected and "\n" not in str(e) else f"refused as {e}"
    finally:
        parent = OmegaConf.select(cfg, node) if node else cfg
        with open_dict(parent):
            del parent[UNKNOWN]
    return "passed"


@pytest.mark.slow
def test_a_key_nothing_reads_is_refused_under_every_node_of_every_option(tmp_path):
    (tmp_path / "teacher.ckpt").write_bytes(b"")  # read only once training starts
    needs = {  # what an option takes to validate (the model it changes, the teacher it distills)
        **{f"trick={t}": ["model=resnet18"] for t in ("resnet_d", "zero_gamma", "stochastic_depth")},
        "trick=distill": [f"distill.teacher_ckpt={tmp_path / 'teacher.ckpt'}"],
    }
    wrong, alone, tried = {}, set(), set()
    for group, option, path in options():
        cfg = compose_cfg([f"{group}={option}", *needs.get(f"{group}={option}", [])])
        rules = list(dict.fromkeys([*CORE_RULES, *target_rules(cfg)]))
        dead = list(unread(cfg, rules))
        if dead:
            wrong[f"{group}={option}"] = f"keys nothing reads: {dead}"
        # each option's own node; a preset's other nodes once per class they build (presets repeat the groups')
        nodes = [n for n in nodes_set_by(group, path, cfg) if n.split(".")[0] not in READ_BY]
        nodes = [n for n in nodes if n == group or (n, OmegaConf.select(cfg, f"{n}._target_")) not in tried]
        if not nodes:
            continue
        try:
            validate(cfg)
        except Exception:  # noqa: BLE001  a rung or variant alone lacks its preset's slots
            alone.add(group)
            continue
        for node in nodes:
            tried.add((node, OmegaConf.select(cfg, f"{node}._target_")))
            what = refusal(cfg, node)
            if what is not None:
                wrong[f"{group}={option} +{node}.{UNKNOWN}"] = what
    assert not wrong, "\n".join(f"{k}: {v}" for k, v in wrong.items())
    assert alone <= {"ladder", "variant"}


@pytest.mark.parametrize(
    "override,message",
    [
        ("+foo=1", "foo=1: an unknown key: nothing reads it; the config has activation, augment"),
        ("+optimizer.momentum=0.9", "optimizer.momentum=0.9: optimizer=adam takes lr, betas, eps"),
        ("+scheduler.lr_scheduler.T_max=5", "scheduler.lr_scheduler.T_max=5: scheduler=step takes step_size, gamma"),
        ("+activation.negative_slope=0.1", "activation.negative_slope=0.1: activation=relu takes no option"),
        ("+norm.foo=1", "norm.foo=1: an unknown key: norm takes name, placement, groups, eps"),
        ("+init.gain=2", "init.gain=2: an unknown key: nothing reads it; init has name"),
        ("+loss.foo=1", "loss.foo=1: an unknown key: loss=cross_entropy takes ignore_index, label_smoothing"),
        ("+trainer.foo=1", "trainer.foo=1: an unknown key: trainer=auto takes accelerator,"),
    ],
)
def test_validate_names_the_key_and_what_its_node_takes(override, message):
    extra = ["scheduler=step"] if "lr_scheduler" in override else []
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg([*extra, "optimizer=adam", override]))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_the_option_that_reads_a_key_is_named():
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(["optimizer=adam", "+optimizer.momentum=0.9"]))
    assert str(e.value).endswith("; momentum is optimizer=nesterov and optimizer=sgd's")


def test_a_key_the_builder_takes_and_an_interpolated_slot_are_read():
    validate(compose_cfg(["+trainer.max_steps=5", "optimizer=sgd", "+optimizer.dampening=0.1"]))
    cfg = compose_cfg(["experiment=ablation/bag_of_tricks"])  # teacher_ckpt: the distill rung's slot
    assert "teacher_ckpt" in cfg and list(unread(cfg, [*CORE_RULES, *target_rules(cfg)])) == []
