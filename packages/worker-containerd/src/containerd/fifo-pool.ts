import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { execLight } from '@kiln/common';

/** A run's stdout and stderr FIFOs, in a directory of their own (removed by `dispose`). */
export interface FifoPair {
  dir: string;
  stdout: string;
  stderr: string;
  dispose(): Promise<void>;
}

/**
 * Makes stdio FIFOs for runs ahead of time, `batch` pairs per `mkfifo`
 * (Node has no mkfifo: each call is a process, which cost a run ~10-60 ms on
 * a loaded host when made one pair at a time). A pair is handed out once.
 */
export class FifoPool {
  private ready: FifoPair[] = [];
  private filling: Promise<void> | undefined;

  constructor(
    private readonly dir: string,
    private readonly batch = 8,
  ) {}

  async take(): Promise<FifoPair> {
    for (;;) {
      const pair = this.ready.shift();
      if (this.ready.length < this.batch / 2) void this.fill().catch(() => undefined);
      if (pair) return pair;
      await this.fill();
    }
  }

  private fill(): Promise<void> {
    this.filling ??= this.make().finally(() => {
      this.filling = undefined;
    });
    return this.filling;
  }

  private async make(): Promise<void> {
    const pairs: FifoPair[] = [];
    for (let i = 0; i < this.batch; i++) {
      const dir = path.join(this.dir, randomBytes(8).toString('hex'));
      pairs.push({ dir, stdout: path.join(dir, 'stdout'), stderr: path.join(dir, 'stderr'), dispose: () => rm(dir, { recursive: true, force: true }) });
    }
    await Promise.all(pairs.map((p) => mkdir(p.dir, { recursive: true, mode: 0o700 })));
    await execLight('mkfifo', ['-m', '0600', ...pairs.flatMap((p) => [p.stdout, p.stderr])]);
    this.ready.push(...pairs);
  }

  /** Removes the pairs not handed out. */
  async close(): Promise<void> {
    await this.filling?.catch(() => undefined);
    await Promise.all(this.ready.splice(0).map((p) => p.dispose()));
  }
}
