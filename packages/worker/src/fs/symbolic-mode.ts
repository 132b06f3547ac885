import { InvalidArgumentError } from '@kiln/common';

/** Computes a file's new permission bits from its current mode and kind. */
export type ModeChange = (current: number, isDir: boolean) => number;

const WHO_BITS: Record<string, number> = { u: 0o4700, g: 0o2070, o: 0o1007, a: 0o7777 };

/**
 * Parses a chmod-style symbolic mode ("u+x", "go-w,a+X", "u=rwx,g=rx,o=")
 * as `COPY --chmod` accepts it: comma-separated clauses of who (u, g, o, a;
 * none means a), an operator (+, - or =) and permissions (r, w, x, X =
 * execute only for directories or files already executable by someone, s,
 * t). An octal string sets the bits outright. Throws InvalidArgumentError
 * naming the mode on anything else.
 */
export function parseSymbolicMode(spec: string): ModeChange {
  if (/^[0-7]{1,4}$/.test(spec)) {
    const bits = parseInt(spec, 8);
    return () => bits;
  }
  const clauses = spec.split(',').map((clause) => {
    const m = /^([ugoa]*)([+\-=])([rwxXst]*)$/.exec(clause);
    if (!m) throw new InvalidArgumentError(`invalid chmod mode "${spec}": clause "${clause}" is not [ugoa][+-=][rwxXst]`, 'mode_str');
    const whoMask = (m[1] || 'a').split('').reduce((acc, w) => acc | WHO_BITS[w]!, 0);
    return { whoMask, op: m[2]!, perms: m[3]! };
  });
  return (current, isDir) => {
    let mode = current & 0o7777;
    for (const { whoMask, op, perms } of clauses) {
      let bits = 0;
      for (const p of perms) {
        if (p === 'r') bits |= 0o444;
        else if (p === 'w') bits |= 0o222;
        else if (p === 'x') bits |= 0o111;
        else if (p === 'X' && (isDir || (mode & 0o111) !== 0)) bits |= 0o111;
        else if (p === 's') bits |= 0o6000;
        else if (p === 't') bits |= 0o1000;
      }
      bits &= whoMask;
      if (op === '+') mode |= bits;
      else if (op === '-') mode &= ~bits;
      else mode = (mode & ~(whoMask & 0o7777)) | bits;
    }
    return mode;
  };
}
