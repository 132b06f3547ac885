import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { KilnError } from '@kiln/common';
import { FileChain, marshal, parseDefinition, State, type ParsedDefinition } from '@kiln/llb';
import { createDirectorySnapshotter } from '@kiln/snapshotter';
import { afterEach, describe, expect, it } from 'vitest';
import { createWorker, SUPPORTED_OPS } from './worker.js';
import { FakeExecutor } from './testing/index.js';

describe('worker op kinds', () => {
  const roots: string[] = [];
  afterEach(() => {
    for (const r of roots.splice(0)) rmSync(r, { recursive: true, force: true });
  });
  const make = (disabledOps?: string[]) => {
    const root = mkdtempSync(path.join(tmpdir(), 'kiln-op-kinds-'));
    roots.push(root);
    return createWorker({
      id: 'w',
      backend: 'oci',
      snapshotter: createDirectorySnapshotter({ root: path.join(root, 'snapshots') }),
      executor: new FakeExecutor(),
      sessions: {} as never,
      publish: async () => undefined,
      stateDir: root,
      ...(disabledOps ? { disabledOps } : {}),
    });
  };
  const mkdirOp = (): ParsedDefinition => parseDefinition(marshal(FileChain.start().mkdir('/x', 0o755).apply(State.scratch())));

  it('announces every kind it runs (no diff yet) minus those it was told to refuse', async () => {
    const all = make();
    expect((await all.describe()).ops).toEqual([...SUPPORTED_OPS]);
    expect(SUPPORTED_OPS).not.toContain('diff');
    const noExec = make(['exec', 'source:git']);
    const ops = (await noExec.describe()).ops;
    expect(ops).toContain('file');
    expect(ops).not.toContain('exec');
    expect(ops).not.toContain('source:git');
    await all.close();
    await noExec.close();
  });

  it('refuses to run a kind it does not announce, naming it', async () => {
    const w = make(['file']);
    const def = mkdirOp();
    const [digest, op] = [...def.ops].find(([, o]) => o.op.op.case === 'file')!;
    const err = await w.run({ buildId: 'b', sessionId: '', vertexDigest: digest, op: op.bytes, inputRefs: [] }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(KilnError);
    expect((err as KilnError).code).toBe('failed_precondition');
    expect((err as KilnError).message).toMatch(/does not run file ops/);
    await w.close();
  });

  it('rejects an unknown kind in disabledOps', () => {
    expect(() => make(['sorcery'])).toThrow(/unknown op kind "sorcery"/);
  });
});
