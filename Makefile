# docker egress: build, test and install the `docker-egress` Docker CLI plugin.
#
#   make build     type-check (tsc) and package dist/docker-egress (esbuild + Node SEA)
#   make install   build, then install into $(PLUGIN_DIR) (default: per-user Docker CLI plugins)
#   make test      build, install the test engines, then run the ava tests from build/ (tsc output):
#                  the unit tests once, the integration suite on each Docker engine (see below)
#   make image     build the container image docker-egress:<version> and :latest from dist/docker-egress
#                  and this host's nft, iptables, ip and conntrack (pkg/image.sh; pulls nothing)
#   make engines   install Docker 29.7.2 and Docker 28 into .cache/engines (test/engines/install.sh)
#   make check     type-check only
#   make promtool  extract Prometheus' promtool into .cache/promtool (test/integration/metrics.test.ts)
#   make clean     remove build/ and dist/ (and .cache/: the Node runtime, the engines)
#
# System-wide install: make install PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
# Dependencies: `npm ci` runs by itself when node_modules is missing or older than package-lock.json.
#
# The matrix of `make test`: runs of ENGINE:BACKEND:SCOPE, in order (README "Tests" says why these):
#   ENGINE   the Docker engine of the sandbox (DOCKER_EGRESS_TEST_ENGINE, test/helpers/engines.ts):
#            29-nftables, 29-iptables, 28, 20.10
#   BACKEND  the plugin's firewall backend (DOCKER_EGRESS_FIREWALL_BACKEND): nftables, iptables
#   SCOPE    full (INTEGRATION_TESTS) or matrix (MATRIX_TESTS)
#   ENGINES       only the runs of these engines (default: all four)
#   MATRIX        the runs (default below)
#   UNIT_TESTS    run once before the engines (empty: skip them)
#   AVA_FLAGS     passed to every ava run
# e.g. make test ENGINES=28 UNIT_TESTS=                         (the runs on Docker 28 only)
#      make test MATRIX=20.10:iptables:full UNIT_TESTS=          (one run)
#      make test MATRIX=28:nftables:matrix MATRIX_TESTS=build/test/integration/sandbox.test.js

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
NPM ?= npm

ENGINES ?= 29-nftables 29-iptables 28 20.10
MATRIX ?= 29-nftables:nftables:full 29-iptables:nftables:full 28:iptables:full 20.10:nftables:full 20.10:iptables:full
MATRIX_TESTS ?= build/test/integration/sandbox.test.js build/test/integration/create.test.js build/test/integration/sync.test.js build/test/integration/backends.test.js
# Globs reach ava as they are (the recipe runs with `set -f`): ava expands them.
UNIT_TESTS ?= build/test/{core,cli,adapters,commands,pkg,service}/**/*.test.js
INTEGRATION_TESTS ?= build/test/integration/**/*.test.js

EXE := dist/docker-egress
# tsc emits build/ for the tests; this stamp records a successful, complete emit.
TSC_STAMP := build/.tsc-stamp
# npm writes this file on every install: node_modules is current when it is newer than the lock file.
NPM_STAMP := node_modules/.package-lock.json

# Directories are listed too: their mtime changes when a file is added or removed. Absolute paths,
# so that the directory test/ is never mistaken for the target `test`.
TS_INPUTS := $(shell find $(CURDIR)/src $(CURDIR)/test $(CURDIR)/pkg \
		-type d -o -name '*.ts' -o -name '*.json' 2>/dev/null) \
	tsconfig.json package.json package-lock.json
BUNDLE_INPUTS := $(shell find $(CURDIR)/src -type d -o -name '*.ts' -o -name '*.json' 2>/dev/null) \
	plugin-metadata pkg/build.mjs package.json package-lock.json

.DEFAULT_GOAL := build
.DELETE_ON_ERROR:
.PHONY: build install install-service uninstall test check clean engines image promtool

build: $(EXE)

