# raftbox — the two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test lint sim run e2e-long bench-raft bench-meta bench-blocks bench-sync bench-all clean debs eco-long

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# The Debian packages the suite runs against (memcached for the block cache, nginx in front of
# blockservers; rclone, node/npm for the JS SDK, iproute2 for the real-client harness in
# tests/eco; chromium for the browser tests): installed when missing (as root), else named.
DEBS := memcached=memcached nginx=nginx rclone=rclone node=nodejs npm=npm ip=iproute2 chromium=chromium
debs:
	bash scripts/debian-deps.sh $(DEBS)

test: lint debs
	$(PY) -m pytest

# The embedded default: every role in one process, TLS, a first account; prints how to use it.
DATA ?= raftbox-data
LISTEN ?= 127.0.0.1:8443
run: $(STAMP)
	$(VENV)/bin/raftbox up --data $(DATA) --listen $(LISTEN)

# The deterministic simulator over many seeds (the default suite runs a few hundred).
SEEDS ?= 10000
sim: $(STAMP)
	$(PY) -m raftbox.raft.sim --seeds $(SEEDS) -j 2

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .hypothesis

# Long randomized fault runs ("nemesis": kills, pauses, partitions, slow links) on raft-kv.
NEMESIS_S ?= 120
e2e-long: $(STAMP)
	RAFTBOX_NEMESIS_S=$(NEMESIS_S) $(PY) -m pytest tests/e2e -k nemesis -s

# A local 3-member cluster, notify root and leaf, two sync clients; narrates elections and
# replication while the cluster view (URL printed) shows them. Ctrl-C stops it all.
.PHONY: demo
demo: $(STAMP)
	$(VENV)/bin/raftbox demo

# The sync client's long runs: convergence over many seeds (2 and 3 clients on `raftbox up`,
# 3 on a cluster whose leader is killed), and more kill -9 moments on a bigger file.
# One seed: SYNC_SEED=123 $(PY) -m pytest tests/client/test_convergence.py -k up-3
.PHONY: sync-soak
SYNC_SEEDS ?= 200
SYNC_STEPS ?= 120
SYNC_CRASH_KILLS ?= 10
SYNC_CRASH_MIB ?= 200
sync-soak: $(STAMP)
	SYNC_SEEDS=$(SYNC_SEEDS) SYNC_STEPS=$(SYNC_STEPS) SYNC_CRASH_KILLS=$(SYNC_CRASH_KILLS) \
	SYNC_CRASH_MIB=$(SYNC_CRASH_MIB) $(PY) -m pytest -p no:cacheprovider \
		tests/client/test_convergence.py tests/client/test_convergence_shared.py \
		tests/client/test_sync_crash.py

# Benchmarks (not part of `make test`): each runs its peer in the same run and prints ratios.
bench-raft: $(STAMP)
	bash benchmarks/peers/setup.sh bench-out/peers
	$(PY) -m benchmarks.raft_vs_peers -v --json bench-out/raft_vs_peers.json

bench-meta: $(STAMP)
	$(PY) -m benchmarks.meta_bench --files 10000

# Block transfers (1 GiB up/down through the SDK and the native protocol, beside this machine's
# limits), the bytes of an edit against rsync (apt-get install rsync), and dedup across accounts.
SIZE_MIB ?= 1024
bench-blocks: $(STAMP)
	$(PY) -m benchmarks.blocks_bench --size-mib $(SIZE_MIB) --json bench-out/blocks.json

# Sync of a folder from A to B (issue 7): 2,000 x 4 KiB + one 256 MiB file, then an edit,
# against rsync, rclone and two Syncthing instances (apt-get install -y rsync rclone syncthing).
REPEAT ?= 1
bench-sync: $(STAMP)
	$(PY) -m benchmarks.sync_bench --repeat $(REPEAT) --json bench-out/sync.json

# Every issue-16 benchmark in one run (sync, blocks, meta, raft-kv vs etcd, deltas, 100,000 small
# files, 20,000 small files vs Syncthing and rclone; ~20 min): bench-out/final/.
bench-all: $(STAMP)
	bash benchmarks/peers/setup.sh bench-out/peers
	PY=$(PY) bash benchmarks/run_all.sh

# Hostile-input fuzz (issue 11): hypothesis-generated route arguments and headers through raw
# HTTP against `raftbox up`; no 5xx, no traceback, no state change on a refused request. The
# default suite runs it for ~25 s; a failure prints RAFTBOX_FUZZ_SEED=<seed> to replay it.
.PHONY: fuzz
FUZZ_S ?= 300
fuzz: $(STAMP)
	RAFTBOX_FUZZ_S=$(FUZZ_S) $(PY) -m pytest -p no:cacheprovider --timeout=0 tests/security/test_fuzz.py -s

# Real Dropbox clients (rclone, the npm dropbox SDK, the Python SDKs 12.2.4 and 11.36.2) against
# raftbox posing as *.dropboxapi.com in a private namespace (tests/eco; needs root for unshare).
# The default suite runs them small; this runs rclone on a bigger tree and a bigger file.
ECO_FILES ?= 2000
ECO_BIG_MIB ?= 200
eco-long: $(STAMP) debs
	ECO_FILES=$(ECO_FILES) ECO_BIG_MIB=$(ECO_BIG_MIB) $(PY) -m pytest -p no:cacheprovider \
		--timeout=3600 tests/eco
