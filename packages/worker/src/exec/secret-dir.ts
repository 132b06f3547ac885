import { randomBytes } from 'node:crypto';
import { chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execLight as run, KilnError } from '@kiln/common';

/**
 * A private tmpfs on the host holding one run's secret files, outside any
 * snapshot: the container sees each file through a read-only bind mount,
 * so the bytes never touch a disk, a snapshot or a cache key. Needs root
 * (mount(8)). `dispose()` unmounts it; `reapSecretDirs` removes the ones a
 * killed daemon left behind.
 */
export class SecretDir {
  private constructor(readonly dir: string) {}

  static async create(stateDir: string): Promise<SecretDir> {
    const dir = path.join(stateDir, 'secrets', randomBytes(8).toString('hex'));
    await mkdir(dir, { recursive: true, mode: 0o700 });
    try {
      await run('mount', ['-t', 'tmpfs', '-o', 'mode=0700,size=16m,nosuid,nodev,noexec', 'tmpfs', dir]);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw new KilnError('internal', `failed to mount a tmpfs for secrets: ${(err as Error).message}`, {}, { cause: err });
    }
    return new SecretDir(dir);
  }

  /** Writes one secret file and returns its host path. */
  async add(data: Uint8Array, opts: { mode: number; uid: number; gid: number }): Promise<string> {
    const file = path.join(this.dir, randomBytes(8).toString('hex'));
    await writeFile(file, data, { mode: opts.mode & 0o7777 });
    await chown(file, opts.uid, opts.gid);
    return file;
  }

  async dispose(): Promise<void> {
    await run('umount', [this.dir]).catch(() => run('umount', ['-l', this.dir]).catch(() => undefined));
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Unmounts and removes every secret tmpfs under `stateDir` (left by a daemon that was killed). */
export async function reapSecretDirs(stateDir: string): Promise<void> {
  const root = path.join(stateDir, 'secrets');
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((p) => p.startsWith(`${root}/`));
  for (const m of mounts.sort().reverse()) await run('umount', ['-l', m]).catch(() => undefined);
  await rm(root, { recursive: true, force: true });
}
