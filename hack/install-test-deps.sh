#!/usr/bin/env bash
# Installs the Debian packages the tests need and a fresh machine lacks:
# iptables and iproute2, for the weft-init test, which runs the real
# iptables-restore, ip6tables-restore and ip in a network namespace (as root). Without root
# there is nothing to install: that test skips, saying why.
set -euo pipefail
[ "$(id -u)" = 0 ] || exit 0
declare -A pkg=([iptables-restore]=iptables [ip6tables-restore]=iptables [ip]=iproute2)
missing=()
for c in "${!pkg[@]}"; do
	command -v "$c" >/dev/null || missing+=("${pkg[$c]}")
done
[ "${#missing[@]}" -gt 0 ] || exit 0
echo "weft: installing ${missing[*]} for the tests" >&2
apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null
