import { KilnError } from '@kiln/common';
import { execState, FileChain, image, local, State, type FrontendContext, type FrontendOutput, type ImageConfig, type KilnFrontend } from '@kiln/frontend-sdk';
import { parseKilnYaml, type KilnYaml } from './spec.js';

/** The name `# syntax=` selects this frontend by. */
export const KILN_YAML_FRONTEND = 'kiln-yaml.v0';

const MAX_FILE = 1024 * 1024;

/**
 * A declarative frontend: a kiln.yaml names a base image, packages, files
 * from the context, commands, and the image's env/workdir/user/cmd. It
 * builds in two passes through the gateway when it must look inside the
 * base: to check `user:` exists in its /etc/passwd and to pick the package
 * manager (`apk` or `apt-get`) for `packages:`.
 */
export const kilnYamlFrontend: KilnFrontend = {
  names: [KILN_YAML_FRONTEND],
  async solve(ctx) {
    const file = ctx.filename;
    const data = await ctx.readFile('dockerfile', file, MAX_FILE);
    if (!data) throw new KilnError('not_found', `${file} not found in the build's dockerfile directory`, { file });
    const y = parseKilnYaml(Buffer.from(data).toString('utf8'), file);
    return convert(ctx, y, { filename: file, data });
  },
};

async function convert(ctx: FrontendContext, y: KilnYaml, source: { filename: string; data: Uint8Array }): Promise<FrontendOutput> {
  const at = (line: number) => ({ sourceIndex: 0, ranges: [{ startLine: line, endLine: line }] });
  const fail = (line: number, message: string): never => {
    throw new KilnError('invalid_argument', `${source.filename}:${line}: ${message}`, { file: source.filename, line });
  };
  let root: State;
  let config: ImageConfig = { os: 'linux', architecture: 'amd64', config: {} };
  if (y.base === 'scratch') {
    root = State.scratch();
  } else {
    const resolved = await ctx.resolveImageConfig(y.base).catch((err: Error) => fail(y.lines.base, `base ${y.base}: ${err.message}`));
    config = resolved.config;
    root = image(`${y.base.replace(/@sha256:[a-f0-9]{64}$/, '')}@${resolved.digest}`, { description: `[kiln.yaml] base ${y.base}`, ...at(y.lines.base) });
  }
  const c = { ...(config.config ?? {}) };
  const env = new Map((c.Env ?? []).map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)] as [string, string]));
  for (const [k, v] of y.env) env.set(k, v);
  const envList = [...env].map(([k, v]) => `${k}=${v}`);
  const workdir = y.workdir ?? c.WorkingDir ?? '/';

  // Second pass: look inside the base (through the gateway) only when needed.
  const needsBase = y.packages.length > 0 || (y.user !== undefined && !/^\d+(:\d+)?$/.test(y.user) && y.user !== 'root');
  if (needsBase) {
    if (root.isScratch()) fail(y.lines.user, 'user and packages need a base image, not scratch');
    const base = await ctx.solve(root);
    if (y.user !== undefined && !/^\d+(:\d+)?$/.test(y.user) && y.user !== 'root') {
      const name = y.user.split(':')[0]!;
      const passwd = Buffer.from(await base.readFile('/etc/passwd').catch(() => new Uint8Array())).toString('utf8');
      if (!passwd.split('\n').some((l) => l.split(':')[0] === name)) fail(y.lines.user, `user "${name}" is not in /etc/passwd of ${y.base}`);
    }
    if (y.packages.length > 0) {
      const install = (await base.exists('/sbin/apk'))
        ? `apk add --no-cache ${y.packages.join(' ')}`
        : (await base.exists('/usr/bin/apt-get'))
          ? `apt-get update && apt-get install -y --no-install-recommends ${y.packages.join(' ')} && rm -rf /var/lib/apt/lists/*`
          : fail(y.lines.packages, `packages: ${y.base} has neither apk nor apt-get`);
      root = execState(root, ['/bin/sh', '-c', install], { env: envList, cwd: '/' }, { description: `[kiln.yaml] packages: ${y.packages.join(' ')}`, ...at(y.lines.packages) });
    }
  }

  if (y.workdir) root = FileChain.start().mkdir(y.workdir, 0o755, { makeParents: true }).apply(root, { description: `[kiln.yaml] workdir ${y.workdir}`, ...at(y.lines.workdir) });
  if (y.files.length > 0) {
    const context = local('context', { includePatterns: y.files.map((f) => f.src), sharedKeyHint: 'context', description: '[kiln.yaml] load context' });
    for (const f of y.files) {
      root = FileChain.start()
        .copy(context, f.src, f.dest, { createDestPath: true, followSymlink: true, allowWildcard: true, ...(f.mode !== undefined ? { mode: f.mode } : {}) })
        .apply(root, { description: `[kiln.yaml] files: ${f.src} -> ${f.dest}`, ...at(f.line) });
    }
  }
  for (const r of y.run) {
    root = execState(root, ['/bin/sh', '-c', r.command], { env: envList, cwd: workdir, user: y.user ?? c.User ?? '' }, { description: `[kiln.yaml] run: ${r.command}`, ...at(r.line) });
  }

  c.Env = envList;
  if (y.workdir) c.WorkingDir = y.workdir;
  if (y.user !== undefined) c.User = y.user;
  if (y.cmd) c.Cmd = y.cmd;
  if (y.entrypoint) c.Entrypoint = y.entrypoint;
  if (Object.keys(y.labels).length > 0) c.Labels = { ...(c.Labels ?? {}), ...y.labels };
  if (y.expose.length > 0) c.ExposedPorts = { ...(c.ExposedPorts ?? {}), ...Object.fromEntries(y.expose.map((p) => [p, {}])) };
  return { result: root, imageConfig: { ...config, config: c }, sources: [{ ...source, language: 'yaml' }] };
}
