#!/bin/sh
# Policy programming benchmark: a node's NetworkPolicy rules computed and
# programmed from scratch, then one changed policy, at 10 policies / 50 pods
# (baseline) and 1,000 policies / 5,000 pods, in the same run. Real nftables in
# a throwaway network namespace; needs root. Results: bench/RESULTS.md.
set -eu
cd "$(dirname "$0")/.."
go build -o /tmp/amime-policybench ./bench/policybench
echo "== 5,000 pods over 50 nodes (100 on the measured node)"
/tmp/amime-policybench -policies 1000 -pods 5000 -nodes 50
echo "== worst case: all 5,000 pods on the measured node"
/tmp/amime-policybench -policies 1000 -pods 5000 -nodes 1
rm -f /tmp/amime-policybench
