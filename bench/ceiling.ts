/**
 * Node's own ceiling for an NDJSON round trip: read → split on newlines →
 * JSON.parse → JSON.stringify → write, with nothing else. hx is measured as a
 * fraction of this. Reads a file (argv[2]) and writes to stdout.
 */
import { createReadStream } from 'node:fs';
import { once } from 'node:events';

const input = createReadStream(process.argv[2]!, { highWaterMark: 1 << 20 });
let carry = '';
for await (const chunk of input) {
  const text = carry + (chunk as Buffer).toString('utf8');
  const last = text.lastIndexOf('\n');
  carry = text.slice(last + 1);
  let out = '';
  let pos = 0;
  for (let nl = text.indexOf('\n'); nl >= 0 && nl <= last; nl = text.indexOf('\n', pos)) {
    if (nl > pos) out += JSON.stringify(JSON.parse(text.slice(pos, nl))) + '\n';
    pos = nl + 1;
  }
  if (!process.stdout.write(out)) await once(process.stdout, 'drain');
}
if (carry.trim()) process.stdout.write(JSON.stringify(JSON.parse(carry)) + '\n');
