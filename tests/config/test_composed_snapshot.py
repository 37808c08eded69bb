"""Every composition of conf/ (tests/config/composed.py's cases: each trick, data, ladder and scale option, each
preset with each job it sweeps) equals the committed snapshot: moving a value to one definition changes no run."""

import json

import pytest
from composed import SNAPSHOT, snapshot


@pytest.mark.slow  # about 80 s: some 370 compositions
def test_every_composition_equals_the_snapshot():
    want, got = json.loads(SNAPSHOT.read_text()), json.loads(json.dumps(snapshot(), default=str))
    assert got["base"] == want["base"], "the default composition changed"
    changed = sorted(set(got["cases"]) ^ set(want["cases"]))
    assert not changed, f"cases added or gone: {changed}"

    def expand(case, snap):
        return {k: snap["shared"].get(v[8:-1], v) if isinstance(v, str) and v.startswith("<shared ") else v
                for k, v in case[1].items()}

    differing = {}
    for key, case in got["cases"].items():
        a, b = expand(case, got), expand(want["cases"][key], want)
        keys = [k for k in sorted(a.keys() | b.keys()) if a.get(k, "<absent>") != b.get(k, "<absent>")]
        if keys or case[0] != want["cases"][key][0]:
            differing[key] = [(k, b.get(k, "<absent>"), a.get(k, "<absent>")) for k in keys]
    assert not differing, "compositions differ from tests/config/composed_snapshot.json:\n" + "\n".join(
        f"{k}: (key, snapshot, now) {v}" for k, v in list(differing.items())[:20])
