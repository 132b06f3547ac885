import { createHash, randomUUID } from 'node:crypto';
import { homedir } from 'node:os';
import { posix } from 'node:path';
import { InvalidArgumentError } from '@kiln/common';
import type { HclValue } from './hcl-eval.js';

/** A function callable from a bake file's expressions. */
export type HclFunction = (args: HclValue[]) => HclValue | Promise<HclValue>;

type Fn = (args: HclValue[], fail: (msg: string) => never) => HclValue;

const str = (v: HclValue | undefined, fail: (m: string) => never): string => {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return fail(`a string is required, got ${JSON.stringify(v ?? null)}`);
};
const num = (v: HclValue | undefined, fail: (m: string) => never): number => {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && v.trim() !== '' && !Number.isNaN(Number(v))) return Number(v);
  return fail(`a number is required, got ${JSON.stringify(v ?? null)}`);
};
const list = (v: HclValue | undefined, fail: (m: string) => never): HclValue[] => {
  if (Array.isArray(v)) return v;
  return fail(`a list is required, got ${JSON.stringify(v ?? null)}`);
};
const obj = (v: HclValue | undefined, fail: (m: string) => never): Record<string, HclValue> => {
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) return v;
  return fail(`an object is required, got ${JSON.stringify(v ?? null)}`);
};
const bool = (v: HclValue | undefined, fail: (m: string) => never): boolean => {
  if (typeof v === 'boolean') return v;
  if (v === 'true' || v === 'false') return v === 'true';
  return fail(`a bool is required, got ${JSON.stringify(v ?? null)}`);
};
const same = (a: HclValue, b: HclValue): boolean => JSON.stringify(a) === JSON.stringify(b);
const hash = (alg: string) => (a: HclValue[], f: (m: string) => never) => createHash(alg).update(str(a[0], f)).digest('hex');

/**
 * Go's fmt verbs as HCL's format() takes them: %s %d %f %q %v %t %% with
 * optional flags/width/precision (width and precision as fmt does for the
 * common cases).
 */
function format(args: HclValue[], fail: (m: string) => never): string {
  const spec = str(args[0], fail);
  let i = 1;
  return spec.replace(/%([-+ 0#]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])/g, (_m, flags: string, width: string | undefined, prec: string | undefined, verb: string) => {
    if (verb === '%') return '%';
    if (i >= args.length) return fail(`format: not enough arguments for ${JSON.stringify(spec)}`);
    const v = args[i++]!;
    let out: string;
    switch (verb) {
      case 's':
        out = str(v, fail);
        break;
      case 'd':
        out = String(Math.trunc(num(v, fail)));
        break;
      case 'f':
        out = num(v, fail).toFixed(prec === undefined ? 6 : Number(prec));
        break;
      case 'q':
        out = JSON.stringify(str(v, fail));
        break;
      case 't':
        out = String(bool(v, fail));
        break;
      case 'v':
        out = typeof v === 'string' ? v : JSON.stringify(v);
        break;
      default:
        return fail(`format: unsupported verb %${verb}`);
    }
    if (flags.includes('+') && (verb === 'd' || verb === 'f') && !out.startsWith('-')) out = `+${out}`;
    const w = width === undefined ? 0 : Number(width);
    if (out.length < w) out = flags.includes('-') ? out.padEnd(w) : flags.includes('0') && verb !== 's' ? out.padStart(w, '0') : out.padStart(w);
    return out;
  });
}

/** Terraform's formatdate() tokens (YYYY YY MM M DD D hh h HH mm m ss s ZZZ Z, 'literal'), in UTC. */
function formatdate(args: HclValue[], fail: (m: string) => never): string {
  const spec = str(args[0], fail);
  const when = new Date(str(args[1], fail));
  if (Number.isNaN(when.getTime())) return fail(`formatdate: not an RFC 3339 timestamp: ${JSON.stringify(args[1])}`);
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  const months = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
  const days = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
  const tokens: Record<string, () => string> = {
    YYYY: () => pad(when.getUTCFullYear(), 4),
    YY: () => pad(when.getUTCFullYear() % 100),
    MMMM: () => months[when.getUTCMonth()]!,
    MMM: () => months[when.getUTCMonth()]!.slice(0, 3),
    MM: () => pad(when.getUTCMonth() + 1),
    M: () => String(when.getUTCMonth() + 1),
    DD: () => pad(when.getUTCDate()),
    D: () => String(when.getUTCDate()),
    EEEE: () => days[when.getUTCDay()]!,
    EEE: () => days[when.getUTCDay()]!.slice(0, 3),
    hh: () => pad(when.getUTCHours()),
    h: () => String(when.getUTCHours()),
    HH: () => pad(when.getUTCHours() % 12 || 12),
    H: () => String(when.getUTCHours() % 12 || 12),
    AA: () => (when.getUTCHours() < 12 ? 'AM' : 'PM'),
    aa: () => (when.getUTCHours() < 12 ? 'am' : 'pm'),
    mm: () => pad(when.getUTCMinutes()),
    m: () => String(when.getUTCMinutes()),
    ss: () => pad(when.getUTCSeconds()),
    s: () => String(when.getUTCSeconds()),
    ZZZZZ: () => '+00:00',
    ZZZZ: () => '+0000',
    ZZZ: () => 'UTC',
    Z: () => 'Z',
  };
  return spec.replace(/'([^']*)'|YYYY|YY|MMMM|MMM|MM|M|DD|D|EEEE|EEE|hh|h|HH|H|AA|aa|mm|m|ss|s|ZZZZZ|ZZZZ|ZZZ|Z/g, (t, lit: string | undefined) => (lit !== undefined ? lit : tokens[t]!()));
}

