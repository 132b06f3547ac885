import { InvalidArgumentError } from '@kiln/common';
import { formatPlatform } from '@kiln/registry';
import type { WorkerHandle } from './workers.js';

/**
 * Worker filters in containerd's filter syntax, as BuildKit's worker
 * constraints and `buildctl debug workers --filter` take them:
 * `id==ID`, `labels.KEY==VALUE` (KEY may be quoted: `labels."a.b"==c`),
 * `platforms==os/arch`, with `!=`, `~=` (regexp) or no operator (the field
 * is present). A comma joins clauses that must all hold; Kiln also requires
 * every filter of a list to hold (a build's constraints add up).
 */
export interface WorkerFilter {
  /** The filter as given, for error messages. */
  readonly text: string;
  matches(w: Pick<WorkerHandle, 'id' | 'labels' | 'platforms'>): boolean;
}

type Clause = (w: Pick<WorkerHandle, 'id' | 'labels' | 'platforms'>) => boolean;

/** Parses one filter; throws InvalidArgumentError naming `field` and the filter. */
export function parseWorkerFilter(text: string, field = 'worker_filter'): WorkerFilter {
  const clauses = splitClauses(text).map((c) => parseClause(c, text, field));
  if (clauses.length === 0) throw new InvalidArgumentError(`empty worker filter "${text}"`, field);
  return { text, matches: (w) => clauses.every((c) => c(w)) };
}

/** Parses a list of filters (all must hold). */
export function parseWorkerFilters(texts: readonly string[], field = 'worker_filter'): WorkerFilter[] {
  return texts.map((t) => parseWorkerFilter(t, field));
}

/** Whether `w` matches every filter. */
export function matchesAll(filters: readonly WorkerFilter[], w: Pick<WorkerHandle, 'id' | 'labels' | 'platforms'>): boolean {
  return filters.every((f) => f.matches(w));
}

/** Splits on commas outside double quotes. */
function splitClauses(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const ch of text) {
    if (ch === '"') quoted = !quoted;
    if (ch === ',' && !quoted) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map((c) => c.trim()).filter((c) => c !== '');
}

const CLAUSE = /^(id|platforms|labels\.(?:"[^"]+"|[^=!~"]+))(?:(==|!=|~=)(.*))?$/;

function parseClause(clause: string, text: string, field: string): Clause {
  const m = CLAUSE.exec(clause);
  if (!m) {
    throw new InvalidArgumentError(`invalid worker filter "${text}": "${clause}" is not id, platforms or labels.KEY followed by ==, != or ~= and a value`, field);
  }
  const [, name, op, rawValue] = m as unknown as [string, string, string | undefined, string | undefined];
  const value = unquote((rawValue ?? '').trim());
  const values: (w: Pick<WorkerHandle, 'id' | 'labels' | 'platforms'>) => string[] =
    name === 'id' ? (w) => [w.id] : name === 'platforms' ? (w) => w.platforms.map(formatPlatform) : labelValues(unquote(name.slice('labels.'.length).trim()));
  if (!op) return (w) => values(w).length > 0;
  if (op === '~=') {
    let re: RegExp;
    try {
      re = new RegExp(value);
    } catch (err) {
      throw new InvalidArgumentError(`invalid worker filter "${text}": bad regular expression "${value}": ${(err as Error).message}`, field);
    }
    return (w) => values(w).some((v) => re.test(v));
  }
  if (op === '==') return (w) => values(w).includes(value);
  return (w) => !values(w).includes(value);
}

function labelValues(key: string): (w: Pick<WorkerHandle, 'labels'>) => string[] {
  return (w) => (Object.hasOwn(w.labels, key) ? [w.labels[key]!] : []);
}

function unquote(s: string): string {
  return s.length >= 2 && s.startsWith('"') && s.endsWith('"') ? s.slice(1, -1) : s;
}
