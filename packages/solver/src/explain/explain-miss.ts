import type { StepRecord } from './step-record.js';

/** The steps of the closest earlier build, by vertex digest. */
export interface PreviousBuild {
  ref: string;
  steps: ReadonlyMap<string, StepRecord>;
}

/** Context files named per explanation; the rest are counted ("+K more"). */
export const MAX_FILES_NAMED = 10;

export const FIRST_BUILD = 'first build of this step';

/** Names whose values are never printed (build args and ENV holding credentials). */
const SECRET_NAME = /secret|passw|token|key|credential|auth|private|cert/i;

/**
 * The step of `prev` that `cur` is "the same step" as: the identical
 * vertex; else the one at the same position with the same line text; else
 * one with the same line text and op kind elsewhere (lines inserted above
 * moved it); else whatever sits at its position (the line was edited);
 * else the same position on another platform.
 */
export function matchStep(cur: StepRecord, prev: PreviousBuild): StepRecord | undefined {
  const same = prev.steps.get(cur.digest);
  if (same) return same;
  const ix = indexOf(prev);
  const at = (key: string) => ix.get(key);
  return (
    at(`p\0${cur.platform}\0${cur.position}\0${cur.line}`) ??
    (cur.line ? at(`l\0${cur.platform}\0${cur.kind}\0${cur.line}`) : undefined) ??
    at(`p\0${cur.platform}\0${cur.position}`) ??
    at(`a\0${cur.position}`)
  );
}

/** Lookups matchStep makes, built once per previous build (first step in definition order wins). */
const indexes = new WeakMap<PreviousBuild, Map<string, StepRecord>>();

function indexOf(prev: PreviousBuild): Map<string, StepRecord> {
  let ix = indexes.get(prev);
  if (ix) return ix;
  ix = new Map();
  for (const s of prev.steps.values()) {
    for (const key of [`p\0${s.platform}\0${s.position}\0${s.line}`, `l\0${s.platform}\0${s.kind}\0${s.line}`, `p\0${s.platform}\0${s.position}`, `a\0${s.position}`]) {
      if (!ix.has(key)) ix.set(key, s);
    }
  }
  indexes.set(prev, ix);
  return ix;
}

/**
 * One line saying why `cur` ran instead of coming from the cache: what its
 * key's inputs changed against the same step of `prev` (see matchStep).
 * `current` holds the steps of this build so far (its parents included).
 * `noCache` is the build's `no-cache` frontend attr.
 */
export function explainMiss(cur: StepRecord, current: ReadonlyMap<string, StepRecord>, prev: PreviousBuild | undefined, noCache: string | undefined): string {
  if (cur.noCache) return noCache === undefined ? 'cache bypassed for this step' : noCache.trim() === '' ? '--no-cache' : `--no-cache-filter ${noCache}`;
  const old = prev && matchStep(cur, prev);
  if (!prev || !old) return FIRST_BUILD;
  const own: string[] = [];
  if (old.worker !== cur.worker) own.push(`worker changed: ${old.worker} → ${cur.worker}`);
  if (old.platform !== cur.platform) own.push(`platform changed: ${old.platform || 'default'} → ${cur.platform || 'default'}`);
  if (cur.kind === 'source' && old.source !== cur.source) own.push(describeSourceChange(old.source ?? '', cur.source ?? ''));
  else if (old.line !== cur.line) own.push(`Dockerfile line changed: ${old.line || '(none)'} → ${cur.line || '(none)'}`);
  const env = describeEnvChange(old.env ?? [], cur.env ?? []);
  if (env) own.push(env);
  if (own.length === 0 && old.fields !== cur.fields) own.push(`step definition changed (${cur.kind} op fields)`);
  if (own.length > 0) return own.join('; ');
  for (let i = 0; i < cur.inputs.length; i++) {
    if (cur.inputs[i] === old.inputs[i]) continue;
    const parent = current.get(cur.parents[i] ?? '');
    const oldParent = prev.steps.get(old.parents[i] ?? '');
    if (parent?.files && oldParent?.files) return describeFilesChange(oldParent.files, parent.files, cur.reads[i] ?? null);
    if (parent?.kind === 'source' && parent.source?.startsWith('local://')) return 'context files changed';
    return `parent step changed: ${parent?.name ?? cur.parents[i]}`;
  }
  if (cur.inputs.length !== old.inputs.length) return `inputs changed: ${old.inputs.length} → ${cur.inputs.length}`;
  return `same inputs as build ${prev.ref}; its cache entry is gone (pruned)`;
}

