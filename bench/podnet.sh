#!/usr/bin/env bash
# Pod network benchmark: TCP throughput (iperf3) and HTTP request rate (wrk,
# 16 connections, against the built-in netexec server) for
#   baseline 1: two namespaces joined by a bare veth
#   baseline 2: a bare routed veth path a - r1 - r2 - b whose r1 - r2 link is
#               what the lab's node links are: veths to a bridge in the root
#               namespace (the cross-node pod path without any amime)
#   (and, for reference: the same routed path with connection tracking on in
#   r1 and r2, which every Kubernetes node has for Service NAT whatever its
#   CNI; the routed path with r1 - r2 a direct veth; and the bridged path with
#   a bare VXLAN tunnel between r1 and r2, without and with connection
#   tracking: what the encapsulation itself costs on this machine; and a
#   one-router path a - r - b built as a node's pod path is, veths with GRO
#   off and MTU 1450, connection tracking on in r: what the same-node pod path
#   costs without anything of amime)
#   pod to pod on one node, across nodes in overlay mode, across nodes in native mode
# All paths are set up first; then each of REPS rounds measures every path
# once, in an order that rotates from round to round, so that a slow minute of
# the shared machine hits all paths alike. Seven rounds unless REPS says
# otherwise, as single rounds on this machine range widely. Ratios are medians
# of the per-round ratios to the baseline of the same round. Needs root, a built bin/ (make
# build) and iperf3 + wrk (make deps). Every namespace it makes is named
# amime-bench-* and removed at the end, as are its two labs.
set -euo pipefail
cd "$(dirname "$0")/.."
AMIME=$PWD/bin/amime
POD=$PWD/bin/amime-pod
DUR=${DUR:-5}
REPS=${REPS:-7}
. bench/lib.sh
header "bench/podnet.sh (DUR=$DUR REPS=$REPS)"

