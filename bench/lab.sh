#!/usr/bin/env bash
# Lab benchmarks: lab up → nodes Ready, pod start latency p50/p99 over 100 pods,
# idle memory. Needs root and a built bin/amime (make build). Uses its own lab
# ("bench") on its own addresses and removes it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); date: $(date -u +%F)"
echo "command: bench/lab.sh"
go run ./bench/labbench -amime bin/amime "$@"