# Type-check (and emit build/) first: a binary is only made from code that type-checks.
$(EXE): $(TSC_STAMP) $(BUNDLE_INPUTS) $(SEA_NODE) $(NPM_STAMP)
	$(NODE) pkg/build.mjs --node "$(SEA_NODE)"

# (touched: the file keeps the npm tarball's 1985 mtime, which made every `make` fetch it again)
$(DEFAULT_SEA_NODE): pkg/node-runtime.json pkg/fetch-node.mjs
	$(NODE) pkg/fetch-node.mjs $@
	touch $@

# A full emit into an empty build/, so files deleted from src/ or test/ leave no stale .js behind
# for ava to pick up.
$(TSC_STAMP): $(TS_INPUTS) $(NPM_STAMP)
	rm -rf build
	$(TSC) -p tsconfig.json
	touch $@

# A fresh clone (no node_modules) or a changed lock file: install the dependencies first.
$(NPM_STAMP): package-lock.json
	$(NPM) ci
	touch $@

check: $(NPM_STAMP)
	$(TSC) -p tsconfig.json --noEmit

# Docker 29.7.2 (../shared/engines, or DOCKER_EGRESS_ENGINES_SRC) and Docker 28 (Debian sid) into
# .cache/engines; quick when already there. Only the engines named in ENGINES.
engines:
	test/engines/install.sh $(ENGINES)

# Prometheus' promtool for `promtool check metrics` (metrics.test.ts), from Debian's prometheus package.
promtool:
	test/tools/install-promtool.sh

# Every run is made (a failing engine does not hide the next ones); the summary says which failed.
test: $(EXE) $(TSC_STAMP) engines
	@set -f; failed=''; summary=''; \
	header() { printf '\n%s\n== %s\n%s\n' "$$(printf '=%.0s' $$(seq 1 78))" "$$1" "$$(printf '=%.0s' $$(seq 1 78))"; }; \
	if [ -n "$$(echo $(UNIT_TESTS))" ]; then \
		header "unit tests: $(UNIT_TESTS)"; start=$$(date +%s); \
		if $(AVA) $(AVA_FLAGS) $(UNIT_TESTS); then r=passed; else r=FAILED; failed="$$failed unit"; fi; \
		summary="$$summary\n  unit tests: $$r ($$(( $$(date +%s) - start )) s)"; \
	fi; \
	for run in $(MATRIX); do \
		engine=$${run%%:*}; rest=$${run#*:}; backend=$${rest%%:*}; scope=$${rest#*:}; \
		case " $(ENGINES) " in *" $$engine "*) ;; *) continue;; esac; \
		if [ "$$scope" = full ]; then files="$(INTEGRATION_TESTS)"; what='full integration suite'; else files="$(MATRIX_TESTS)"; what='MATRIX_TESTS'; fi; \
		header "engine $$engine, egress backend $$backend: $$what: $$files"; start=$$(date +%s); \
		if DOCKER_EGRESS_TEST_ENGINE=$$engine DOCKER_EGRESS_FIREWALL_BACKEND=$$backend $(AVA) $(AVA_FLAGS) $$files; then r=passed; else r=FAILED; failed="$$failed $$run"; fi; \
		summary="$$summary\n  $$engine, egress $$backend ($$what): $$r ($$(( $$(date +%s) - start )) s)"; \
	done; \
	header "summary"; printf "$$summary\n"; \
	if [ -n "$$failed" ]; then echo "FAILED:$$failed"; exit 1; fi

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

# The container image (README "Running watch in a container"): IMAGE_DOCKER is the docker CLI that
# imports it (with its DOCKER_HOST), IMAGE_NAME its name.
IMAGE_DOCKER ?= docker
IMAGE_NAME ?= docker-egress

image: $(EXE)
	IMAGE_DOCKER='$(IMAGE_DOCKER)' pkg/image.sh --name '$(IMAGE_NAME)' $(EXE)

uninstall:
	rm -f "$(DESTDIR)$(PLUGIN_DIR)/docker-egress"

clean:
	rm -rf build dist .cache
