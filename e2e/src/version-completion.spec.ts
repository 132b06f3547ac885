import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnd, type Kilnd } from '@kiln/testkit';

const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;

describe('kiln version, --version and completion [topology=all-in-one]', () => {
  let daemon: Kilnd;
  let dir: string;
  beforeAll(async () => {
    daemon = await startKilnd();
    dir = mkdtempSync(join(tmpdir(), 'kiln-completion-'));
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('prints the client and the daemon version; an unreachable daemon fails after the client part and is not started', async () => {
    const short = await runKiln(['--version']);
    expect(short.code).toBe(0);
    expect(short.stdout).toMatch(/^kiln v\d+\.\d+\.\d+ /);

    const both = await runKiln(['version', '--addr', daemon.addr]);
    expect(both.code, both.stderr).toBe(0);
    expect(both.stdout).toMatch(/^Client:\n Version:\s+\d+\.\d+\.\d+\n/);
    expect(both.stdout).toMatch(/Server:\n Address:\s+unix:\/\/.*kiln\.sock\n Version:\s+\d+\.\d+\.\d+/);

    const json = await runKiln(['version', '--addr', daemon.addr, '--format', 'json']);
    const parsed = JSON.parse(json.stdout) as { client: { version: string }; server: { version: string; address: string } };
    expect(parsed.client.version).toMatch(/^\d+\.\d+\.\d+$/);
    expect(parsed.server.address).toBe(daemon.addr);

    // KILN_ROOT points at an empty dir: without an explicit address nothing may be started there.
    const root = join(dir, 'no-daemon');
    const down = await runKiln(['version'], { env: { KILN_ROOT: root, KILN_ADDR: '' } });
    expect(down.code).toBe(1);
    expect(down.stdout).toMatch(/^Client:/);
    expect(down.stdout).not.toContain('Server:');
    expect(down.stderr).toMatch(/ERROR: .*no kiln daemon answers at unix:\/\/.*no-daemon\/kiln\.sock/);
    expect(spawnSync('test', ['-e', join(root, 'kilnd.log')]).status).not.toBe(0);
  });

  it('bash: commands, subcommands and each command\'s flags complete', async () => {
    const script = await runKiln(['completion', 'bash']);
    expect(script.code, script.stderr).toBe(0);
    const file = join(dir, 'kiln.bash');
    writeFileSync(file, script.stdout);
    const complete = (...words: string[]) => {
      const r = spawnSync('bash', ['-c', `source ${file}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _kiln; printf '%s\\n' "\${COMPREPLY[@]}"`], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      return r.stdout.split('\n').filter(Boolean);
    };
    expect(complete('kiln', 'bu')).toEqual(['build', 'builder']);
    expect(complete('kiln', 'hi')).toEqual(['history']);
    expect(complete('kiln', 'history', '')).toEqual(expect.arrayContaining(['inspect', 'logs', 'ls', 'rm']));
    expect(complete('kiln', 'history', 'ls', '--f')).toEqual(['--format']);
    expect(complete('kiln', 'build', '--no-cache')).toEqual(['--no-cache', '--no-cache-filter']);
    expect(complete('kiln', 'build', '-t', 'x', '--pla')).toEqual(['--platform']);
    expect(complete('kiln', 'completion', '')).toEqual(['bash', 'fish', 'zsh']);
    expect(complete('kiln', '--vers')).toEqual(['--version']);
    // A context argument is a path: left to readline's file completion.
    expect(complete('kiln', 'build', '')).toEqual([]);
  });

  it.skipIf(!has('fish'))('fish: complete -C offers the same words', async () => {
    const script = await runKiln(['completion', 'fish']);
    const file = join(dir, 'kiln.fish');
    writeFileSync(file, script.stdout);
    const complete = (line: string) => {
      const r = spawnSync('fish', ['--no-config', '-c', `source ${file}; complete -C '${line}'`], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      return r.stdout.split('\n').filter(Boolean).map((l) => l.split('\t')[0]);
    };
    expect(complete('kiln bu')).toEqual(['build', 'builder']);
    expect(complete('kiln history ')).toEqual(expect.arrayContaining(['inspect', 'logs', 'ls', 'rm']));
    expect(complete('kiln build --no-ca')).toEqual(['--no-cache', '--no-cache-filter']);
    expect(complete('kiln history ls --fo')).toEqual(['--format']);
  });

  it.skipIf(!has('zsh'))('zsh: the script parses and defines _kiln for compdef', async () => {
    const script = await runKiln(['completion', 'zsh']);
    expect(script.stdout.startsWith('#compdef kiln\n')).toBe(true);
    const file = join(dir, '_kiln');
    writeFileSync(file, script.stdout);
    const r = spawnSync('zsh', ['-f', '-c', `autoload -U compinit && compinit -u -D; source ${file}; print -r -- $_comps[kiln]`], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('_kiln');
  });

  it('refuses an unknown shell, naming it', async () => {
    const r = await runKiln(['completion', 'tcsh']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unsupported shell "tcsh"');
  });
});
