#!/usr/bin/env bash
# The ceiling of a stack-skipping fast path for pods on one node (see
# docs/networking.md, "Performance, and where the cost is"): TCP throughput
# (iperf3) and HTTP request rate (wrk, 16 connections, built-in netexec) for
#   veth     two namespaces joined by a bare veth (the issue's baseline)
#   hop-ct   two namespaces joined through a third that forwards between them,
#            built as a node joins two pods (veths with GRO off, MTU 1450,
#            connection tracking on): the same-node pod path without amime
#   redirect the same hop with a tc program on each of its veths that hands
#            packets straight to the other veth's peer (bpf_redirect_peer,
#            bench/fastpathprobe), so they skip the middle namespace's stack
#   amime    the same hop with amime's own fast path (internal/fastpath, run
#            by bench/fastpathprobe -amime as the agent runs it): connections
#            open through the stack, the rest of their packets skip it after
#            a conntrack lookup
# Each of REPS rounds measures all four; ratios are medians of per-round
# ratios to the bare veth. Needs root, bin/amime-pod (make build), iperf3 and
# wrk (make deps). Its namespaces are named amime-bench-fp-* and removed at the
# end.
set -euo pipefail
cd "$(dirname "$0")/.."
POD=$PWD/bin/amime-pod
DUR=${DUR:-5}
REPS=${REPS:-5}
. bench/lib.sh
header "bench/fastpath.sh (DUR=$DUR REPS=$REPS)"

amime_pid=
cleanup() {
  [[ -n $amime_pid ]] && kill "$amime_pid" 2>/dev/null || true
  stop_started
  for n in a b ha hr hb; do ip netns del "amime-bench-fp-$n" 2>/dev/null || true; done
  rm -f /tmp/amime-fastpathprobe
}
trap cleanup EXIT
cleanup
go build -o /tmp/amime-fastpathprobe ./bench/fastpathprobe

ns() { echo "amime-bench-fp-$1"; }
for x in a b ha hr hb; do ip netns add "$(ns "$x")"; ip -n "$(ns "$x")" link set lo up; done
ip link add eth0 netns "$(ns a)" mtu 1450 type veth peer name eth0 netns "$(ns b)" mtu 1450
ip -n "$(ns a)" addr add 10.99.60.1/30 dev eth0; ip -n "$(ns b)" addr add 10.99.60.2/30 dev eth0
for x in a b; do ip -n "$(ns "$x")" link set eth0 up; done
for x in "ha 61" "hb 62"; do
  n=${x% *} net=${x#* }
  ip link add eth0 netns "$(ns "$n")" mtu 1450 type veth peer name "$n" netns "$(ns hr)" mtu 1450
  ip -n "$(ns "$n")" addr add "10.99.$net.2/30" dev eth0; ip -n "$(ns hr)" addr add "10.99.$net.1/30" dev "$n"
  ip -n "$(ns "$n")" link set eth0 up; ip -n "$(ns hr)" link set "$n" up
  ip -n "$(ns "$n")" route add default via "10.99.$net.1"
done
ip netns exec "$(ns hr)" sysctl -qw net.ipv4.ip_forward=1
ip netns exec "$(ns hr)" nft -f - <<'NFT'
table inet amime-bench-ct {
  chain forward { type filter hook forward priority 0; ct state invalid drop; }
}
NFT
for x in b hb; do
  setsid ip netns exec "$(ns "$x")" iperf3 -s >/dev/null 2>&1 & pids+=($!)
  setsid ip netns exec "$(ns "$x")" "$POD" workload netexec --http-port=18080 --udp-port=-1 >/dev/null 2>&1 & pids+=($!)
done
sleep 1

redirect() { # on|off
  local d
  for d in ha hb; do ip netns exec "$(ns hr)" tc qdisc del dev "$d" clsact 2>/dev/null || true; done
  if [[ $1 == on ]]; then
    /tmp/amime-fastpathprobe -netns "$(ns hr)" -dev ha -dst 10.99.62.2 -to hb
    /tmp/amime-fastpathprobe -netns "$(ns hr)" -dev hb -dst 10.99.61.2 -to ha
  fi
}
# amime's own fast path (internal/fastpath) in the middle namespace, as the
# agent runs it for two pods: connections open through the stack, then skip it.
amime_on() {
  setsid /tmp/amime-fastpathprobe -netns "$(ns hr)" -amime "ha=$(ns ha),hb=$(ns hb)" 2>>/tmp/amime-fastpath-amime.log & amime_pid=$!
  sleep 1
}
amime_off() { kill "$amime_pid" 2>/dev/null || true; wait "$amime_pid" 2>/dev/null || true; }
measure() { # CLIENT-NS SERVER-IP -> "Gbit/s req/s"
  local g r
  g=$(ip netns exec "$(ns "$1")" iperf3 -c "$2" -t "$DUR" -J | awk -F'[:,]' '/"sum_received"/ {f=1} f && /"bits_per_second"/ {printf "%.2f", $2/1e9; exit}')
  r=$(ip netns exec "$(ns "$1")" wrk -t1 -c16 -d"${DUR}s" "http://$2:18080/" | awk '/Requests\/sec/ {printf "%.0f", $2}')
  echo "$g $r"
}
# The redirect really skips the stack: no conntrack entry for its flow.
redirect on
ip netns exec "$(ns hr)" conntrack -F 2>/dev/null || true
ip netns exec "$(ns ha)" ping -c 3 -i 0.2 -W 1 10.99.62.2 >/dev/null
if ip netns exec "$(ns hr)" conntrack -L 2>/dev/null | grep -q 10.99.62.2; then
  echo "fastpath.sh: redirected packets reached the middle namespace's conntrack" >&2; exit 1
fi

declare -A res
order=(veth hop-ct redirect amime)
for rep in $(seq "$REPS"); do
  line="round $rep:"
  for k in 0 1 2 3; do
    label=${order[$(( (k + rep - 1) % 4 ))]}
    case $label in
      veth) out=$(measure a 10.99.60.2) ;;
      hop-ct) redirect off; out=$(measure ha 10.99.62.2) ;;
      redirect) redirect on; out=$(measure ha 10.99.62.2) ;;
      amime) redirect off; amime_on; out=$(measure ha 10.99.62.2); amime_off ;;
    esac
    res[$label]+="$out;"
    line+=" $label $out;"
  done
  echo "${line%;}"
done
redirect off

median() { sort -g | awk '{v[NR]=$1} END {printf "%.2f", v[int((NR+1)/2)]}'; }
ratio() { # LABEL FIELD(1|2): median of per-round LABEL/veth
  paste -d' ' <(tr ';' '\n' <<<"${res[$1]}" | sed '/^$/d' | cut -d' ' -f"$2") <(tr ';' '\n' <<<"${res[veth]}" | sed '/^$/d' | cut -d' ' -f"$2") |
    awk '{printf "%.4f\n", $1 / $2}' | median
}
echo "(Gbit/s req/s per round above; ratios are medians of per-round ratios to the bare veth)"
for label in hop-ct redirect amime; do
  printf '%-9s / veth: throughput %s, requests %s\n' "$label" "$(ratio "$label" 1)" "$(ratio "$label" 2)"
done
