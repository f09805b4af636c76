#!/usr/bin/env bash
# Cluster DNS at the issue's scale (#5): amime dns against CoreDNS (kubernetes
# plugin, pods verified, cache 30) with dnsperf, both reading the same
# apiserver holding SERVICES Services and SERVICES*ENDPOINTS endpoints.
#
# The apiserver is a bare one (upstream etcd and kube-apiserver from
# bin/amime-controlplane) on loopback, with no nodes and no Service proxy, so
# that only the two DNS servers and dnsperf share the cores. Everything listens
# on 127.0.0.1; every load is bounded in time (dnsperf -l); the processes this
# script starts are stopped by PID and its directory removed at the end.
#
# Per server and round: the highest rate dnsperf gets (4 clients, no limit),
# then latency at half of that rate and at LATENCY_QPS (-Q), p50/p99 from
# dnsperf's per-query report (-v). RSS after each round. CoreDNS is built from the Go module proxy
# into a temporary directory unless COREDNS names a binary.
set -euo pipefail
cd "$(dirname "$0")/.."
SERVICES=${SERVICES:-10000}
ENDPOINTS=${ENDPOINTS:-5}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
CLIENTS=${CLIENTS:-4}
LATENCY_QPS=${LATENCY_QPS:-50000}
AMIME=${AMIME:-bin/amime}
CP=${CP:-bin/amime-controlplane}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
ETCD_PORT=${ETCD_PORT:-23790}
API_PORT=${API_PORT:-16443}
work=$(mktemp -d /tmp/dnsscale.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  rm -rf "$work"
}
trap cleanup EXIT
command -v dnsperf >/dev/null || { echo "dnsperf missing: scripts/deps.sh" >&2; exit 1; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); load average: $(cut -d' ' -f1-3 /proc/loadavg); date: $(date -u '+%F %H:%M') UTC"
echo "command: SERVICES=$SERVICES ENDPOINTS=$ENDPOINTS DURATION=$DURATION ROUNDS=$ROUNDS CLIENTS=$CLIENTS LATENCY_QPS=$LATENCY_QPS bench/dns-scale.sh"

# A bare control plane on loopback.
openssl genrsa -out "$work/sa.key" 2048 2>/dev/null
openssl rsa -in "$work/sa.key" -pubout -out "$work/sa.pub" 2>/dev/null
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$token,admin,admin,system:masters" > "$work/tokens.csv"
"$CP" etcd --data-dir="$work/etcd" --listen-client-url="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-url="http://127.0.0.1:$((ETCD_PORT + 1))" > "$work/etcd.log" 2>&1 &
pids+=($!)
"$CP" kube-apiserver --etcd-servers="http://127.0.0.1:$ETCD_PORT" --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 --secure-port="$API_PORT" --cert-dir="$work/certs" \
  --token-auth-file="$work/tokens.csv" --authorization-mode=RBAC \
  --service-account-key-file="$work/sa.pub" --service-account-signing-key-file="$work/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range=10.96.0.0/16 --profiling=false --v=0 > "$work/apiserver.log" 2>&1 &
pids+=($!)
export KUBECONFIG=$work/kubeconfig
cat > "$KUBECONFIG" <<K
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:$API_PORT", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: "$token"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
K
for _ in $(seq 300); do curl -skf -H "Authorization: Bearer $token" "https://127.0.0.1:$API_PORT/readyz" >/dev/null && break; sleep 0.2; done
curl -skf -H "Authorization: Bearer $token" "https://127.0.0.1:$API_PORT/readyz" >/dev/null || { echo "apiserver not ready: $work/apiserver.log" >&2; tail -5 "$work/apiserver.log" >&2; exit 1; }
go build -o "$work/dnsbench" ./bench/dnsbench
"$work/dnsbench" populate -kubeconfig "$KUBECONFIG" -services "$SERVICES" -endpoints "$ENDPOINTS" | tail -1
headless=$((SERVICES / 10))
echo "loaded: $SERVICES Services ($headless headless), $((SERVICES * ENDPOINTS)) endpoints in $SERVICES EndpointSlices"

# The query mix, spread over the Services: ClusterIP A, headless A, SRV,
# NXDOMAIN, and a search-path expansion (the name under the pod's own
# namespace first: NXDOMAIN), in equal parts, 5,000 questions.
for k in $(seq 1000); do
  i=$(( (k * 7919) % SERVICES + 1 )); [ $((i % 10)) -eq 0 ] && i=$((i - 1))
  j=$(( ((k * 104729) % headless + 1) * 10 ))
  echo "s$i.dnsbench.svc.cluster.local A"
  echo "h$j.dnsbench.svc.cluster.local A"
  echo "_http._tcp.s$i.dnsbench.svc.cluster.local SRV"
  echo "nope$k.dnsbench.svc.cluster.local A"
  echo "s$i.dnsbench.dnsbench.svc.cluster.local A"
