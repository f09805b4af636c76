#!/usr/bin/env bash
# Installs what amime and its lab need on a Debian machine. Idempotent: installs
# only what is missing, and says what it does.
set -euo pipefail

# program-or-file -> Debian package
deps=(
  "ip:iproute2"
  "nft:nftables"
  "curl:curl"
  "dig:dnsutils"
  "nslookup:dnsutils"
  "nc:netcat-openbsd"
  "nsenter:util-linux"
  "ethtool:ethtool"
  "conntrack:conntrack"
  "ping:iputils-ping"
  "/usr/lib/cni/bridge:containernetworking-plugins"
  "/usr/lib/cni/host-local:containernetworking-plugins"
  "/usr/lib/cni/loopback:containernetworking-plugins"
  "iperf3:iperf3"
  "wrk:wrk"
  "dnsperf:dnsperf"
  "socat:socat"
  "make:make"
  "git:git"
)

missing=()
for d in "${deps[@]}"; do
  prog=${d%%:*} pkg=${d#*:}
  if [[ $prog == /* ]]; then
    [[ -e $prog ]] && continue
  elif command -v "$prog" >/dev/null 2>&1; then
    continue
  fi
  [[ " ${missing[*]-} " == *" $pkg "* ]] || missing+=("$pkg")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps: missing Debian packages: ${missing[*]}; run as root (sudo make deps)" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || echo "deps: apt-get update failed; trying to install from the current package lists" >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "deps: all Debian packages present"
fi

if ! command -v go >/dev/null 2>&1 && [[ ! -x /usr/local/go/bin/go ]]; then
  echo "deps: Go is not installed: install Go 1.26 or newer (https://go.dev/doc/install)" >&2
  exit 1
fi
