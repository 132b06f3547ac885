import { InvalidArgumentError } from '@kiln/common';

/** One parsed `list` filter (see ContentStore.list for the grammar). */
export type Filter =
  | { field: 'label'; key: string; op: '==' | '!='; value: string }
  | { field: 'label'; key: string; op: 'present' }
  | { field: 'digest'; op: '==' | '!='; value: string };

export function parseFilter(filter: string): Filter {
  const bad = (why: string) =>
    new InvalidArgumentError(
      `invalid filter ${JSON.stringify(filter)}: ${why} (want labels.KEY==VALUE, labels.KEY!=VALUE, labels.KEY or digest==DIGEST)`,
      'filters',
    );
  if (typeof filter !== 'string') throw bad('not a string');

  let rest: string;
  let key: string | undefined;
  if (filter.startsWith('labels.')) {
    rest = filter.slice('labels.'.length);
    if (rest.startsWith('"')) {
      const m = /^"(?:[^"\\]|\\.)*"/.exec(rest);
      if (!m) throw bad('unterminated quoted key');
      key = parseJsonString(m[0], bad);
      rest = rest.slice(m[0].length);
    } else {
      const at = operatorIndex(rest);
      key = at < 0 ? rest : rest.slice(0, at);
      rest = at < 0 ? '' : rest.slice(at);
      // "labels.k=v" is almost surely a typo for "=="; such a key can be quoted.
      if (key.includes('=')) throw bad('"=" in an unquoted key (use "==", or quote the key)');
    }
    if (key === '') throw bad('empty label key');
  } else if (filter.startsWith('digest')) {
    rest = filter.slice('digest'.length);
  } else {
    throw bad('unknown field');
  }

  if (rest === '') {
    if (key === undefined) throw bad('missing operator');
    return { field: 'label', key, op: 'present' };
  }
  const op = rest.slice(0, 2);
  if (op !== '==' && op !== '!=') throw bad('unknown operator');
  let value = rest.slice(2);
  if (value.startsWith('"')) value = parseJsonString(value, bad);
  return key === undefined ? { field: 'digest', op, value } : { field: 'label', key, op, value };
}

/** SQL conditions (on `blobs b`) and their parameters for `filters`, all ANDed. */
export function compileFilters(filters: readonly string[]): { sql: string; params: string[] } {
  const conds: string[] = [];
  const params: string[] = [];
  const label = 'EXISTS (SELECT 1 FROM labels l WHERE l.digest = b.digest AND l.key = ?';
  for (const f of filters.map(parseFilter)) {
    if (f.field === 'digest') {
      conds.push(f.op === '==' ? 'b.digest = ?' : 'b.digest <> ?');
      params.push(f.value);
    } else if (f.op === 'present') {
      conds.push(`${label})`);
      params.push(f.key);
    } else {
      conds.push(`${label} AND l.value ${f.op === '==' ? '=' : '<>'} ?)`);
      params.push(f.key, f.value);
    }
  }
  return { sql: conds.map((c) => ` AND ${c}`).join(''), params };
}

function operatorIndex(s: string): number {
  const eq = s.indexOf('==');
  const ne = s.indexOf('!=');
  if (eq < 0) return ne;
  if (ne < 0) return eq;
  return Math.min(eq, ne);
}

function parseJsonString(s: string, bad: (why: string) => Error): string {
  try {
    const v: unknown = JSON.parse(s);
    if (typeof v === 'string') return v;
  } catch {
    // reported below
  }
  throw bad('bad quoted string');
}
