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

/** A failed file operation in words, for the codes a user can do something about. */
const FILE_SYSTEM_REASONS: Record<string, string> = {
  ENOENT: 'no such file or directory',
  ENOTDIR: 'a part of the path is not a directory',
  EISDIR: 'is a directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EMFILE: 'too many open files',
  ENAMETOOLONG: 'file name too long',
};

/**
 * The error as the user should read it: an HxError as it is; a failed file
 * operation (an output path that cannot be made or written, a full disk) as
 * one naming the path and the reason, since it is the user's to fix rather
 * than a fault of hx; anything else undefined (an internal error).
 */
export function asUserError(err: unknown): HxError | undefined {
  if (err instanceof HxError) return err;
  const { code, syscall, path } = (err ?? {}) as NodeJS.ErrnoException;
  if (!code || !syscall) return undefined;
  const reason = code === 'EEXIST' && syscall === 'mkdir' ? 'exists and is not a directory' : FILE_SYSTEM_REASONS[code];
  return reason ? new HxError(`${path ?? syscall}: ${reason}`) : undefined;
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
