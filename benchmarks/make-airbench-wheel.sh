#!/usr/bin/env bash
# Adds airbench 0.1.8 (benchmarks/speedrun.py's baseline) to .whl/ for the offline GPU machine. It is published
# only as a pure-Python sdist, so its wheel is built here, as ../shared/gpu/make-wheels.sh builds antlr4's.
# Run from the project root, after make-wheels.sh; the GPU machine installs .whl/*.whl into .site/ with the rest.
set -euo pipefail
mkdir -p .whl
python3 -m pip wheel -q --no-deps -w .whl airbench==0.1.8
ls .whl/airbench-0.1.8-*.whl
