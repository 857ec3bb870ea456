import type { CommandModule } from 'yargs';
import type { Account } from '../../account.js';
import { countingSink } from '../../io/countingSink.js';
import { runRecords, withInputOptions, type InputArgs } from '../common.js';

interface CountArgs extends InputArgs {
  json: boolean;
}

export const countCommand: CommandModule<object, CountArgs> = {
  command: 'count [files..]',
  describe: 'Count resources by type',
  builder: (yargs) =>
    withInputOptions(yargs)
      .option('json', { describe: 'Print {"Type": n, …, "total": n} as JSON', type: 'boolean', default: false })
      .example('hx count export.json', 'resources per type in a Bundle')
      .example('hx count bulk/*.ndjson.gz --json', 'as JSON'),
  handler: async (argv) => {
    const account = await runRecords({ input: argv, sink: ({ account }) => countingSink(account) });
    process.stdout.write(argv.json ? countJson(account) : countTable(account));
  },
};


function countJson(account: Account): string {
  return JSON.stringify({ ...Object.fromEntries(byCount(account)), total: account.written }) + '\n';
}

/** Types by count, largest first, then by name: a stable order. */
function byCount(account: Account): [string, number][] {
  return [...account.writtenByType].sort(([a, m], [b, n]) => n - m || (a < b ? -1 : 1));
}

export function countTable(account: Account): string {
  const rows = [...byCount(account), ['total', account.written] as [string, number]];
  const width = Math.max(...rows.map(([type]) => type.length));
  const digits = Math.max(...rows.map(([, n]) => String(n).length));
  return rows.map(([type, n]) => `${type.padEnd(width)}  ${String(n).padStart(digits)}\n`).join('');
}
