# Sourced by the bench scripts that start servers in namespaces: the header
# every result starts with, and the process groups a script started (setsid),
# which stop_started ends by their own IDs.
header() { # COMMAND-LINE...
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); date: $(date -u +%F); load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "command: $*"
}
pids=()
stop_started() {
  local p
  for p in "${pids[@]-}"; do [[ -n $p ]] && kill -- "-$p" 2>/dev/null || true; done
  pids=()
}
