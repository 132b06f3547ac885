import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CacheMounts } from './cache-mounts.js';

describe('CacheMounts fresh (--no-cache)', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const mounts = () => {
    const d = mkdtempSync(join(tmpdir(), 'kiln-cache-mounts-'));
    dirs.push(d);
    return new CacheMounts(d);
  };

  it('a build empties a cache once, at its first use; its later steps and later builds see what it left', async () => {
    const m = mounts();
    const before = await m.acquire('c', 'shared', undefined);
    writeFileSync(join(before.dir, 'old'), 'x');
    before.release();

    const first = await m.acquire('c', 'shared', undefined, undefined, { fresh: 'build-1' });
    expect(existsSync(join(first.dir, 'old'))).toBe(false);
    writeFileSync(join(first.dir, 'trigger'), '42');
    first.release();

    const second = await m.acquire('c', 'shared', undefined, undefined, { fresh: 'build-1' });
    expect(existsSync(join(second.dir, 'trigger'))).toBe(true);
    second.release();

    const next = await m.acquire('c', 'locked', undefined, undefined, { fresh: 'build-2' });
    expect(existsSync(join(next.dir, 'trigger'))).toBe(false);
    next.release();

    const plain = await m.acquire('c', 'shared', undefined);
    expect(existsSync(join(plain.dir, 'trigger'))).toBe(false);
    plain.release();
  });

  it('two steps of one build starting at once empty the cache only once', async () => {
    const m = mounts();
    const [a, b] = await Promise.all([
      m.acquire('c', 'shared', undefined, undefined, { fresh: 'build-1' }),
      m.acquire('c', 'shared', undefined, undefined, { fresh: 'build-1' }),
    ]);
    writeFileSync(join(a.dir, 'from-a'), 'a');
    expect(existsSync(join(b.dir, 'from-a'))).toBe(true);
    a.release();
    b.release();
  });
});
