/**
 * The frontend's answers to buildx's `--call` (BuildKit's subrequests):
 * `frontend.targets` lists the stages, `frontend.lint` reports the build
 * checks. Each answer is a `result.json` and the `result.txt` buildx prints.
 */
import { parseInstructions } from '../instructions/index.js';
import { parseDockerfile } from '../parser/index.js';
import type { BuildWarning } from './checks.js';

export const REQUEST_TARGETS = 'frontend.targets';
export const REQUEST_LINT = 'frontend.lint';

export interface Target {
  name?: string;
  default?: boolean;
  description?: string;
  base?: string;
  platform?: string;
  location?: { sourceIndex: number; ranges: { start: { line: number }; end: { line: number } }[] };
}

/** Every stage of the Dockerfile, the last one the default (BuildKit's ListTargets). */
export function listTargets(text: string, filename = 'Dockerfile'): Target[] {
  const { stages } = parseInstructions(parseDockerfile(text, { filename }));
  return stages.map((s, i) => ({
    ...(s.name ? { name: s.name } : {}),
    ...(i === stages.length - 1 ? { default: true } : {}),
    ...(s.comment ? { description: s.comment } : {}),
    base: s.baseName,
    ...(s.platform ? { platform: s.platform } : {}),
    location: { sourceIndex: 0, ranges: [{ start: { line: s.line }, end: { line: s.line } }] },
  }));
}

/** The targets table buildx prints: TARGET and DESCRIPTION columns, the default marked. */
export function formatTargets(targets: readonly Target[]): string {
  const rows = [['TARGET', 'DESCRIPTION']];
  for (const t of targets) {
    const name = t.name ?? '';
    rows.push([t.default ? (name ? `${name} (default)` : '(default)') : name, t.description ?? '']);
  }
  return tabulate(rows, 1);
}

/** Go's text/tabwriter with minwidth 0 and `padding` spaces: every column but the last padded to its widest cell. */
export function tabulate(rows: string[][], padding: number): string {
  const widths: number[] = [];
  for (const r of rows) r.slice(0, -1).forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length + padding)));
  return rows.map((r) => r.map((cell, i) => (i < r.length - 1 ? cell.padEnd(widths[i]!) : cell)).join('') + '\n').join('');
}

/**
 * The build checks as buildx's `--call=check` shows them: each warning with
 * its rule, URL, message and the Dockerfile lines around it (BuildKit's
 * source print: the line marked `>>>`), and a status code of 1 when any.
 */
export function lintReport(warnings: readonly BuildWarning[], text: string, filename: string): { json: string; txt: string; statusCode: number } {
  const sorted = [...warnings].sort((a, b) => a.line - b.line);
  const lines = text.split('\n');
  let txt = '';
  for (const w of sorted) {
    txt += `\nWARNING: ${w.rule} - ${w.url}\n${w.message}\n${sourceSnippet(lines, filename, w.line, w.endLine)}`;
  }
  const json = JSON.stringify(
    {
      warnings: sorted.map((w) => ({
        ruleName: w.rule,
        description: w.description,
        url: w.url,
        detail: w.message,
        location: { sourceIndex: 0, ranges: [{ start: { line: w.line }, end: { line: w.endLine } }] },
      })),
      sources: [{ filename, language: 'Dockerfile', data: Buffer.from(text).toString('base64') }],
    },
    null,
    2,
  );
  return { json, txt, statusCode: sorted.length > 0 ? 1 : 0 };
}

/** BuildKit's source print: up to four lines of context around a one-line range (two around a longer one). */
export function sourceSnippet(lines: readonly string[], filename: string, first: number, last: number): string {
  if (first < 1 || first > lines.length) return '';
  let start = first;
  let end = Math.min(last, lines.length);
  const context = end === start ? 4 : 2;
  for (let added = 0; added < context; added++) {
    if (start > 1) {
      start--;
      added++;
    }
    if (end !== lines.length) {
      end++;
      added++;
    }
  }
  let out = `${filename}:${first}\n--------------------\n`;
  for (let i = start; i <= end; i++) {
    const mark = i >= first && i <= Math.max(first, last) ? '>>>' : '   ';
    out += ` ${String(i).padStart(3)} | ${mark} ${lines[i - 1]}\n`;
  }
  return `${out}--------------------\n`;
}
