import { InvalidArgumentError } from '@kiln/common';
import { parse as parseYaml } from 'yaml';
import type { HclValue } from './hcl-eval.js';
import { parseCacheEntries, targetFromAttributes, TARGET_NAME, type BakeConfig, type Target } from './target.js';

/**
 * Compose files as bake reads them: every service with a `build` section is
 * a target named after the service (dots become underscores), all of them
 * in group `default`. Values are interpolated from the environment as
 * compose does (`${VAR}`, `${VAR:-default}`, `${VAR-default}`, `$VAR`,
 * `$$`). Later files override earlier ones, key by key.
 */
export function parseComposeFiles(files: readonly { filename: string; data: string }[], env: Readonly<Record<string, string | undefined>>): BakeConfig {
  let services: Record<string, unknown> = {};
  let secrets: Record<string, unknown> = {};
  for (const f of files) {
    let doc: unknown;
    try {
      doc = parseYaml(f.data);
    } catch (err) {
      throw new InvalidArgumentError(`failed to parse compose file ${f.filename}: ${(err as Error).message}`, f.filename, { cause: err });
    }
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new InvalidArgumentError(`failed to parse compose file ${f.filename}: empty compose file`, f.filename);
    const d = interpolate(doc, env, f.filename) as Record<string, unknown>;
    services = deepMerge(services, isObject(d.services) ? d.services : {});
    secrets = deepMerge(secrets, isObject(d.secrets) ? d.secrets : {});
  }
  const config: BakeConfig = { groups: [], targets: [] };
  const group = { name: 'default', targets: [] as string[] };
  const filename = files[0]?.filename ?? 'compose.yaml';
  for (const [service, def] of Object.entries(services)) {
    if (!isObject(def) || def.build === undefined || def.build === null) continue;
    const name = service.replace(/\./g, '_');
    if (!TARGET_NAME.test(name)) throw new InvalidArgumentError(`failed to parse compose file: invalid service name "${name}": only "[a-zA-Z0-9_-]+" are allowed`, filename);
    const t = composeTarget(name, def, secrets, filename);
    group.targets.push(name);
    config.targets.push(t);
  }
  if (Object.keys(services).length > 0) config.groups.push(group);
  return config;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = isObject(out[k]) && isObject(v) ? deepMerge(out[k], v) : v;
  return out;
}

function interpolate(v: unknown, env: Readonly<Record<string, string | undefined>>, filename: string): unknown {
  if (typeof v === 'string') {
    return v.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (m, braced: string | undefined, op: string | undefined, arg: string | undefined, bare: string | undefined) => {
      if (m === '$$') return '$';
      const name = braced ?? bare!;
      const value = env[name];
      const unset = op?.startsWith(':') ? value === undefined || value === '' : value === undefined;
      if (op?.endsWith('?') && unset) throw new InvalidArgumentError(`${filename}: required variable ${name} is missing a value${arg ? `: ${arg}` : ''}`, filename);
      if (op?.endsWith('-') && unset) return arg ?? '';
      return value ?? '';
    });
  }
  if (Array.isArray(v)) return v.map((x) => interpolate(x, env, filename));
  if (isObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, interpolate(x, env, filename)]));
  return v;
}

/** A compose list (`["K=V", "K2"]`) or map as a map; a bare key has no value (null). */
function listOrMap(v: unknown): Record<string, string | null> {
  if (Array.isArray(v)) {
    return Object.fromEntries(
      v.map((e) => {
        const s = String(e);
        const eq = s.indexOf('=');
        return eq < 0 ? [s, null] : [s.slice(0, eq), s.slice(eq + 1)];
      }),
    );
  }
  if (isObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, x === null || x === undefined ? null : String(x)]));
  return {};
}

function composeTarget(name: string, service: Record<string, unknown>, secrets: Record<string, unknown>, filename: string): Target {
  const build: Record<string, unknown> = typeof service.build === 'string' ? { context: service.build } : isObject(service.build) ? service.build : {};
  const attrs: Record<string, HclValue> = {};
  const str = (k: string) => (typeof build[k] === 'string' || typeof build[k] === 'number' ? String(build[k]) : undefined);
  const list = (k: string) => (Array.isArray(build[k]) ? (build[k] as unknown[]).map(String) : undefined);
  if (str('context')) attrs.context = str('context')!;
  if (str('dockerfile')) attrs.dockerfile = str('dockerfile')!;
  if (str('dockerfile_inline')) attrs['dockerfile-inline'] = str('dockerfile_inline')!;
  if (build.additional_contexts !== undefined) attrs.contexts = listOrMap(build.additional_contexts);
  // Compose args: a bare key takes its value from the service's environment, else stays unset.
  const environment = listOrMap(service.environment);
  const args = listOrMap(build.args);
  for (const [k, v] of Object.entries(args)) if (v === null && environment[k] != null) args[k] = environment[k];
  const setArgs = Object.fromEntries(Object.entries(args).filter(([, v]) => v !== null)) as Record<string, HclValue>;
  if (Object.keys(setArgs).length > 0) attrs.args = setArgs;
  const labels = listOrMap(build.labels);
  if (Object.keys(labels).length > 0) attrs.labels = Object.fromEntries(Object.entries(labels).map(([k, v]) => [k, v ?? '']));
  const tags = list('tags');
  if (tags && tags.length > 0) attrs.tags = tags;
  else if (typeof service.image === 'string' && service.image !== '') attrs.tags = [service.image];
  if (list('platforms')) attrs.platforms = list('platforms')!;
  if (str('target')) attrs.target = str('target')!;
  if (str('network')) attrs.network = str('network')!;
  if (build.no_cache === true) attrs['no-cache'] = true;
  if (build.pull === true) attrs.pull = true;
  if (str('shm_size')) attrs['shm-size'] = str('shm_size')!;
  if (build.extra_hosts !== undefined) {
    const hosts = Array.isArray(build.extra_hosts) ? Object.fromEntries((build.extra_hosts as unknown[]).map((h) => String(h).split(/[=:](.*)/s).slice(0, 2))) : listOrMap(build.extra_hosts);
    attrs['extra-hosts'] = hosts as Record<string, HclValue>;
  }
  const t = targetFromAttributes(name, attrs, filename);
  const cacheFrom = list('cache_from');
  if (cacheFrom) t['cache-from'] = parseCacheEntries(cacheFrom, `${filename}: service "${name}": cache_from`);
  const cacheTo = list('cache_to');
  if (cacheTo) t['cache-to'] = parseCacheEntries(cacheTo, `${filename}: service "${name}": cache_to`);
  if (Array.isArray(build.ssh) || isObject(build.ssh)) {
    const ssh = Object.entries(listOrMap(build.ssh)).map(([id, p]) => (p ? { id, paths: [p] } : { id }));
    t.ssh = ssh.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
  if (Array.isArray(build.secrets)) {
    t.secret = (build.secrets as unknown[]).map((s) => {
      const source = typeof s === 'string' ? s : isObject(s) ? String(s.source ?? '') : '';
      const id = isObject(s) && typeof s.target === 'string' ? s.target : source;
      const def = secrets[source];
      if (!isObject(def)) throw new InvalidArgumentError(`${filename}: service "${name}": secret "${source}" is not defined in the top-level secrets`, filename);
      if (typeof def.file === 'string') return { id, src: def.file };
      if (typeof def.environment === 'string') return { id, env: def.environment };
      throw new InvalidArgumentError(`${filename}: service "${name}": secret "${source}" needs file or environment`, filename);
    });
  }
  return t;
}
