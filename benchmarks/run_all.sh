#!/usr/bin/env bash
# The issue-16 benchmarks in one run, one after the other, each beside its peers (`make bench-all`).
# Outputs in bench-out/final/NAME.txt (+ .json); the load average is printed before and after each.
set -u
o=bench-out/final; mkdir -p $o
run() { n=$1; shift; echo "== $n $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"; echo "\$ $*"; "$@" > $o/$n.txt 2>&1; echo "rc $? $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"; }
run sync ${PY:-.venv/bin/python} -m benchmarks.sync_bench --repeat 1 --json $o/sync.json
run blocks ${PY:-.venv/bin/python} -m benchmarks.blocks_bench --size-mib 1024 --edit-mib 64 --json $o/blocks.json
run meta ${PY:-.venv/bin/python} -m benchmarks.meta_bench --files 3000 --setups single --native-files 10000
run raft ${PY:-.venv/bin/python} -m benchmarks.raft_vs_peers -v --interleave 3 --systems raftbox,etcd --clients 64,256 --json $o/raft.json
run delta ${PY:-.venv/bin/python} -m benchmarks.delta_bench --size-mib 64 --json $o/delta.json
run many ${PY:-.venv/bin/python} -m benchmarks.many_files_bench --files ${MANY_FILES:-100000} --folders 1000 --noop-runs 3 --json $o/many.json
run sync20k ${PY:-.venv/bin/python} -m benchmarks.sync_bench --files 20000 --file-kib 1 --big-mib 1 --only raftbox,syncthing,rclone --json $o/sync20k.json
