#!/usr/bin/env bash
# The main job of hx on the shipped samples: prints each command, then what it did.
set -euo pipefail
cd "$(dirname "$0")/.."
hx() { node dist/src/cli/main.js "$@"; }
out=examples/out
mkdir -p "$out"

step() { printf '\n$ %s\n' "$*"; }

step hx count examples/dwain-mcglynn.bundle.json
hx count examples/dwain-mcglynn.bundle.json

step "hx cat examples/bulk/*.ndjson.gz -v -o $out/bulk.ndjson"
hx cat examples/bulk/*.ndjson.gz -v -o "$out/bulk.ndjson"

step "hx split --dir $out/by-type examples/dwain-mcglynn.bundle.json -v"
hx split --dir "$out/by-type" examples/dwain-mcglynn.bundle.json -v
ls "$out/by-type"

printf '\nDone: outputs are in %s/\n' "$out"
