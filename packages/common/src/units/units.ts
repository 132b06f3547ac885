import { InvalidArgumentError } from '../errors/errors.js';

/**
 * Parses a size like "10GB", "512MiB", "1.5g" or "1000" into bytes: decimal
 * units (k, m, g, t, p) by default, binary ones with an "i". Throws
 * InvalidArgumentError naming `field` on anything else.
 */
export function parseByteSize(value: string, field: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)b?$/i.exec(value.trim());
  if (!m) throw new InvalidArgumentError(`invalid size "${value}" for ${field}: want a size like 10GB or 512MiB`, field);
  const base = m[3] ? 1024 : 1000;
  const exp = ' kmgtp'.indexOf((m[2] || ' ').toLowerCase());
  return Math.round(Number(m[1]) * base ** exp);
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Parses a duration like "48h", "1h30m", "90s", "7d" or "250ms" into
 * milliseconds (Go's time.ParseDuration units plus days). A bare number is
 * seconds. Throws InvalidArgumentError naming `field` on anything else.
 */
export function parseDuration(value: string, field: string): number {
  const v = value.trim();
  if (/^\d+(?:\.\d+)?$/.test(v)) return Math.round(Number(v) * 1000);
  const part = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let consumed = 0;
  for (let m = part.exec(v); m; m = part.exec(v)) {
    total += Number(m[1]) * DURATION_UNITS_MS[m[2]!]!;
    consumed = part.lastIndex;
  }
  if (consumed === 0 || consumed !== v.length) {
    throw new InvalidArgumentError(`invalid duration "${value}" for ${field}: want a duration like 48h, 30m or 7d`, field);
  }
  return Math.round(total);
}

/**
 * Docker's memory sizes (`--shm-size 128m`, `--memory 1g`): a number with
 * an optional binary unit (k, m, g, t, p = powers of 1024, an optional "i"
 * and "b"), bytes without one, as go-units' RAMInBytes.
 */
export function parseRamBytes(value: string, field: string): number {
  const m = /^(\d+(?:\.\d+)?) ?([kmgtp]?)i?b?$/i.exec(value);
  if (!m) throw new InvalidArgumentError(`invalid size: '${value}'`, field);
  return Math.floor(Number(m[1]) * 1024 ** ' kmgtp'.indexOf((m[2] || ' ').toLowerCase()));
}

/** Ulimit names Docker accepts (go-units). */
export const ULIMIT_NAMES: readonly string[] = ['as', 'core', 'cpu', 'data', 'fsize', 'locks', 'memlock', 'msgqueue', 'nice', 'nofile', 'nproc', 'rss', 'rtprio', 'rttime', 'sigpending', 'stack'];

export interface Ulimit {
  name: string;
  soft: number;
  /** -1: unlimited. */
  hard: number;
}

/**
 * A ulimit as Docker spells it, `NAME=SOFT[:HARD]` (hard defaults to soft,
 * -1 is unlimited), with go-units' ParseUlimit checks and messages.
 */
export function parseUlimit(value: string, field: string): Ulimit {
  const eq = value.indexOf('=');
  if (eq < 0) throw new InvalidArgumentError(`invalid ulimit argument: ${value}`, field);
  const name = value.slice(0, eq);
  if (!ULIMIT_NAMES.includes(name)) throw new InvalidArgumentError(`invalid ulimit type: ${name}`, field);
  const parts = value.slice(eq + 1).split(':');
  if (parts.length > 2) throw new InvalidArgumentError(`too many limit value arguments - ${value.slice(eq + 1)}, can only have up to two, \`soft[:hard]\``, field);
  const int = (s: string) => {
    if (!/^[+-]?\d+$/.test(s)) throw new InvalidArgumentError(`invalid ulimit argument: ${value}`, field);
    return Number(s);
  };
  const soft = int(parts[0]!);
  const hard = parts.length === 2 ? int(parts[1]!) : soft;
  if (hard !== -1) {
    if (soft === -1) throw new InvalidArgumentError(`ulimit soft limit must be less than or equal to hard limit: soft: -1 (unlimited), hard: ${hard}`, field);
    if (soft > hard) throw new InvalidArgumentError(`ulimit soft limit must be less than or equal to hard limit: ${soft} > ${hard}`, field);
  }
  return { name, soft, hard };
}
