#!/usr/bin/env node
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { HxError, asUserError } from '../errors.js';
import { withoutHelpCache } from './helpCache.js';
import { loadCommands } from './commands/index.js';

const args = hideBin(process.argv);
const cli = withoutHelpCache(yargs(args))
  .scriptName('hx')
  .usage('$0 <command> [options]\n\nStreaming FHIR transforms in constant memory. Logs and progress go to stderr.')
  .command((await loadCommands(args)) as never)
  .demandCommand(1, 'Name a command; `hx --help` lists them.')
  .strict()
  .recommendCommands()
  .wrap(Math.min(110, process.stderr.columns ?? 110))
  .epilogue('Every command reads NDJSON, .gz or a Bundle from files or stdin; `hx <command> --help` shows examples.')
  .fail((message, error) => {
    throw error ?? new HxError(message, 2);
  })
  .help()
  .alias('h', 'help');

try {
  await cli.parseAsync();
} catch (err) {
  const known = asUserError(err);
  if (known) {
    process.stderr.write(`hx: ${known.message}\n`);
    if (known.exitCode === 2) process.stderr.write('Try `hx --help`.\n');
    process.exitCode = known.exitCode;
  } else {
    process.stderr.write(`hx: internal error: ${(err as Error)?.stack ?? err}\n`);
    process.exitCode = 70;
  }
}
