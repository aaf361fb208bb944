# kiln.flatcar — developer entry points. Two commands for a newcomer (as root, or as a user with sudo):
#   make deps          # Debian/Ubuntu packages (through sudo when not root) + the Python venv
#   make test          # sanity, lint, unit and integration tests (the integration tests run as root, through sudo when needed)
SHELL := /bin/bash
# root needs no sudo (and a fresh machine may have none); anyone else gets it for the root-only steps
SUDO ?= $(if $(filter 0,$(shell id -u)),,sudo)
# upstream reference files (flatcar/scripts, update_engine, nebraska): tests that read them skip without
# them; point this at another checkout's parent with `make test KILN_VENDOR_DIR=/path`
KILN_VENDOR_DIR ?= $(abspath $(CURDIR)/../shared/vendor)
export KILN_VENDOR_DIR
VENV ?= $(CURDIR)/.venv
# ansible-core 2.21 needs Python >= 3.12: pyenv's 3.12, else any python3.12, else python3 (checked below)
PY312 ?= $(firstword $(shell PYENV_VERSION=3.12.1 pyenv which python3 2>/dev/null) $(firstword $(sort $(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3))) $(shell command -v python3.12 2>/dev/null) python3)
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/build/collections

.PHONY: deps apt venv test sanity lint unit integration demo demo-clean bench collection changelog-lint test-fast integration-fast molecule

deps: apt venv

apt:
	$(SUDO) hack/install-apt-deps.sh

venv: $(VENV)/.kiln-venv-ok

$(VENV)/.kiln-venv-ok: requirements-dev.txt cli/pyproject.toml
	@$(PY312) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else "kiln needs Python >= 3.12 for ansible-core 2.21: set PY312=/path/to/python3.12")'
	$(PY312) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	$(VENV)/bin/pip install -q -e cli  # the kiln command (cli/README in README.md)
	hack/seed-ansible-test-pip.sh $(PY)
	touch $@

# sanity, lint and unit two at a time (output kept per target), then the integration tests
test: venv collection-path
	$(MAKE) --no-print-directory -j2 --output-sync=target sanity lint unit
	$(MAKE) --no-print-directory integration

collection-path:
	$(PY) -c 'import sys; sys.path.insert(0, "tests"); import kiln_testlib; kiln_testlib.ensure_collection_path()'

sanity: venv
	cd $$(hack/ansible-test-tree.sh) && $(VENV)/bin/ansible-test sanity --local --python 3.12 --color no

lint: venv collection-path
	$(VENV)/bin/ansible-lint --offline --profile production playbooks/ roles/ molecule/
	$(VENV)/bin/antsibull-changelog lint

unit: venv collection-path
	$(PY) -m pytest tests/unit -q -rs -n auto --dist loadfile $(PYTEST_ARGS)
	@head -1 "$${TMPDIR:-/tmp}/kiln-bad-input-summary.txt" 2>/dev/null || true

# Integration files run in parallel (pytest-xdist): one xdist group per file, files that must not overlap share a
# group (tests/integration/conftest.py, docs/performance.md "Test-suite time"), heaviest groups first.
# KILN_INTEGRATION_WORKERS=0 runs them serially, as before.
KILN_INTEGRATION_WORKERS ?= 2
XDIST_ARGS = $(if $(filter 0,$(KILN_INTEGRATION_WORKERS)),-x,-n $(KILN_INTEGRATION_WORKERS) --dist loadgroup --no-loadscope-reorder --maxfail=1)
integration: venv collection-path
	$(SUDO) env PATH="$(PATH)" ANSIBLE_COLLECTIONS_PATH="$(ANSIBLE_COLLECTIONS_PATH)" KILN_VENDOR_DIR="$(KILN_VENDOR_DIR)" \
	  $(PY) -m pytest tests/integration -q -rs --durations=10 $(XDIST_ARGS) $(PYTEST_ARGS)

