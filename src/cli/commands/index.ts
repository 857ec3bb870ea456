import type { CommandModule } from 'yargs';
import { bulkCommand } from './bulk.js';
import { bundleCommand } from './bundle.js';
import { catCommand } from './cat.js';
import { countCommand } from './count.js';
import { exportHealthexCommand } from './exportHealthex.js';
import { fastenCommand } from './fasten.js';
import { importCommand } from './import.js';
import { ingestCommand } from './ingest.js';
import { deidCommand } from './deid.js';
import { fetchCommand } from './fetch.js';
import { pretagCommand } from './pretag.js';
import { splitCommand } from './split.js';
import { tagsCommand } from './tags.js';

/** Every `hx` command; one module each. */
export const commands: CommandModule<object, never>[] = [catCommand, countCommand, splitCommand, deidCommand, bundleCommand, pretagCommand, tagsCommand, fetchCommand, fastenCommand, bulkCommand, ingestCommand, importCommand, exportHealthexCommand] as never;
