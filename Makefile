# lockstep — build, test, benchmark and lint. See README.md.

GO      ?= go
BIN     := bin/lockstep
DEMO    := demo

.PHONY: all build deps test soak bench lint fuzz demo demo-stop clean

all: build

## build: compile the lockstep command into bin/
build:
	$(GO) build -o $(BIN) ./cmd/lockstep

## deps: the programs the end-to-end tests and benchmarks drive (fio,
## mkfs.ext4/e2fsck, fusermount3), installed with apt-get when missing; and
## /dev/fuse open to ordinary users (mode 0666, as udev sets it), for the
## test that mounts as one
deps:
	@missing=""; \
	for t in fio:fio mkfs.ext4:e2fsprogs e2fsck:e2fsprogs fusermount3:fuse3 losetup:mount fstrim:util-linux; do \
	  command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing:$$missing (install them: the tests that need them will skip)"; fi; \
	fi
	@if [ "$$(id -u)" = 0 ] && [ -c /dev/fuse ]; then chmod 0666 /dev/fuse; fi

## test: vet, then every package's tests under the race detector (among
## them every fault scenario in testdata/scenarios, in its short form)
test: deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m ./...

## soak: the crash harness at length (LOCKSTEP_CRASH_ITERATIONS crashes per
## layout, 200 unless set), then its tally; then every fault scenario in its
## long form (ten times the operations), as root
soak: deps build
	@mkdir -p bin
	@LOCKSTEP_CRASH_ITERATIONS=$${LOCKSTEP_CRASH_ITERATIONS:-200} $(GO) test -count=1 -timeout 120m -run '^TestCrashRecovery$$' -v ./raid/ > bin/soak.txt 2>&1; \
	status=$$?; grep -E -- '--- (PASS|FAIL)|^(ok|FAIL|panic)|tally|crash_test.go:[0-9]+: iteration' bin/soak.txt; exit $$status
	$(BIN) chaos run --long testdata/scenarios/*.yaml | tee bin/chaos-long.txt

## bench: benchmarks over file-backed members in $TMPDIR, each figure beside
## its baseline from the same run (medians of interleaved rounds); read
## latency with a slow member over a fixed 2000 reads, beside the healthy run;
## the write-intent log's cost and the time to recover a 2 GiB volume after a
## crash; rebuild and scrub rates beside a plain file's sequential writes and
## reads, and read latency during a default-rate rebuild beside a healthy
## array, the degraded one idle, and plain files read with a degraded read's
## fan-out; then fio through the mount beside a FUSE passthrough of a plain
## file
bench: deps
	@mkdir -p bin
	$(GO) test -run '^$$' -bench 'Benchmark(IO|Encode)' -benchtime 1s -timeout 60m ./raid/ | tee bin/bench.txt
	$(GO) test -run '^$$' -bench 'BenchmarkSlowMember' -benchtime 2000x -timeout 20m ./raid/ | tee -a bin/bench.txt
	$(GO) test -run '^$$' -bench 'BenchmarkConsistency' -benchtime 1s -timeout 20m ./raid/ | tee -a bin/bench.txt
	$(GO) test -run '^$$' -bench 'BenchmarkRecovery' -benchtime 3x -timeout 20m ./raid/ | tee -a bin/bench.txt
	$(GO) test -run '^$$' -bench 'BenchmarkBackground' -benchtime 1x -timeout 30m ./scrub/ | tee -a bin/bench.txt
	@echo
	$(GO) run ./cmd/benchratio < bin/bench.txt
	@echo
	$(GO) run ./cmd/benchmount --rounds 3 --runtime 3s | tee bin/bench-mount.txt

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

## demo: create a raid6 array on six member directories in ./demo, mount it
## at ./demo/mnt (the volume is ./demo/mnt/volume) and show its status
demo: build
	@if [ -d $(DEMO)/mnt ]; then $(BIN) umount $(DEMO)/mnt 2>/dev/null || true; fi
	rm -rf $(DEMO) && mkdir -p $(DEMO)/mnt
	$(BIN) create --layout raid6 --size 256MiB --name demo --spare $(DEMO)/spare0 $(DEMO)/disk0 $(DEMO)/disk1 $(DEMO)/disk2 $(DEMO)/disk3 $(DEMO)/disk4 $(DEMO)/disk5
	$(BIN) mount --daemon $(DEMO)/disk0 $(DEMO)/disk1 $(DEMO)/disk2 $(DEMO)/disk3 $(DEMO)/disk4 $(DEMO)/disk5 $(DEMO)/mnt
	$(BIN) status $(DEMO)/mnt

## demo-stop: unmount the demo array
demo-stop: build
	$(BIN) umount $(DEMO)/mnt

clean:
	@if [ -d $(DEMO)/mnt ] && [ -x $(BIN) ]; then $(BIN) umount $(DEMO)/mnt 2>/dev/null || true; fi
	rm -rf bin $(DEMO)