# make test-fast: sanity, lint, unit and the fastest integration files (each under ~20 s, about 1 min
# together, by `--durations` on 2 cores; no QEMU boot, no stand-in SDK container), two at a time (sanity
# alone is ~2.5 min): under 5 minutes on 2 cores. `make test` runs everything (~30 min).
FAST_INTEGRATION ?= tests/integration/test_sdk_preflight.py tests/integration/test_demo_clean.py \
	tests/integration/test_iac_install.py tests/integration/test_collection.py tests/integration/test_gpg_key.py
test-fast: venv collection-path
	$(MAKE) --no-print-directory -j2 --output-sync=target sanity lint unit integration-fast

integration-fast: venv collection-path
	$(SUDO) env PATH="$(PATH)" ANSIBLE_COLLECTIONS_PATH="$(ANSIBLE_COLLECTIONS_PATH)" KILN_VENDOR_DIR="$(KILN_VENDOR_DIR)" \
	  $(PY) -m pytest $(FAST_INTEGRATION) -q -rs --durations=5 $(PYTEST_ARGS)

# molecule/<role>/: converge, idempotence, verify of every role on a real (network-namespace) host each;
# also run by `make integration` (tests/integration/test_molecule.py). MOLECULE_SCENARIOS=cache to pick.
MOLECULE_SCENARIOS ?= builder cache signer tester mirror
molecule: venv collection-path
	$(SUDO) env PATH="$(PATH)" ANSIBLE_COLLECTIONS_PATH="$(ANSIBLE_COLLECTIONS_PATH)" KILN_VENDOR_DIR="$(KILN_VENDOR_DIR)" \
	  $(PY) hack/molecule_fleet.py $(MOLECULE_SCENARIOS)

collection: venv
	rm -rf build/galaxy && mkdir -p build/galaxy
	$(VENV)/bin/ansible-galaxy collection build --output-path build/galaxy .

# the demo's directory (everything it makes is recorded there; demo-clean removes it all)
KILN_DEMO_DIR ?= /tmp/kiln-demo
demo: venv collection-path
	$(SUDO) env PATH="$(PATH)" ANSIBLE_COLLECTIONS_PATH="$(ANSIBLE_COLLECTIONS_PATH)" KILN_DEMO_DIR="$(KILN_DEMO_DIR)" hack/demo.sh up

demo-clean:
	$(SUDO) env PATH="$(PATH)" KILN_DEMO_DIR="$(KILN_DEMO_DIR)" hack/demo.sh down

bench: venv collection-path
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Regenerate the committed SDK contract (tests/sdk_contract/<release line>.json) from flatcar/scripts;
# tests/unit/test_sdk_contract.py fails when the committed file and the vendor checkout disagree.
.PHONY: sdk-contract
sdk-contract: venv
	@test -f "$(KILN_VENDOR_DIR)/flatcar-scripts/run_sdk_container" || { echo "no flatcar/scripts at $(KILN_VENDOR_DIR)/flatcar-scripts: make sdk-contract KILN_VENDOR_DIR=/path"; exit 1; }
	$(PY) hack/sdk-contract.py -o tests/sdk_contract "$(KILN_VENDOR_DIR)/flatcar-scripts"
# Execution environment for AWX / AAP (docs/awx.md). ee-base: kiln-ee-base:local, a debootstrap'ed Debian trixie
# (Python 3.13) imported into the local Docker engine, no registry pull (rebuilt only when hack/build-ee-base.sh
# changes). KILN_EE_BASE: another base image (then ee-base is not built). The build steps use the host's network
# (pip reaches PyPI the way the host does; the engine's bridge needs IP forwarding, which the host may not allow).
KILN_EE_BASE ?= kiln-ee-base:local
.PHONY: ee ee-base
ee-base:
	$(SUDO) hack/build-ee-base.sh kiln-ee-base:local
ee: collection $(if $(filter kiln-ee-base:local,$(KILN_EE_BASE)),ee-base)
	$(VENV)/bin/ansible-builder build -f execution-environment.yml -c build/ee -t kiln-flatcar-ee:latest \
	  --container-runtime docker --build-arg EE_BASE_IMAGE=$(KILN_EE_BASE) --extra-build-cli-args=--network=host
