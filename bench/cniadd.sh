#!/usr/bin/env bash
# CNI ADD latency p50/p99 over 200 pods one at a time, then in bursts of 100
# started at once (a node starting many pods): the amime plugin vs Debian's bridge +
# host-local in the same run (and the full amime binary as the plugin, for
# reference). Needs root and bin/amime-cni, bin/amime (make build).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); date: $(date -u +%F)"
echo "command: bench/cniadd.sh"
go run ./bench/cnibench -amime bin/amime-cni -full bin/amime "$@"
