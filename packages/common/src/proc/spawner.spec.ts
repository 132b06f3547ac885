import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { execLight, resolveCommand, runLight, SpawnError } from './spawner.js';

describe('runLight / execLight (commands started by the spawn helper)', () => {
  it('streams stdout and stderr in order and reports the exit code', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const exit = await runLight('sh', ['-c', 'for i in 1 2 3; do echo out$i; echo err$i >&2; done; exit 7'], {
      stdout: (b) => out.push(Buffer.from(b).toString()),
      stderr: (b) => err.push(Buffer.from(b).toString()),
    });
    expect(exit).toEqual({ code: 7, signal: null });
    expect(out.join('')).toBe('out1\nout2\nout3\n');
    expect(err.join('')).toBe('err1\nerr2\nerr3\n');
  });

  it('reports a signal that ended the command', async () => {
    expect(await runLight('sh', ['-c', 'kill -TERM $$'])).toEqual({ code: null, signal: 'SIGTERM' });
  });

  it('rejects with SpawnError (ENOENT) for a command that does not exist', async () => {
    const err = await runLight('kiln-no-such-command', []).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SpawnError);
    expect((err as SpawnError).code).toBe('ENOENT');
  });

  it('execLight returns stdout, and fails naming the command and its stderr', async () => {
    expect((await execLight('echo', ['a', 'b'])).stdout).toBe('a b\n');
    await expect(execLight('sh', ['-c', 'echo nope >&2; exit 3'])).rejects.toThrow('sh -c echo nope >&2; exit 3: nope');
    await expect(execLight('false', [])).rejects.toMatchObject({ exitCode: 1, message: 'false : exit status 1' });
  });

  it('runs many commands at once, each getting its own output', async () => {
    const runs = Array.from({ length: 20 }, (_, i) => execLight('sh', ['-c', `sleep 0.0${i % 5}; echo ${i}`]));
    expect((await Promise.all(runs)).map((r) => r.stdout)).toEqual(Array.from({ length: 20 }, (_, i) => `${i}\n`));
  });

  it('binary output arrives unchanged (and the same without the helper)', async () => {
    const bytes: Uint8Array[] = [];
    await runLight('printf', ['\\000\\377\\001'], { stdout: (b) => bytes.push(b) });
    expect([...Buffer.concat(bytes)]).toEqual([0, 255, 1]);
    process.env.KILN_SPAWN_HELPER = '0';
    try {
      expect((await execLight('echo', ['direct'])).stdout).toBe('direct\n');
    } finally {
      delete process.env.KILN_SPAWN_HELPER;
    }
  });

  it('feeds stdin and adds env variables (CNI plugins read both), with and without the helper', async () => {
    for (const direct of [false, true]) {
      if (direct) process.env.KILN_SPAWN_HELPER = '0';
      try {
        const out: Uint8Array[] = [];
        const exit = await runLight('sh', ['-c', 'printf "%s:" "$KILN_T_VAR" "$HOME"; cat'], { stdin: Buffer.from('{"x":1}'), env: { KILN_T_VAR: 'v1' }, stdout: (b) => out.push(b) });
        expect(exit.code).toBe(0);
        expect(Buffer.concat(out).toString()).toBe(`v1:${process.env.HOME ?? ''}:{"x":1}`);
      } finally {
        delete process.env.KILN_SPAWN_HELPER;
      }
    }
  });

  it('starts a bare command by the absolute path found once on PATH, and looks again once that file is gone', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'kiln-spawn-path-'));
    const savedPath = process.env.PATH;
    try {
      const [empty, notExec, first, second] = ['a', 'b', 'c', 'd'].map((d) => path.join(dir, d)) as [string, string, string, string];
      for (const d of [empty, notExec, first, second]) await mkdir(d);
      const script = (word: string) => `#!/bin/sh\necho ${word}\n`;
      await writeFile(path.join(notExec, 'kiln-t-cmd'), script('not-exec'), { mode: 0o644 });
      await writeFile(path.join(first, 'kiln-t-cmd'), script('first'), { mode: 0o755 });
      await writeFile(path.join(second, 'kiln-t-cmd'), script('second'), { mode: 0o755 });
      process.env.PATH = [empty, notExec, first, second, savedPath].join(':');
      expect(resolveCommand('kiln-t-cmd')).toBe(path.join(first, 'kiln-t-cmd'));
      expect(resolveCommand('/bin/sh')).toBe('/bin/sh');
      expect(resolveCommand('kiln-no-such-command')).toBe('kiln-no-such-command');
      expect((await execLight('kiln-t-cmd', [])).stdout).toBe('first\n');
      // Remembered: a file put earlier on PATH is not seen...
      await writeFile(path.join(empty, 'kiln-t-cmd'), script('earlier'), { mode: 0o755 });
      expect((await execLight('kiln-t-cmd', [])).stdout).toBe('first\n');
      // ...until the remembered one is gone: that start fails (ENOENT), the next one searches again.
      await rm(path.join(first, 'kiln-t-cmd'));
      await expect(execLight('kiln-t-cmd', [])).rejects.toMatchObject({ code: 'ENOENT' });
      expect((await execLight('kiln-t-cmd', [])).stdout).toBe('earlier\n');
      // Another PATH value is searched on its own.
      process.env.PATH = [second, savedPath].join(':');
      expect(resolveCommand('kiln-t-cmd')).toBe(path.join(second, 'kiln-t-cmd'));
    } finally {
      process.env.PATH = savedPath;
      await rm(dir, { recursive: true, force: true });
    }
  });
});
