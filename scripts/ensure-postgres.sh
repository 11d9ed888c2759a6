#!/usr/bin/env bash
# Makes sure PostgreSQL's server programs (initdb, pg_ctl, postgres) are on this
# machine, installing Debian's postgresql package when they are missing.
# Prints the folder that holds them.
set -euo pipefail

find_bin() {
  if [[ -n "${PG_BIN:-}" && -x "$PG_BIN/initdb" ]]; then echo "$PG_BIN"; return 0; fi
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
    if [[ -x "$d/initdb" ]]; then echo "$d"; return 0; fi
  done
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
  return 1
}

if bin=$(find_bin); then echo "$bin"; exit 0; fi

echo "PostgreSQL server programs not found: installing Debian's postgresql package" >&2
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
# The tests and the demo start clusters of their own: no system cluster is needed.
$sudo mkdir -p /etc/postgresql-common
echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
if bin=$(find_bin); then echo "$bin"; exit 0; fi
echo "PostgreSQL was installed but initdb is still not found" >&2
exit 1
