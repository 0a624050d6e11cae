# selfhosted.stack: the two commands that matter are `make demo` and `make test`.
# Everything is installed and started from here, on a fresh Debian 12 machine, as root.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
COLL := .collections/ansible_collections/selfhosted/stack
# Outside the checkout: inside it, ansible-test would take the checkout's git ignores and find no files.
SANITY_DIR := /tmp/selfhosted-stack-sanity/ansible_collections/selfhosted/stack
SCENARIOS := $(sort $(filter-out _shared,$(notdir $(wildcard molecule/*))))
# make test / make molecule run the scenarios in two side-by-side steps; each scenario has its own containers and
# network, so they share only the CPU. First the converge-heavy ones (no load tests, no timing-sensitive checks),
# then the three whose checks run under load (deploys with zero failed requests, canary traffic shares, alert
# timings) side by side with each other: their verifiers mostly wait (load windows, alert `for:` times, bakes),
# and every check in them holds on a shared CPU as well (the loadgen allows 10 s an answer; the shares are counted,
# not timed; the alert checks poll Prometheus with deadlines). One at a time they took 1743 s of a 2639 s suite.
SIDE_BY_SIDE := backup core fastapi nestjs node
UNDER_LOAD := app canary observed
# make test-quick: the smallest scenario.
QUICK_SCENARIO := nestjs
SUITE := $(subst $(eval) ,+,$(addprefix scenario-,$(SIDE_BY_SIDE))) \
  $(subst $(eval) ,+,$(addprefix scenario-,$(UNDER_LOAD))) \
  $(addprefix molecule-,$(filter-out $(SIDE_BY_SIDE) $(UNDER_LOAD),$(SCENARIOS)))

export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections
export PY_COLORS ?= 0
export ANSIBLE_FORCE_COLOR ?= 0

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 24

# ---------------------------------------------------------------------------------------- set-up
$(VENV)/.installed: requirements.txt requirements-test.txt
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "installing python3-venv"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-test.txt
	touch $@

.PHONY: venv
venv: $(VENV)/.installed $(COLL) ## the virtualenv with pinned controller and test tools

$(COLL):
	mkdir -p $(dir $@)
	ln -sfn ../../.. $@

DEMO_APP := .cache/demo-app
.PHONY: demo-app
demo-app: venv ## build the demo app's wheels (good 1.0.0, 1.1.0; broken 1.1.1) and an offline wheelhouse
	PYTHON=$(BIN)/python examples/demo-app/build.sh $(DEMO_APP)

NODE_APP := .cache/node-app
.PHONY: node-app
node-app: ## build the demo Node.js app's release archives (good 1.0.0, 1.1.0; broken 1.1.1)
	examples/node-app/build.sh $(NODE_APP)

.PHONY: lab
lab: ## Docker engine, Compose v2 plugin, Debian 12/13 systemd images (idempotent)
	lab/lab.sh all

# ------------------------------------------------------------------------------------------ demo
.PHONY: demo
demo: venv lab demo-app ## bring up the lab hosts of inventories/lab and deploy site.yml to them
	ansible-playbook lab/up.yml
	ansible-playbook -i inventories/lab playbooks/site.yml
	@ansible-playbook lab/summary.yml

# The reference stacks (inventories/examples/NAME): their own lab hosts, network and published port.
EXAMPLES := $(sort $(notdir $(wildcard inventories/examples/*)))
.PHONY: examples
examples: ## list the reference stacks (make example-NAME brings one up, example-down-NAME removes it)
	@for e in $(EXAMPLES); do printf '%-18s %s\n' "$$e" "$$(sed -n '2s/^# //p' inventories/examples/$$e/hosts.yml)"; done

.PHONY: example-down-%
example-down-%: venv ## remove the lab hosts of one reference stack (make example-down-node-canary)
	ansible-playbook -i inventories/examples/$* lab/down.yml -e lab_scope=example-$* -e lab_network=selfhosted-ex-$*

.PHONY: example-%
example-%: venv lab demo-app node-app ## bring up one reference stack in the lab with site.yml (make example-node-canary)
	@test -d inventories/examples/$* || { echo "no such example: $* (make examples lists them)"; exit 2; }
	ansible-playbook -i inventories/examples/$* lab/up.yml -e lab_scope=example-$* -e lab_network=selfhosted-ex-$*
	ansible-playbook -i inventories/examples/$* playbooks/site.yml
	@echo "$*: up. nginx: $$(grep -o '127.0.0.1:[0-9]*:443' inventories/examples/$*/hosts.yml | head -1 | sed 's/:443$$//; s|^|https://|')"

.PHONY: demo-down
demo-down: venv ## remove the demo's lab hosts
	ansible-playbook lab/down.yml

# ------------------------------------------------------------------------------------------ test
.PHONY: setup
setup: venv lab demo-app node-app ## the venv, the lab (Docker, images) and the demo apps' artifacts

.PHONY: test
test: ## everything: set-up, lint, sanity, unit, every Molecule scenario; wall time per step and summary at the end
	tests/run-suite.sh setup lint+sanity+unit $(SUITE)

.PHONY: test-quick
test-quick: ## the developer's loop: set-up, lint, sanity and unit, side by side with the smallest scenario
	tests/run-suite.sh setup lint+sanity+unit+scenario-$(QUICK_SCENARIO)

.PHONY: lint
lint: venv ## yamllint, ansible-lint (production profile), ruff, role docs in step with argument specs
	yamllint -s .
	ansible-lint
	ruff check .
	ruff format --check .
	bash -n lab/lab.sh tests/run-suite.sh
	python docs/build.py --check

.PHONY: docs
docs: venv ## role docs from argument specs (docs/roles), changelog preview from fragments
	python docs/build.py

.PHONY: sanity
sanity: venv ## ansible-test sanity on a copy of the checkout placed as ansible_collections/selfhosted/stack
	@mkdir -p ~/.ansible/test/cache
	@pip_version=$$($(BIN)/python -c 'import ansible_test._internal.python_requirements as r; print(r.PIP_VERSION)' 2>/dev/null || echo 24.2); \
	  cache=~/.ansible/test/cache/get_pip_$${pip_version//./_}.py; \
	  [ -f "$$cache" ] || cp tests/sanity/get_pip_offline.py "$$cache"
	rm -rf $(SANITY_DIR) && mkdir -p $(SANITY_DIR)
	git ls-files -co --exclude-standard -z | tar --null -T - -c | tar -x -C $(SANITY_DIR)
	cd $(SANITY_DIR) && ansible-test sanity --venv --python $$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])') --color no

.PHONY: unit
unit: venv ## pytest unit tests of the plugins
	pytest -q tests/unit

# Molecule runs Ansible with Mitogen's strategy (requirements-test.txt): a module then runs in one Python process
# per host kept for the whole play, instead of a new Python per task (`docker exec`, unzip, import): about 2.5x
# less time per task here, where every scenario is many small tasks on 4-7 hosts sharing 2 cores. The roles,
# modules and playbooks are the same; `make demo`, `make example-*` and bench/ run plain Ansible, as users do.
# MITOGEN=0 runs Molecule with plain Ansible too (make molecule-app MITOGEN=0).
MITOGEN ?= 1
ifeq ($(MITOGEN),1)
molecule molecule-% scenario-% converge-% verify-%: export ANSIBLE_STRATEGY_PLUGINS = $(shell $(BIN)/python -c \
  'import ansible_mitogen, os; print(os.path.dirname(ansible_mitogen.__file__) + "/plugins/strategy")' 2>/dev/null)
molecule molecule-% scenario-% converge-% verify-%: export ANSIBLE_STRATEGY = mitogen_linear
endif

.PHONY: molecule
molecule: venv lab demo-app node-app ## every Molecule scenario
	tests/run-suite.sh $(SUITE)

.PHONY: molecule-%
molecule-%: venv lab demo-app node-app ## one scenario, whole sequence (make molecule-core)
	molecule test -s $*

# The same without the prerequisites, for run-suite's side-by-side steps (make test / make molecule made them).
.PHONY: scenario-%
scenario-%:
	molecule test -s $*

.PHONY: converge-%
converge-%: venv lab demo-app node-app ## one scenario, create + converge only, hosts kept (make converge-common)
	molecule converge -s $*

.PHONY: verify-%
verify-%: venv ## run one scenario's verifier against its converged hosts
	molecule verify -s $*

# ----------------------------------------------------------------------------------------- bench
.PHONY: bench
bench: venv lab ## converge timings against the plain apt-get floor (bench/converge)
	python bench/converge

.PHONY: bench-backup
bench-backup: venv lab ## backups at scale: S3 rotation of 100 000 backups vs a bare listing; a 1 GB dump streamed to S3
	python bench/backup

.PHONY: bench-rollout
bench-rollout: venv lab demo-app ## rollouts under load: failed requests, time per host, time back after a failed gate
	python bench/rollout

.PHONY: clean
clean: ## remove lab containers, the sanity copy and caches (keeps images and the venv)
	lab/lab.sh clean
	rm -rf .tmp tests/output .pytest_cache .ruff_cache
