import { describe, expect, it } from 'vitest';
import { execLight, runLight, SpawnError } from './spawner.js';

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
});
