#!/usr/bin/env bash
# The lab demo: pods on several nodes, each with its own IP from its node's pod
# range, reachable from a pod on another node without NAT.
set -euo pipefail
cd "$(dirname "$0")/.."
AMIME=${AMIME:-bin/amime}
KUBECONFIG=$("$AMIME" lab kubeconfig | tail -n1)
export KUBECONFIG

say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

say "The nodes: one network namespace each, on the lab bridge (INTERNAL-IP)."
show kubectl get nodes -o wide

say "Deploy three nginxdemos/hello pods and a netshoot pod."
show kubectl apply -f examples/hello/hello.yaml
show kubectl rollout status deployment/hello --timeout=90s
show kubectl wait --for=condition=Ready pod/netshoot --timeout=60s

say "Each pod has its own IP, from the pod range of the node it runs on."
show kubectl get pods -o wide -l app=hello

say "From the netshoot pod, every hello pod answers with its own address and name."
for ip in $(kubectl get pods -l app=hello -o jsonpath='{.items[*].status.podIP}'); do
  printf '$ kubectl exec netshoot -- curl -s http://%s/    (the page'"'"'s Server lines)\n' "$ip"
  kubectl exec netshoot -- curl -s --max-time 5 "http://$ip/" | sed -n 's/<[^>]*>//g; s/&nbsp;/ /g; /Server \(address\|name\)/p' | sed 's/^ *//'
done

say "Inside a pod: its own hostname and the cluster DNS settings."
show kubectl exec netshoot -- hostname
show kubectl exec netshoot -- cat /etc/resolv.conf

say "Go on from here:"
cat <<EOM
  export KUBECONFIG=$KUBECONFIG
  kubectl get pods -A -o wide
  $AMIME lab exec netshoot -- bash        # a shell in the pod's namespaces
  $AMIME lab exec --node lab-node-1 -- ip route
  $AMIME lab down                          # remove everything the lab made
EOM
