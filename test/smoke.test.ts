import { describe, expect, it } from 'vitest';
import { parseRecord } from '../transforms/ndjsonSplit.js';
import { hx } from './support/cli.js';

describe('smoke', () => {
  it('parses a record', () => {
    expect(parseRecord('{"resourceType":"Patient"}')).toEqual({ resourceType: 'Patient' });
  });
  it('runs the CLI', async () => {
    const r = await hx(['cat'], { stdin: '{"resourceType":"Patient"}\n' });
    expect(r.stdout.toString()).toBe('{"resourceType":"Patient"}\n');
  });
});
