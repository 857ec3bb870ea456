import type { CommandModule } from 'yargs';

type Command = CommandModule<object, never>;

/**
 * Every `hx` command, one module each, loaded on demand: `hx cat` should not
 * pay at start-up for the HTTP client, JWT signing or the Bulk client.
 */
const registry: Record<string, () => Promise<Command>> = {
  cat: async () => (await import('./cat.js')).catCommand as never,
  count: async () => (await import('./count.js')).countCommand as never,
  split: async () => (await import('./split.js')).splitCommand as never,
  deid: async () => (await import('./deid.js')).deidCommand as never,
  pretag: async () => (await import('./pretag.js')).pretagCommand as never,
  tags: async () => (await import('./tags.js')).tagsCommand as never,
  bundle: async () => (await import('./bundle.js')).bundleCommand as never,
  fetch: async () => (await import('./fetch.js')).fetchCommand as never,
  bulk: async () => (await import('./bulk.js')).bulkCommand as never,
  fasten: async () => (await import('./fasten.js')).fastenCommand as never,
  ingest: async () => (await import('./ingest.js')).ingestCommand as never,
  import: async () => (await import('./import.js')).importCommand as never,
  'export-healthex': async () => (await import('./exportHealthex.js')).exportHealthexCommand as never,
  run: async () => (await import('./run.js')).runCommand as never,
};

export const commandNames = Object.keys(registry);

/** The command named in `args` alone when there is one, else all of them (for help and errors). */
export async function loadCommands(args: string[]): Promise<Command[]> {
  const name = args.find((arg) => !arg.startsWith('-'));
  const load = name === undefined ? undefined : registry[name];
  if (load) return [await load()];
  return Promise.all(Object.values(registry).map((loader) => loader()));
}
