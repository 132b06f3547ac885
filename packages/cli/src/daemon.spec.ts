import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { BuilderStore } from './builders/builder-store.js';
import { connectDaemon, resolveDaemonAddress, resolveTls } from './daemon.js';
import { UsageError } from './flags/usage-error.js';
import { main } from './main.js';

const fakeKilnd = fileURLToPath(new URL('./testing/fixtures/fake-kilnd.mjs', import.meta.url));

describe('resolveDaemonAddress', () => {
  it('prefers --addr, then KILN_ADDR, then the local socket', () => {
    const none = { KILN_CONFIG: '/nonexistent/kiln-config' };
    expect(resolveDaemonAddress('tcp://127.0.0.1:1', { ...none, KILN_ADDR: 'unix:///x.sock' })).toEqual({ addr: 'tcp://127.0.0.1:1', explicit: true, root: '/var/lib/kiln', builder: 'default' });
    expect(resolveDaemonAddress(undefined, { ...none, KILN_ADDR: 'unix:///x.sock' })).toEqual({ addr: 'unix:///x.sock', explicit: true, root: '/var/lib/kiln', builder: 'default' });
    expect(resolveDaemonAddress(undefined, none)).toEqual({ addr: 'unix:///run/kiln/kiln.sock', explicit: false, root: '/var/lib/kiln', builder: 'default' });
    expect(resolveDaemonAddress(undefined, { ...none, KILN_ROOT: '/tmp/k' })).toEqual({ addr: 'unix:///tmp/k/kiln.sock', explicit: false, root: '/tmp/k', builder: 'default' });
  });

  it('builders: --builder beats KILN_ADDR, which beats KILN_BUILDER and the current builder', () => {
    const config = mkdtempSync(join(tmpdir(), 'kiln-builders-'));
    try {
      const store = new BuilderStore({ KILN_CONFIG: config });
      store.save({ name: 'far', driver: 'remote', endpoint: 'tcp://10.0.0.1:1234', driverOpts: { cacert: '/c', cert: '/p', key: '/k' }, createdAt: '' });
      store.save({ name: 'near', driver: 'local', endpoint: 'unix:///srv/k/kiln.sock', driverOpts: { root: '/srv/k' }, createdAt: '' });
      store.setCurrent('near');
      const env = { KILN_CONFIG: config };
      expect(resolveDaemonAddress(undefined, env)).toEqual({ addr: 'unix:///srv/k/kiln.sock', explicit: false, root: '/srv/k', builder: 'near' });
      expect(resolveDaemonAddress(undefined, { ...env, KILN_ADDR: 'unix:///x.sock' }).addr).toBe('unix:///x.sock');
      expect(resolveDaemonAddress(undefined, { ...env, KILN_ADDR: 'unix:///x.sock' }, 'far')).toEqual({
        addr: 'tcp://10.0.0.1:1234',
        explicit: true,
        root: '/var/lib/kiln',
        builder: 'far',
        tls: { caCert: '/c', cert: '/p', key: '/k' },
      });
      expect(resolveDaemonAddress(undefined, { ...env, KILN_BUILDER: 'far' }).builder).toBe('far');
      expect(() => resolveDaemonAddress(undefined, env, 'gone')).toThrow(/no builder "gone" found/);
      store.remove('near');
      expect(resolveDaemonAddress(undefined, env).builder).toBe('default');
    } finally {
      rmSync(config, { recursive: true, force: true });
    }
  });

  it('rejects malformed addresses naming their source', () => {
    expect(() => resolveDaemonAddress('nope', {})).toThrow(UsageError);
    expect(() => resolveDaemonAddress(undefined, { KILN_ADDR: 'nope' })).toThrow(/invalid KILN_ADDR "nope"/);
  });
});

