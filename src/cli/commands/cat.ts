import type { CommandModule } from 'yargs';
import { withInputOptions, withOutputOptions, type InputArgs, type OutputArgs } from '../common.js';
import { runPlan, type StageCommand } from '../pipeline.js';

export const catCommand: CommandModule<object, InputArgs & OutputArgs> = {
  command: 'cat [files..]',
  describe: 'Read NDJSON, gzip or Bundle JSON and write one resource per line (NDJSON)',
  builder: (yargs) =>
    withOutputOptions(withInputOptions(yargs))
      .example('hx cat Patient.ndjson.gz > patients.ndjson', 'decompress a Bulk Data file')
      .example('hx cat everything.json -o resources.ndjson', 'stream the entries of a Bundle of any size')
      .example('cat a.ndjson | hx cat --rejects bad.ndjson -v > good.ndjson', 'set bad lines aside and print the account'),
  handler: async (argv) => {
    await runPlan(argv, catStage.plan(argv, { readsInput: true }));
  },
};

/** As a stage of `hx run`: passes records on unchanged. */
export const catStage: StageCommand = { command: catCommand, plan: () => ({}) };
