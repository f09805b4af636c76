#!/usr/bin/env bash
# NetworkPolicy packet path: new-connection rate between two pods (throwaway
# namespaces client — node — server) with no table, and with the real inet
# amime-policy table for no policy, 10 policies and 1,000 policies / 5,000 pods,
# each round measuring every condition; and the RSS of a process holding the objects and the controller's
# state at that scale. Needs root, bin/amime-pod, wrk, curl, conntrack.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); date: $(date -u +%F); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: bench/policy-dataplane.sh $*"
go build -o /tmp/amime-policydp ./bench/policydp
/tmp/amime-policydp -amime-pod bin/amime-pod "$@"
rm -f /tmp/amime-policydp
