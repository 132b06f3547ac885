import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// bin/kiln and bin/kilnd start `node` from PATH: a stand-in prints the environment it got.
const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
let fake: string;

beforeAll(() => {
  fake = mkdtempSync(join(tmpdir(), 'kiln-launchers-'));
  writeFileSync(join(fake, 'node'), '#!/bin/sh\necho "threshold=${MALLOC_MMAP_THRESHOLD_-unset} args=$*"\n');
  chmodSync(join(fake, 'node'), 0o755);
});
afterAll(() => rmSync(fake, { recursive: true, force: true }));

function launch(bin: string, args: string[], env: NodeJS.ProcessEnv = {}): string {
  const base = { ...process.env, PATH: `${fake}:${process.env.PATH ?? ''}` };
  delete base.MALLOC_MMAP_THRESHOLD_;
  const r = spawnSync(join(repo, 'bin', bin), args, { env: { ...base, ...env }, encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout.trim().replace(/=\S*\/kiln\.mjs/, '=kiln.mjs');
}

describe('launchers', () => {
  it('start the daemon with a fixed glibc mmap threshold (packages/cli/src/daemon-env.ts), and the CLI without', () => {
    expect(launch('kilnd', ['--root', '/r'])).toBe('threshold=131072 args=kiln.mjs daemon --root /r');
    expect(launch('kiln', ['daemon', '--root', '/r'])).toBe('threshold=131072 args=kiln.mjs daemon --root /r');
    expect(launch('kiln', ['build', '.'])).toBe('threshold=unset args=kiln.mjs build .');
  });

  it('keep a threshold the user set', () => {
    expect(launch('kilnd', [], { MALLOC_MMAP_THRESHOLD_: '65536' })).toBe('threshold=65536 args=kiln.mjs daemon');
  });
});
