import type { MessageInitShape } from '@bufbuild/protobuf';
import type { control } from '@kiln/api';
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { dockerConfigCredentials } from '@kiln/registry';
import { UsageError } from '../flags/usage-error.js';
import type { SessionCredentialStore, SessionDir, SessionOutput, SessionSecret, SessionSshAgent } from '../session/session-client.js';
import { createSshKeyAgent } from '../session/ssh-key-agent.js';
import { parseSshPrivateKey, SshKeyParseError } from '../session/ssh-private-key.js';
import type { BuildOptions, NamedContext } from './build-options.js';

export type SolveRequestInit = MessageInitShape<typeof control.SolveRequestSchema>;

/** The frontend Kiln's CLI asks for. */
export const DOCKERFILE_FRONTEND = 'dockerfile.v0';

/**
 * Builds the Control.Solve request for `opts`: frontend attrs as buildx sends
 * them to the Dockerfile frontend, one exporter per output (client-side
 * outputs carry `session.output`; their paths stay on this side), and the
 * cache imports/exports.
 */
export function toSolveRequest(opts: BuildOptions, ids: { ref: string; sessionId: string }): SolveRequestInit {
  const frontendAttrs: Record<string, string> = { filename: opts.dockerfile.filename };
  // buildx's remote context: the URL goes to the frontend; a local Dockerfile is then named by `dockerfilekey`.
  if (opts.remoteContext !== undefined) {
    frontendAttrs.context = opts.remoteContext;
    if (opts.dockerfile.dir) frontendAttrs.dockerfilekey = 'dockerfile';
  }
  if (opts.target !== undefined) frontendAttrs.target = opts.target;
  for (const [k, v] of Object.entries(opts.buildArgs)) frontendAttrs[`build-arg:${k}`] = v;
  for (const [k, v] of Object.entries(opts.labels)) frontendAttrs[`label:${k}`] = v;
  if (opts.network !== undefined) frontendAttrs['force-network-mode'] = opts.network;
  if (opts.platforms.length > 0) frontendAttrs.platform = opts.platforms.join(',');
  if (opts.extraHosts.length > 0) frontendAttrs['add-hosts'] = opts.extraHosts.map((h) => `${h.host}=${h.ip}`).join(',');
  // As buildx: ulimits as a comma list of name=soft:hard, the shm size in bytes.
  if (opts.ulimits && opts.ulimits.length > 0) frontendAttrs.ulimit = opts.ulimits.map((u) => `${u.name}=${u.soft}:${u.hard}`).join(',');
  if (opts.shmSizeBytes) frontendAttrs['shm-size'] = String(opts.shmSizeBytes);
  for (const c of opts.namedContexts) frontendAttrs[`context:${c.name}`] = namedContextAttr(c);
  for (const [type, value] of Object.entries(opts.attests ?? {})) frontendAttrs[`attest:${type}`] = value;
  if (opts.pull) frontendAttrs['image-resolve-mode'] = 'pull';
  // BuildKit's convention: an empty value means every step, else the stages named.
  if (opts.noCache) frontendAttrs['no-cache'] = '';
  else if (opts.noCacheFilter.length > 0) frontendAttrs['no-cache'] = opts.noCacheFilter.join(',');
  // buildx --call: the frontend answers a subrequest and nothing is built or exported.
  if (opts.call) frontendAttrs.requestid = CALL_REQUESTS[opts.call];
  return {
    ref: ids.ref,
    sessionId: ids.sessionId,
    frontend: opts.frontend ?? DOCKERFILE_FRONTEND,
    frontendAttrs,
    exporters: opts.call ? [] : opts.exports.map((e) => ({ type: e.type, attrs: { ...e.attrs } })),
    cacheImports: opts.cacheFrom.map((c) => ({ type: c.type, attrs: { ...c.attrs } })),
    cacheExports: opts.cacheTo.map((c) => ({ type: c.type, attrs: { ...c.attrs } })),
    entitlements: [...opts.entitlements],
    workerFilter: [...opts.workerFilters],
  };
}

/** The `context:NAME` frontend attr: a session dir, a layout as its session store (`oci-layout://STORE[:TAG]@DIGEST`), or the ref as given. */
function namedContextAttr(c: NamedContext): string {
  switch (c.kind) {
    case 'local':
      return `local:${c.name}`;
    case 'oci-layout':
      return `oci-layout://${c.store}${c.tag !== undefined ? `:${c.tag}` : ''}${c.digest !== undefined ? `@${c.digest}` : ''}`;
    case 'ref':
      return c.value;
  }
}

