/**
 * The libraries on the design card, measured on the same files as hx, to
 * justify where hx uses them and where it frames bytes itself:
 *
 *   node dist/bench/libraries.js ndjson FILE             `ndjson` parse + stringify round trip → stdout
 *   node dist/bench/libraries.js stream-json-jsonl FILE  stream-json's JSONL parser, parse only
 *   node dist/bench/libraries.js stream-json-bundle FILE stream-json pick('entry') + streamArray, parse only
 */
import { createReadStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import ndjson from 'ndjson';
import chain from 'stream-chain';
import { parser } from 'stream-json';
import jsonlParser from 'stream-json/jsonl/parser.js';
import { pick } from 'stream-json/filters/pick.js';
import { streamArray } from 'stream-json/streamers/stream-array.js';

const [mode, file] = process.argv.slice(2) as [string, string];
const input = () => createReadStream(file, { highWaterMark: 1 << 16 });
let count = 0;
const counter = new Writable({
  objectMode: true,
  write(_item, _e, cb) {
    count++;
    cb();
  },
});

if (mode === 'ndjson') {
  await pipeline(input(), ndjson.parse(), ndjson.stringify(), process.stdout);
} else if (mode === 'stream-json-jsonl') {
  await pipeline(input(), jsonlParser.asStream(), counter);
} else if (mode === 'stream-json-bundle') {
  await pipeline(chain([input(), parser(), pick({ filter: 'entry' }), streamArray()]), counter);
} else {
  throw new Error(`unknown mode ${mode}`);
}
if (count) process.stderr.write(`${count} items\n`);