cleanup() {
  stop_started
  for n in a b ra r1 r2 rb da d1 d2 db ca c1 c2 cb va v1 v2 vb wa w1 w2 wb ha hr hb; do ip netns del "amime-bench-$n" 2>/dev/null || true; done
  ip link del amime-bench-br 2>/dev/null || true
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

# Baseline 2: routed veth paths ra - r1 - r2 - rb (r1 and r2 on a bridge in the
# root namespace, as lab nodes are: the machine's bridge netfilter settings
# apply to both alike) and da - d1 - d2 - db (d1 - d2 a direct veth).
link() { # link NS1 IF1 ADDR1 NS2 IF2 ADDR2
  ip link add "$2" netns "amime-bench-$1" type veth peer name "$5" netns "amime-bench-$4"
  ip -n "amime-bench-$1" addr add "$3" dev "$2"; ip -n "amime-bench-$4" addr add "$6" dev "$5"
  ip -n "amime-bench-$1" link set "$2" up; ip -n "amime-bench-$4" link set "$5" up
  ip netns exec "amime-bench-$1" ethtool -K "$2" gro on rx-udp-gro-forwarding on >/dev/null
  ip netns exec "amime-bench-$4" ethtool -K "$5" gro on rx-udp-gro-forwarding on >/dev/null
}
# port NS IF ADDR: IF in NS (GRO on, as a lab node's eth0) is a port of the bridge.
port() {
  ip link add "amb-$1" mtu 1500 master amime-bench-br type veth peer name "$2" netns "amime-bench-$1"
  ip link set "amb-$1" up
  ip -n "amime-bench-$1" addr add "$3" dev "$2"; ip -n "amime-bench-$1" link set "$2" up
  ip netns exec "amime-bench-$1" ethtool -K "$2" gro on rx-udp-gro-forwarding on >/dev/null
}
routed() { # routed A R1 R2 B N yes/no: a routed path on 10.99.N+1..N+3.0/30, bridged or direct
  local a=$1 r1=$2 r2=$3 b=$4 n=$5 bridged=$6
  for x in "$a" "$r1" "$r2" "$b"; do ip netns add "amime-bench-$x"; ip -n "amime-bench-$x" link set lo up; done
  link "$a" ab "10.99.$((n + 1)).1/30" "$r1" ra "10.99.$((n + 1)).2/30"
  if [[ $bridged == yes ]]; then
    ip link show amime-bench-br >/dev/null 2>&1 || { ip link add amime-bench-br mtu 1500 type bridge; ip link set amime-bench-br up; }
    port "$r1" eth0 "10.99.$((n + 2)).1/30"; port "$r2" eth0 "10.99.$((n + 2)).2/30"
  else
    link "$r1" eth0 "10.99.$((n + 2)).1/30" "$r2" eth0 "10.99.$((n + 2)).2/30"
  fi
  link "$r2" rb "10.99.$((n + 3)).1/30" "$b" ba "10.99.$((n + 3)).2/30"
  for x in "$r1" "$r2"; do ip netns exec "amime-bench-$x" sysctl -qw net.ipv4.ip_forward=1; done
  ip -n "amime-bench-$a" route add default via "10.99.$((n + 1)).2"
  ip -n "amime-bench-$b" route add default via "10.99.$((n + 3)).1"
  ip -n "amime-bench-$r1" route add "10.99.$((n + 3)).0/30" via "10.99.$((n + 2)).2"
  ip -n "amime-bench-$r2" route add "10.99.$((n + 1)).0/30" via "10.99.$((n + 2)).1"
}
# tunnelled A R1 R2 B N: a - r1 - bridge - r2 - b with a VXLAN device in r1
# and r2 over their bridge ports, configured as the agent configures its
# overlay (no learning, static neighbour and forwarding entries, MTU 1450,
# which a and b use too, as pods do).
tunnelled() {
  local a=$1 r1=$2 r2=$3 b=$4 n=$5
  routed "$a" "$r1" "$r2" "$b" "$n" yes
  for x in "$a ab" "$r1 ra" "$r2 rb" "$b ba"; do ip -n "amime-bench-${x% *}" link set "${x#* }" mtu 1450; done
  local i
  for i in 1 2; do
    local r=$r1 peer=2 dst="10.99.$((n + 3)).0/30"
    if [[ $i == 2 ]]; then r=$r2 peer=1 dst="10.99.$((n + 1)).0/30"; fi
    ip -n "amime-bench-$r" route del "$dst"
    ip -n "amime-bench-$r" link add vx type vxlan id 99 dev eth0 local "10.99.$((n + 2)).$i" dstport 4789 nolearning
    ip -n "amime-bench-$r" link set vx address "02:00:0a:63:00:0$i" mtu 1450 up
    ip -n "amime-bench-$r" addr add "10.99.$((n + 4)).$i/32" dev vx
    ip -n "amime-bench-$r" neigh replace "10.99.$((n + 4)).$peer" lladdr "02:00:0a:63:00:0$peer" dev vx nud permanent
    bridge -n "amime-bench-$r" fdb append "02:00:0a:63:00:0$peer" dev vx dst "10.99.$((n + 2)).$peer"
    ip -n "amime-bench-$r" route add "$dst" via "10.99.$((n + 4)).$peer" dev vx onlink
  done
}
# hop: ha - hr - hb, as two pods on one node are joined (one forwarding
# namespace, veths as the CNI plugin leaves them: GRO off, MTU 1450).
for x in ha hr hb; do ip netns add "amime-bench-$x"; ip -n "amime-bench-$x" link set lo up; done
for x in "ha 51" "hb 52"; do
  ns=${x% *} n=${x#* }
  ip link add eth0 netns "amime-bench-$ns" mtu 1450 type veth peer name "$ns" netns amime-bench-hr mtu 1450
  ip -n "amime-bench-$ns" addr add "10.99.$n.2/30" dev eth0; ip -n amime-bench-hr addr add "10.99.$n.1/30" dev "$ns"
  ip -n "amime-bench-$ns" link set eth0 up; ip -n amime-bench-hr link set "$ns" up
  ip -n "amime-bench-$ns" route add default via "10.99.$n.1"
done
ip netns exec amime-bench-hr sysctl -qw net.ipv4.ip_forward=1
routed ra r1 r2 rb 0 yes
routed da d1 d2 db 10 no
routed ca c1 c2 cb 20 yes
tunnelled va v1 v2 vb 30
tunnelled wa w1 w2 wb 40
# The smallest ruleset that turns connection tracking on: one forward chain.
for x in c1 c2 w1 w2 hr; do
  ip netns exec "amime-bench-$x" nft -f - <<'NFT'
table inet amime-bench-ct {
  chain forward { type filter hook forward priority 0; ct state invalid drop; }
}
NFT
done

serve ip netns exec amime-bench-b
serve ip netns exec amime-bench-rb
serve ip netns exec amime-bench-db
serve ip netns exec amime-bench-cb
serve ip netns exec amime-bench-vb
serve ip netns exec amime-bench-wb
serve ip netns exec amime-bench-hb
serve "$AMIME" lab exec --name bnet server --
serve "$AMIME" lab exec --name bnat server --

# path LABEL -> "SERVER-IP CLIENT-PREFIX..."
declare -A path=(
  [veth]="10.99.0.2 ip netns exec amime-bench-a"
  [routed]="10.99.3.2 ip netns exec amime-bench-ra"
  [direct]="10.99.13.2 ip netns exec amime-bench-da"
  [routed-ct]="10.99.23.2 ip netns exec amime-bench-ca"
  [vxlan]="10.99.33.2 ip netns exec amime-bench-va"
  [vxlan-ct]="10.99.43.2 ip netns exec amime-bench-wa"
  [hop-ct]="10.99.52.2 ip netns exec amime-bench-ha"
  [same-node]="$ipnet $AMIME lab exec --name bnet near --"
  [overlay]="$ipnet $AMIME lab exec --name bnet far --"
  [native]="$ipnat $AMIME lab exec --name bnat far --"
)
order=(veth same-node routed overlay native direct routed-ct vxlan vxlan-ct hop-ct)
declare -A gbit rps
for rep in $(seq "$REPS"); do
  line="round $rep:"
  for k in $(seq 0 $((${#order[@]} - 1))); do
    label=${order[$(( (k + rep - 1) % ${#order[@]} ))]}
    read -r ip client <<<"${path[$label]}"
    g=$($client iperf3 -c "$ip" -t "$DUR" -J | awk -F'[:,]' '/"sum_received"/ {f=1} f && /"bits_per_second"/ {printf "%.2f", $2/1e9; exit}')
    r=$($client wrk -t1 -c16 -d"${DUR}s" "http://$ip:18080/" | awk '/Requests\/sec/ {printf "%.0f", $2}')
    gbit[$label]+="$g "; rps[$label]+="$r "
    line+=" $label $g Gbit/s $r req/s;"
  done
  echo "${line%;}"
done

# ratios A B: the median over rounds of A[i]/B[i].
ratios() { paste -d' ' <(tr ' ' '\n' <<<"$1" | sed '/^$/d') <(tr ' ' '\n' <<<"$2" | sed '/^$/d') | awk '$2 > 0 {printf "%.4f\n", $1 / $2}' | median; }
med() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | median; }
echo
printf '%-10s %8s %10s\n' path Gbit/s req/s
for label in "${order[@]}"; do printf '%-10s %8s %10s\n' "$label" "$(med "${gbit[$label]}")" "$(med "${rps[$label]}")"; done
echo "(medians over $REPS rounds; ratios below are medians of the per-round ratios)"
show() { # LABEL BASE TARGET
  printf '%-28s throughput %.2f, requests %.2f   (target ≥ %s)\n' "$1 / $2:" "$(ratios "${gbit[$1]}" "${gbit[$2]}")" "$(ratios "${rps[$1]}" "${rps[$2]}")" "$3"
}
show same-node veth 0.95
echo "what one forwarding hop costs, and amime's same-node path against it (both with conntrack):"
show hop-ct veth "-"
show same-node hop-ct "-"
show native routed 0.90
show overlay routed 0.85
echo "for reference, against the routed path with connection tracking on in r1 and r2:"
show native routed-ct 0.90
show overlay routed-ct 0.85
show routed-ct routed "-"
echo "what the encapsulation itself costs, and amime's overlay against a bare VXLAN tunnel (with conntrack, as on any node):"
show vxlan routed "-"
show vxlan-ct routed-ct "-"
show overlay vxlan-ct "-"
echo "and against the routed path whose r1 - r2 link is a direct veth (no bridge):"
show native direct 0.90
show overlay direct 0.85
