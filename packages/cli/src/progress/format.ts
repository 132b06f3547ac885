import { escapeControl } from '@kiln/common';

/** Sizes as buildx prints them: "91B", "1.23kB", "3.40MB" (decimal units). */
export function formatBytes(n: number | bigint): string {
  let v = Number(n);
  if (v < 1000) return `${v}B`;
  const units = ['kB', 'MB', 'GB', 'TB', 'PB'];
  let u = -1;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(2)}${units[u]}`;
}

/** Seconds with one decimal: "0.1s". */
export function formatSeconds(ms: number): string {
  return `${(Math.max(0, ms) / 1000).toFixed(1)}s`;
}

/** "3 seconds ago", "2 hours ago", "5 days ago". */
export function formatAgo(ms: number, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  const steps: [number, string][] = [
    [60, 'second'],
    [60, 'minute'],
    [24, 'hour'],
    [30, 'day'],
    [12, 'month'],
    [Number.POSITIVE_INFINITY, 'year'],
  ];
  let v = s;
  for (const [size, unit] of steps) {
    if (v < size) return `${v} ${unit}${v === 1 ? '' : 's'} ago`;
    v = Math.floor(v / size);
  }
  return `${v} years ago`;
}

/** Left-aligned columns separated by at least two spaces (like Go's tabwriter). */
export function formatTable(input: readonly (readonly string[])[]): string {
  // Cells may hold step names from a hostile Dockerfile: escaped before widths are measured.
  const rows = input.map((row) => row.map(escapeControl));
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]! + 2))).join('').trimEnd()).join('\n') + (rows.length ? '\n' : '');
}
