# evofs — see README.md. Every target works on a fresh clone.
GO      ?= go
BIN     := bin/evofs
MNT     ?= ./mnt

.PHONY: build run test unit integration bench bench-peer lint fmt

# -buildvcs=auto: `evofs version` shows the commit (when git is there).
build:
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/evofs
	$(GO) build -buildvcs=auto -o bin/mount.evofs ./cmd/mount.evofs

# Mount the embedded local workspace at ./mnt in the foreground; Ctrl-C (or umount) leaves.
run: build
	@mkdir -p $(MNT)
	@echo "evofs: mounting the embedded local workspace at $(MNT); press Ctrl-C or run 'umount $(MNT)' to leave"
	$(BIN) mount --local $(MNT)

# lint first (cheap), then unit tests with the race detector, then the real-mount tests.
test: lint unit integration

# -race: these packages are concurrent; -count=1: never a cached pass.
unit:
	$(GO) test -race -count=1 -timeout 10m ./cmd/... ./remote/... ./cache/... ./writeback/... ./fusefs/...

# -p 1: one mounting package at a time; -timeout: a backtrace before CI gives up.
# Tests that cannot mount here skip (fail under CI=true) and say so in
# $$EVOFS_SKIP_LOG; a passing run with skips ends with a loud line.
SKIP_LOG := bin/skipped-mount-tests
integration:
	@mkdir -p bin && rm -f $(SKIP_LOG)
	@EVOFS_SKIP_LOG=$(CURDIR)/$(SKIP_LOG) $(GO) test -race -count=1 -p 1 -timeout 12m ./integration/...; rc=$$?; \
	if [ -s $(SKIP_LOG) ]; then \
	  echo "*** WARNING: $$(sort -u $(SKIP_LOG) | wc -l) mounting tests were SKIPPED, not passed: $$(head -n1 $(SKIP_LOG) | cut -f2-) (see README, 'Mounting as a normal user') ***"; \
	fi; exit $$rc

# Speed targets as ratios (baseline time / evofs time) measured in one run;
# one of them: make bench BENCH=Tree20k/find; repeated: make bench BENCHFLAGS='-count 3'.
# -p 1: one package's benchmarks at a time (they share 2 cores and one disk).
BENCH      ?= .
BENCHFLAGS ?=
bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime 1x -p 1 -timeout 60m $(BENCHFLAGS) ./remote/ ./cache/ ./integration/

# evofs and rclone mount side by side over one Azurite, one table (see
# integration/peer/main.go; README, 'Against rclone mount'). Root only.
# Installs what is missing, saying so: rclone and fuse3 (apt-get), Azurite
# (npm). Small debugging runs: e.g. make bench-peer PEER_READ_MIB=16 PEER_ROWS=read.
AZURITE_VERSION := 3.37.0
bench-peer: build
	@command -v rclone >/dev/null 2>&1 && command -v fusermount3 >/dev/null 2>&1 || { \
	  echo "bench-peer: installing rclone and fuse3 with apt-get"; \
	  apt-get install -y -qq rclone fuse3 >/dev/null || { apt-get update -qq && apt-get install -y -qq rclone fuse3 >/dev/null; }; }
	@if ! command -v azurite-blob >/dev/null 2>&1 || [ "$$(azurite --version 2>/dev/null)" != "$(AZURITE_VERSION)" ]; then \
	  echo "bench-peer: installing azurite@$(AZURITE_VERSION) with npm"; \
	  npm install -g --no-fund --no-audit azurite@$(AZURITE_VERSION) >/dev/null; fi
	$(GO) build -o bin/bench-peer ./integration/peer
	PEER_EVOFS=$(CURDIR)/$(BIN) bin/bench-peer

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')
