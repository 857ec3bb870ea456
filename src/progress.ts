import type { Account } from './account.js';

/**
 * Progress on stderr: records, MB, MB/s, and % with ETA when the input size
 * is known. Redrawn in place twice a second; never on stdout.
 */
export class Progress {
  private bytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly started = Date.now();

  constructor(
    private readonly account: Account,
    private readonly totalBytes: number | undefined,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {}

  start(): this {
    this.timer = setInterval(() => this.draw(), 500);
    this.timer.unref();
    return this;
  }

  setBytes(bytes: number): void {
    this.bytes = bytes;
  }

  stop(): void {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
    this.draw();
    this.stream.write('\n');
  }

  line(): string {
    const seconds = Math.max((Date.now() - this.started) / 1000, 0.001);
    const mb = this.bytes / 1e6;
    let text = `${this.account.read} records, ${mb.toFixed(1)} MB, ${(mb / seconds).toFixed(1)} MB/s`;
    if (this.totalBytes) {
      const fraction = Math.min(this.bytes / this.totalBytes, 1);
      const eta = fraction > 0 ? (seconds / fraction) * (1 - fraction) : 0;
      text += `, ${(fraction * 100).toFixed(1)}%, ETA ${Math.round(eta)} s`;
    }
    return text;
  }

  private draw(): void {
    this.stream.write(`\r\x1b[K${this.line()}`);
  }
}
