# trackrelay. `make run` starts a development relay and redirector; `make test`
# is the CI contract (.ci/run runs exactly that).

GO          ?= go
BIN         := bin/trackrelay
DATA        ?= ./data
FUZZTIME    ?= 10s
BENCHTIME   ?= 1s
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build run test deps unit lint fuzz bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/trackrelay

# The dev stack: relay on 127.0.0.1:2525, redirector on 127.0.0.1:8080,
# internal API on 127.0.0.1:8025, delivered mail as .eml in $(DATA)/outbox.
# ARGS go to serve, e.g. make run ARGS="--smtp-addr 127.0.0.1:2526".
ARGS ?=
run: build
	./$(BIN) serve --dev --data $(DATA) $(ARGS)

test: deps lint unit

# Tools the tests drive, installed from Debian when missing and the machine
# allows it (root with apt-get, as on CI): headless Chromium (browser tests),
# PostgreSQL (the store's second backend), pebble (a real ACME server),
# Postfix (real bounces), dkimpy (an independent DKIM verifier). Elsewhere the
# tests that need a missing tool skip and say why.
DEPS_CHECK := chromium:chromium /usr/lib/postgresql/15/bin/initdb:postgresql \
	pebble:pebble postfix:postfix /usr/bin/dkimverify:python3-dkim
deps:
	@missing=""; for pair in $(DEPS_CHECK); do \
	  tool=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$tool >/dev/null 2>&1 || [ -x "$$tool" ] || [ -x "/usr/bin/$$tool" ] || [ -x "/usr/sbin/$$tool" ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing test tools:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null 2>&1 \
	    || echo "could not install$$missing; the tests that need them will skip"; \
	fi

unit:
	$(GO) test -race -count=1 ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# A short run of every fuzz target (FUZZTIME each).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# Every Go benchmark, then `trackrelay rewrite` against a bare tokenizer
# process over 32 MB of newsletter HTML, then the redirector under wrk
# against nginx's bare `return 302` (the shared script installs wrk and
# nginx when missing).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...
	@if [ -f ../shared/bench/newsletter.eml ]; then \
	  bash rewrite/bench/rewrite-vs-tokenizer.sh 7 32; \
	else echo "bench: ../shared is absent; rewrite vs tokenizer not run"; fi
	@if [ -f ../shared/bench/redirector-vs-nginx.sh ]; then \
	  BREAKDOWN=1 bash redirector/bench/wrk.sh 8 64; \
	else echo "bench: ../shared is absent; redirector vs nginx not run"; fi

clean:
	rm -rf bin
