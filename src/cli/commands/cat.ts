import type { CommandModule } from 'yargs';
import { checkWorkers } from '../../io/workers.js';
import { withInputOptions, withOutputOptions, withWorkersOption, type InputArgs, type OutputArgs } from '../common.js';
import { inWorkers, runPlan, type StageCommand, type StagePlan } from '../pipeline.js';

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
    const plan = catPlan();
    await runPlan(argv, inWorkers([plan], checkWorkers(argv.workers), argv) ?? plan);
  },
};

/** As a stage of `hx run`: passes records on unchanged. */
export const catStage: StageCommand<CatArgs> = { command: catCommand, plan: () => catPlan() };

function catPlan(): StagePlan {
  return { parallel: () => ({ job: { kind: 'cat' }, local: (batch) => batch }) };
}
