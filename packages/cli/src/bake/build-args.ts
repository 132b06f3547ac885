import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { BUILD_FLAGS } from '../build/build-options.js';
import { UsageError } from '../flags/usage-error.js';
import { CWD_PREFIX, isRemoteUrl, localPath } from './remote-definition.js';
import type { CacheEntry, ExportEntry, Target } from './target.js';

/** Where a target's build reads what bake prepared: inline Dockerfiles and the OCI layouts of `target:` contexts. */
export interface ArgvContext {
  cwd: string;
  /** A scratch directory for this run (inline Dockerfiles, dependency layouts). */
  workDir: string;
  /** The OCI layout directory a target is exported to when another target names it as `target:NAME`. */
  layoutOf(name: string): string;
  /** Targets some other target uses as a `target:` context. */
  linked: ReadonlySet<string>;
}

/** A CSV field as Go's encoding/csv reads it back: quoted when it holds a comma or a quote. */
function csvField(s: string): string {
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function csv(pairs: readonly [string, string | undefined][]): string {
  return pairs
    .filter((p): p is [string, string] => p[1] !== undefined)
    .map(([k, v]) => csvField(`${k}=${v}`))
    .join(',');
}

const cacheCsv = (c: CacheEntry) => csv([['type', c.type], ...Object.entries(c.attrs)]);
const exportCsv = (e: ExportEntry) => csv([['type', e.type], ['dest', e.dest], ...Object.entries(e.attrs)]);

/** `kiln build` has this flag (the build command may grow; bake uses what it has). */
const hasFlag = (name: string) => Object.hasOwn(BUILD_FLAGS, name);

function needFlag(target: Target, field: string, flag: string): void {
  if (!hasFlag(flag)) throw new UsageError(`target "${target.name}": ${field} is not supported by kiln build (no --${flag})`, field);
}

/**
 * The `kiln build` arguments that build one resolved target: bake reuses
 * the build command's validation and compilation, so a bad value is the
 * error `kiln build` gives, prefixed with the target. Relative paths are the
 * bake run's working directory's; the Dockerfile is relative to the context,
 * as in buildx. An inline Dockerfile is written to the work dir (one per
 * content). A `target:NAME` context is the named target's image, read from
 * the OCI layout it is exported to (`layoutOf`).
 */
export function targetBuildArgv(t: Target, ctx: ArgvContext): string[] {
  const argv: string[] = [];
  const context = t.context ?? '.';
  // A git or http(s) URL is built as `kiln build URL` does; `cwd://PATH` is PATH here (remote definitions).
  const remote = !context.startsWith(CWD_PREFIX) && isRemoteUrl(context);
  const contextDir = remote ? context : localPath(ctx.cwd, context);
  if (t['dockerfile-inline'] !== undefined) {
    const dir = join(ctx.workDir, `inline-${createHash('sha256').update(t['dockerfile-inline']).digest('hex').slice(0, 16)}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'Dockerfile'), t['dockerfile-inline']);
    argv.push('--file', join(dir, 'Dockerfile'));
  } else {
    const df = t.dockerfile ?? 'Dockerfile';
    // With a remote context a relative Dockerfile is a path inside it, as in `kiln build -f F URL`.
    if (df.startsWith(CWD_PREFIX)) argv.push('--file', localPath(ctx.cwd, df));
    else if (remote) argv.push('--file', df);
    else argv.push('--file', isAbsolute(df) ? df : join(contextDir, df));
  }
  if (t.target !== undefined) argv.push('--target', t.target);
  for (const [k, v] of Object.entries(t.args ?? {})) if (v !== null) argv.push('--build-arg', `${k}=${v}`);
  for (const [k, v] of Object.entries(t.labels ?? {})) if (v !== null) argv.push('--label', `${k}=${v}`);
  for (const tag of t.tags ?? []) argv.push('--tag', tag);
  for (const p of t.platforms ?? []) argv.push('--platform', p);
  for (const [name, value] of Object.entries(t.contexts ?? {})) {
    const dep = value.startsWith('target:') ? value.slice('target:'.length) : undefined;
    const local = value.startsWith(CWD_PREFIX) ? localPath(ctx.cwd, value) : value;
    argv.push('--build-context', `${name}=${dep !== undefined ? `oci-layout://${ctx.layoutOf(dep)}:latest` : local}`);
  }
  for (const c of t['cache-from'] ?? []) argv.push('--cache-from', cacheCsv(c));
  for (const c of t['cache-to'] ?? []) argv.push('--cache-to', cacheCsv(c));
  for (const s of t.secret ?? []) argv.push('--secret', csv([['id', s.id], ['src', s.src], ['env', s.env]]));
  for (const s of t.ssh ?? []) argv.push('--ssh', s.paths && s.paths.length > 0 ? `${s.id}=${s.paths.join(',')}` : s.id);
  let load = false;
  for (const o of t.output ?? []) {
    // No exporter is what cacheonly means: the result stays in the build cache.
    if (o.type === 'cacheonly') continue;
    // `docker` without dest is buildx's load into the local engine: `kiln build --load`.
    if (o.type === 'docker' && (o.dest === undefined || o.dest === '')) {
      load = true;
      continue;
    }
    argv.push('--output', exportCsv(o));
  }
  if (load) argv.push('--load');
  if (ctx.linked.has(t.name)) argv.push('--output', csv([['type', 'oci'], ['tar', 'false'], ['dest', ctx.layoutOf(t.name)], ['name', `kiln-bake/${t.name.toLowerCase()}:latest`]]));
  if (t['no-cache'] === true) argv.push('--no-cache');
  for (const f of t['no-cache-filter'] ?? []) argv.push('--no-cache-filter', f);
  if (t.network !== undefined) argv.push('--network', t.network);
  for (const e of t.entitlements ?? []) if (e === 'network.host' || e === 'security.insecure') argv.push('--allow', e);
  for (const [host, ip] of Object.entries(t['extra-hosts'] ?? {})) if (ip !== null) argv.push('--add-host', `${host}=${ip}`);
  if (t.pull === true) {
    needFlag(t, 'pull', 'pull');
    argv.push('--pull');
  }
  if (t['shm-size'] !== undefined) {
    needFlag(t, 'shm-size', 'shm-size');
    argv.push('--shm-size', t['shm-size']);
  }
  for (const u of t.ulimits ?? []) {
    needFlag(t, 'ulimits', 'ulimit');
    argv.push('--ulimit', u);
  }
  for (const a of t.annotations ?? []) {
    needFlag(t, 'annotations', 'annotation');
    argv.push('--annotation', a);
  }
  for (const a of t.attest ?? []) {
    needFlag(t, 'attest', 'attest');
    argv.push('--attest', csv(Object.entries(a)));
  }
  if (t.call !== undefined && t.call !== 'build') argv.push('--call', t.call);
  argv.push(contextDir);
  return argv;
}
