"""The house's layout holds: no import cycle among trickbench's modules, the command-line and sweep modules import
without torch, each conf `_target_` of ours names the module that defines its class (so the validation layer finds
that module's RULES), every callback class lives in callbacks/, and the top level stays at most a dozen modules."""

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import yaml
from conftest import CONF, ROOT

SRC = ROOT / "src" / "trickbench"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The trickbench modules a file imports when it is imported (not those imported inside functions):
    `from trickbench import speed` is trickbench.speed, `from trickbench.rules import Rule` trickbench.rules."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                found.add(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module)
    return found & modules


def test_no_import_cycle():
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {m: top_level_imports(p, set(modules)) - {m} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(n) :], n]))
            elif n not in state:
                visit(n, [*stack, n])
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m, [m])


def test_command_line_and_sweep_modules_import_without_torch():
    code = (
        "import sys\n"
        "import trickbench.config.command_line, trickbench.config.resolvers, trickbench.checkpoints\n"
        "import trickbench.sweep.context, trickbench.sweep.folders\n"
        "import trickbench.sweep.placement, trickbench.sweep.search\n"
        "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def conf_targets() -> list[tuple[str, str]]:
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str) and target.startswith("trickbench."):
                found.append((where, target))
            for v in node.values():
                walk(v, where)
        elif isinstance(node, list):
            for v in node:
                walk(v, where)

    for path in sorted(CONF.rglob("*.yaml")):
        walk(yaml.safe_load(path.read_text()), str(path.relative_to(CONF)))
    return found


@pytest.mark.parametrize("where, target", conf_targets())
def test_each_target_names_the_module_defining_its_class(where, target):
    module, name = target.rsplit(".", 1)
    obj = getattr(__import__(module, fromlist=[name]), name)
    assert obj.__module__ == module, f"conf/{where}: {target} is defined in {obj.__module__}"


def test_every_callback_class_lives_in_callbacks():
    import trickbench.report.callback  # noqa: F401
    import trickbench.train  # noqa: F401  (imports every module the run uses)

    outside = sorted(
        f"{c.__module__}.{c.__name__}"
        for mod in list(sys.modules.values())
        if getattr(mod, "__name__", "").startswith("trickbench.")
        and not mod.__name__.startswith("trickbench.callbacks")
        for _, c in inspect.getmembers(mod, inspect.isclass)
        if c.__module__ == mod.__name__
        and issubclass(c, L.Callback)
        and not mod.__name__.startswith("trickbench.tricks")
    )
    assert outside == []  # tricks/ holds StepTricks (callbacks with step hooks), found by step:
    assert set(trickbench.callbacks.__all__) >= {"SWA", "Lookahead", "EMAWeightAveraging", "EpochTimer", "CompileClock"}


def test_top_level_stays_small_and_tricks_are_step_tricks():
    modules = sorted(p.stem for p in SRC.glob("*.py") if p.stem != "__init__")
    assert len(modules) <= 12, modules
    from trickbench.tricks.base import StepTrick

    for path in sorted((SRC / "tricks").glob("*.py")):
        mod = __import__(module_name(path), fromlist=["_"])
        classes = [c for _, c in inspect.getmembers(mod, inspect.isclass) if c.__module__ == mod.__name__]
        callbacks = [c for c in classes if issubclass(c, L.Callback)]
        assert all(issubclass(c, StepTrick) for c in callbacks), (path.name, callbacks)
