import type { CommandModule } from 'yargs';
import { TypeFiles } from '../../io/typeFiles.js';
import { UsageError } from '../../errors.js';
import { runRecords, withInputOptions, type InputArgs } from '../common.js';

interface SplitArgs extends InputArgs {
  by: string;
  dir: string;
  gzip: boolean;
  'max-open': number;
}

export const splitCommand: CommandModule<object, SplitArgs> = {
  command: 'split [files..]',
  describe: 'Write one NDJSON file per resource type (the Bulk Data layout)',
  builder: (yargs) =>
    withInputOptions(yargs)
      .option('by', { describe: 'What to split by', choices: ['type'], default: 'type' })
      .option('dir', { describe: 'Folder for the files', type: 'string', demandOption: true, requiresArg: true })
      .option('gzip', { describe: 'Write Type.ndjson.gz files', type: 'boolean', default: false })
      .option('max-open', { describe: 'Most files held open at once', type: 'number', default: 32 })
      .example('hx split --dir out everything.json', 'out/Patient.ndjson, out/Observation.ndjson, …')
      .example('cat *.ndjson | hx split --dir out --gzip', 'compressed, from stdin'),
  handler: async (argv) => {
    if (!(argv['max-open'] >= 1)) throw new UsageError('--max-open must be at least 1');
    const account = await runRecords({
      input: argv,
      sink: ({ account }) => new TypeFiles({ dir: argv.dir, gzip: argv.gzip, maxOpen: argv['max-open'], account }),
    });
    if (!argv.verbose) return;
    process.stderr.write(`hx: wrote ${account.writtenByType.size} files to ${argv.dir}\n`);
  },
};
