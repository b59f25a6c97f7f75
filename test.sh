#!/usr/bin/env bash
# The tests (the README's second command): unit tests and real node processes on
# loopback, each test in its own process, which they need (ractor's registry and process
# groups are process-wide): cargo-nextest runs them so, and is installed first if missing.
# Extra arguments go to `cargo nextest run` (a filter: ./test.sh -E 'binary(cli)').
set -euo pipefail
cd "$(dirname "$0")"
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test.sh: installing cargo-nextest (once): cargo install cargo-nextest --locked" >&2
  cargo install cargo-nextest --locked
fi
exec cargo nextest run --workspace "$@"
