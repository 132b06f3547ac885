import { InvalidArgumentError } from '@kiln/common';
import { parseCsv } from '../flags/csv.js';
import type { HclValue } from './hcl-eval.js';

/** `cache-from`/`cache-to` entry (buildx's CacheOptionsEntry). */
export interface CacheEntry {
  type: string;
  attrs: Record<string, string>;
}

/** `output` entry (buildx's ExportEntry). */
export interface ExportEntry {
  type: string;
  dest?: string;
  attrs: Record<string, string>;
}

export interface SecretEntry {
  id?: string;
  src?: string;
  env?: string;
}

export interface SshEntry {
  id: string;
  paths?: string[];
}

/** `attest` entry: `type` plus its attributes. */
export type AttestEntry = Record<string, string>;

/**
 * A bake target, with buildx's field names (the `--print` keys). Absent
 * fields are unset, which matters when targets merge: an unset field
 * leaves the inherited value, a set one replaces or extends it.
 */
export interface Target {
  name: string;
  description?: string;
  inherits?: string[];
  annotations?: string[];
  attest?: AttestEntry[];
  context?: string;
  contexts?: Record<string, string>;
  dockerfile?: string;
  'dockerfile-inline'?: string;
  /** A null value is declared but unset: it does not override an inherited one. */
  args?: Record<string, string | null>;
  labels?: Record<string, string | null>;
  tags?: string[];
  'cache-from'?: CacheEntry[];
  'cache-to'?: CacheEntry[];
  target?: string;
  secret?: SecretEntry[];
  ssh?: SshEntry[];
  platforms?: string[];
  output?: ExportEntry[];
  pull?: boolean;
  'no-cache'?: boolean;
  network?: string;
  'no-cache-filter'?: string[];
  'shm-size'?: string;
  ulimits?: string[];
  call?: string;
  entitlements?: string[];
  'extra-hosts'?: Record<string, string | null>;
}

export interface Group {
  name: string;
  description?: string;
  targets: string[];
}

/** What bake files define, in definition order. */
export interface BakeConfig {
  groups: Group[];
  targets: Target[];
}

/** buildx's target and group names. */
export const TARGET_NAME = /^[a-zA-Z0-9_-]+$/;

type Where = { file: string; target: string };

function bad(where: Where, field: string, message: string): never {
  throw new InvalidArgumentError(`${where.file}: target "${where.target}": ${field}: ${message}`, where.file);
}

function scalar(v: HclValue, where: Where, field: string): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return bad(where, field, `want a string, got ${JSON.stringify(v)}`);
}

function stringList(v: HclValue, where: Where, field: string): string[] {
  if (!Array.isArray(v)) return bad(where, field, `want a list of strings, got ${JSON.stringify(v)}`);
  return v.filter((x) => x !== null).map((x) => scalar(x, where, field));
}

function stringMap(v: HclValue, where: Where, field: string): Record<string, string | null> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return bad(where, field, `want a map of strings, got ${JSON.stringify(v)}`);
  const out: Record<string, string | null> = {};
  for (const [k, x] of Object.entries(v)) out[k] = x === null ? null : scalar(x, where, `${field}.${k}`);
  return out;
}

function boolOf(v: HclValue, where: Where, field: string): boolean {
  if (typeof v === 'boolean') return v;
  if (v === 'true' || v === 'false') return v === 'true';
  return bad(where, field, `want a bool, got ${JSON.stringify(v)}`);
}

/** key=value CSV fields (keys lower-cased, as buildx). */
function csvPairs(text: string, field: string): [string, string][] {
  return parseCsv(text, field).map((f) => {
    const eq = f.indexOf('=');
    if (eq < 0) throw new InvalidArgumentError(`invalid value ${f} in ${field} "${text}": want key=value`, field);
    return [f.slice(0, eq).trim().toLowerCase(), f.slice(eq + 1)];
  });
}

