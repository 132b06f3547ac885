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
