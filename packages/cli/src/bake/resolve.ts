import { InvalidArgumentError } from '@kiln/common';
import { UsageError } from '../flags/usage-error.js';
import {
  cloneTarget,
  mergeTarget,
  normalizeTarget,
  parseAttestEntries,
  parseCacheEntries,
  parseExportEntries,
  parseSecretEntries,
  parseSshEntries,
  type BakeConfig,
  type ExportEntry,
  type Group,
  type Target,
} from './target.js';

/** One `--set` value for a target key: scalar, or the list of values given (`+=` appends). */
interface Override {
  value?: string;
  list: string[];
  append: boolean;
}

type Overrides = Map<string, Map<string, Override>>;

/** The targets and groups a bake run builds (and `--print` shows), by name. */
export interface ResolvedBake {
  targets: Map<string, Target>;
  groups: Map<string, Group>;
}

/** Go's path.Match for target patterns (`*`, `?`, `[...]`; `*` stops at `/`, which names never hold). */
export function matchPattern(pattern: string, name: string): boolean {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 1);
      if (end < 0) throw new UsageError(`syntax error in pattern "${pattern}"`, 'TARGET');
      re += `[${pattern.slice(i + 1, end).replace(/^\^/, '^').replace(/\\/g, '\\\\')}]`;
      i = end;
    } else re += c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`).test(name);
}

const hasPattern = (s: string) => /[*?[\]]/.test(s);

function matchNames(config: BakeConfig, pattern: string): string[] {
  if (!hasPattern(pattern)) return [pattern];
  const names = [...config.groups.map((g) => g.name), ...config.targets.map((t) => t.name)].filter((n) => matchPattern(pattern, n));
  if (names.length === 0) throw new UsageError(`could not find any target matching "${pattern}"`, 'TARGET');
  return names;
}

function expandTargets(config: BakeConfig, pattern: string): string[] {
  if (config.targets.some((t) => t.name === pattern)) return [pattern];
  const names = config.targets.map((t) => t.name).filter((n) => matchPattern(pattern, n));
  if (names.length === 0) throw new UsageError(`could not find any target matching '${pattern}'`, '--set');
  return names;
}

const LIST_KEYS = new Set(['output', 'cache-to', 'cache-from', 'tags', 'platform', 'secrets', 'ssh', 'attest', 'entitlements', 'network', 'annotations', 'no-cache-filter', 'ulimits']);

/** Parses `--set target.key[.name][+]=value` (target may be a pattern), as buildx's newOverrides. */
function parseOverrides(config: BakeConfig, values: readonly string[], env: Readonly<Record<string, string | undefined>>): Overrides {
  const out: Overrides = new Map();
  for (const v of values) {
    const eq = v.indexOf('=');
    const lhs = eq < 0 ? v : v.slice(0, eq);
    const append = lhs.endsWith('+');
    const skey = append ? lhs.slice(0, -1) : lhs;
    const keys = skey.split('.');
    if (keys.length < 2) throw new UsageError(`invalid override key ${skey}, expected target.name`, '--set');
    const [pattern, key] = keys as [string, string];
    const rest = keys.slice(2).join('.');
    if (eq < 0 && key !== 'args') throw new UsageError(`invalid override ${v}, expected target.name=value`, '--set');
    const okey = rest === '' ? key : `${key}.${rest}`;
    for (const name of expandTargets(config, pattern)) {
      const forTarget = out.get(name) ?? new Map<string, Override>();
      out.set(name, forTarget);
      const o = forTarget.get(okey) ?? { list: [], append: false };
      if (LIST_KEYS.has(key)) {
        if (eq >= 0) {
          o.append = append;
          o.list.push(v.slice(eq + 1));
        }
      } else if (['args', 'contexts', 'labels', 'extra-hosts', 'secret'].includes(key)) {
        if (rest === '') throw new UsageError(`invalid key ${lhs}, ${key} requires name`, '--set');
        // `--set t.args.K` (no value) takes K from the environment, or is skipped.
        if (eq < 0) {
          if (env[rest] === undefined) continue;
          o.value = env[rest];
        } else o.value = v.slice(eq + 1);
      } else o.value = v.slice(eq + 1);
      forTarget.set(okey, o);
    }
  }
  return out;
}

const parseBool = (key: string, value: string): boolean => {
  if (/^(1|t|T|true|TRUE|True)$/.test(value)) return true;
  if (/^(0|f|F|false|FALSE|False)$/.test(value)) return false;
  throw new UsageError(`invalid value ${value} for boolean key ${key}`, '--set');
};

/** buildx: `push=true` sets push on image outputs, or adds one when only docker outputs exist. */
function setPush(outputs: ExportEntry[] | undefined, push: boolean): ExportEntry[] {
  let out = [...(outputs ?? [])];
  if (!push) {
    out = out.filter((o) => o.type !== 'registry');
    for (const o of out) if (o.type === 'image') o.attrs.push = 'false';
    return out;
  }
  let add = true;
  for (const o of out) {
    if (o.type !== 'docker') add = false;
    if (o.type === 'image') o.attrs.push = 'true';
  }
  if (add) out.push({ type: 'image', attrs: { push: 'true' } });
  return out;
}

/** buildx: `load=true` adds a docker output unless one without dest exists, or another kind of output is set. */
function setLoad(outputs: ExportEntry[] | undefined, load: boolean): ExportEntry[] | undefined {
  if (!load) return outputs;
  for (const o of outputs ?? []) {
    if (o.type === 'docker') {
      if (o.dest === undefined || o.dest === '') return outputs;
    } else if (!['image', 'registry', 'oci'].includes(o.type)) return outputs;
  }
  return [...(outputs ?? []), { type: 'docker', attrs: {} }];
}

/** Applies one target's overrides, as buildx's AddOverrides. */
function applyOverrides(t: Target, overrides: Map<string, Override> | undefined): void {
  for (const [okey, o] of overrides ?? []) {
    const dot = okey.indexOf('.');
    const key = dot < 0 ? okey : okey.slice(0, dot);
    const sub = dot < 0 ? '' : okey.slice(dot + 1);
    const value = o.value ?? '';
    const field = `--set ${t.name}.${okey}`;
    const listOf = <T>(parsed: T[], current: T[] | undefined): T[] => (o.append ? [...(current ?? []), ...parsed] : parsed);
    switch (key) {
      case 'context':
      case 'dockerfile':
      case 'target':
      case 'call':
      case 'shm-size':
        t[key] = value;
        break;
      case 'args':
      case 'labels':
      case 'extra-hosts':
        (t[key] ??= {})[sub] = value;
        break;
      case 'contexts':
        (t.contexts ??= {})[sub] = value;
        break;
      case 'tags':
        t.tags = listOf(o.list, t.tags);
        break;
      case 'platform':
        t.platforms = listOf(o.list, t.platforms);
        break;
      case 'no-cache-filter':
        t['no-cache-filter'] = listOf(o.list, t['no-cache-filter']);
        break;
      case 'ulimits':
        t.ulimits = listOf(o.list, t.ulimits);
        break;
      case 'cache-from':
        t['cache-from'] = listOf(parseCacheEntries(o.list, field), t['cache-from']);
        break;
      case 'cache-to':
        t['cache-to'] = listOf(parseCacheEntries(o.list, field), t['cache-to']);
        break;
      case 'secrets':
        t.secret = listOf(parseSecretEntries(o.list, field), t.secret);
        break;
      case 'secret': {
        const s = t.secret?.find((x) => x.id === sub);
        if (!s) throw new UsageError(`secret "${sub}" must be declared before it can be overridden`, '--set');
        const [next] = parseSecretEntries([value], field);
        if (next?.id !== undefined && next.id !== sub) throw new UsageError(`secret override id "${next.id}" does not match declared secret "${sub}"`, '--set');
        if (next?.src !== undefined) s.src = next.src;
        else delete s.src;
        if (next?.env !== undefined) s.env = next.env;
        else delete s.env;
        break;
      }
      case 'ssh':
        t.ssh = listOf(parseSshEntries(o.list, field), t.ssh);
        break;
      case 'output':
        t.output = listOf(parseExportEntries(o.list, field), t.output);
        break;
      case 'entitlements':
        t.entitlements = [...(t.entitlements ?? []), ...o.list];
        break;
      case 'annotations':
        t.annotations = [...(t.annotations ?? []), ...o.list];
        break;
      case 'attest':
        t.attest = [...(t.attest ?? []), ...parseAttestEntries(o.list, field)];
        break;
      case 'network':
        t.network = o.list[o.list.length - 1] ?? value;
        break;
      case 'no-cache':
        t['no-cache'] = parseBool(key, value);
        break;
      case 'pull':
        t.pull = parseBool(key, value);
        break;
      case 'push':
        t.output = setPush(t.output, parseBool(key, value));
        break;
      case 'load': {
        const out = setLoad(t.output, parseBool(key, value));
        if (out) t.output = out;
        break;
      }
      default:
        throw new UsageError(`unknown key: ${key}`, '--set');
    }
  }
}

function findGroup(config: BakeConfig, name: string): Group | undefined {
  return config.groups.find((g) => g.name === name);
}

/** A group's targets and the groups met on the way (nested groups; cycles stop). */
function resolveGroup(config: BakeConfig, name: string, visited = new Map<string, { targets: string[]; groups: string[] }>()): { targets: string[]; groups: string[] } {
  const seen = visited.get(name);
  if (seen) return seen;
  const g = findGroup(config, name);
  if (!g) return { targets: [name], groups: [] };
  visited.set(name, { targets: [], groups: [] });
  const targets: string[] = [];
  const groups = [name];
  for (const t of g.targets) {
    const r = resolveGroup(config, t, visited);
    targets.push(...(r.targets.length > 0 ? r.targets : [t]));
    groups.push(...r.groups);
  }
  const res = { targets, groups };
  visited.set(name, res);
  return res;
}

/** A target with its `inherits` chain merged in, overrides applied and buildx's defaults (context ".", dockerfile "Dockerfile"). */
function resolveTarget(config: BakeConfig, name: string, overrides: Overrides): Target {
  const t = inheritTarget(config, name, new Map(), overrides);
  if (!t) throw new InvalidArgumentError(`failed to find target ${name}`, name);
  delete t.inherits;
  t.context ??= '.';
  if (!t.dockerfile) t.dockerfile = 'Dockerfile';
  return t;
}

function inheritTarget(config: BakeConfig, name: string, visited: Map<string, Target | null>, overrides: Overrides): Target | null {
  if (visited.has(name)) return visited.get(name) ?? null;
  visited.set(name, null);
  const own = config.targets.find((t) => t.name === name);
  if (!own) throw new InvalidArgumentError(`failed to find target ${name}`, name);
  const base: Target = { name };
  for (const parent of own.inherits ?? []) {
    const p = inheritTarget(config, parent, visited, overrides);
    if (p) mergeTarget(base, cloneTarget(p));
  }
  const merged: Target = { name };
  mergeTarget(merged, base);
  mergeTarget(merged, cloneTarget(own));
  applyOverrides(merged, overrides.get(name));
  normalizeTarget(merged);
  visited.set(name, merged);
  return merged;
}

/**
 * buildx's ReadTargets: the named targets and groups (patterns allowed;
 * none means `default`), each target resolved with `--set` overrides; a
 * `default` group lists what was asked for (sorted); targets reached only
 * through a `target:NAME` context are added with a cacheonly output.
 */
export function readTargets(config: BakeConfig, requested: readonly string[], sets: readonly string[], env: Readonly<Record<string, string | undefined>>): ResolvedBake {
  const names = [...new Set((requested.length > 0 ? requested : ['default']).map((n) => n.replace(/\./g, '_')).flatMap((n) => matchNames(config, n)))];
  const overrides = parseOverrides(config, sets, env);
  const targets = new Map<string, Target>();
  const groups = new Map<string, Group>();
  for (const name of names) {
    const r = resolveGroup(config, name);
    for (const t of [...new Set(r.targets)]) targets.set(t, resolveTarget(config, t, overrides));
    for (const g of [...new Set(r.groups)]) {
      const group = findGroup(config, g);
      if (group) groups.set(g, structuredClone(group));
    }
  }
  for (const name of names) {
    if (groups.has('default') && name === 'default') continue;
    if (!groups.has('default')) groups.set('default', { name: 'default', targets: [] });
    groups.get('default')!.targets.push(name);
  }
  const def = groups.get('default');
  if (def) def.targets = [...new Set(def.targets)].sort();
  for (const [name, t] of [...targets]) loadLinks(config, name, t, targets, overrides, []);
  return { targets, groups };
}

/** Adds the targets named by `target:NAME` contexts (cacheonly unless asked for) and refuses cycles, as buildx's loadLinks. */
function loadLinks(config: BakeConfig, name: string, t: Target, targets: Map<string, Target>, overrides: Overrides, visited: string[]): void {
  const path = [...visited, name];
  for (const v of Object.values(t.contexts ?? {})) {
    if (!v.startsWith('target:')) continue;
    const dep = v.slice('target:'.length);
    if (dep === name) throw new InvalidArgumentError(`target ${dep} cannot link to itself`, dep);
    if (path.includes(dep)) throw new InvalidArgumentError(`infinite loop from ${name} to ${dep}`, dep);
    let t2 = targets.get(dep);
    if (!t2) {
      t2 = resolveTarget(config, dep, overrides);
      t2.output = [{ type: 'cacheonly', attrs: {} }];
      targets.set(dep, t2);
    }
    loadLinks(config, dep, t2, targets, overrides, path);
    for (const e of t2.entitlements ?? []) if (!(t.entitlements ?? []).includes(e)) (t.entitlements ??= []).push(e);
    if ((t.platforms?.length ?? 0) > 1 && (t2.platforms?.length ?? 0) > 1 && !t.platforms!.every((p) => t2.platforms!.includes(p))) {
      throw new InvalidArgumentError(`target ${dep} can't be used by ${name} because its platforms [${t.platforms!.join(' ')}] are not a subset of [${t2.platforms!.join(' ')}]`, dep);
    }
  }
}
