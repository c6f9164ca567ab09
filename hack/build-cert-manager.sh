#!/usr/bin/env bash
# Builds bin/cert-manager-controller: cert-manager's own controllers
# (certificaterequests-approver, certificaterequests-issuer-ca, issuers, ...)
# from the cert-manager Go module, for the integration tests of certs/.
#
# cert-manager's own main package sits in a nested module
# (github.com/cert-manager/cert-manager/cmd/controller) that the Go module
# proxy does not serve, so hack/cert-manager/main.go does the same thin
# wiring around the controllers in the main module's pkg/controller.
#
# The binary is reused while it reports the cert-manager version in
# hack/cert-manager/go.mod and the hash of that module's sources, so a second
# run costs one `--version` call. Not built with -trimpath (see
# build-testbins.sh): rebuilds hit Go's build cache.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${WEFT_BIN_DIR:-$ROOT/bin}"
MOD="$ROOT/hack/cert-manager"
CM_VERSION="$(sed -n 's/^[[:space:]]*github.com\/cert-manager\/cert-manager \(v[0-9.]*\).*/\1/p' "$MOD/go.mod" | head -n1)"
BUILD_ID="$(cat "$MOD/go.mod" "$MOD/go.sum" "$MOD"/*.go | sha256sum | cut -c1-12)"
mkdir -p "$BIN"

# Parallel test packages may all call this: one builds, the others wait and
# then find the binary current. A lock of its own, so that it never waits
# behind (or blocks) kube-apiserver's build.
exec 8>"$BIN/.cert-manager.lock"
flock 8

want="cert-manager-controller $CM_VERSION (weft test build $BUILD_ID)"
out="$("$BIN/cert-manager-controller" --version 2>/dev/null || true)"
if [[ "$out" == *"$want"* ]]; then
	exit 0
fi
echo "weft: building cert-manager-controller $CM_VERSION (first build takes a few minutes; cached rebuilds take seconds)" >&2
start=$SECONDS
(cd "$MOD" && go build -ldflags "-X main.buildID=$BUILD_ID" -o "$BIN/cert-manager-controller.tmp" .)
mv "$BIN/cert-manager-controller.tmp" "$BIN/cert-manager-controller"
echo "weft: built cert-manager-controller in $((SECONDS - start))s" >&2
