import { posix } from 'node:path';

/**
 * Reads a .dockerignore: one pattern a line, `#` comments, blank lines
 * skipped, surrounding whitespace trimmed, `!` kept for exceptions, paths
 * cleaned and made relative (a leading `/` is dropped), as Docker does.
 */
export function parseDockerignore(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split(/\r?\n/)) {
    let line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    let negate = '';
    if (line.startsWith('!')) {
      negate = '!';
      line = line.slice(1).trim();
    }
    let cleaned = posix.normalize(line);
    cleaned = cleaned.replace(/^\/+/, '');
    if (cleaned === '' || cleaned === '.') continue;
    out.push(negate + cleaned.replace(/\/$/, ''));
  }
  return out;
}
