import { UsageError } from './usage-error.js';

/**
 * A small pflag-like parser (the library buildx uses): long flags as
 * `--name value` or `--name=value`, short ones as `-n value`, `-nvalue` or
 * `-n=value`, flags and arguments interleaved, `--` ends the flags. Error
 * messages follow pflag's wording and always name the flag.
 */
export type FlagKind = 'string' | 'list' | 'bool';

export interface FlagSpec {
  kind: FlagKind;
  /** One-letter alias, e.g. "f" for --file. */
  short?: string;
}

export type FlagSpecs = Record<string, FlagSpec>;

export type FlagValues<S extends FlagSpecs> = {
  [N in keyof S]: S[N]['kind'] extends 'bool' ? boolean : S[N]['kind'] extends 'list' ? string[] : string | undefined;
};

export interface ParsedFlags<S extends FlagSpecs> {
  flags: FlagValues<S>;
  /** Positional arguments in order. */
  args: string[];
}

/** Parses `argv` (without the command words) against `specs`; throws UsageError. */
export function parseFlags<S extends FlagSpecs>(argv: readonly string[], specs: S): ParsedFlags<S> {
  const values: Record<string, boolean | string[] | string | undefined> = {};
  const byShort = new Map<string, string>();
  for (const [name, spec] of Object.entries(specs)) {
    values[name] = spec.kind === 'bool' ? false : spec.kind === 'list' ? [] : undefined;
    if (spec.short) byShort.set(spec.short, name);
  }
  const args: string[] = [];

  const set = (name: string, display: string, value: string | undefined, next: () => string | undefined) => {
    const spec = specs[name]!;
    if (spec.kind === 'bool') {
      values[name] = value === undefined ? true : parseBool(value, display);
      return;
    }
    const v = value ?? next();
    if (v === undefined) throw new UsageError(`flag needs an argument: ${display}`, `--${name}`);
    if (spec.kind === 'list') (values[name] as string[]).push(v);
    else values[name] = v;
  };

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const next = () => {
      const n = argv[i + 1];
      // A following long flag is not taken as the value: `-t --push` is a
      // forgotten value far more often than a tag named "--push".
      if (n === undefined || (n.startsWith('--') && n !== '-')) return undefined;
      i++;
      return n;
    };
    if (arg === '--') {
      args.push(...argv.slice(i + 1));
      break;
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      if (!Object.hasOwn(specs, name)) throw new UsageError(`unknown flag: --${name}`, `--${name}`);
      set(name, `--${name}`, eq < 0 ? undefined : arg.slice(eq + 1), next);
      continue;
    }
    if (arg.startsWith('-') && arg.length > 1) {
      // Shorthand cluster: bools may be grouped (-hq); a string flag takes the rest.
      for (let j = 1; j < arg.length; j++) {
        const c = arg[j]!;
        const name = byShort.get(c);
        if (name === undefined) throw new UsageError(`unknown shorthand flag: '${c}' in ${arg}`, `-${c}`);
        const display = `'${c}' in -${c}`;
        if (specs[name]!.kind === 'bool') {
          if (arg[j + 1] === '=') {
            set(name, `-${c}`, arg.slice(j + 2), next);
            break;
          }
          set(name, display, undefined, next);
          continue;
        }
        const rest = arg.slice(j + 1);
        set(name, display, rest === '' ? undefined : rest.replace(/^=/, ''), next);
        break;
      }
      continue;
    }
    args.push(arg);
  }
  return { flags: values as FlagValues<S>, args };
}

function parseBool(value: string, display: string): boolean {
  if (/^(1|t|true|TRUE|True)$/.test(value)) return true;
  if (/^(0|f|false|FALSE|False)$/.test(value)) return false;
  throw new UsageError(`invalid argument "${value}" for "${display}" flag: want true or false`, display);
}