/** A cache entry from its CSV form (a bare value is a registry ref) or an object. */
export function parseCacheEntries(values: readonly (string | Record<string, HclValue>)[], field: string): CacheEntry[] {
  const out: CacheEntry[] = [];
  for (const v of values) {
    if (typeof v === 'string') {
      if (v === '') continue;
      if (!v.includes('=')) {
        for (const ref of parseCsv(v, field)) out.push({ type: 'registry', attrs: { ref } });
        continue;
      }
      const attrs: Record<string, string> = {};
      let type = '';
      for (const [k, val] of csvPairs(v, field)) {
        if (k === 'type') type = val;
        else attrs[k] = val;
      }
      if (type === '') throw new InvalidArgumentError(`type required for "${v}" in ${field}`, field);
      out.push({ type, attrs });
      continue;
    }
    const { type, ...rest } = v;
    if (typeof type !== 'string' || type === '') throw new InvalidArgumentError(`type required for ${JSON.stringify(v)} in ${field}`, field);
    out.push({ type, attrs: Object.fromEntries(Object.entries(rest).map(([k, x]) => [k, String(x)])) });
  }
  return out;
}

/** An output from its CSV form (`DIR` is local, `-` a tar on stdout) or an object. */
export function parseExportEntries(values: readonly (string | Record<string, HclValue>)[], field: string): ExportEntry[] {
  const out: ExportEntry[] = [];
  for (const v of values) {
    let e: ExportEntry;
    if (typeof v === 'string') {
      if (v === '') continue;
      if (!v.startsWith('type=') && parseCsv(v, field).length === 1 && !v.includes('=')) {
        out.push(v === '-' ? { type: 'tar', dest: '-', attrs: {} } : { type: 'local', dest: v, attrs: {} });
        continue;
      }
      e = { type: '', attrs: {} };
      for (const [k, val] of csvPairs(v, field)) {
        if (k === 'type') e.type = val;
        else if (k === 'dest') e.dest = val;
        else e.attrs[k] = val;
      }
    } else {
      const { type, dest, ...rest } = v;
      e = { type: typeof type === 'string' ? type : '', attrs: Object.fromEntries(Object.entries(rest).map(([k, x]) => [k, String(x)])) };
      if (typeof dest === 'string' && dest !== '') e.dest = dest;
    }
    if (e.type === '') throw new InvalidArgumentError(`type is required for output ${JSON.stringify(v)} in ${field}`, field);
    out.push(e);
  }
  return out;
}

export function parseSecretEntries(values: readonly (string | Record<string, HclValue>)[], field: string): SecretEntry[] {
  return values.flatMap((v): SecretEntry[] => {
    const pairs: [string, string][] = typeof v === 'string' ? (v === '' ? [] : csvPairs(v, field)) : Object.entries(v).map(([k, x]) => [k, String(x)]);
    if (pairs.length === 0) return [];
    const s: SecretEntry = {};
    let type: string | undefined;
    for (const [k, val] of pairs) {
      if (k === 'type') {
        if (val !== 'file' && val !== 'env') throw new InvalidArgumentError(`unsupported secret type "${val}" in ${field}`, field);
        type = val;
      } else if (k === 'id') s.id = val;
      else if (k === 'src' || k === 'source') s.src = val;
      else if (k === 'env') s.env = val;
      else throw new InvalidArgumentError(`unexpected key "${k}" in ${field} ${JSON.stringify(v)}`, field);
    }
    if (type === 'env' && s.env === undefined && s.src !== undefined) {
      s.env = s.src;
      delete s.src;
    }
    return [s];
  });
}

export function parseSshEntries(values: readonly (string | Record<string, HclValue>)[], field: string): SshEntry[] {
  return values.flatMap((v): SshEntry[] => {
    if (typeof v === 'string') {
      if (v === '') return [];
      const eq = v.indexOf('=');
      return [eq < 0 ? { id: v } : { id: v.slice(0, eq), paths: v.slice(eq + 1).split(',') }];
    }
    const id = typeof v.id === 'string' ? v.id : '';
    const paths = Array.isArray(v.paths) ? v.paths.map(String) : undefined;
    return [paths && paths.length > 0 ? { id, paths } : { id }];
  });
}

