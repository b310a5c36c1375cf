# docker egress: build, test and install the `docker-egress` Docker CLI plugin.
#
#   make build     type-check (tsc) and package dist/docker-egress (esbuild + Node SEA)
#   make install   build, then install into $(PLUGIN_DIR) (default: per-user Docker CLI plugins)
#   make test      build, then run the ava tests from build/ (tsc output)
#   make check     type-check only
#   make clean     remove build/ and dist/
#
# System-wide install: make install PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
# Dependencies are expected to be installed already (npm ci).

# Expanded by the shell at install time, so DOCKER_CONFIG and HOME are those of the caller.
PLUGIN_DIR ?= $${DOCKER_CONFIG:-$$HOME/.docker}/cli-plugins
DESTDIR ?=

NODE ?= node
# The Node.js binary the executable is made of (default: the one that runs the build).
# The Node.js runtime inside the executable: Node 22 from the npm registry, pinned in
# pkg/node-runtime.json (Node 20's libuv cannot reach the CLI's plugin socket; see README).
# SEA_NODE=/path/to/node (>= 22) uses another binary.
SEA_NODE_VERSION := $(shell sed -n 's/.*"version": "\(.*\)".*/\1/p' pkg/node-runtime.json)
DEFAULT_SEA_NODE := .cache/node-v$(SEA_NODE_VERSION)
SEA_NODE ?= $(DEFAULT_SEA_NODE)
TSC ?= node_modules/.bin/tsc
AVA ?= node_modules/.bin/ava
AVA_FLAGS ?=

EXE := dist/docker-egress
# tsc emits build/ for the tests; this stamp records a successful, complete emit.
TSC_STAMP := build/.tsc-stamp

# Directories are listed too: their mtime changes when a file is added or removed. Absolute paths,
# so that the directory test/ is never mistaken for the target `test`.
TS_INPUTS := $(shell find $(CURDIR)/src $(CURDIR)/test $(CURDIR)/pkg \
		-type d -o -name '*.ts' -o -name '*.json' 2>/dev/null) \
	tsconfig.json package.json package-lock.json
BUNDLE_INPUTS := $(shell find $(CURDIR)/src -type d -o -name '*.ts' -o -name '*.json' 2>/dev/null) \
	plugin-metadata pkg/build.mjs package.json package-lock.json

.DEFAULT_GOAL := build
.DELETE_ON_ERROR:
.PHONY: build install install-service uninstall test check clean

build: $(EXE)

# Type-check (and emit build/) first: a binary is only made from code that type-checks.
$(EXE): $(TSC_STAMP) $(BUNDLE_INPUTS) $(SEA_NODE)
	$(NODE) pkg/build.mjs --node "$(SEA_NODE)"

$(DEFAULT_SEA_NODE): pkg/node-runtime.json pkg/fetch-node.mjs
	$(NODE) pkg/fetch-node.mjs $@

# A full emit into an empty build/, so files deleted from src/ or test/ leave no stale .js behind
# for ava to pick up.
$(TSC_STAMP): $(TS_INPUTS)
	rm -rf build
	$(TSC) -p tsconfig.json
	touch $@

check:
	$(TSC) -p tsconfig.json --noEmit

test: $(EXE) $(TSC_STAMP)
	$(AVA) $(AVA_FLAGS)

# Benchmarks of issue 5 (start-up, sync at scale, watch latency and memory) on the real-Docker
# sandbox of the tests, so they need what `make test` needs (root, dockerd, ...). About 15 minutes;
# prints a table and writes bench/results/latest.json. BENCH_FLAGS=--quick: a 2-minute trial run.
BENCH_FLAGS ?=
.PHONY: bench
bench: $(EXE) $(TSC_STAMP)
	$(NODE) bench/run.mjs $(BENCH_FLAGS)

install: $(EXE)
	install -D -m 0755 $(EXE) "$(DESTDIR)$(PLUGIN_DIR)/docker-egress"

# The watch service: the binary system-wide, the systemd unit, then enable and start it (when
# systemd runs this machine; otherwise the files are installed and the commands printed).
SERVICE_PLUGIN_DIR ?= /usr/local/lib/docker/cli-plugins
UNIT_DIR ?= /etc/systemd/system
SYSTEMCTL ?= systemctl

install-service: $(EXE)
	install -D -m 0755 $(EXE) "$(DESTDIR)$(SERVICE_PLUGIN_DIR)/docker-egress"
	mkdir -p "$(DESTDIR)$(UNIT_DIR)"
	sed 's|@BINARY@|$(SERVICE_PLUGIN_DIR)/docker-egress|' pkg/docker-egress.service >"$(DESTDIR)$(UNIT_DIR)/docker-egress.service"
	chmod 0644 "$(DESTDIR)$(UNIT_DIR)/docker-egress.service"
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		$(SYSTEMCTL) daemon-reload && $(SYSTEMCTL) enable --now docker-egress.service; \
	else \
		echo "systemd is not running here (or DESTDIR is set): run 'systemctl daemon-reload && systemctl enable --now docker-egress' on the target"; \
	fi

uninstall:
	rm -f "$(DESTDIR)$(PLUGIN_DIR)/docker-egress"

clean:
	rm -rf build dist .cache
