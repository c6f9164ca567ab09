#!/usr/bin/env bash
# `make verify`: generated files are current, code is gofmt'd and vetted,
# and every module's go.mod and go.sum are tidy.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0

echo "verify: generated code"
make --no-print-directory generate >/dev/null
generated="crds charts/weft/files internal/cli/install/manifests"
if ! git diff --quiet -- $generated || [ -n "$(git ls-files --others --exclude-standard -- $generated)" ]; then
	echo "  stale: run 'make generate' and commit:" >&2
	git status --short -- $generated >&2
	fail=1
fi

echo "verify: gofmt"
unformatted="$(gofmt -l $(git ls-files '*.go'))"
if [ -n "$unformatted" ]; then
	echo "  not gofmt'd (run 'gofmt -w'):" >&2
	echo "$unformatted" | sed 's/^/    /' >&2
	fail=1
fi

echo "verify: go vet"
go vet ./... && go -C hack/images vet ./... && go -C hack/promql vet ./... || fail=1

echo "verify: go mod tidy"
for m in . hack/tools hack/kube hack/etcd hack/cert-manager hack/images hack/helm hack/promql; do
	if ! (cd "$m" && go mod tidy -diff >/dev/null); then
		echo "  $m/go.mod or go.sum is not tidy: run 'cd $m && go mod tidy'" >&2
		fail=1
	fi
done

[ "$fail" = 0 ] && echo "verify: ok"
exit "$fail"
