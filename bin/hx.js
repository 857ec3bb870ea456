#!/bin/sh
":" //; exec node --max-semi-space-size=8 --heap-growing-percent=10 --expose-gc --liftoff-only "$0" "$@"

// The `hx` command. Run by sh, the line above starts Node on this file with
// four V8 settings, each measured at about the same speed (README,
// "Install"): a young generation of 8 MB semi-spaces instead of 16 (peak RSS
// 11-18 MB lower for every command); an old generation that grows by 10%
// (or V8's minimum step) between full collections (traced on `hx deid`: one
// at 15 MB of heap instead of 34, for 8 MB live; peak RSS 101 -> 86 MB); and
// `gc` exposed, for the two places that ask for a collection (the output
// bytes of --workers, src/io/workers.ts; the socket buffers of a bulk
// download, src/util/youngCollection.ts); and WebAssembly compiled by
// the baseline compiler only: undici's HTTP parser is WebAssembly, and its
// optimising compile cost every networked command about 30 MB of peak RSS
// (hx fetch 132 -> 101 MB) for no speed it needs. Node flags cannot be set
// once the process runs, and `env -S` in a #! line is missing from busybox
// (Alpine). Run by Node (`node bin/hx.js`), that line is a string and a
// comment, and the flags are simply not set.
import '../dist/src/cli/main.js';
