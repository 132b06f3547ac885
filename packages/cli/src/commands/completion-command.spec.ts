import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BUILD_USAGE } from '../build/build-command.js';
import { BUILD_FLAGS } from '../build/build-options.js';
import { KILN_VERSION } from '../version.js';
import { commandsOf, flagsOf } from './completion-command.js';

describe('completion words come from the usage texts', () => {
  it('reads commands with their summaries, and flags with shorthands', () => {
    expect(commandsOf('Usage: x\n\nCommands:\n  ls    List things\n  rm FILE   Remove\n\nOptions:\n  -h, --help   Help\n')).toEqual([
      { name: 'ls', summary: 'List things' },
      { name: 'rm', summary: 'Remove' },
    ]);
    expect(flagsOf('Options:\n  -f, --file string   Name of it\n      --tlscacert, --tlscert, --tlskey FILE  TLS\n')).toEqual([
      { long: 'file', short: 'f', description: 'Name of it' },
      { long: 'tlscacert', description: 'TLS' },
      { long: 'tlscert', description: 'TLS' },
      { long: 'tlskey', description: 'TLS' },
    ]);
  });

  it('every kiln build flag is in its usage (so it completes), with its shorthand', () => {
    const listed = new Map(flagsOf(BUILD_USAGE).map((f) => [f.long, f.short]));
    for (const [name, spec] of Object.entries(BUILD_FLAGS)) {
      expect(listed.has(name), `--${name} missing from kiln build --help`).toBe(true);
      if ('short' in spec) expect(listed.get(name), `-${spec.short} for --${name}`).toBe(spec.short);
    }
  });

  it('the client version is the cli package version', () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(KILN_VERSION).toBe(pkg.version);
  });
});
