/** A google.protobuf.Timestamp as protobuf-es gives it. */
export interface Timestamp {
  seconds: bigint;
  nanos: number;
}

/** Milliseconds since the epoch, or undefined for an absent (or zero) timestamp. */
export function timestampMs(t: Timestamp | undefined): number | undefined {
  if (!t || (t.seconds === 0n && t.nanos === 0)) return undefined;
  return Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6);
}

/** "850ms", "12.3s", "4m05s". */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

/** "512 B", "3.4 MiB". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

/** "14:03:07" today, else "2026-12-06 14:03". */
export function formatClock(ms: number, now = Date.now()): string {
  const d = new Date(ms);
  const pad = (x: number) => String(x).padStart(2, '0');
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return new Date(now).toDateString() === d.toDateString() ? time : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time.slice(0, 5)}`;
}
