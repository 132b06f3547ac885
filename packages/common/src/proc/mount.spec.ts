import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mountFs, MountError, mountSyscallsAvailable, syncFileSystem, unmountFs } from './mount.js';

function isMounted(dir: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === dir);
}

// Both paths: system calls on the mount thread, and the mount commands (KILN_MOUNT_SYSCALLS=0).
describe.each([
  ['system calls', undefined],
  ['mount commands', '0'],
])('mountFs / unmountFs (%s)', (_name, env) => {
  let dir: string;
  const saved = process.env.KILN_MOUNT_SYSCALLS;
  beforeEach(() => {
    if (env === undefined) delete process.env.KILN_MOUNT_SYSCALLS;
    else process.env.KILN_MOUNT_SYSCALLS = env;
    dir = mkdtempSync(path.join(tmpdir(), 'kiln-mount-'));
  });
  afterEach(async () => {
    await unmountFs(dir, { lazy: true }).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    if (saved === undefined) delete process.env.KILN_MOUNT_SYSCALLS;
    else process.env.KILN_MOUNT_SYSCALLS = saved;
  });

  it('uses system calls only when asked for and koffi loads', () => {
    expect(mountSyscallsAvailable()).toBe(env === undefined);
  });

  it('syncs the file system of a directory, and fails naming it on a closed descriptor', async () => {
    await mountFs('tmpfs', 'tmpfs', dir, 'size=1m');
    writeFileSync(path.join(dir, 'f'), 'x');
    const fd = openSync(dir, 'r');
    try {
      await syncFileSystem(fd, dir);
      await syncFileSystem(fd, dir); // one descriptor for many calls
    } finally {
      closeSync(fd);
    }
    if (env === undefined) await expect(syncFileSystem(fd, dir)).rejects.toThrow(`syncfs ${dir}: Bad file descriptor`);
    await unmountFs(dir);
  });

  it('mounts with the given options, unmounts, and tells "not mounted" apart', async () => {
    await mountFs('tmpfs', 'tmpfs', dir, 'size=1m,mode=0711');
    expect(isMounted(dir)).toBe(true);
    writeFileSync(path.join(dir, 'f'), 'x');
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).toMatch(new RegExp(`${dir} .*size=1024k,mode=711`));
    await unmountFs(dir);
    expect(isMounted(dir)).toBe(false);
    expect(existsSync(path.join(dir, 'f'))).toBe(false);
    await expect(unmountFs(dir)).rejects.toMatchObject({ kind: 'not_mounted' });
    await expect(unmountFs(path.join(dir, 'missing'))).rejects.toMatchObject({ kind: 'not_mounted' });
  });

  it('reports a busy mount as busy, and detaches it lazily when asked', async () => {
    await mountFs('tmpfs', 'tmpfs', dir, 'size=1m');
    const fd = openSync(path.join(dir, 'held'), 'w');
    try {
      const err = await unmountFs(dir).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MountError);
      expect(err).toMatchObject({ kind: 'busy' });
      expect(isMounted(dir)).toBe(true);
      await unmountFs(dir, { lazy: true });
      expect(isMounted(dir)).toBe(false);
    } finally {
      closeSync(fd);
    }
  });

  it('fails a bad mount naming the target, and leaves nothing mounted', async () => {
    const err = await mountFs('overlay', 'overlay', dir, `lowerdir=${path.join(dir, 'no-such-lower')}`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MountError);
    expect((err as MountError).kind).toBe('other');
    expect((err as Error).message).toContain(dir);
    expect(isMounted(dir)).toBe(false);
  });
});