/** The directories the session shares: the context and the Dockerfile's dir (unless remote), local named contexts, OCI layouts (never incremental). */
export function sessionDirs(opts: BuildOptions): SessionDir[] {
  return [
    ...(opts.remoteContext === undefined ? [{ name: 'context', path: opts.contextDir, excludes: opts.contextIgnore }] : []),
    ...(opts.dockerfile.dir ? [{ name: 'dockerfile', path: opts.dockerfile.dir }] : []),
    ...opts.namedContexts.flatMap((c) => (c.kind === 'local' ? [{ name: c.name, path: c.path, excludes: c.ignore }] : [])),
    ...opts.namedContexts.flatMap((c) => (c.kind === 'oci-layout' ? [{ name: c.store, path: c.path, sharedKey: '' }] : [])),
  ];
}

/** The client-side outputs the session receives. */
export function sessionOutputs(opts: BuildOptions): SessionOutput[] {
  return opts.exports.flatMap((e) => (e.output ? [{ id: e.output.id, kind: e.output.kind, path: e.output.path }] : []));
}

/** `--secret` as the session serves it: files are read when the daemon asks, env values now. */
export function sessionSecrets(opts: BuildOptions, env: Readonly<Record<string, string | undefined>>): SessionSecret[] {
  return opts.secrets.map((sec) =>
    sec.kind === 'file' ? { id: sec.id, kind: 'file', path: sec.path } : { id: sec.id, kind: 'value', value: new TextEncoder().encode(env[sec.name] ?? '') },
  );
}

/**
 * `--ssh` as the session serves it: per id either one agent socket, or key
 * files (buildx's form) loaded here and served by an in-process agent
 * (`ssh-key-agent.ts`). A key that cannot be read or parsed (encrypted,
 * unknown type) is a usage error naming the flag and the file.
 */
export function sessionSshAgents(opts: BuildOptions): SessionSshAgent[] {
  return opts.ssh.map((spec) => {
    const value = `${spec.id}=${spec.paths.join(',')}`;
    const fail = (why: string) => new UsageError(`invalid argument "${value}" for "--ssh" flag: ${why}`, '--ssh');
    const sockets = spec.paths.filter((p) => {
      try {
        return statSync(p).isSocket();
      } catch {
        return false;
      }
    });
    if (sockets.length > 0) {
      if (sockets.length !== spec.paths.length) throw fail('agent sockets and key files cannot be mixed in one id');
      if (sockets.length > 1) throw fail('only one agent socket per id is allowed');
      return { id: spec.id, socket: sockets[0]! };
    }
    const keys = spec.paths.map((p) => {
      let text: string;
      try {
        const fd = openSync(p, 'r');
        try {
          // Key files are small; a huge file is not a key (buildx reads at most 100 KiB too).
          const buf = Buffer.alloc(MAX_KEY_FILE_BYTES);
          text = buf.subarray(0, readSync(fd, buf, 0, buf.length, 0)).toString('utf8');
        } finally {
          closeSync(fd);
        }
      } catch (err) {
        throw fail(`failed to read key file "${p}": ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
      try {
        return parseSshPrivateKey(text);
      } catch (err) {
        if (err instanceof SshKeyParseError) throw fail(`failed to parse key file "${p}": ${err.message}`);
        throw err;
      }
    });
    return { id: spec.id, keyAgent: createSshKeyAgent(keys), source: spec.paths.join(',') };
  });
}

const MAX_KEY_FILE_BYTES = 100 * 1024;

/** Registry credentials from this user's ~/.docker/config.json (auths and credential helpers). */
export function sessionCredentials(): SessionCredentialStore {
  const store = dockerConfigCredentials();
  return async (host, signal) => {
    const c = await store.get(host, signal);
    if (!c) return undefined;
    // An identity token travels with an empty username, as BuildKit's auth provider sends it.
    if (c.identityToken) return { username: '', secret: c.identityToken };
    if (c.username === undefined && c.password === undefined) return undefined;
    return { username: c.username ?? '', secret: c.password ?? '' };
  };
}

/** BuildKit's subrequest ids for buildx's `--call` values. */
const CALL_REQUESTS = { targets: 'frontend.targets', check: 'frontend.lint', outline: 'frontend.outline' } as const;