export function parseAttestEntries(values: readonly (string | Record<string, HclValue>)[], field: string): AttestEntry[] {
  return values.flatMap((v): AttestEntry[] => {
    const pairs: [string, string][] = typeof v === 'string' ? (v === '' ? [] : csvPairs(v, field)) : Object.entries(v).map(([k, x]) => [k, String(x)]);
    if (pairs.length === 0) return [];
    const a = Object.fromEntries(pairs);
    if (!a.type) throw new InvalidArgumentError(`attest type required in ${field} ${JSON.stringify(v)}`, field);
    return [a];
  });
}

function entryList(v: HclValue, where: Where, field: string): (string | Record<string, HclValue>)[] {
  const items = Array.isArray(v) ? v : [v];
  return items.flatMap((x): (string | Record<string, HclValue>)[] => {
    if (x === null) return [];
    if (typeof x === 'string') return [x];
    if (typeof x === 'object' && !Array.isArray(x)) return [x];
    return bad(where, field, `want a list of strings or objects, got ${JSON.stringify(x)}`);
  });
}

/**
 * A target from its evaluated attributes (HCL, JSON or compose). Unknown
 * attributes are refused, naming the file, target and attribute.
 */
export function targetFromAttributes(name: string, attrs: Readonly<Record<string, HclValue>>, file: string): Target {
  const where = { file, target: name };
  const t: Target = { name };
  for (const [key, v] of Object.entries(attrs)) {
    if (v === null) continue;
    const f = `${file}: target "${name}": ${key}`;
    switch (key) {
      case 'description':
      case 'context':
      case 'dockerfile':
      case 'dockerfile-inline':
      case 'target':
      case 'network':
      case 'shm-size':
      case 'call':
        t[key] = scalar(v, where, key);
        break;
      case 'inherits':
      case 'annotations':
      case 'tags':
      case 'platforms':
      case 'no-cache-filter':
      case 'ulimits':
      case 'entitlements':
        t[key] = stringList(v, where, key);
        break;
      case 'args':
      case 'labels':
      case 'extra-hosts':
        t[key] = stringMap(v, where, key);
        break;
      case 'contexts': {
        const m = stringMap(v, where, key);
        t.contexts = Object.fromEntries(Object.entries(m).filter((e): e is [string, string] => e[1] !== null));
        break;
      }
      case 'pull':
      case 'no-cache':
        t[key] = boolOf(v, where, key);
        break;
      case 'cache-from':
      case 'cache-to':
        t[key] = parseCacheEntries(entryList(v, where, key), f);
        break;
      case 'output':
        t.output = parseExportEntries(entryList(v, where, key), f);
        break;
      case 'secret':
        t.secret = parseSecretEntries(entryList(v, where, key), f);
        break;
      case 'ssh':
        t.ssh = parseSshEntries(entryList(v, where, key), f);
        break;
      case 'attest':
        t.attest = parseAttestEntries(entryList(v, where, key), f);
        break;
      default:
        bad(where, key, 'unsupported attribute');
    }
  }
  return t;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** buildx's removeDupes: walks backwards, swapping a duplicate with the last element (its order, kept). */
export function removeDupes<T>(s: readonly T[] | undefined, equal: (a: T, b: T) => boolean = same): T[] | undefined {
  if (!s || s.length === 0) return undefined;
  const out = [...s];
  let n = out.length;
  for (let i = n - 2; i >= 0; i--) {
    for (let j = i + 1; j < n; j++) {
      if (equal(out[i]!, out[j]!)) {
        [out[j], out[n - 1]] = [out[n - 1]!, out[j]!];
        n--;
        break;
      }
    }
  }
  return out.slice(0, n);
}

/** Unique non-empty strings, first occurrence kept. */
export function removeDupesStr(s: readonly string[] | undefined): string[] | undefined {
  if (!s) return undefined;
  return [...new Set(s.filter((v) => v !== ''))];
}

const mergeList = <T>(a: T[] | undefined, b: T[]): T[] => removeDupes(a ? [...a, ...b] : [...b]) ?? [];

/** Merges `t2` over `t` as buildx's Target.Merge (in place): which fields replace and which extend is buildx's choice. */
export function mergeTarget(t: Target, t2: Target): void {
  if (t2.context !== undefined) t.context = t2.context;
  if (t2.dockerfile !== undefined) t.dockerfile = t2.dockerfile;
  if (t2['dockerfile-inline'] !== undefined) t['dockerfile-inline'] = t2['dockerfile-inline'];
  for (const key of ['args', 'labels', 'extra-hosts'] as const) {
    for (const [k, v] of Object.entries(t2[key] ?? {})) {
      if (v === null) continue;
      (t[key] ??= {})[k] = v;
    }
  }
  for (const [k, v] of Object.entries(t2.contexts ?? {})) (t.contexts ??= {})[k] = v;
  if (t2.tags !== undefined) t.tags = t2.tags;
  if (t2.target !== undefined) t.target = t2.target;
  if (t2.call !== undefined) t.call = t2.call;
  if (t2.annotations !== undefined) t.annotations = [...(t.annotations ?? []), ...t2.annotations];
  if (t2.attest !== undefined) t.attest = mergeList(t.attest, t2.attest);
  if (t2.secret !== undefined) t.secret = mergeList(t.secret, t2.secret);
  if (t2.ssh !== undefined) t.ssh = mergeList(t.ssh, t2.ssh);
  if (t2.platforms !== undefined) t.platforms = t2.platforms;
  if (t2['cache-from'] !== undefined) t['cache-from'] = mergeList(t['cache-from'], t2['cache-from']);
  if (t2['cache-to'] !== undefined) t['cache-to'] = t2['cache-to'];
  if (t2.output !== undefined) t.output = t2.output;
  if (t2.pull !== undefined) t.pull = t2.pull;
  if (t2['no-cache'] !== undefined) t['no-cache'] = t2['no-cache'];
  if (t2.network !== undefined) t.network = t2.network;
  if (t2['no-cache-filter'] !== undefined) t['no-cache-filter'] = [...(t['no-cache-filter'] ?? []), ...t2['no-cache-filter']];
  if (t2['shm-size'] !== undefined) t['shm-size'] = t2['shm-size'];
  if (t2.ulimits !== undefined) t.ulimits = [...(t.ulimits ?? []), ...t2.ulimits];
  if (t2.description) t.description = t2.description;
  if (t2.entitlements !== undefined) t.entitlements = [...(t.entitlements ?? []), ...t2.entitlements];
  t.inherits = [...(t.inherits ?? []), ...(t2.inherits ?? [])];
}

/** buildx's normalize(): duplicates dropped, network=host asks for its entitlement, empty contexts removed. */
export function normalizeTarget(t: Target): void {
  const set = <K extends keyof Target>(k: K, v: Target[K] | undefined) => {
    if (v === undefined) delete t[k];
    else t[k] = v;
  };
  set('annotations', removeDupesStr(t.annotations));
  set('attest', removeDupes(t.attest));
  set('tags', removeDupesStr(t.tags));
  set('secret', removeDupes(t.secret));
  set('ssh', removeDupes(t.ssh));
  set('platforms', removeDupesStr(t.platforms));
  set('cache-from', removeDupes(t['cache-from']));
  set('cache-to', removeDupes(t['cache-to']));
  set('output', removeDupes(t.output));
  set('no-cache-filter', removeDupesStr(t['no-cache-filter']));
  set('ulimits', removeDupesStr(t.ulimits));
  if (t.network === 'host') t.entitlements = [...(t.entitlements ?? []), 'network.host'];
  set('entitlements', removeDupesStr(t.entitlements));
  if (t.contexts) {
    for (const [k, v] of Object.entries(t.contexts)) if (v === '') delete t.contexts[k];
    if (Object.keys(t.contexts).length === 0) delete t.contexts;
  }
}

/** A deep copy (targets are merged in place). */
export function cloneTarget(t: Target): Target {
  return structuredClone(t);
}
