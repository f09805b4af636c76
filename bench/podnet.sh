#!/usr/bin/env bash
# Pod network benchmark: TCP throughput (iperf3, 5 s) and HTTP request rate
# (wrk, 16 connections, 5 s, against the built-in netexec server) for
#   baseline 1: two namespaces joined by a bare veth
#   baseline 2: a bare routed veth path a - r1 - r2 - b (what a cross-node pod
#               path is made of, without any amime)
#   pod to pod on one node, across nodes in overlay mode, across nodes in native mode
# All in one run; ratios are to the baselines of the same run. Needs root, a
# built bin/ (make build) and iperf3 + wrk (make deps). Every namespace it makes
# is named amime-bench-* and removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
AMIME=$PWD/bin/amime
POD=$PWD/bin/amime-pod
DUR=${DUR:-5}
REPS=${REPS:-3}
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); date: $(date -u +%F)"
echo "command: bench/podnet.sh (DUR=$DUR REPS=$REPS; medians of REPS runs)"

pids=()
cleanup() {
  for p in "${pids[@]-}"; do [[ -n $p ]] && kill -- "-$p" 2>/dev/null || true; done
  for n in a b r1 r2; do ip netns del "amime-bench-$n" 2>/dev/null || true; done
  "$AMIME" lab down --name bnet >/dev/null 2>&1 || true
  "$AMIME" lab down --name bnat >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

# serve NS-CMD...: start iperf3 and netexec servers in the given exec prefix.
serve() {
  setsid "$@" iperf3 -s >/dev/null 2>&1 & pids+=($!)
  setsid "$@" "$POD" workload netexec --http-port=18080 --udp-port=-1 >/dev/null 2>&1 & pids+=($!)
  sleep 1
}
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
# measure LABEL IP CLIENT-PREFIX...: REPS runs of each; prints the medians.
measure() {
  local label=$1 ip=$2; shift 2
  local gbit rps g=() r=()
  for _ in $(seq "$REPS"); do
    g+=("$("$@" iperf3 -c "$ip" -t "$DUR" -J | awk -F'[:,]' '/"sum_received"/ {f=1} f && /"bits_per_second"/ {printf "%.2f", $2/1e9; exit}')")
    r+=("$("$@" wrk -t1 -c16 -d"${DUR}s" "http://$ip:18080/" | awk '/Requests\/sec/ {printf "%.0f", $2}')")
  done
  gbit=$(printf '%s\n' "${g[@]}" | median); rps=$(printf '%s\n' "${r[@]}" | median)
  printf '%-12s %6s Gbit/s (runs: %s)  %7s req/s (runs: %s)\n' "$label" "$gbit" "${g[*]}" "$rps" "${r[*]}"
  eval "R_${label//[^a-z0-9]/_}=\"$gbit $rps\""
}

# Both labs first, so that the baselines run with the same background load (the
# control planes, node runtimes and agents) as the pod measurements.
# Pods: a server on node 1, clients on node 1 and node 2.
pods() { # LAB
  local kc; kc=$("$AMIME" lab kubeconfig --name "$1" | tail -n1)
  for spec in "server:$1-node-1" "near:$1-node-1" "far:$1-node-2"; do
    kubectl --kubeconfig "$kc" run "${spec%%:*}" --image=busybox --restart=Never \
      --overrides="{\"spec\":{\"nodeName\":\"${spec#*:}\"}}" --command -- sleep 3600 >/dev/null
  done
  kubectl --kubeconfig "$kc" wait --for=condition=Ready pod/server pod/near pod/far --timeout=60s >/dev/null
  kubectl --kubeconfig "$kc" get pod server -o jsonpath='{.status.podIP}'
}
"$AMIME" lab up --name bnet --nodes 2 --pod-cidr 10.247.0.0/16 --pod-cidr-v6 fd00:10:247::/56 --underlay 172.30.5.0/24 --underlay-v6 fd00:a:e5::/64 --etcd-port 12879 >/dev/null
"$AMIME" lab up --name bnat --nodes 2 --routing native --pod-cidr 10.248.0.0/16 --pod-cidr-v6 fd00:10:248::/56 --underlay 172.30.4.0/24 --underlay-v6 fd00:a:e4::/64 --etcd-port 12979 >/dev/null
ipnet=$(pods bnet)
ipnat=$(pods bnat)

# Baseline 1: bare veth.
ip netns add amime-bench-a; ip netns add amime-bench-b
ip link add amime-bench-va netns amime-bench-a type veth peer name amime-bench-vb netns amime-bench-b
ip -n amime-bench-a addr add 10.99.0.1/30 dev amime-bench-va; ip -n amime-bench-b addr add 10.99.0.2/30 dev amime-bench-vb
for n in a b; do ip -n amime-bench-$n link set lo up; ip -n amime-bench-$n link set amime-bench-v$n up; done
# GRO on every veth end, as the lab's node links have it (NICs do).
ip netns exec amime-bench-a ethtool -K amime-bench-va gro on rx-udp-gro-forwarding on >/dev/null
ip netns exec amime-bench-b ethtool -K amime-bench-vb gro on rx-udp-gro-forwarding on >/dev/null
serve ip netns exec amime-bench-b
measure veth 10.99.0.2 ip netns exec amime-bench-a
kill -- "-${pids[-1]}" "-${pids[-2]}" 2>/dev/null || true
ip netns del amime-bench-a; ip netns del amime-bench-b

# Baseline 2: routed veth path a - r1 - r2 - b.
for n in a r1 r2 b; do ip netns add amime-bench-$n; ip -n amime-bench-$n link set lo up; done
link() { # link NS1 IF1 ADDR1 NS2 IF2 ADDR2
  ip link add "$2" netns "amime-bench-$1" type veth peer name "$5" netns "amime-bench-$4"
  ip -n "amime-bench-$1" addr add "$3" dev "$2"; ip -n "amime-bench-$4" addr add "$6" dev "$5"
  ip -n "amime-bench-$1" link set "$2" up; ip -n "amime-bench-$4" link set "$5" up
  ip netns exec "amime-bench-$1" ethtool -K "$2" gro on rx-udp-gro-forwarding on >/dev/null
  ip netns exec "amime-bench-$4" ethtool -K "$5" gro on rx-udp-gro-forwarding on >/dev/null
}
link a ab 10.99.1.1/30 r1 ra 10.99.1.2/30
link r1 rr1 10.99.2.1/30 r2 rr2 10.99.2.2/30
link r2 rb 10.99.3.1/30 b ba 10.99.3.2/30
for n in r1 r2; do ip netns exec amime-bench-$n sysctl -qw net.ipv4.ip_forward=1; done
ip -n amime-bench-a route add default via 10.99.1.2
ip -n amime-bench-b route add default via 10.99.3.1
ip -n amime-bench-r1 route add 10.99.3.0/30 via 10.99.2.2
ip -n amime-bench-r2 route add 10.99.1.0/30 via 10.99.2.1
serve ip netns exec amime-bench-b
measure routed 10.99.3.2 ip netns exec amime-bench-a
for n in a r1 r2 b; do ip netns del amime-bench-$n; done

serve "$AMIME" lab exec --name bnet server --
measure "same-node" "$ipnet" "$AMIME" lab exec --name bnet near --
measure "overlay" "$ipnet" "$AMIME" lab exec --name bnet far --

serve "$AMIME" lab exec --name bnat server --
measure "native" "$ipnat" "$AMIME" lab exec --name bnat far --


ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
read -r vg vr <<<"$R_veth"; read -r rg rr <<<"$R_routed"
read -r sg sr <<<"$R_same_node"; read -r og or <<<"$R_overlay"; read -r ng nr <<<"$R_native"
echo
echo "same node / bare veth:      throughput $(ratio "$sg" "$vg"), requests $(ratio "$sr" "$vr")   (target ≥ 0.95)"
echo "native / routed veth path:  throughput $(ratio "$ng" "$rg"), requests $(ratio "$nr" "$rr")   (target ≥ 0.90)"
echo "overlay / routed veth path: throughput $(ratio "$og" "$rg"), requests $(ratio "$or" "$rr")   (target ≥ 0.85)"