function describeSourceChange(old: string, cur: string): string {
  const [oldRef, oldDigest] = splitPinned(old);
  const [ref, digest] = splitPinned(cur);
  if (oldRef === ref && oldDigest !== digest) return `base image ${stripScheme(ref)}: ${oldDigest || '(unpinned)'} → ${digest || '(unpinned)'}`;
  return `source changed: ${stripScheme(old)} → ${stripScheme(cur)}`;
}

function splitPinned(identifier: string): [string, string] {
  const at = identifier.lastIndexOf('@sha256:');
  return at < 0 ? [identifier, ''] : [identifier.slice(0, at), identifier.slice(at + 1)];
}

function stripScheme(identifier: string): string {
  return identifier.replace(/^docker-image:\/\//, '');
}

/** Changed, added and removed variables, values hidden for secret-looking names; '' when equal. */
export function describeEnvChange(old: readonly string[], cur: readonly string[]): string {
  const a = envMap(old);
  const b = envMap(cur);
  const parts: string[] = [];
  for (const [name, value] of b) {
    const was = a.get(name);
    if (was === value) continue;
    const hidden = SECRET_NAME.test(name);
    if (was === undefined) parts.push(hidden ? `${name} added (value hidden)` : `${name} added: ${JSON.stringify(value)}`);
    else parts.push(hidden ? `${name} changed (value hidden)` : `${name}: ${JSON.stringify(was)} → ${JSON.stringify(value)}`);
  }
  for (const name of a.keys()) if (!b.has(name)) parts.push(`${name} removed`);
  return parts.length === 0 ? '' : `build arg or ENV changed: ${parts.join(', ')}`;
}

function envMap(env: readonly string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const kv of env) {
    const eq = kv.indexOf('=');
    m.set(eq < 0 ? kv : kv.slice(0, eq), eq < 0 ? '' : kv.slice(eq + 1));
  }
  return m;
}

/**
 * The context files that differ, restricted to the paths the step reads
 * (`reads`: absolute selectors, globs allowed) when any of those differ.
 */
export function describeFilesChange(old: Readonly<Record<string, string>>, cur: Readonly<Record<string, string>>, reads: readonly string[] | null): string {
  const changes: string[] = [];
  for (const [path, digest] of Object.entries(cur)) {
    if (!(path in old)) changes.push(`${path} (added)`);
    else if (old[path] !== digest) changes.push(`${path} (changed)`);
  }
  for (const path of Object.keys(old)) if (!(path in cur)) changes.push(`${path} (removed)`);
  changes.sort();
  const read = reads ? changes.filter((c) => reads.some((r) => readsPath(r, c.slice(0, c.lastIndexOf(' ('))))) : changes;
  const shown = read.length > 0 ? read : changes;
  if (shown.length === 0) return 'context files changed (modes or owners)';
  const more = shown.length > MAX_FILES_NAMED ? `, +${shown.length - MAX_FILES_NAMED} more` : '';
  return `context files changed: ${shown.slice(0, MAX_FILES_NAMED).join(', ')}${more}`;
}

/** Whether selector `sel` ("/dir", "/*.txt") covers context path `path` ("dir/a.txt"). */
function readsPath(sel: string, path: string): boolean {
  const s = sel.replace(/^\/+/, '').replace(/\/+$/, '');
  if (s === '' || s === '.') return true;
  if (!/[*?[]/.test(s)) return path === s || path.startsWith(`${s}/`);
  const re = new RegExp(`^${s.split('/').map(globPart).join('/')}(/.*)?$`);
  return re.test(path);
}

function globPart(part: string): string {
  if (part === '**') return '.*';
  return part.replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]');
}
