#!/usr/bin/env bash
# Installs, from Debian's packages, the tools the operations tests use when
# they are missing: Chromium (the status page's browser test) and promtool
# (from the prometheus package: the alert rules' check). It never fails the
# build: where a package cannot be installed, the test that needs it skips
# and says why.
set -uo pipefail
want=()
command -v chromium >/dev/null 2>&1 || want+=(chromium)
command -v promtool >/dev/null 2>&1 || want+=(prometheus)
((${#want[@]} == 0)) && exit 0
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-ops-tools: ${want[*]} missing and not installable here (needs root and apt-get): their tests will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# The prometheus package would start its server where an init system runs:
# only promtool is wanted.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
fi
if ! apt-get install -y --no-install-recommends "${want[@]}" >/tmp/ensure-ops-tools.log 2>&1; then
  apt-get update >>/tmp/ensure-ops-tools.log 2>&1 &&
    apt-get install -y --no-install-recommends "${want[@]}" >>/tmp/ensure-ops-tools.log 2>&1 ||
    echo "ensure-ops-tools: could not install ${want[*]} (see /tmp/ensure-ops-tools.log): their tests will skip" >&2
fi
((made_policy)) && rm -f "$policy"
exit 0
