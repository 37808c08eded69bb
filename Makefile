# Python: the newest python3.X on PATH that runs and is in the supported range 3.11-3.13 (pyproject's
# requires-python says why not 3.14), or PY=...
SUPPORTED := 3.13 3.12 3.11
VERSION_OF = $(if $(1),$(shell $(1) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null))
PY ?= $(firstword $(foreach v,$(SUPPORTED),$(if $(filter $(v),$(call VERSION_OF,python$(v))),python$(v))))
PY_VERSION = $(call VERSION_OF,$(PY))
NO_PYTHON = no python3.13, python3.12 or python3.11 runs here, and trickbench needs Python 3.11-3.13: install one \
(Debian, Ubuntu: apt-get install python3.12 python3.12-venv) or set PY=<a python>
BAD_PYTHON = PY=$(PY) is Python $(or $(PY_VERSION),(none: it does not run)); trickbench needs 3.11-3.13 \
(hydra-core 1.3 fails at start-up on 3.14, hydra issue 3121)
NO_VENV = $(PY) cannot make a virtual environment; Debian, Ubuntu: apt-get install python$(PY_VERSION)-venv
VENV ?= .venv
BIN := $(VENV)/bin
# docs/results.md (make reproduce): the scale, where its sweep folders go, the page, and offline dataset copies
# (empty: each dataset's own resolution: the cache, Debian's Fashion-MNIST, torchvision's download), e.g.
#   make reproduce SCALE=cpu DATA_CIFAR=../shared/datasets/cifar10-jpeg.tar.gz
# ARGS: overrides for every run, for a quick look into other folders (RESULTS=/tmp/look RECORDS=/tmp/look/runs
# PAGE=/tmp/look/results.md
# ARGS="trainer.max_epochs=1"): a sweep folder continues only the command that started it.
# RECORDS: the committed run records (results.json, metrics.csv, config of each job) the page is built from.
SCALE ?= cpu
RESULTS ?= logs/results
RECORDS ?= docs/results/runs
PAGE ?= docs/results.md
DATA_FASHION ?=
DATA_CIFAR ?=
# in the order the CPU budget is spent (Part B's phenomena show soonest, Part D's converged length costs most)
PARTS := part_b part_b_solutions part_a part_c part_d
SOURCES := $(if $(DATA_FASHION),scale.sources.fashion_mnist=$(DATA_FASHION)) \
	$(if $(DATA_CIFAR),scale.sources.cifar10=$(DATA_CIFAR))
# where=<what a run or sweep needs to continue in folder $$dir>: resume= once the folder exists (finished jobs are
# skipped, a killed one continues from its last.ckpt), else the folder itself
WHERE = if [ -d $$dir ]; then where=resume=$$dir; else where=hydra.$(1).dir=$$dir; fi
# the committed records of a sweep with no folder here (a fresh clone, another machine) become its folder first, so
# its finished jobs are skipped: a reproduction continues across machines and sittings
RESTORE = $(BIN)/python -m trickbench.report.records --restore --from $(RESULTS) --to $(RECORDS)

.PHONY: install train test test-fast clean help reproduce records results-page pilot pilot-zero-gamma pilot-part-b pilot-converged

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install:  ## .venv with the package (editable) and test extras; Debian's Fashion-MNIST when run as root with apt
	@[ -n "$(PY)" ] || { echo "error: $(NO_PYTHON)"; exit 1; }
	@[ -n "$(filter $(PY_VERSION),$(SUPPORTED))" ] || { echo "error: $(BAD_PYTHON)"; exit 1; }
	@echo "make install: $(PY), Python $(PY_VERSION)"
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) >/dev/null 2>&1 || { rm -rf $(VENV); echo "error: $(NO_VENV)"; exit 1; }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ ! -d /usr/share/datasets/fashion-mnist ]; then \
		echo "installing Debian's dataset-fashion-mnist (offline Fashion-MNIST under /usr/share/datasets/fashion-mnist)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
			|| echo "warning: apt-get could not install dataset-fashion-mnist; training will try torchvision's download"; \
	fi

train:  ## train the default config (Fashion-MNIST, plain CNN); ARGS="key=value ..." for overrides
	$(BIN)/python train.py $(ARGS)

# two pytest workers: most tests wait on a train.py process starting (imports, Hydra), so 2 cores run two at
# once; measured on 2 cores: 847 s serial, 574 s with -n 2. One file alone: .venv/bin/python -m pytest PATH
test:  ## the test suite (CPU, about 10 minutes on 2 cores)
	$(BIN)/python -m pytest -q -n 2

# the tests not marked slow (a real train.py process or many compositions, over ~10 s each): before a commit
test-fast:  ## the tests not marked @pytest.mark.slow (under 3 minutes on 2 cores)
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

clean:  ## remove run logs (not the data cache)
	rm -rf logs outputs multirun

