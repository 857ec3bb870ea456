import type { CommandModule } from 'yargs';
import { checkWorkers, parallelSerialize } from '../../io/workers.js';
import { withInputOptions, withOutputOptions, withWorkersOption, type InputArgs, type OutputArgs } from '../common.js';
import { runPlan, type StageCommand, type StagePlan } from '../pipeline.js';

interface CatArgs extends InputArgs, OutputArgs {
  workers: number;
}

export const catCommand: CommandModule<object, CatArgs> = {
  command: 'cat [files..]',
  describe: 'Read NDJSON, gzip or Bundle JSON and write one resource per line (NDJSON)',
  builder: (yargs) =>
    withWorkersOption(withOutputOptions(withInputOptions(yargs)))
      .example('hx cat Patient.ndjson.gz > patients.ndjson', 'decompress a Bulk Data file')
      .example('hx cat everything.json -o resources.ndjson', 'stream the entries of a Bundle of any size')
      .example('cat a.ndjson | hx cat --rejects bad.ndjson -v > good.ndjson', 'set bad lines aside and print the account'),
  handler: async (argv) => {
    await runPlan(argv, catPlan(argv, true));
  },
};

/** As a stage of `hx run`: passes records on unchanged. */
export const catStage: StageCommand<CatArgs> = { command: catCommand, plan: (argv, { alone }) => catPlan(argv, alone) };

function catPlan(argv: CatArgs, alone: boolean): StagePlan {
  const workers = checkWorkers(argv.workers);
  if (!alone || workers === 1) return {};
  return {
    rawLines: true,
    serializer: (ctx) =>
      parallelSerialize(
        { workers, job: { kind: 'cat' }, maxLineBytes: argv['max-line-bytes'], unpackBundles: argv.unpack, dropReason: 'dropped', local: (batch) => batch },
        ctx,
      ),
  };
}
