#!/usr/bin/env bash
# A release build of keel: optimised and stripped (the `dist` profile), with the commit and
# the build date in `keel --version`. Prints where the binary is.
#
#   scripts/release.sh            # target/dist/keel
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
commit="$(git rev-parse --short=12 HEAD)"
git diff --quiet HEAD -- || commit="$commit-dirty"
export KEEL_BUILD_COMMIT="$commit"
export KEEL_BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
cargo build --locked --profile dist -p keel-net --bin keel
ls -l target/dist/keel
target/dist/keel --version
