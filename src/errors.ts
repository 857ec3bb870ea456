/**
 * An error meant for the user: its message is printed as is and the process
 * exits with `exitCode`. Messages never contain record content (it may be PHI).
 */
export class HxError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
    this.name = 'HxError';
  }
}

/** Bad command line: exit code 2, like most unix tools. */
export class UsageError extends HxError {
  constructor(message: string) {
    super(message, 2);
    this.name = 'UsageError';
  }
}

/**
 * Thrown by a per-record core to reject one record. `reason` must be free of
 * record values: name the element path and the rule, never the data.
 */
export class RecordRejected extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'RecordRejected';
  }
}
