#!/usr/bin/env bash
# Service proxy programming: full sync of 10,000 Services × 10 endpoints and the
# sync of one endpoint change, against 10 Services in the same run; first as the
# agent programs the kernel (netlink batches), then through the nft binary for
# comparison. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); date: $(date -u +%F)"
echo "command: bench/proxy.sh $*"
go build -o "${TMPDIR:-/tmp}/amime-proxybench" ./bench/proxybench
for backend in netlink nft; do
	"${TMPDIR:-/tmp}/amime-proxybench" -backend "$backend" "$@"
done
rm -f "${TMPDIR:-/tmp}/amime-proxybench"
