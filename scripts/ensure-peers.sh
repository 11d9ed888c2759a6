#!/usr/bin/env bash
# Makes sure nginx and HAProxy are on this machine, installing Debian's
# packages when they are missing. Some proxy tests send the same hostile
# bytes to them as to strangler-proxy, to pin the behaviour they agree on;
# those tests skip when a binary is absent. Quiet unless it installs.
set -euo pipefail

missing=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
if [[ ${#missing[@]} -eq 0 ]]; then exit 0; fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-peers: ${missing[*]} missing and apt-get unavailable: the peer tests will skip" >&2
  exit 0
fi
echo "ensure-peers: installing ${missing[*]} from Debian's packages" >&2
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
# The tests start their own instances on loopback ports: keep the packages'
# services from starting on install.
export DEBIAN_FRONTEND=noninteractive
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  $sudo apt-get update -q >/dev/null 2>&1
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}