reproduce:  ## docs/results.md at SCALE=cpu|gpu: every part's sweep (resuming), then the page (also when stopped); DATA_FASHION=, DATA_CIFAR=
	@case "$(SCALE)" in cpu|gpu) ;; *) echo "error: SCALE=$(SCALE): cpu or gpu"; exit 2 ;; esac
	@$(RESTORE)
	@failed=0; start=$$(date +%s); \
	close() { \
		$(BIN)/python -m trickbench.report.records --from $(RESULTS) --to $(RECORDS) || failed=1; \
		mkdir -p $(RECORDS)/$(SCALE); end=$$(date +%s); \
		echo "$$start $$end $$((end - start))" >> $(RECORDS)/$(SCALE)/sittings.txt; \
		$(BIN)/python -m trickbench.report.results_page --root $(RECORDS) --out $(PAGE) || failed=1; \
	}; \
	trap 'echo "== stopped: the finished jobs are recorded, the sitting logged"; close; exit 130' INT TERM; \
	if [ "$(SCALE)" = gpu ]; then \
		dir=$(RESULTS)/gpu/part_d_teacher; \
		if grep -qs '"status": "ok"' $$dir/results.json; then echo "== part_d_teacher: done"; else \
			echo "== part_d_teacher (Part D's distillation teacher)"; \
			if [ -f $$dir/checkpoints/last.ckpt ]; then where=resume=$$dir; else where=hydra.run.dir=$$dir; fi; \
			$(BIN)/python train.py experiment=results/part_d_teacher scale=gpu seed=0 $(SOURCES) $(ARGS) $$where || failed=1; \
		fi; \
	fi; \
	for part in $(PARTS); do \
		dir=$(RESULTS)/$(SCALE)/$$part; $(call WHERE,sweep); \
		teacher=; ckpt=$$(ls $(RESULTS)/gpu/part_d_teacher/checkpoints/best-*.ckpt 2>/dev/null | head -1); \
		if [ $$part = part_d ] && [ "$(SCALE)" = gpu ] && [ -n "$$ckpt" ]; then teacher=teacher_ckpt=$$ckpt; fi; \
		echo "== $$part"; \
		$(BIN)/python train.py -m experiment=results/$$part scale=$(SCALE) $(SOURCES) $(ARGS) $$where $$teacher || failed=1; \
	done; \
	close; exit $$failed

records:  ## copy each job's results.json, metrics.csv and config (a resumed job's from .hydra/resumed-*/; none: exit 2) from RESULTS=logs/results into RECORDS=docs/results/runs, paths made relative to the repository
	$(BIN)/python -m trickbench.report.records --from $(RESULTS) --to $(RECORDS)

results-page:  ## rebuild docs/results.md and docs/results/{cpu,gpu}/*.png from the run records in RECORDS=docs/results/runs
	$(BIN)/python -m trickbench.report.results_page --root $(RECORDS) --out $(PAGE)

pilot:  ## on a GPU machine: the pilot that picks Part D's length (its report.md in RESULTS/gpu/part_d_pilot)
	@dir=$(RESULTS)/gpu/part_d_pilot; $(call WHERE,sweep); \
	$(BIN)/python train.py -m experiment=results/part_d_pilot $(if $(DATA_CIFAR),data.source=$(DATA_CIFAR)) $$where

pilot-part-b:  ## on CPU: Part B's nets and solutions at the lecture's widths (they pick Part B's CPU scale; each preset says its length)
	@$(RESTORE)
	@failed=0; for p in part_b_pilot part_b_pilot_long part_b_pilot_data part_b_solutions_pilot; do \
		dir=$(RESULTS)/cpu/$$p; $(call WHERE,sweep); seeds=0; [ $$p = part_b_pilot_data ] && seeds=0,1; \
		$(BIN)/python train.py -m experiment=results/$$p scale=cpu seed=$$seeds $(SOURCES) $(ARGS) $$where || failed=1; \
	done; \
	$(BIN)/python -m trickbench.report.records --from $(RESULTS) --to $(RECORDS) || failed=1; exit $$failed

pilot-converged:  ## on CPU: Part D's baseline twice as long, seeds 0-2 (Part D's premise "converged for its length")
	@$(RESTORE)
	@dir=$(RESULTS)/cpu/part_d_converged_pilot; $(call WHERE,sweep); \
	$(BIN)/python train.py -m experiment=results/part_d_converged_pilot scale=cpu $(SOURCES) $(ARGS) $$where && \
	$(BIN)/python -m trickbench.report.records --from $(RESULTS) --to $(RECORDS)

pilot-zero-gamma:  ## on CPU: zero-gamma alone vs the baseline at 15, 30, 60 epochs (the page's Method prints it)
	@$(RESTORE)
	@dir=$(RESULTS)/cpu/part_d_zero_gamma_pilot; $(call WHERE,sweep); \
	$(BIN)/python train.py -m experiment=results/part_d_zero_gamma_pilot scale=cpu $(SOURCES) $(ARGS) $$where && \
	$(BIN)/python -m trickbench.report.records --from $(RESULTS) --to $(RECORDS)
