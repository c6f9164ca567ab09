#!/usr/bin/env bash
# Builds istiod's pilot-discovery from the istio.io/istio Go module into bin/
# for `make bench-peer` (weft measured beside istiod on the same harness).
#
# The nested module hack/istiod pins the version. A binary whose embedded
# istio.io/istio version (`go version -m`) already matches is reused, so only
# a version change rebuilds it (cold build ≈ 5 minutes on 2 cores). Never part
# of `make test` or CI: the tests must not depend on Istio.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${WEFT_BIN_DIR:-$ROOT/bin}"
ISTIO_VERSION="$(sed -n 's/^require istio.io\/istio \(v[^ ]*\).*/\1/p; s/^[[:space:]]*istio.io\/istio \(v[^ ]*\).*/\1/p' "$ROOT/hack/istiod/go.mod" | head -1)"
[ -n "$ISTIO_VERSION" ] || { echo "no istio.io/istio version in hack/istiod/go.mod" >&2; exit 1; }
mkdir -p "$BIN"
exec 9>"$BIN/.build-istiod.lock"
flock 9

have="$(go version -m "$BIN/pilot-discovery" 2>/dev/null | awk '($1 == "mod" || $1 == "dep") && $2 == "istio.io/istio" {print $3}')" || true
if [ "$have" == "$ISTIO_VERSION" ]; then
	exit 0
fi
echo "weft: building pilot-discovery (istio.io/istio $ISTIO_VERSION; about 5 minutes cold)" >&2
start=$SECONDS
rev="${ISTIO_VERSION##*-}"
ldflags="-X istio.io/istio/pkg/version.buildVersion=1.31-dev+$rev \
-X istio.io/istio/pkg/version.buildGitRevision=$rev \
-X istio.io/istio/pkg/version.buildStatus=Clean \
-X istio.io/istio/pkg/version.buildTag=$ISTIO_VERSION"
(cd "$ROOT/hack/istiod" && go build -ldflags "$ldflags" -o "$BIN/pilot-discovery.tmp" istio.io/istio/pilot/cmd/pilot-discovery)
mv "$BIN/pilot-discovery.tmp" "$BIN/pilot-discovery"
echo "weft: built pilot-discovery in $((SECONDS - start))s" >&2
