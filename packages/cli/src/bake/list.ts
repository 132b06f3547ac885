import { UsageError } from '../flags/usage-error.js';
import { parseCsv } from '../flags/csv.js';
import type { BakeConfig } from './target.js';

/** `--list=targets` or `--list=type=targets,format=json`, as buildx parses it (only targets for now). */
export function parseListFlag(value: string): { type: 'targets'; format: 'table' | 'json' } {
  let type = '';
  let format = 'table';
  const fields = parseCsv(value, '--list');
  if (fields.length === 1 && !value.includes('=')) type = value;
  else {
    for (const f of fields) {
      const eq = f.indexOf('=');
      if (eq < 0) throw new UsageError(`invalid value ${f}`, '--list');
      const key = f.slice(0, eq).trim().toLowerCase();
      if (key === 'type') type = f.slice(eq + 1);
      else if (key === 'format') format = f.slice(eq + 1);
      else throw new UsageError(`unexpected key '${key}' in '${f}'`, '--list');
    }
  }
  if (type === 'variables') throw new UsageError('--list=variables is not supported yet (use --print)', '--list');
  if (type !== 'targets') throw new UsageError(`invalid list type "${type}"`, '--list');
  if (format !== 'table' && format !== 'json') throw new UsageError(`invalid list format "${format}"`, '--list');
  return { type, format };
}

/** Go's text/tabwriter with minwidth 1, tabwidth 8, padding 1 and tabs as padding (buildx's table). */
function tabTable(rows: readonly [string, string][]): string {
  const width = Math.max(1, ...rows.map((r) => [...r[0]].length + 1));
  const cell = Math.ceil(width / 8) * 8;
  return rows.map(([a, b]) => `${a}${'\t'.repeat(Math.ceil((cell - [...a].length) / 8))}${b}\n`).join('');
}

/**
 * buildx's `bake --list=targets`: targets and groups sorted by name (names
 * starting with `_` are private and left out); a group's description lists
 * its targets.
 */
export function listTargets(config: BakeConfig, format: 'table' | 'json'): string {
  const entries = [
    ...config.targets.map((t) => ({ name: t.name, description: t.description ?? '', group: false })),
    ...config.groups.map((g) => {
      const names = [...g.targets].sort().join(', ');
      const description = g.description ? (names ? `${g.description} (${names})` : g.description) : names;
      return { name: g.name, description, group: true };
    }),
  ]
    .filter((e) => !e.name.startsWith('_'))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  if (format === 'json') {
    const list = entries.map((e) => ({ name: e.name, ...(e.description ? { description: e.description } : {}), ...(e.group ? { group: true } : {}) }));
    return `${JSON.stringify(list, null, 2)}\n`;
  }
  return tabTable([['TARGET', 'DESCRIPTION'], ...entries.map((e): [string, string] => [e.name, e.description])]);
}
