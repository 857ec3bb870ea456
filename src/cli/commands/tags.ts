import { Transform } from 'node:stream';
import type { CommandModule } from 'yargs';
import { PRETAG_CODES, pretagCodesOf } from '../../../transforms/pretag.js';
import type { Account } from '../../account.js';
import type { Batch, Resource } from '../../types.js';
import { runRecords, withInputOptions, withOutputOptions, type InputArgs, type OutputArgs } from '../common.js';

interface TagsArgs extends InputArgs, OutputArgs {
  json: boolean;
}

export const tagsCommand: CommandModule<object, TagsArgs> = {
  command: 'tags [files..]',
  describe: 'List the resources that carry Curatr pre-tags, with a count per tag',
  builder: (yargs) =>
    withOutputOptions(withInputOptions(yargs))
      .option('json', {
        describe: 'One JSON object per tagged resource ({"id","resourceType","subject","tags"}); the counts go to stderr',
        type: 'boolean',
        default: false,
      })
      .example('hx tags tagged.ndjson', 'a table of the tagged resources, then the count per tag')
      .example('hx pretag export/*.ndjson.gz | hx tags --json | jq -r .subject | sort | uniq -c', 'tagged resources per patient')
      .epilogue(
        'Table columns: id, resource type, subject reference ("-" when absent), tags (comma-separated). Column widths ' +
          'come from the first 256 rows (later rows may push a column out), so the table streams in constant memory.',
      ) as never,
  handler: async (argv) => {
    const counts = new TagCounts();
    await runRecords({
      input: argv,
      output: argv,
      serializer: ({ account }) => (argv.json ? jsonRows(account, counts) : tableRows(account, counts)),
    });
    if (argv.json) process.stderr.write(`hx: tags: ${counts.line()}\n`);
  },
};

export interface TagRow {
  id: string | null;
  resourceType: string;
  subject: string | null;
  tags: string[];
}

/** The row of a tagged resource, or undefined when it carries no pre-tag. */
export function tagRow(resource: Resource): TagRow | undefined {
  const tags = resource.extension === undefined ? [] : pretagCodesOf(resource);
  if (tags.length === 0) return undefined;
  const reference = (resource.subject as { reference?: unknown } | undefined)?.reference;
  return {
    id: typeof resource.id === 'string' ? resource.id : null,
    resourceType: resource.resourceType,
    subject: typeof reference === 'string' ? reference : null,
    tags,
  };
}

/** Tagged resources and tags per code: the contract's three first, in their order, then any other, by name. */
export class TagCounts {
  resources = 0;
  readonly byCode = new Map<string, number>(PRETAG_CODES.map((code) => [code, 0]));

  add(row: TagRow): void {
    this.resources++;
    for (const code of new Set(row.tags)) this.byCode.set(code, (this.byCode.get(code) ?? 0) + 1);
  }

  entries(): [string, number][] {
    const known = new Set<string>(PRETAG_CODES);
    const others = [...this.byCode].filter(([code]) => !known.has(code)).sort(([a], [b]) => (a < b ? -1 : 1));
    return [...PRETAG_CODES.map((code) => [code, this.byCode.get(code)!] as [string, number]), ...others];
  }

  line(): string {
    return `${this.entries().map(([code, n]) => `${code} ${n}`).join(', ')}; ${this.resources} tagged resources`;
  }

  table(): string {
    const rows = [...this.entries(), ['tagged resources', this.resources] as [string, number]];
    const width = Math.max(...rows.map(([name]) => name.length));
    const digits = Math.max(...rows.map(([, n]) => String(n).length));
    return rows.map(([name, n]) => `${name.padEnd(width)}  ${String(n).padStart(digits)}\n`).join('');
  }
}

/** Every resource counts as written (it was examined and reported on), as in `hx count`. */
function eachRow(batch: Batch, account: Account, counts: TagCounts, format: (row: TagRow) => string): string {
  let text = '';
  for (const resource of batch.resources) {
    account.countWritten(resource.resourceType);
    const row = tagRow(resource);
    if (!row) continue;
    counts.add(row);
    text += format(row);
  }
  return text;
}

function jsonRows(account: Account, counts: TagCounts): Transform {
  return new Transform({
    writableObjectMode: true,
    transform(batch: Batch, _encoding, callback) {
      callback(null, eachRow(batch, account, counts, (row) => JSON.stringify(row) + '\n'));
    },
  });
}

const WIDTH_WINDOW = 256;
const HEADER = ['ID', 'TYPE', 'SUBJECT', 'TAGS'];

/**
 * An aligned table: rows wait until the first WIDTH_WINDOW have been seen (or
 * the input ends) to fix the column widths, then stream. The counts follow
 * after a blank line.
 */
function tableRows(account: Account, counts: TagCounts): Transform {
  let pending: string[][] | undefined = [];
  let widths: number[] = [];
  const format = (cells: string[]) =>
    cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ') + '\n';
  const release = () => {
    const rows = pending!;
    pending = undefined;
    if (rows.length === 0) return '';
    widths = HEADER.map((_, i) => Math.max(...rows.map((cells) => cells[i]!.length), HEADER[i]!.length));
    return format(HEADER) + rows.map(format).join('');
  };
  return new Transform({
    writableObjectMode: true,
    transform(batch: Batch, _encoding, callback) {
      const text = eachRow(batch, account, counts, (row) => {
        const cells = [row.id ?? '-', row.resourceType, row.subject ?? '-', row.tags.join(',')];
        if (!pending) return format(cells);
        pending.push(cells);
        return pending.length === WIDTH_WINDOW ? release() : '';
      });
      callback(null, text);
    },
    flush(callback) {
      let text = pending ? release() : '';
      if (counts.resources > 0) text += '\n';
      callback(null, text + counts.table());
    },
  });
}
