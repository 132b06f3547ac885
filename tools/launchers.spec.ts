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

  it('set NODE_EXTRA_CA_CERTS aside for the CLI (main puts it back), but not for the daemon or imagetools', () => {
    const caFake = mkdtempSync(join(tmpdir(), 'kiln-launchers-ca-'));
    try {
      writeFileSync(join(caFake, 'node'), '#!/bin/sh\necho "ca=${NODE_EXTRA_CA_CERTS-unset} deferred=${KILN_DEFERRED_NODE_EXTRA_CA_CERTS-unset}"\n');
      chmodSync(join(caFake, 'node'), 0o755);
      const run = (bin: string, args: string[], env: NodeJS.ProcessEnv): string => {
        const base = { ...process.env, PATH: `${caFake}:${process.env.PATH ?? ''}` };
        delete base.NODE_EXTRA_CA_CERTS;
        delete base.KILN_DEFERRED_NODE_EXTRA_CA_CERTS;
        const r = spawnSync(join(repo, 'bin', bin), args, { env: { ...base, ...env }, encoding: 'utf8' });
        expect(r.status, r.stderr).toBe(0);
        return r.stdout.trim();
      };
      const ca = { NODE_EXTRA_CA_CERTS: '/etc/extra ca.pem' };
      expect(run('kiln', ['build', '.'], ca)).toBe('ca=unset deferred=/etc/extra ca.pem');
      expect(run('kiln', ['--version'], ca)).toBe('ca=unset deferred=/etc/extra ca.pem');
      expect(run('kiln', ['imagetools', 'inspect', 'x'], ca)).toBe('ca=/etc/extra ca.pem deferred=unset');
      expect(run('kiln', ['daemon'], ca)).toBe('ca=/etc/extra ca.pem deferred=unset');
      expect(run('kilnd', [], ca)).toBe('ca=/etc/extra ca.pem deferred=unset');
      expect(run('kiln', ['build', '.'], {})).toBe('ca=unset deferred=unset');
    } finally {
      rmSync(caFake, { recursive: true, force: true });
    }
  });

  it('keep node from reading the extra CA file on a CLI start (the real node warns when it cannot load it)', () => {
    const env = { ...process.env, NODE_EXTRA_CA_CERTS: join(fake, 'no-such-ca.pem') };
    const cli = spawnSync(join(repo, 'bin', 'kiln'), ['--version'], { env, encoding: 'utf8' });
    expect(cli.status, cli.stderr).toBe(0);
    expect(cli.stderr).not.toMatch(/extra certs/i);
    // The same variable does reach node when it is started directly: the check above could fail.
    const direct = spawnSync(process.execPath, ['-e', '0'], { env, encoding: 'utf8' });
    expect(direct.stderr).toMatch(/Ignoring extra certs/);
  });
});