done > "$work/queries"

rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

"$AMIME" dns --kubeconfig "$KUBECONFIG" --listen 127.0.0.1:15353 --http-listen 127.0.0.1:19153 --configmap "" > "$work/amime.log" 2>&1 &
pids+=($!); amime_pid=$!
t0=$(date +%s.%N)
for _ in $(seq 600); do curl -sf http://127.0.0.1:19153/ready >/dev/null && break; sleep 0.1; done
echo "amime dns ready after $(echo "$(date +%s.%N) - $t0" | bc | xargs printf '%.1f') s"

coredns=${COREDNS:-}
if [ -z "$coredns" ]; then
  GOBIN="$work/bin" go install "github.com/coredns/coredns@$COREDNS_VERSION" > "$work/build.log" 2>&1
  coredns=$work/bin/coredns
fi
cat > "$work/Corefile" <<C
.:15354 {
    bind 127.0.0.1
    errors
    ready 127.0.0.1:18181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG
        pods verified
    }
    cache 30
}
C
"$coredns" -conf "$work/Corefile" > "$work/coredns.log" 2>&1 &
pids+=($!); coredns_pid=$!
for _ in $(seq 600); do curl -sf http://127.0.0.1:18181/ready >/dev/null && break; sleep 0.1; done
echo "servers: amime dns ($(git rev-parse --short HEAD)), $("$coredns" -version | head -1)"

for port in 15353 15354; do # both see every Service, and warm their caches
  dig +short -p $port @127.0.0.1 "s$((SERVICES - 1)).dnsbench.svc.cluster.local" | grep -q . || { echo "port $port does not answer" >&2; exit 1; }
  dnsperf -s 127.0.0.1 -p $port -d "$work/queries" -n 1 -c "$CLIENTS" > /dev/null
done

# latency PORT RATE: answered, p50 and p99 in µs at a fixed rate. The
# per-query report goes to a file and is read afterwards, so that parsing it
# takes no CPU from the run.
latency() {
  dnsperf -s 127.0.0.1 -p "$1" -d "$work/queries" -c "$CLIENTS" -l "$DURATION" -t 2 -Q "$2" -v > "$work/verbose" 2>/dev/null
  awk '/^> / {print $NF}' "$work/verbose" | sort -g > "$work/lat"
  local n
  n=$(wc -l < "$work/lat")
  echo "answered=$n p50_us=$(awk -v n="$n" 'NR == int(n * 0.50) + 1 {printf "%.0f", $1 * 1e6}' "$work/lat")" \
    "p99_us=$(awk -v n="$n" 'NR == int(n * 0.99) + 1 {printf "%.0f", $1 * 1e6}' "$work/lat")"
}
# run NAME PORT PID: the highest rate, then the latency at half of it and at
# LATENCY_QPS (half the issue's 100,000 q/s target).
run() {
  local out qps lost
  out=$(dnsperf -s 127.0.0.1 -p "$2" -d "$work/queries" -c "$CLIENTS" -l "$DURATION" -t 2)
  qps=$(awk '/Queries per second/ {printf "%.0f", $4}' <<<"$out")
  lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
  printf "  %-8s max_qps=%s lost=%s | at %s q/s: %s | at %s q/s: %s | rss_mib=%s\n" "$1" "$qps" "$lost" \
    $((qps / 2)) "$(latency "$2" $((qps / 2)))" "$LATENCY_QPS" "$(latency "$2" "$LATENCY_QPS")" "$(rss "$3")"
}
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  run "amime" 15353 "$amime_pid"
  run "CoreDNS" 15354 "$coredns_pid"
done
echo "rcodes (amime, one pass): $(dnsperf -s 127.0.0.1 -p 15353 -d "$work/queries" -n 1 -c 1 | awk '/Response codes/ {$1=$2=""; print}')"
echo "rcodes (CoreDNS, one pass): $(dnsperf -s 127.0.0.1 -p 15354 -d "$work/queries" -n 1 -c 1 | awk '/Response codes/ {$1=$2=""; print}')"
if [ -n "${HOLD:-}" ]; then # keep the apiserver for inspection, bounded
  echo "holding for $HOLD s: KUBECONFIG=$KUBECONFIG"
  sleep "$HOLD"
fi