describe('resolveTls', () => {
  it('is off without files, and needs all three (flags over KILN_TLS_*), naming the missing one', () => {
    expect(resolveTls(undefined, {})).toBeUndefined();
    expect(() => resolveTls({ caCert: '/ca.pem' }, { KILN_TLS_CERT: '/c.pem' })).toThrow(expect.objectContaining({ message: expect.stringMatching(/^--tlskey is missing/) }));
    expect(() => resolveTls({ caCert: '/nonexistent/ca.pem' }, { KILN_TLS_CERT: '/c.pem', KILN_TLS_KEY: '/k.pem' })).toThrow(/cannot read --tlscacert \/nonexistent\/ca.pem/);
  });
});

describe('daemon auto-start', () => {
  const roots: string[] = [];
  afterEach(() => {
    for (const root of roots.splice(0)) {
      const pidFile = join(root, 'fake-kilnd.pid');
      if (existsSync(pidFile)) {
        try {
          process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGTERM');
        } catch {
          // already gone
        }
      }
      rmSync(root, { recursive: true, force: true });
    }
  });
  const newRoot = () => {
    const root = mkdtempSync(join(tmpdir(), 'kiln-root-'));
    roots.push(root);
    return root;
  };
  const vars = (root: string) => ({ ...process.env, KILN_ADDR: undefined, KILN_ROOT: root });

  it('starts the daemon in the background once, then reuses it', async () => {
    const root = newRoot();
    let err = '';
    const env = { daemonCommand: ['node', fakeKilnd], vars: vars(root), stderr: { write: (s: string) => (err += s) } as never, stdout: { write: () => true } as never };
    expect(await main(['workers'], env)).toBe(0);
    expect(err).toBe('');
    expect(await main(['workers'], env)).toBe(0);
    expect(readFileSync(join(root, 'starts'), 'utf8').trim().split('\n')).toHaveLength(1);
    expect(readFileSync(join(root, 'kilnd.log'), 'utf8')).toContain(`fake kilnd listening on unix://${root}/kiln.sock`);
    expect(existsSync(join(root, 'kilnd.start.lock'))).toBe(false);
  });

  it('concurrent CLIs start one daemon', async () => {
    const root = newRoot();
    const conns = await Promise.all([1, 2, 3].map(() => connectDaemon({ env: vars(root), daemonCommand: ['node', fakeKilnd] })));
    expect(conns.filter((c) => c.started)).toHaveLength(1);
    expect(readFileSync(join(root, 'starts'), 'utf8').trim().split('\n')).toHaveLength(1);
  });

  it('reports a daemon that exits, pointing at the log', async () => {
    const root = newRoot();
    await expect(connectDaemon({ env: vars(root), daemonCommand: ['node', '-e', 'console.error("boom"); process.exit(3)', '--'] })).rejects.toThrow(
      new RegExp(`kiln daemon exited \\(exit code 3\\) before answering at unix://${root}/kiln.sock; see ${root}/kilnd.log`),
    );
    expect(readFileSync(join(root, 'kilnd.log'), 'utf8')).toContain('boom');
  });

  it('times out on a daemon that never answers', async () => {
    const root = newRoot();
    await expect(
      connectDaemon({ env: vars(root), daemonCommand: ['node', '-e', 'setTimeout(() => {}, 1500)', '--'], startTimeoutMs: 600 }),
    ).rejects.toThrow(/kiln daemon did not answer at .* within 1s .*; see .*kilnd.log/);
  });

  it('reports a daemon command that cannot run', async () => {
    const root = newRoot();
    await expect(connectDaemon({ env: vars(root), daemonCommand: ['/no/such/kilnd'] })).rejects.toThrow(/failed to start kiln daemon \(\/no\/such\/kilnd\): .*ENOENT/);
  });

  it('never starts a daemon for an explicit address', async () => {
    const root = newRoot();
    await expect(
      connectDaemon({ addr: `unix://${root}/other.sock`, env: vars(root), daemonCommand: ['node', fakeKilnd] }),
    ).rejects.toThrow(new RegExp(`failed to connect to kiln daemon at unix://${root}/other.sock`));
    expect(existsSync(join(root, 'starts'))).toBe(false);
  });
});