/** The functions buildx's bake ships (go-cty's stdlib) that Kiln implements; see README "kiln bake". */
const FUNCTIONS: Record<string, Fn> = {
  // strings
  lower: (a, f) => str(a[0], f).toLowerCase(),
  upper: (a, f) => str(a[0], f).toUpperCase(),
  title: (a, f) => str(a[0], f).replace(/\b\p{L}/gu, (c) => c.toUpperCase()),
  join: (a, f) => a.slice(1).flatMap((l) => list(l, f)).map((v) => str(v, f)).join(str(a[0], f)),
  split: (a, f) => str(a[1], f).split(str(a[0], f)),
  replace: (a, f) => {
    const s = str(a[0], f);
    const sub = str(a[1], f);
    // As Terraform: a substring in slashes is a regular expression.
    if (sub.length > 1 && sub.startsWith('/') && sub.endsWith('/')) return s.replace(new RegExp(sub.slice(1, -1), 'g'), str(a[2], f).replace(/\$\{?(\w+)\}?/g, '$<$1>').replace(/\$<(\d+)>/g, '$$$1'));
    return s.split(sub).join(str(a[2], f));
  },
  regex_replace: (a, f) => str(a[0], f).replace(new RegExp(str(a[1], f), 'g'), str(a[2], f).replace(/\$\{(\w+)\}/g, '$$$1')),
  trim: (a, f) => {
    const cut = new Set(str(a[1], f));
    const s = [...str(a[0], f)];
    while (s.length > 0 && cut.has(s[0]!)) s.shift();
    while (s.length > 0 && cut.has(s[s.length - 1]!)) s.pop();
    return s.join('');
  },
  trimprefix: (a, f) => {
    const s = str(a[0], f);
    const p = str(a[1], f);
    return s.startsWith(p) ? s.slice(p.length) : s;
  },
  trimsuffix: (a, f) => {
    const s = str(a[0], f);
    const p = str(a[1], f);
    return p !== '' && s.endsWith(p) ? s.slice(0, -p.length) : s;
  },
  trimspace: (a, f) => str(a[0], f).trim(),
  chomp: (a, f) => str(a[0], f).replace(/(\r?\n)+$/, ''),
  indent: (a, f) => str(a[1], f).replace(/\n/g, `\n${' '.repeat(num(a[0], f))}`),
  strlen: (a, f) => [...str(a[0], f)].length,
  substr: (a, f) => {
    const s = [...str(a[0], f)];
    let off = num(a[1], f);
    if (off < 0) off = s.length + off;
    const len = num(a[2], f);
    return s.slice(off, len < 0 ? undefined : off + len).join('');
  },
  format: (a, f) => format(a, f),
  formatlist: (a, f) => {
    const lists = a.slice(1).filter(Array.isArray);
    const n = lists.length > 0 ? Math.min(...lists.map((l) => l.length)) : 0;
    return Array.from({ length: n }, (_v, i) => format([a[0]!, ...a.slice(1).map((v) => (Array.isArray(v) ? v[i]! : v))], f));
  },
  sanitize: (a, f) => str(a[0], f).replace(/[^a-zA-Z0-9_]/g, '_'),
  // comparison and logic (buildx names them as functions too)
  equal: (a) => same(a[0] ?? null, a[1] ?? null),
  notequal: (a) => !same(a[0] ?? null, a[1] ?? null),
  and: (a, f) => bool(a[0], f) && bool(a[1], f),
  or: (a, f) => bool(a[0], f) || bool(a[1], f),
  not: (a, f) => !bool(a[0], f),
  greaterthan: (a, f) => num(a[0], f) > num(a[1], f),
  greaterthanorequalto: (a, f) => num(a[0], f) >= num(a[1], f),
  lessthan: (a, f) => num(a[0], f) < num(a[1], f),
  lessthanorequalto: (a, f) => num(a[0], f) <= num(a[1], f),
  // numbers
  add: (a, f) => num(a[0], f) + num(a[1], f),
  subtract: (a, f) => num(a[0], f) - num(a[1], f),
  multiply: (a, f) => num(a[0], f) * num(a[1], f),
  divide: (a, f) => num(a[0], f) / num(a[1], f),
  modulo: (a, f) => num(a[0], f) % num(a[1], f),
  negate: (a, f) => -num(a[0], f),
  absolute: (a, f) => Math.abs(num(a[0], f)),
  ceil: (a, f) => Math.ceil(num(a[0], f)),
  floor: (a, f) => Math.floor(num(a[0], f)),
  max: (a, f) => Math.max(...a.map((v) => num(v, f))),
  min: (a, f) => Math.min(...a.map((v) => num(v, f))),
  pow: (a, f) => num(a[0], f) ** num(a[1], f),
  signum: (a, f) => Math.sign(num(a[0], f)),
  int: (a, f) => Math.trunc(num(a[0], f)),
  parseint: (a, f) => {
    const n = parseInt(str(a[0], f), num(a[1], f));
    return Number.isNaN(n) ? f(`parseint: cannot parse ${JSON.stringify(a[0])}`) : n;
  },
  // collections
  coalesce: (a, f) => a.find((v) => v !== null && v !== '') ?? f('coalesce: no non-null, non-empty argument'),
  coalescelist: (a) => a.find((v) => Array.isArray(v) && v.length > 0) ?? [],
  compact: (a, f) => list(a[0], f).filter((v) => v !== null && v !== ''),
  concat: (a, f) => a.flatMap((l) => list(l, f)),
  contains: (a, f) => list(a[0], f).some((v) => same(v, a[1] ?? null)),
  distinct: (a, f) => list(a[0], f).filter((v, i, l) => l.findIndex((w) => same(v, w)) === i),
  element: (a, f) => {
    const l = list(a[0], f);
    if (l.length === 0) return f('element: cannot use element function with an empty list');
    return l[((num(a[1], f) % l.length) + l.length) % l.length]!;
  },
  flatten: (a, f) => {
    const flat = (l: HclValue[]): HclValue[] => l.flatMap((v) => (Array.isArray(v) ? flat(v) : [v]));
    return flat(list(a[0], f));
  },
  index: (a, f) => {
    const i = list(a[0], f).findIndex((v) => same(v, a[1] ?? null));
    return i < 0 ? f('index: item not found') : i;
  },
  keys: (a, f) => Object.keys(obj(a[0], f)).sort(),
  values: (a, f) => {
    const o = obj(a[0], f);
    return Object.keys(o).sort().map((k) => o[k]!);
  },
  length: (a, f) => {
    const v = a[0];
    if (typeof v === 'string') return [...v].length;
    if (Array.isArray(v)) return v.length;
    return Object.keys(obj(v, f)).length;
  },
  lookup: (a, f) => {
    const o = obj(a[0], f);
    const k = str(a[1], f);
    if (Object.hasOwn(o, k)) return o[k]!;
    return a.length > 2 ? a[2]! : f(`lookup: key ${JSON.stringify(k)} not found`);
  },
  merge: (a, f) => Object.assign({}, ...a.filter((v) => v !== null).map((v) => obj(v, f))) as Record<string, HclValue>,
  range: (a, f) => {
    const [start, end, step] = a.length === 1 ? [0, num(a[0], f), 1] : [num(a[0], f), num(a[1], f), a.length > 2 ? num(a[2], f) : 1];
    if (step === 0) return f('range: step must not be zero');
    const out: number[] = [];
    for (let i = start; step > 0 ? i < end : i > end; i += step) {
      out.push(i);
      if (out.length > 1024) return f('range: more than 1024 elements');
    }
    return out;
  },
  reverse: (a, f) => [...list(a[0], f)].reverse(),
  reverselist: (a, f) => [...list(a[0], f)].reverse(),
  slice: (a, f) => list(a[0], f).slice(num(a[1], f), num(a[2], f)),
  sort: (a, f) => list(a[0], f).map((v) => str(v, f)).sort(),
  zipmap: (a, f) => {
    const k = list(a[0], f);
    const v = list(a[1], f);
    return Object.fromEntries(k.map((key, i) => [str(key, f), v[i] ?? null])) as Record<string, HclValue>;
  },
  // encoding, hashing, files, time
  jsonencode: (a) => JSON.stringify(a[0] ?? null),
  jsondecode: (a, f) => {
    try {
      return JSON.parse(str(a[0], f)) as HclValue;
    } catch (err) {
      return f(`jsondecode: ${(err as Error).message}`);
    }
  },
  base64encode: (a, f) => Buffer.from(str(a[0], f), 'utf8').toString('base64'),
  base64decode: (a, f) => Buffer.from(str(a[0], f), 'base64').toString('utf8'),
  urlencode: (a, f) => encodeURIComponent(str(a[0], f)),
  md5: hash('md5'),
  sha1: hash('sha1'),
  sha256: hash('sha256'),
  sha512: hash('sha512'),
  uuidv4: () => randomUUID(),
  basename: (a, f) => posix.basename(str(a[0], f)),
  dirname: (a, f) => posix.dirname(str(a[0], f)),
  homedir: () => homedir(),
  timestamp: () => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
  formatdate: (a, f) => formatdate(a, f),
};

/** Names of the functions available to bake files (the README lists them). */
export const FUNCTION_NAMES: readonly string[] = Object.keys(FUNCTIONS).concat(['can', 'try']).sort();

/** Calls stdlib function `name`; an unknown name or a bad argument is an error naming the file. */
export function callFunction(name: string, args: HclValue[], filename: string): HclValue {
  const fn = FUNCTIONS[name];
  const fail = (msg: string): never => {
    throw new InvalidArgumentError(`${filename}: ${name}(): ${msg}`, filename);
  };
  if (!fn) throw new InvalidArgumentError(`${filename}: there is no function named "${name}"`, filename);
  return fn(args, fail);
}
