#!/bin/sh
":" //; exec node --max-semi-space-size=8 "$0" "$@"

// The `hx` command. Run by sh, the line above starts Node on this file with a
// V8 young generation of 8 MB semi-spaces instead of 16: peak RSS drops by
// 11-18 MB for every command at about the same speed (see README, "Install"). Node
// flags cannot be set once the process runs, and `env -S` in a #! line is
// missing from busybox (Alpine). Run by Node (`node bin/hx.js`), that line is
// a string and a comment, and the flag is simply not set.
import '../dist/src/cli/main.js';
