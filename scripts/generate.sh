#!/usr/bin/env bash
# Regenerates the Go code and the OpenAPI document from proto/ with the
# pinned buf and plugins (tools.mod). With --check, fails if anything the
# generator writes differs from what is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
go tool -modfile=tools.mod buf lint
go tool -modfile=tools.mod buf generate
if [ "${1:-}" = "--check" ]; then
  if ! git diff --exit-code -- proto || [ -n "$(git status --porcelain -- proto)" ]; then
    echo "generated code is not up to date: run scripts/generate.sh and commit the result" >&2
    git status --porcelain -- proto >&2
    exit 1
  fi
fi
