#!/usr/bin/env bash
# Runs every benchmark script; results go to the terminal, to be recorded in
# bench/RESULTS.md by hand with the machine and date.
set -euo pipefail
cd "$(dirname "$0")"
for s in ./*.sh; do
  [[ $s == ./run.sh ]] && continue
  echo "== $s"
  "$s"
done
