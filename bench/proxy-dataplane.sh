#!/usr/bin/env bash
# Service proxy packet path: new-connection rate to a ClusterIP with 10, 1,000 and
# 10,000 Services installed vs the server's own IP, and a kube-proxy-style
# iptables ruleset in the same run. Needs root, bin/amime-pod, wrk, iptables.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); date: $(date -u +%F)"
echo "command: bench/proxy-dataplane.sh"
go run ./bench/proxydp -amime-pod bin/amime-pod "$@"
