#!/usr/bin/env bash
# The main job of hx on the shipped samples: prints each command, then what it did.
set -euo pipefail
cd "$(dirname "$0")/.."
hx() { bin/hx.js "$@"; }
out=examples/out
mkdir -p "$out"
# A fixed demo key, so the run is reproducible; use --key-file with a real secret for real data.
export HX_DEID_KEY=hx-demo-key-not-secret

step() { printf '\n$ %s\n' "$*"; }

step hx count examples/dwain-mcglynn.bundle.json
hx count examples/dwain-mcglynn.bundle.json

step "hx deid --profile safe-harbor --as-of 2026-01-01 examples/dwain-mcglynn.bundle.json examples/bulk/*.ndjson.gz -v | hx pretag -v | hx bundle -v -o $out/export.json"
hx deid --profile safe-harbor --as-of 2026-01-01 examples/dwain-mcglynn.bundle.json examples/bulk/*.ndjson.gz -v \
  | hx pretag -v | hx bundle -v -o "$out/export.json"

step "hx tags $out/export.json"
hx tags "$out/export.json"

step "hx count $out/export.json --json"
hx count "$out/export.json" --json

step "hx split --dir $out/by-type examples/bulk/*.ndjson.gz -v"
hx split --dir "$out/by-type" examples/bulk/*.ndjson.gz -v
ls "$out/by-type"

printf '\nDone: the de-identified, pre-tagged transaction Bundle is %s/export.json\n' "$out"
