/**
 * Instruction flags (`--name=value`, `--bool`, repeatable `--name=a --name=b`),
 * validated against what each instruction accepts.
 */

import { suggestWord } from './suggest.js';

/** A flag problem; the instruction parser adds file and line. */
export class FlagError extends Error {}

type FlagType = 'bool' | 'string' | 'strings';

interface FlagDef {
  type: FlagType;
  defaultValue: string;
}

export class BFlags {
  private readonly defs = new Map<string, FlagDef>();
  private readonly values = new Map<string, string[]>();

  constructor(private readonly args: readonly string[]) {}

  addBool(name: string, defaultValue = false): this {
    this.defs.set(name, { type: 'bool', defaultValue: String(defaultValue) });
    return this;
  }
  addString(name: string, defaultValue = ''): this {
    this.defs.set(name, { type: 'string', defaultValue });
    return this;
  }
  addStrings(name: string): this {
    this.defs.set(name, { type: 'strings', defaultValue: '' });
    return this;
  }

  /** Validates the raw flags; throws FlagError on unknown, duplicate or malformed flags. */
  parse(): this {
    for (const arg of this.args) {
      if (!arg.startsWith('--')) throw new FlagError(`arg should start with -- : ${arg}`);
      if (arg === '--') break;
      const body = arg.slice(2);
      const eq = body.indexOf('=');
      const name = eq >= 0 ? body.slice(0, eq) : body;
      const value = eq >= 0 ? body.slice(eq + 1) : '';
      const def = this.defs.get(name);
      if (!def) throw new FlagError(`unknown flag: --${name}${suggestWord(name, this.defs.keys())}`);
      const prev = this.values.get(name);
      if (prev && def.type !== 'strings') throw new FlagError(`duplicate flag specified: --${name}`);
      switch (def.type) {
        case 'bool': {
          if (eq >= 0 && value === '') throw new FlagError(`missing a value on flag: --${name}`);
          const v = value.toLowerCase();
          if (v !== '' && v !== 'true' && v !== 'false') {
            throw new FlagError(`expecting boolean value for flag --${name}, not: ${value}`);
          }
          this.values.set(name, [v === 'false' ? 'false' : 'true']);
          break;
        }
        case 'string':
          if (eq < 0) throw new FlagError(`missing a value on flag: --${name}`);
          this.values.set(name, [value]);
          break;
        case 'strings':
          if (eq < 0) throw new FlagError(`missing a value on flag: --${name}`);
          this.values.set(name, [...(prev ?? []), value]);
          break;
      }
    }
    return this;
  }

  private def(name: string, type: FlagType): FlagDef {
    const def = this.defs.get(name);
    if (!def || def.type !== type) throw new Error(`flag --${name} is not a registered ${type} flag`);
    return def;
  }

  bool(name: string): boolean {
    const def = this.def(name, 'bool');
    return (this.values.get(name)?.[0] ?? def.defaultValue) === 'true';
  }
  string(name: string): string {
    const def = this.def(name, 'string');
    return this.values.get(name)?.[0] ?? def.defaultValue;
  }
  strings(name: string): string[] {
    this.def(name, 'strings');
    return [...(this.values.get(name) ?? [])];
  }
  /** True when the flag was given. */
  isUsed(name: string): boolean {
    return this.values.has(name);
  }
  /** Names of the flags that were given. */
  used(): string[] {
    return [...this.values.keys()];
  }
}
