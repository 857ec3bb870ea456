import { statSync } from 'node:fs';

/**
 * Stops the benchmark when /dev/null is not the null device. A sandbox once
 * had a regular file there (a `> /dev/null` after the device was removed):
 * every row then wrote its output into tmpfs, which cost about a second per
 * GB and grew slower as the file grew, and no timing could be trusted.
 */
export function requireNullDevice(): void {
  if (statSync('/dev/null').isCharacterDevice()) return;
  console.error(
    'bench: /dev/null is not the null device (a regular file?): output sent there is really written, and the timings ' +
      'would measure that. As root: rm /dev/null && mknod -m 666 /dev/null c 1 3',
  );
  process.exit(2);
}
