# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both build .venv/ at the repository root from constraints.txt, so CI installs the same versions.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
MODEL ?= all-MiniLM-L6-v2
DEMO_OUT ?= demo-out
EXTRAS := export,tabular,test,plot,container,numpy-build,lint

.PHONY: demo test lint install system-deps lambda-ric sam clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip==26.3"
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

# Debian tools the tests use: skopeo, umoci, a local registry, htpasswd (apache2-utils) for containers;
# qemu-user to rerun the int8 tests on an emulated CPU without VNNI; shellcheck for actionlint to check the
# scripts of the workflows and the action. Installed only when missing.
SYSTEM_PACKAGES := skopeo umoci docker-registry apache2-utils qemu-user shellcheck
system-deps:
	@missing=""; for t in skopeo umoci docker-registry htpasswd qemu-x86_64 shellcheck; do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	  else echo "missing:$$missing (run: sudo apt-get install $(SYSTEM_PACKAGES))"; exit 1; fi; fi

# AWS's runtime interface client (what Lambda's managed Python runtimes drive handlers with) for the
# Lambda targets the tests run it under, installed beside the tests, never into the venv.
RIC_PYTHONS := 3.12
RIC := .cache/lambda-ric
$(RIC)/.installed: constraints.txt
	for v in $(RIC_PYTHONS); do \
	  $(PY) -m pip install --quiet --disable-pip-version-check --upgrade --target $(RIC)/$$v -c constraints.txt \
	    --python-version $$v --implementation cp --only-binary=:all: --platform manylinux2014_x86_64 \
	    awslambdaric snapshot-restore-py simplejson || exit 1; done
	touch $@

lambda-ric: install $(RIC)/.installed

# The validators the tests run on what slimserve generates: the AWS SAM CLI (`sam validate [--lint]` on every
# template.yaml) and actionlint (docs/examples/*.yml), pinned in requirements/sam.txt, in a venv of their own
# because aws-sam-cli pins libraries (click, pydantic...) below the versions slimserve uses.
SAM := .cache/sam
$(SAM)/.installed: requirements/sam.txt
	rm -rf $(SAM)
	$(PYTHON) -m venv $(SAM)
	$(SAM)/bin/pip install --quiet --disable-pip-version-check -r requirements/sam.txt
	touch $@

sam: $(SAM)/.installed

demo: install
	$(VENV)/bin/slimserve build $(MODEL) --platform aws-lambda-zip -o $(DEMO_OUT)

# The tests' runtime closures and wheels (numpy built without BLAS among them) are cached in .cache/slimserve
# (ignored by git), not in the user's ~/.cache.
test: install system-deps lambda-ric sam lint
	SLIMSERVE_CACHE=$(CURDIR)/.cache/slimserve $(PY) -m pytest -q

# ruff over everything Python here; mypy --strict over slimserve (optimizer/, packagers/, profiles/ through
# the slimserve/* links), its cache in .cache/mypy (ignored by git).
lint: install
	$(VENV)/bin/ruff check slimserve optimizer packagers profiles tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(DEMO_OUT)
