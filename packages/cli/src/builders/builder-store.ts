import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { KilnError, NotFoundError } from '@kiln/common';

/** A named daemon the CLI talks to (buildx's builder instance with one node). */
export interface Builder {
  name: string;
  /** `local`: the all-in-one daemon on this machine, started on demand; `remote`: a daemon elsewhere, never started. */
  driver: 'local' | 'remote';
  /** `unix:///PATH` or `tcp://HOST:PORT`. */
  endpoint: string;
  /** `--driver-opt` values: local `root=DIR`; remote `cacert=`, `cert=`, `key=` (absolute paths). */
  driverOpts: Record<string, string>;
  createdAt: string;
}

/** The implicit builder: KILN_ADDR, else the local default daemon. It is never stored. */
export const DEFAULT_BUILDER = 'default';
export const BUILDER_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;

/** `$KILN_CONFIG`, else `~/.kiln` (buildx keeps its builders in ~/.docker/buildx). */
export function configDir(env: Readonly<Record<string, string | undefined>>): string {
  return env.KILN_CONFIG || join(env.HOME || homedir(), '.kiln');
}

/**
 * Builders stored one JSON file each in `<config>/builders/<name>.json`,
 * the current one named in `<config>/builders/current` (like buildx's
 * `instances/` and `current`). Files are written to a temp name and
 * renamed, so a crash never leaves half a builder.
 */
export class BuilderStore {
  readonly dir: string;
  constructor(env: Readonly<Record<string, string | undefined>>) {
    this.dir = join(configDir(env), 'builders');
  }

  list(): Builder[] {
    let names: string[];
    try {
      names = readdirSync(this.dir).filter((n) => n.endsWith('.json'));
    } catch {
      return [];
    }
    return names.sort().flatMap((n) => {
      try {
        return [this.get(n.slice(0, -'.json'.length))];
      } catch {
        return [];
      }
    });
  }

  /** The builder `name`; NotFoundError naming it when there is none. */
  get(name: string): Builder {
    checkName(name);
    let text: string;
    try {
      text = readFileSync(join(this.dir, `${name}.json`), 'utf8');
    } catch {
      throw new NotFoundError(`no builder "${name}" found (see 'kiln builder ls')`, { builder: name });
    }
    try {
      return JSON.parse(text) as Builder;
    } catch (err) {
      throw new KilnError('failed_precondition', `failed to read builder "${name}" from ${join(this.dir, `${name}.json`)}: not JSON`, {}, { cause: err });
    }
  }

  exists(name: string): boolean {
    try {
      this.get(name);
      return true;
    } catch {
      return false;
    }
  }

  save(b: Builder): void {
    checkName(b.name);
    this.write(`${b.name}.json`, `${JSON.stringify(b, null, 2)}\n`);
  }

  remove(name: string): void {
    checkName(name);
    rmSync(join(this.dir, `${name}.json`), { force: true });
    if (this.current() === name) rmSync(join(this.dir, 'current'), { force: true });
  }

  /** The builder `use` chose; undefined (the default builder) when none or when it was removed. */
  current(): string | undefined {
    try {
      const name = readFileSync(join(this.dir, 'current'), 'utf8').trim();
      return name && BUILDER_NAME.test(name) ? name : undefined;
    } catch {
      return undefined;
    }
  }

  setCurrent(name: string | undefined): void {
    if (name === undefined || name === DEFAULT_BUILDER) rmSync(join(this.dir, 'current'), { force: true });
    else this.write('current', `${name}\n`);
  }

  private write(file: string, text: string): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const tmp = join(this.dir, `.${file}.${process.pid}.tmp`);
    writeFileSync(tmp, text, { mode: 0o600 });
    renameSync(tmp, join(this.dir, file));
  }
}

function checkName(name: string): void {
  if (!BUILDER_NAME.test(name)) throw new KilnError('invalid_argument', `invalid builder name "${name}": letters, digits, "_", "." and "-" only`, { field: 'builder' });
}
