import type { Argv } from 'yargs';

/**
 * `yargs` without its caching of a command's help: yargs renders the whole
 * help of the command it runs before the handler's first await returns, in
 * case the handler shows it (hx never does), 50-90 ms of every run (and of
 * each stage of `hx run`) while the pipeline starts.
 */
export function withoutHelpCache<T>(yargs: Argv<T>): Argv<T> {
  (yargs as unknown as { getInternalMethods(): { getUsageInstance(): { cacheHelpMessage(): void } } })
    .getInternalMethods()
    .getUsageInstance().cacheHelpMessage = () => {};
  return yargs;
}
