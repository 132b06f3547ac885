/** "did you mean" hints, as BuildKit's util/suggest: the nearest option within an edit distance of 2. */

export function levenshtein(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

/**
 * The option nearest to `word` (edit distance below 3), or undefined; also
 * undefined when `word` is itself an option (the mistake is elsewhere).
 * Case-insensitive matching returns the option in the word's case when the
 * word is all lower or all upper case (`FNTRYPOINT` → `ENTRYPOINT`).
 */
export function closest(word: string, options: Iterable<string>, caseSensitive = true): string | undefined {
  const val = caseSensitive ? word : word.toLowerCase();
  let match: string | undefined;
  let minDist = 3;
  for (const raw of options) {
    const opt = caseSensitive ? raw : raw.toLowerCase();
    if (opt === val) return undefined;
    const d = levenshtein(val, opt);
    if (d < minDist) {
      match = caseSensitive ? opt : matchCase(opt, word);
      minDist = d;
    }
  }
  return match;
}

function matchCase(opt: string, word: string): string {
  if (word === word.toLowerCase()) return opt.toLowerCase();
  if (word === word.toUpperCase()) return opt.toUpperCase();
  return opt;
}

/** " (did you mean X?)" or "". */
export function suggestWord(word: string, options: Iterable<string>, caseSensitive = true): string {
  const c = closest(word, options, caseSensitive);
  return c ? ` (did you mean ${c}?)` : '';
}
