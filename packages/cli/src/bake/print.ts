import type { ResolvedBake } from './resolve.js';
import type { Target } from './target.js';

/** `--print`'s target fields in buildx's order (its Target struct); empty lists and maps are left out, as Go's omitempty. */
const FIELD_ORDER: readonly (keyof Target)[] = [
  'description',
  'inherits',
  'annotations',
  'attest',
  'context',
  'contexts',
  'dockerfile',
  'dockerfile-inline',
  'args',
  'labels',
  'tags',
  'cache-from',
  'cache-to',
  'target',
  'secret',
  'ssh',
  'platforms',
  'output',
  'pull',
  'no-cache',
  'network',
  'no-cache-filter',
  'shm-size',
  'ulimits',
  'call',
  'entitlements',
  'extra-hosts',
];

/** Values buildx escapes when printing, so the JSON reads back as a bake file: `${` and `%{` doubled. */
const ESCAPED: ReadonlySet<keyof Target> = new Set(['annotations', 'dockerfile-inline', 'labels', 'args', 'extra-hosts']);
const escapeTemplate = (s: string) => s.replace(/\$\{/g, () => '$${').replace(/%\{/g, () => '%%{');

/** A Go map marshals with sorted keys. */
function sortedMap<V>(m: Record<string, V>, f: (v: V) => unknown = (v) => v): Record<string, unknown> {
  return Object.fromEntries(
    Object.keys(m)
      .sort()
      .map((k) => [k, f(m[k]!)]),
  );
}

/** `{type, dest, ...attrs}` with sorted keys, as buildx's entries marshal themselves. */
function entryJson(e: { type: string; dest?: string; attrs: Record<string, string> }): Record<string, unknown> {
  const m: Record<string, string> = { ...e.attrs, type: e.type };
  if (e.dest) m.dest = e.dest;
  return sortedMap(m);
}

function fieldJson(key: keyof Target, t: Target): unknown {
  const v = t[key];
  if (v === undefined) return undefined;
  if (Array.isArray(v) && v.length === 0) return undefined;
  if (v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0) return undefined;
  const esc = ESCAPED.has(key) ? escapeTemplate : (s: string) => s;
  switch (key) {
    case 'cache-from':
    case 'cache-to':
    case 'output':
      return (v as { type: string; dest?: string; attrs: Record<string, string> }[]).map(entryJson);
    case 'attest':
      return (v as Record<string, string>[]).map((a) => sortedMap(a));
    case 'secret':
      return (v as { id?: string; src?: string; env?: string }[]).map((s) => ({ ...(s.id ? { id: s.id } : {}), ...(s.src ? { src: s.src } : {}), ...(s.env ? { env: s.env } : {}) }));
    case 'ssh':
      return (v as { id: string; paths?: string[] }[]).map((s) => ({ ...(s.id ? { id: s.id } : {}), ...(s.paths && s.paths.length > 0 ? { paths: s.paths } : {}) }));
    case 'args':
    case 'labels':
    case 'extra-hosts':
      return sortedMap(v as Record<string, string | null>, (x) => (x === null ? null : esc(x)));
    case 'contexts':
      return sortedMap(v as Record<string, string>);
    case 'annotations':
      return (v as string[]).map(esc);
    case 'dockerfile-inline':
      return esc(v as string);
    default:
      return v;
  }
}

/** One target as buildx marshals it. */
export function targetJson(t: Target): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of FIELD_ORDER) {
    const v = fieldJson(key, t);
    if (v !== undefined) out[key] = v;
  }
  return out;
}

/**
 * `kiln bake --print`: `{"group": {...}, "target": {...}}` as buildx prints
 * it (Go's json.MarshalIndent with two spaces: map keys sorted, `<`, `>`
 * and `&` escaped as \u003c, \u003e, \u0026), ending with a newline.
 */
export function printBake(resolved: ResolvedBake): string {
  const def: Record<string, unknown> = {};
  if (resolved.groups.size > 0) {
    def.group = Object.fromEntries(
      [...resolved.groups.keys()].sort().map((name) => {
        const g = resolved.groups.get(name)!;
        return [name, { ...(g.description ? { description: g.description } : {}), targets: g.targets }];
      }),
    );
  }
  def.target = Object.fromEntries([...resolved.targets.keys()].sort().map((name) => [name, targetJson(resolved.targets.get(name)!)]));
  return `${goJson(JSON.stringify(def, null, 2))}\n`;
}

/** Go's encoder escapes HTML characters and the JS line separators, and writes \b and \f as \u0008 and \u000c. */
function goJson(s: string): string {
  const u = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
  // Escape pairs are consumed whole, so an escaped backslash before "b" stays as it is.
  return s.replace(/\\(.)|[<>&\u2028\u2029]/g, (m, e: string | undefined) => (e === undefined ? u(m) : e === 'b' ? u('\b') : e === 'f' ? u('\f') : m));
}
