#!/usr/bin/env bash
# Builds bin/helm from the helm.sh/helm/v4 Go module (hack/helm pins the
# version), for the tests that render charts/weft with `helm template` and
# `helm lint` it. No prebuilt download: this project's machines cannot reach
# one. Reused while it reports the pinned version, so a second run costs one
# `helm version` call. Not built with -trimpath (see build-testbins.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${WEFT_BIN_DIR:-$ROOT/bin}"
MOD="$ROOT/hack/helm"
HELM_VERSION="$(sed -n 's/^[[:space:]]*helm.sh\/helm\/v4 \(v[0-9.]*\).*/\1/p' "$MOD/go.mod" | head -n1)"
if [[ -z "$HELM_VERSION" ]]; then
	echo "hack/build-helm.sh: no helm.sh/helm/v4 version in $MOD/go.mod" >&2
	exit 1
fi
mkdir -p "$BIN"

# Parallel test packages may all call this: one builds, the others wait.
exec 7>"$BIN/.helm.lock"
flock 7

out="$("$BIN/helm" version --template '{{.Version}}' 2>/dev/null || true)"
if [[ "$out" == "$HELM_VERSION" ]]; then
	exit 0
fi
echo "weft: building helm $HELM_VERSION (first build takes a few minutes; cached rebuilds take seconds)" >&2
start=$SECONDS
(cd "$MOD" && go build -ldflags "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" -o "$BIN/helm.tmp" helm.sh/helm/v4/cmd/helm)
mv "$BIN/helm.tmp" "$BIN/helm"
echo "weft: built helm in $((SECONDS - start))s" >&2
