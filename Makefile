VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean chromium

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/llmbus demo

test: $(STAMP) chromium
	$(PY) -m pytest -q

# The dashboard's browser test drives Debian's Chromium: installed here when missing and run as root
# on Debian (about 35 s with apt-get update); a failed install is tolerated, the test then skips.
chromium:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || [ ! -f /etc/debian_version ] || \
		{ (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
		  || echo "chromium could not be installed: the dashboard's browser test will skip"; }

bench: $(STAMP)
	$(VENV)/bin/llmbus bench

clean:
	rm -rf $(VENV) .llmbus
