#!/usr/bin/env bash
# Cluster DNS: amime dns against CoreDNS (kubernetes plugin, cache 30) on
# loopback, both reading the same lab apiserver, with the same query mix; then
# the round trips of the ndots:5 search path with and without autopath, from a
# pod of the lab. Needs root and a running lab with amime dns (LAB, default
# "bench"); CoreDNS is built from the Go module proxy into a temporary
# directory (COREDNS=path to use one already built). Every load is bounded in
# time and count; traffic stays on loopback and in the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB=${LAB:-bench}
SERVICES=${SERVICES:-1000}
DURATION=${DURATION:-10s}
CLIENTS=${CLIENTS:-4}
AMIME=${AMIME:-bin/amime}
work=$(mktemp -d /tmp/dnsbench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); date: $(date -u +%F)"
echo "command: LAB=$LAB SERVICES=$SERVICES DURATION=$DURATION CLIENTS=$CLIENTS bench/dns.sh"
export KUBECONFIG=$("$AMIME" lab kubeconfig --name "$LAB" | tail -1)
go build -o "$work/dnsbench" ./bench/dnsbench

# $SERVICES ClusterIP Services and as many headless ones with 5 endpoints each
# (selector-less, EndpointSlices written here), in namespace dnsbench.
kubectl create namespace dnsbench --dry-run=client -o yaml | kubectl apply -f - >/dev/null
if [ "$(kubectl get svc -n dnsbench --no-headers 2>/dev/null | wc -l)" -lt "$((2 * SERVICES))" ]; then
  for i in $(seq 1 "$SERVICES"); do
    cat <<Y
---
apiVersion: v1
kind: Service
metadata: {name: s$i, namespace: dnsbench}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: h$i, namespace: dnsbench}
spec: {clusterIP: None, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: h$i-1, namespace: dnsbench, labels: {kubernetes.io/service-name: h$i}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
$(for e in 1 2 3 4 5; do echo "- {addresses: [\"10.25$e.$((i / 250)).$((i % 250 + 1))\"], conditions: {ready: true}}"; done)
Y
  done > "$work/services.yaml"
  kubectl apply -f "$work/services.yaml" >/dev/null
fi
echo "loaded: $(kubectl get svc -n dnsbench --no-headers | wc -l) Services, $(kubectl get endpointslices -n dnsbench --no-headers | wc -l) EndpointSlices in dnsbench"

# The query mix: ClusterIP A, headless A, SRV, NXDOMAIN, a search-path expansion.
mix="A:s1.dnsbench.svc.cluster.local,A:h2.dnsbench.svc.cluster.local,SRV:_http._tcp.s3.dnsbench.svc.cluster.local,A:nope.dnsbench.svc.cluster.local,A:s4.dnsbench.dnsbench.svc.cluster.local,A:s$SERVICES.dnsbench.svc.cluster.local"

rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

"$AMIME" dns --kubeconfig "$KUBECONFIG" --listen 127.0.0.1:15353 --http-listen 127.0.0.1:19153 --configmap "" > "$work/amime.log" 2>&1 &
pids+=($!); amime_pid=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:19153/ready >/dev/null && break; sleep 0.2; done

coredns=${COREDNS:-}
if [ -z "$coredns" ]; then
  if GOBIN="$work/bin" go install github.com/coredns/coredns@v1.12.4 >"$work/build.log" 2>&1; then coredns="$work/bin/coredns"; fi
fi
if [ -n "$coredns" ]; then
  cat > "$work/Corefile" <<C
.:15354 {
    bind 127.0.0.1
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG
        pods verified
    }
    cache 30
}
C
  "$coredns" -conf "$work/Corefile" > "$work/coredns.log" 2>&1 &
  pids+=($!); coredns_pid=$!
  sleep 8
fi

for round in 1 2; do
  echo "round $round"
  echo -n "  amime dns:  "; "$work/dnsbench" load -server 127.0.0.1:15353 -mix "$mix" -clients "$CLIENTS" -duration "$DURATION"
  echo "    rss_mib=$(rss $amime_pid)"
  if [ -n "$coredns" ]; then
    echo -n "  CoreDNS:    "; "$work/dnsbench" load -server 127.0.0.1:15354 -mix "$mix" -clients "$CLIENTS" -duration "$DURATION"
    echo "    rss_mib=$(rss $coredns_pid)"
  else
    echo "  CoreDNS: not built (see $work/build.log)"
  fi
done

# Autopath: round trips of the ndots:5 search path from a pod. An upstream
# inside the lab (dnsbench upstream in a pod) answers names outside the zone.
kubectl apply -f - >/dev/null <<P
apiVersion: v1
kind: Pod
metadata: {name: upstream, namespace: dnsbench}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox, command: [$work/dnsbench, upstream, --listen, ":53", --lifetime, 10m]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: dnsbench}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox, command: [sleep, "600"]}]
P
kubectl wait -n dnsbench --for=condition=Ready pod/upstream pod/client --timeout=90s >/dev/null
up=$(kubectl get pod -n dnsbench upstream -o jsonpath='{.status.podIP}')
old=$(kubectl get configmap -n kube-system amime-dns -o jsonpath='{.data.upstreams}')
restore() { kubectl patch configmap -n kube-system amime-dns --type=merge -p "{\"data\":{\"upstreams\":\"$old\",\"autopath\":\"true\"}}" >/dev/null; }
trap 'restore; kubectl delete pod -n dnsbench upstream client --wait=false >/dev/null; cleanup' EXIT
for ap in false true; do
  kubectl patch configmap -n kube-system amime-dns --type=merge -p "{\"data\":{\"upstreams\":\"$up\",\"autopath\":\"$ap\"}}" >/dev/null
  sleep 3
  echo "autopath=$ap (upstream $up in the lab):"
  "$AMIME" lab exec --name "$LAB" -n dnsbench client -- "$work/dnsbench" search -names example.com,kubernetes.default,s1.dnsbench,s1 | sed 's/^/  /'
done
