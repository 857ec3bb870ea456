import type { CommandModule } from 'yargs';
import { catCommand } from './cat.js';
import { countCommand } from './count.js';
import { splitCommand } from './split.js';

/** Every `hx` command; one module each. */
export const commands: CommandModule<object, never>[] = [catCommand, countCommand, splitCommand] as never;
