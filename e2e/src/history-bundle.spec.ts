import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeTarHeader, tarPadding, tarTrailer } from '@kiln/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBusyboxImage, runKiln, startKilnd, startRegistry, type Kilnd, type TestRegistry, e2eWorker } from '@kiln/testkit';

/** A tar with these regular files (for bundles no `kiln history export` would write). */
function tarOf(files: [string, string][]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, body] of files) {
    const data = Buffer.from(body);
    parts.push(encodeTarHeader({ name, size: data.length }), data, tarPadding(data.length));
  }
  return Buffer.concat([...parts, tarTrailer()]);
}

describe(`kiln history export | import | open: a build's record and logs move between daemons [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let registry: TestRegistry;
  let source: Kilnd;
  let target: Kilnd;
  let work: string;
  let ref: string;

  beforeAll(async () => {
    registry = await startRegistry();
    work = mkdtempSync(join(tmpdir(), 'kiln-history-bundle-'));
    const base = (await pushBusyboxImage(registry, work, 'kiln/history', 'base', { applets: ['sh', 'echo'] })).ref;
    writeFileSync(join(work, 'Dockerfile'), `FROM ${base}\nRUN echo "bundle-log-line-42" > /out.txt\n`);
    // The target serves a dashboard: `history open` finds the imported build there.
    [source, target] = await Promise.all([startKilnd(), startKilnd({ args: ['--dashboard', '127.0.0.1:0'] })]);
    const meta = join(work, 'meta.json');
    const build = await runKiln(['build', '--addr', source.addr, '--progress=plain', '--metadata-file', meta, '-o', `type=local,dest=${join(work, 'out')}`, work]);
    expect(build.code, build.stderr).toBe(0);
    ref = (JSON.parse(readFileSync(meta, 'utf8')) as Record<string, string>)['buildx.build.ref']!.split('/').pop()!;
  }, 90_000);

  afterAll(async () => {
    await Promise.all([source?.stop(), target?.stop()]);
    await registry?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('export writes a deterministic tar bundle; import into a second daemon shows the record (imported) and replays its logs', async () => {
    const bundle = join(work, 'one.kilnbuild');
    const exp = await runKiln(['history', 'export', '--addr', source.addr, ref, '-o', bundle]);
    expect(exp.code, exp.stderr).toBe(0);
    expect(execFileSync('tar', ['-tf', bundle], { encoding: 'utf8' }).trim().split('\n')).toEqual(['index.json', `builds/${ref}/record.json`, `builds/${ref}/events.pb`, `builds/${ref}/cache-misses.json`]);
    const again = join(work, 'again.kilnbuild');
    expect((await runKiln(['history', 'export', '--addr', source.addr, '--all', '-o', again])).code).toBe(0);
    expect(readFileSync(again).equals(readFileSync(bundle))).toBe(true);

    const imp = await runKiln(['history', 'import', '--addr', target.addr, '-f', bundle]);
    expect(imp.code, imp.stderr).toBe(0);
    expect(imp.stdout.trim()).toBe(ref);
    const twice = await runKiln(['history', 'import', '--addr', target.addr, '-f', bundle]);
    expect(twice.stdout.trim()).toBe(`${ref} (already in the history)`);

    const ls = await runKiln(['history', 'ls', '--addr', target.addr]);
    expect(ls.stdout).toMatch(new RegExp(`${ref}\\s+Dockerfile\\s+Completed \\(imported\\)`));
    const inspect = await runKiln(['history', 'inspect', '--addr', target.addr, ref]);
    expect(inspect.stdout).toContain('Imported:');
    const logs = await runKiln(['history', 'logs', '--addr', target.addr, ref]);
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout).toContain('RUN echo "bundle-log-line-42" > /out.txt');
    expect(logs.stdout).toMatch(/#\d+ DONE/);
  });

  it('open prints the dashboard URL of the build where the daemon serves one, and says how to enable it where not', async () => {
    const open = await runKiln(['history', 'open', '--addr', target.addr, ref.slice(0, 8)]);
    expect(open.code, open.stderr).toBe(0);
    const url = new URL(open.stdout.trim());
    expect(url.hostname).toBe('127.0.0.1');
    expect(url.hash).toBe(`#build=${ref}`);
    expect(url.searchParams.get('token')).toMatch(/^[\w-]{20,}$/);
    // The URL works: the token is traded for the session cookie.
    const res = await fetch(url, { redirect: 'manual' });
    expect([302, 303]).toContain(res.status);
    expect(res.headers.get('set-cookie')).toBeTruthy();

    const none = await runKiln(['history', 'open', '--addr', source.addr, ref]);
    expect(none.code).not.toBe(0);
    expect(none.stderr).toContain('--dashboard 127.0.0.1:PORT');
  });

  it('a hostile or malformed bundle is refused naming the file and entry, and imports nothing', async () => {
    const cases: [string, Buffer, string][] = [
      ['escape.kilnbuild', tarOf([['index.json', JSON.stringify({ format: 'kiln.history.bundle', version: 1, builds: ['x1'] })], ['builds/x1/../../../etc/record.json', '{}']]), 'entry "builds/x1/../../../etc/record.json": not a bundle entry'],
      ['running.kilnbuild', tarOf([['index.json', JSON.stringify({ format: 'kiln.history.bundle', version: 1, builds: ['x2'] })], ['builds/x2/record.json', JSON.stringify({ ref: 'x2', status: 'running', createdAt: '2026-01-01T00:00:00Z' })]]), 'entry "builds/x2/": build x2: status "running" is not a finished build'],
      ['junk.kilnbuild', Buffer.from('not a bundle\n'.repeat(100)), 'junk.kilnbuild: not a tar archive'],
    ];
    for (const [name, bytes, message] of cases) {
      writeFileSync(join(work, name), bytes);
      const res = await runKiln(['history', 'import', '--addr', target.addr, '-f', join(work, name)]);
      expect(res.code, name).not.toBe(0);
      expect(res.stderr, name).toContain(name);
      expect(res.stderr, name).toContain(message);
    }
    const ls = await runKiln(['history', 'ls', '--addr', target.addr, '--format', 'json']);
    expect(ls.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { ref: string }).ref)).toEqual([ref]);
  });
});
