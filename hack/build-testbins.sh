#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from Go modules into bin/.
#
# There is no download of prebuilt binaries (this project's machines cannot
# reach one): the nested modules hack/kube and hack/etcd pin the versions and
# `go build` does the rest. A binary whose reported version already matches
# is reused, so a second run costs only three `--version` calls.
#
# Not built with -trimpath: the tests and 'make run' share Go's build cache,
# and a cached rebuild takes about a second.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${WEFT_BIN_DIR:-$ROOT/bin}"
KUBE_VERSION="$(sed -n 's/^[[:space:]]*k8s.io\/kubernetes \(v[0-9.]*\).*/\1/p' "$ROOT/hack/kube/go.mod")"
ETCD_VERSION="$(sed -n 's/^[[:space:]]*go.etcd.io\/etcd\/server\/v3 v\([0-9.]*\).*/\1/p' "$ROOT/hack/etcd/go.mod")"
mkdir -p "$BIN"

# Test packages run in parallel and each may call this script: one builds,
# the others wait and then find the binaries current.
exec 9>"$BIN/.build.lock"
flock 9

# have NAME WANT ARGS...: true when bin/NAME prints WANT for ARGS.
# (The output is captured first: `cmd | grep -q` would fail under pipefail
# when grep exits early and cmd dies of SIGPIPE.)
have() {
	local name="$1" want="$2" out; shift 2
	[ -x "$BIN/$name" ] || return 1
	out="$("$BIN/$name" "$@" 2>/dev/null)" || return 1
	[[ "$out" == *"$want"* ]]
}

build() {
	local name="$1" dir="$2" pkg="$3" ldflags="${4:-}"
	echo "weft: building $name (first build takes several minutes; cached rebuilds take seconds)" >&2
	local start=$SECONDS
	(cd "$ROOT/hack/$dir" && go build -ldflags "$ldflags" -o "$BIN/$name.tmp" "$pkg")
	mv "$BIN/$name.tmp" "$BIN/$name"
	echo "weft: built $name in $((SECONDS - start))s" >&2
}

minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
kube_ldflags="-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
-X k8s.io/component-base/version.gitMajor=1 \
-X k8s.io/component-base/version.gitMinor=$minor \
-X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"

have etcd "etcd Version: $ETCD_VERSION" --version ||
	build etcd etcd go.etcd.io/etcd/server/v3
have kube-apiserver "Kubernetes $KUBE_VERSION" --version ||
	build kube-apiserver kube k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags"
have kubectl "Client Version: $KUBE_VERSION" version --client ||
	build kubectl kube k8s.io/kubernetes/cmd/kubectl "$kube_ldflags"
