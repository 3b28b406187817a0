# shoal: every install step lives here. Run as root on Debian 12.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHOAL := $(BIN)/shoal
IMAGE_DIR ?= /var/lib/shoal/images
DEMO_DIR := /run/shoal-demo
DEB_PACKAGES := runc busybox-static iproute2 iputils-ping nftables docker-registry skopeo umoci iperf3 dnsutils

.PHONY: all deps venv image demo demo-stop test test-fast drills bench clean

all: venv

## Debian packages (skips apt when everything is already installed)
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "==> apt-get install $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

## the Python environment, with shoal installed editable
venv: $(BIN)/.installed
$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[test]'
	touch $@

## the example image: a busybox rootfs imported into the local image store as busybox:latest
image: deps venv
	@rm -rf build/busybox-rootfs && mkdir -p build/busybox-rootfs/{bin,etc,proc,sys,dev,tmp,root}
	@cp /bin/busybox build/busybox-rootfs/bin/busybox && chroot build/busybox-rootfs /bin/busybox --install -s /bin
	@printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > build/busybox-rootfs/etc/passwd
	@printf 'root:x:0:\nnogroup:x:65534:\n' > build/busybox-rootfs/etc/group
	$(SHOAL) image import-rootfs build/busybox-rootfs busybox:latest --image-dir $(IMAGE_DIR)

## README command 1: a dev agent in the background running the example job (3 busybox containers)
demo: image
	@mkdir -p $(DEMO_DIR)
	@if [ -f $(DEMO_DIR)/agent.pid ] && kill -0 $$(cat $(DEMO_DIR)/agent.pid) 2>/dev/null; then \
	  echo "==> dev agent already running (pid $$(cat $(DEMO_DIR)/agent.pid))"; \
	else \
	  setsid $(SHOAL) agent --dev --image-dir $(IMAGE_DIR) --data-dir $(DEMO_DIR)/data --log-json > $(DEMO_DIR)/agent.log 2>&1 < /dev/null & \
	  echo $$! > $(DEMO_DIR)/agent.pid; \
	  echo "==> dev agent started (pid $$(cat $(DEMO_DIR)/agent.pid), log $(DEMO_DIR)/agent.log)"; \
	fi
	@for i in $$(seq 1 100); do $(SHOAL) node status --json 2>/dev/null | grep -q '"ready"' && break; sleep 0.2; done
	$(SHOAL) job run jobs/examples/example.hcl
	$(SHOAL) job status example
	@echo; echo "==> runc list"; runc list
	@echo; echo "The dev agent keeps running. Try: $(SHOAL) alloc logs <alloc-id>"
	@echo "Stop it with: make demo-stop"

demo-stop:
	-@$(SHOAL) job stop example 2>/dev/null
	@if [ -f $(DEMO_DIR)/agent.pid ]; then \
	  pid=$$(cat $(DEMO_DIR)/agent.pid); kill -TERM $$pid 2>/dev/null; \
	  for i in $$(seq 1 100); do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; \
	  rm -f $(DEMO_DIR)/agent.pid; echo "==> dev agent stopped"; \
	fi
	@rm -rf $(DEMO_DIR)/data

## README command 2: everything installed, then the default test suite
test: deps venv
	$(BIN)/pytest -q

test-fast: venv
	$(BIN)/pytest -q -m "not root and not drill and not slow"

## the failover drills (tests/drills), three runs in a row, then a table of their figures (medians)
DRILL_RESULTS := build/drills.jsonl
drills: deps venv
	@mkdir -p build && rm -f $(DRILL_RESULTS)
	@status=0; for run in 1 2 3; do \
	  echo "==> drills: run $$run of 3"; \
	  SHOAL_DRILL_RESULTS=$(DRILL_RESULTS) SHOAL_DRILL_RUN=$$run $(BIN)/pytest -q -s -m drill tests/drills || status=1; \
	done; \
	echo; echo "==> drill figures ($(DRILL_RESULTS))"; \
	$(BIN)/python tests/drills/summary.py $(DRILL_RESULTS) || status=1; \
	exit $$status

bench: image
	$(BIN)/python bench/e2e_start.py

clean:
	rm -rf build $(VENV) *.egg-info .pytest_cache
