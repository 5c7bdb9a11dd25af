# lockstep — build, test, benchmark and lint. See README.md.

GO      ?= go
BIN     := bin/lockstep
DEMO    := demo

.PHONY: all build test bench lint fuzz demo clean

all: build

## build: compile the lockstep command into bin/
build:
	$(GO) build -o $(BIN) ./cmd/lockstep

## test: vet, then every package's tests under the race detector
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m ./...

## bench: benchmarks over file-backed members in $TMPDIR, each figure beside
## its baseline from the same run (medians of interleaved rounds); read
## latency with a slow member over a fixed 2000 reads, beside the healthy run
bench:
	@mkdir -p bin
	$(GO) test -run '^$$' -bench 'Benchmark(IO|Encode)' -benchtime 1s -timeout 60m ./raid/ | tee bin/bench.txt
	$(GO) test -run '^$$' -bench 'BenchmarkSlowMember' -benchtime 2000x -timeout 20m ./raid/ | tee -a bin/bench.txt
	@echo
	$(GO) run ./cmd/benchratio < bin/bench.txt

## lint: formatting, vet, staticcheck, and a tidy go.mod
lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	$(GO) mod tidy -diff

## fuzz: a bounded run of every fuzz target
fuzz:
	$(GO) test ./raid/ -run '^$$' -fuzz FuzzExtents -fuzztime 30s
	$(GO) test ./raid/ -run '^$$' -fuzz FuzzDecodeLabel -fuzztime 30s

## demo: create a raid6 array on six member directories in ./demo, show its
## status, and benchmark a scratch array beside it against plain file I/O
demo: build
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(BIN) create --layout raid6 --size 256MiB --name demo $(DEMO)/disk0 $(DEMO)/disk1 $(DEMO)/disk2 $(DEMO)/disk3 $(DEMO)/disk4 $(DEMO)/disk5
	$(BIN) status $(DEMO)/disk0 $(DEMO)/disk1 $(DEMO)/disk2 $(DEMO)/disk3 $(DEMO)/disk4 $(DEMO)/disk5
	$(BIN) bench --dir $(DEMO) --layout raid6 --members 6 --size 512MiB

clean:
	rm -rf bin $(DEMO)
