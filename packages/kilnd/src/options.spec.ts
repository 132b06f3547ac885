import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileDaemonOptions, DEFAULT_GC_POLICY, DEFAULT_MAX_PARALLELISM } from './options.js';

const env = {} as NodeJS.ProcessEnv;

describe('compileDaemonOptions', () => {
  it('defaults to all tiers on the standard socket and root', () => {
    const o = compileDaemonOptions([], env);
    expect(o).toMatchObject({ tier: 'all', root: '/var/lib/kiln', addr: { kind: 'unix', path: '/run/kiln/kiln.sock' }, maxParallelism: DEFAULT_MAX_PARALLELISM });
    // Execs are bounded like ops, not by the core count: sleeping or waiting steps run together.
    expect(DEFAULT_MAX_PARALLELISM).toBeGreaterThanOrEqual(16);
    expect(o.maxParallelExecs).toBe(DEFAULT_MAX_PARALLELISM);
    expect(compileDaemonOptions(['--max-parallelism', '3'], env).maxParallelExecs).toBe(3);
  });

  it('takes the TLS files from flags or the config file, all three or none', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kilnd-opts-'));
    writeFileSync(join(dir, 'k.toml'), 'tlscacert = "/c/ca.pem"\ntlscert = "/c/w.pem"\ntlskey = "/c/w-key.pem"\ninsecure-tcp = true\n');
    expect(compileDaemonOptions(['--config', join(dir, 'k.toml'), '--tlscert', '/f/w.pem'], env)).toMatchObject({
      tls: { caCert: '/c/ca.pem', cert: '/f/w.pem', key: '/c/w-key.pem' },
      insecureTcp: true,
    });
    expect(compileDaemonOptions([], env)).toMatchObject({ tls: undefined, insecureTcp: false });
    expect(() => compileDaemonOptions(['--tlscacert', '/ca.pem', '--tlscert', '/c.pem'], env)).toThrow(/--tlskey is missing/);
    // --insecure-tcp is a switch: it does not eat the next flag.
    expect(compileDaemonOptions(['--insecure-tcp', '--root', '/r'], env)).toMatchObject({ insecureTcp: true, root: '/r' });
    expect(() => compileDaemonOptions(['--insecure-tcp=yes'], env)).toThrow(/--insecure-tcp/);
  });

  it('moves the socket into KILN_ROOT', () => {
    expect(compileDaemonOptions([], { KILN_ROOT: '/tmp/k' } as NodeJS.ProcessEnv).addr).toEqual({ kind: 'unix', path: '/tmp/k/kiln.sock' });
  });

  it('reads TOML and YAML config files; flags win', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kilnd-opts-'));
    writeFileSync(join(dir, 'k.toml'), 'root = "/srv/kiln"\nmax-parallelism = 8\naddr = "tcp://127.0.0.1:9000"\n');
    writeFileSync(join(dir, 'k.yaml'), 'root: /srv/y\ntier: frontend\nnats: nats://127.0.0.1:4222\nlisten: tcp://127.0.0.1:9001\n');
    expect(compileDaemonOptions(['--config', join(dir, 'k.toml'), '--root', '/flag'], env)).toMatchObject({
      root: '/flag',
      maxParallelism: 8,
      addr: { kind: 'tcp', host: '127.0.0.1', port: 9000 },
    });
    expect(compileDaemonOptions([`--config=${join(dir, 'k.yaml')}`], env)).toMatchObject({ tier: 'frontend', root: '/srv/y', nats: 'nats://127.0.0.1:4222' });
    writeFileSync(join(dir, 'reg.toml'), '[registry]\ninsecure = ["reg.lan:5000"]\n[registry.mirrors]\n"docker.io" = ["127.0.0.1:5001"]\n');
    expect(compileDaemonOptions(['--config', join(dir, 'reg.toml')], env).registry).toEqual({ insecure: ['reg.lan:5000'], mirrors: { 'docker.io': ['127.0.0.1:5001'] }, daemonCredentials: false });
    writeFileSync(join(dir, 'creds.toml'), '[registry]\ndaemon-credentials = true\n');
    expect(compileDaemonOptions(['--config', join(dir, 'creds.toml')], env).registry.daemonCredentials).toBe(true);
    writeFileSync(join(dir, 'badcreds.toml'), '[registry]\ndaemon-credentials = "yes"\n');
    expect(() => compileDaemonOptions(['--config', join(dir, 'badcreds.toml')], env)).toThrow(/registry.daemon-credentials must be true or false/);
    writeFileSync(join(dir, 'badreg.yaml'), 'registry:\n  insecure: reg.lan\n');
    expect(() => compileDaemonOptions(['--config', join(dir, 'badreg.yaml')], env)).toThrow(/registry.insecure must be a list/);
    expect(compileDaemonOptions([], env).gc).toEqual(DEFAULT_GC_POLICY);
    writeFileSync(join(dir, 'gc.toml'), '[gc]\ninterval = "30m"\nkeep-storage = "10GB"\nkeep-duration = "7d"\n');
    expect(compileDaemonOptions(['--config', join(dir, 'gc.toml')], env).gc).toEqual({ intervalMs: 1_800_000, keepBytes: 10e9, keepDurationMs: 7 * 86_400_000 });
    // [events]: the build event stream's retention (JetStream KILN_EVENTS).
    expect(compileDaemonOptions([], env).events).toEqual({});
    writeFileSync(join(dir, 'events.toml'), '[events]\nmax-age = "6h"\nmax-bytes = "256MiB"\n');
    expect(compileDaemonOptions(['--config', join(dir, 'events.toml')], env).events).toEqual({ maxAgeMs: 6 * 3_600_000, maxBytes: 256 * 1024 * 1024 });
    for (const [body, field] of [
      ['[events]\nmax-age = "soon"\n', /events\.max-age/],
      ['[events]\nmax-bytes = "1KiB"\n', /events\.max-bytes must be at least 1MiB/],
      ['[events]\nkeep = "1h"\n', /unknown key events\.keep/],
    ] as const) {
      writeFileSync(join(dir, 'badevents.toml'), body);
      expect(() => compileDaemonOptions(['--config', join(dir, 'badevents.toml')], env)).toThrow(field);
    }
    writeFileSync(join(dir, 'gc-off.yaml'), 'gc:\n  enabled: false\n');
    expect(compileDaemonOptions(['--config', join(dir, 'gc-off.yaml')], env).gc).toBeUndefined();
    for (const [body, field] of [
      ['[gc]\nkeep-storage = "lots"\n', /gc\.keep-storage/],
      ['[gc]\nkeep-duration = "forever"\n', /gc\.keep-duration/],
      ['[gc]\ninterval = "10ms"\n', /gc\.interval must be at least 1s/],
      ['[gc]\nkeep-bytes = 5\n', /unknown key gc\.keep-bytes/],
      ['[gc]\nenabled = "yes"\n', /gc\.enabled must be true or false/],
    ] as const) {
      writeFileSync(join(dir, 'badgc.toml'), body);
      expect(() => compileDaemonOptions(['--config', join(dir, 'badgc.toml')], env)).toThrow(field);
    }
    writeFileSync(join(dir, 'bad.toml'), 'root = \n');
    expect(() => compileDaemonOptions(['--config', join(dir, 'bad.toml')], env)).toThrow(/bad.toml is invalid/);
  });

  it('takes entitlements from the config file or the flag, and the exec limit', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kilnd-opts-'));
    writeFileSync(join(dir, 'e.toml'), 'entitlements = ["network.host"]\nmax-parallel-execs = 3\n');
    expect(compileDaemonOptions(['--config', join(dir, 'e.toml')], env)).toMatchObject({ entitlements: ['network.host'], maxParallelExecs: 3 });
    expect(compileDaemonOptions(['--allow-insecure-entitlement', 'security.insecure,network.host'], env).entitlements).toEqual(['security.insecure', 'network.host']);
    expect(compileDaemonOptions([], env)).toMatchObject({ entitlements: [], maxParallelExecs: DEFAULT_MAX_PARALLELISM });
    writeFileSync(join(dir, 'bad.toml'), 'entitlements = ["root"]\n');
    expect(() => compileDaemonOptions(['--config', join(dir, 'bad.toml')], env)).toThrow(/unknown entitlement "root"/);
  });

  it('takes the step network from [worker.network] (default cni on kiln0) or the --network-* flags, naming a bad key', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kilnd-opts-'));
    expect(compileDaemonOptions([], env).network).toEqual({ mode: 'cni' });
    writeFileSync(join(dir, 'n.toml'), '[worker]\nbackend = "containerd"\n[worker.network]\nmode = "host"\nbridge = "kb1"\nsubnet = "10.99.0.0/24"\ncni-plugin-dir = "/opt/cni/bin"\nresolv-conf = "/etc/kiln-resolv.conf"\npool-size = 8\n');
    expect(compileDaemonOptions(['--config', join(dir, 'n.toml')], env)).toMatchObject({
      worker: 'containerd',
      network: { mode: 'host', bridge: 'kb1', subnet: '10.99.0.0/24', cniPluginDir: '/opt/cni/bin', resolvConf: '/etc/kiln-resolv.conf', poolSize: 8 },
    });
    expect(compileDaemonOptions(['--config', join(dir, 'n.toml'), '--network-mode', 'none', '--network-bridge', 'kb2'], env).network).toMatchObject({ mode: 'none', bridge: 'kb2' });
    expect(() => compileDaemonOptions(['--network-mode', 'bridge'], env)).toThrow(expect.objectContaining({ message: expect.stringMatching(/unknown network mode "bridge"/), details: { field: '--network-mode' } }));
    writeFileSync(join(dir, 'bad.toml'), '[worker.network]\nbrige = "x"\n');
    expect(() => compileDaemonOptions(['--config', join(dir, 'bad.toml')], env)).toThrow(/unknown key worker.network.brige/);
    writeFileSync(join(dir, 'pool.toml'), '[worker.network]\npool-size = "4"\n');
    expect(() => compileDaemonOptions(['--config', join(dir, 'pool.toml')], env)).toThrow(expect.objectContaining({ details: { field: 'worker.network.pool-size' } }));
  });

  it('takes disabled op kinds and the placement from flags or the config file, checking both', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kilnd-ops-'));
    writeFileSync(join(dir, 'o.toml'), 'worker-disabled-ops = ["exec"]\nplacement = "load"\n');
    const fromFile = compileDaemonOptions(['--config', join(dir, 'o.toml')], env);
    expect(fromFile.workerDisabledOps).toEqual(['exec']);
    expect(fromFile.placement).toBe('load');
    const fromFlags = compileDaemonOptions(['--config', join(dir, 'o.toml'), '--worker-disable-op', 'source:git,source:http', '--worker-disable-op=merge', '--placement', 'cache'], env);
    expect(fromFlags.workerDisabledOps).toEqual(['source:git', 'source:http', 'merge']);
    expect(fromFlags.placement).toBe('cache');
    expect(compileDaemonOptions([], env)).toMatchObject({ workerDisabledOps: [], placement: 'cache' });
    expect(() => compileDaemonOptions(['--worker-disable-op', 'run'], env)).toThrow(/unknown op kind "run" in --worker-disable-op \(one of exec, file/);
    expect(() => compileDaemonOptions(['--placement', 'random'], env)).toThrow(/--placement must be cache or load, got "random"/);
  });

  it('takes worker labels from the config table and repeated --worker-label flags (flags win; kiln.* reserved)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kilnd-opts-'));
    writeFileSync(join(dir, 'l.toml'), 'worker-labels = { pool = "a", zone = "x" }\n');
    expect(compileDaemonOptions(['--config', join(dir, 'l.toml'), '--worker-label', 'pool=b', '--worker-label=gpu=yes=1'], env).workerLabels).toEqual({ pool: 'b', zone: 'x', gpu: 'yes=1' });
    expect(compileDaemonOptions([], env).workerLabels).toEqual({});
    expect(() => compileDaemonOptions(['--worker-label', 'novalue'], env)).toThrow(/invalid --worker-label "novalue": want KEY=VALUE/);
    expect(() => compileDaemonOptions(['--worker-label', 'kiln.tier=x'], env)).toThrow(/reserved/);
  });

  it('names the flag at fault', () => {
    const field = (argv: string[]) => {
      try {
        compileDaemonOptions(argv, env);
      } catch (e) {
        return (e as { details: { field?: string } }).details.field;
      }
      return undefined;
    };
    expect(field(['--tier', 'nope'])).toBe('--tier');
    expect(field(['--tier', 'solver', '--listen', 'tcp://127.0.0.1:1'])).toBe('--nats');
    expect(field(['--tier', 'solver', '--nats', 'nats://x:1'])).toBe('--listen');
    expect(field(['--addr', 'http:/bad'])).toBe('--addr');
    expect(field(['--bogus', '1'])).toBe('--bogus');
    expect(field(['--root'])).toBe('--root');
    expect(field(['--max-parallelism', '0'])).toBe('--max-parallelism');
    expect(field(['--max-parallel-execs', 'x'])).toBe('--max-parallel-execs');
    expect(field(['--allow-insecure-entitlement', 'nope'])).toBe('--allow-insecure-entitlement');
  });

  describe('NATS credentials and TLS', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kilnd-nats-'));
    const file = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    const tier = ['--tier', 'worker-oci', '--listen', 'tcp://127.0.0.1:1', '--nats', 'nats://127.0.0.1:4222'];
    const seed = 'SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTBM';
    const fieldOf = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (e) {
        return (e as { details: { field?: string } }).details.field;
      }
      return undefined;
    };

    it('reads the password from a file or KILN_NATS_PASSWORD, never from the command line', () => {
      const pw = file('pw', 'p4ss-w0rd\n');
      expect(compileDaemonOptions([...tier, '--nats-user', 'worker', '--nats-password-file', pw], env).natsAuth).toEqual({ user: 'worker', password: 'p4ss-w0rd' });
      expect(compileDaemonOptions([...tier, '--nats-user', 'worker'], { KILN_NATS_PASSWORD: 'from-env' } as NodeJS.ProcessEnv).natsAuth).toEqual({ user: 'worker', password: 'from-env' });
      expect(() => compileDaemonOptions([...tier, '--nats-password', 'x'], env)).toThrow(/unknown flag --nats-password/);
      expect(() => compileDaemonOptions([...tier, '--nats-user', 'worker'], env)).toThrow(/--nats-user needs a password/);
      const withUrlCreds = ['--tier', 'frontend', '--listen', 'tcp://127.0.0.1:1', '--nats', 'nats://worker:s3cret@127.0.0.1:4222'];
      let message = '';
      try {
        compileDaemonOptions(withUrlCreds, env);
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message).toMatch(/--nats must not carry credentials/);
      expect(message).not.toContain('s3cret');
    });

    it('takes a token, an NKEY seed or a credentials file, one kind at a time', () => {
      expect(compileDaemonOptions([...tier, '--nats-token-file', file('tok', 't0ken\n')], env).natsAuth).toEqual({ token: 't0ken' });
      expect(compileDaemonOptions(tier, { KILN_NATS_TOKEN: 'env-token' } as NodeJS.ProcessEnv).natsAuth).toEqual({ token: 'env-token' });
      expect(compileDaemonOptions([...tier, '--nats-nkey-seed-file', file('seed', `${seed}\n`)], env).natsAuth).toEqual({ nkeySeed: seed });
      const creds = file('u.creds', `-----BEGIN NATS USER JWT-----\neyJ.a.b\n------END NATS USER JWT------\n-----BEGIN USER NKEY SEED-----\n${seed}\n------END USER NKEY SEED------\n`);
      expect(compileDaemonOptions([...tier, '--nats-creds', creds], env).natsAuth).toMatchObject({ creds: expect.stringContaining('NATS USER JWT') });
      expect(fieldOf(() => compileDaemonOptions([...tier, '--nats-token-file', file('tok2', 't'), '--nats-creds', creds], env))).toBe('--nats-creds');
      expect(fieldOf(() => compileDaemonOptions([...tier, '--nats-nkey-seed-file', file('bad-seed', 'UABC')], env))).toBe('--nats-nkey-seed-file');
      expect(fieldOf(() => compileDaemonOptions([...tier, '--nats-token-file', join(dir, 'missing')], env))).toBe('--nats-token-file');
      expect(fieldOf(() => compileDaemonOptions([...tier, '--nats-token-file', file('empty', '')], env))).toBe('--nats-token-file');
      expect(fieldOf(() => compileDaemonOptions(['--nats-user', 'x'], env))).toBe('--nats-user');
    });

    it('reads TLS files and the [nats] table (flags win)', () => {
      const ca = file('ca.pem', '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
      const cert = file('c.pem', '-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n');
      const key = file('k.pem', '-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n');
      const pw = file('pw2', 'table-pw');
      const conf = file(
        'k.toml',
        `tier = "solver"\nlisten = "tcp://127.0.0.1:2"\n[nats]\nurl = "tls://127.0.0.1:4222"\nuser = "solver"\npassword-file = "${pw}"\ntlscacert = "${ca}"\ntlscert = "${cert}"\ntlskey = "${key}"\n`,
      );
      const o = compileDaemonOptions(['--config', conf], env);
      expect(o).toMatchObject({ nats: 'tls://127.0.0.1:4222', natsAuth: { user: 'solver', password: 'table-pw' }, natsTls: { ca: expect.stringContaining('MIIB'), cert: expect.stringContaining('MIIC'), key: expect.stringContaining('MHc') } });
      expect(compileDaemonOptions(['--config', conf, '--nats-user', 'other'], env).natsAuth).toEqual({ user: 'other', password: 'table-pw' });
      expect(fieldOf(() => compileDaemonOptions([...tier, '--nats-tlscert', cert], env))).toBe('--nats-tlskey');
      expect(fieldOf(() => compileDaemonOptions([...tier, '--nats-tlscacert', key], env))).toBe('--nats-tlscacert');
      expect(fieldOf(() => compileDaemonOptions(['--config', file('p.toml', '[nats]\nurl = "nats://h:1"\npassword = "inline"\n')], env))).toBe('nats.password');
    });
  });

  it('takes --dashboard on loopback only, for the process that runs the solver', () => {
    expect(compileDaemonOptions(['--dashboard', '127.0.0.1:8080'], env).dashboard).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 8080 });
    expect(compileDaemonOptions(['--dashboard', 'tcp://[::1]:0'], env).dashboard).toEqual({ kind: 'tcp', host: '::1', port: 0 });
    expect(compileDaemonOptions([], env).dashboard).toBeUndefined();
    // Guarded by a token, not mTLS: never on an address another host reaches.
    expect(() => compileDaemonOptions(['--dashboard', '0.0.0.0:8080'], env)).toThrow(/--dashboard must be a loopback address/);
    expect(() => compileDaemonOptions(['--dashboard', '10.0.0.5:8080'], env)).toThrow(/loopback/);
    expect(() => compileDaemonOptions(['--dashboard', 'unix:///tmp/d.sock'], env)).toThrow(/loopback/);
    expect(() => compileDaemonOptions(['--tier', 'worker-oci', '--nats', 'nats://127.0.0.1:4222', '--listen', 'tcp://127.0.0.1:0', '--dashboard', '127.0.0.1:1'], env)).toThrow(/--dashboard is served by the solver/);
  });
});
