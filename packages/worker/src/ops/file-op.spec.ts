import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { create } from '@bufbuild/protobuf';
import { llb } from '@kiln/api';
import { silentLogger } from '@kiln/common';
import { digestOf, marshalOp } from '@kiln/llb';
import { createDirectorySnapshotter, type Snapshotter } from '@kiln/snapshotter';
import { createWorker, type Worker } from '../worker.js';
import { createEventCollector, createFakeSession, FakeExecutor, readTar } from '../testing/index.js';

describe('file op action graph', () => {
  let root: string;
  let snapshotter: Snapshotter;
  let worker: Worker;
  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'kiln-fileop-'));
    snapshotter = createDirectorySnapshotter({ root });
    worker = createWorker({
      id: 'w',
      backend: 'oci',
      snapshotter,
      executor: new FakeExecutor(),
      sessions: createFakeSession().client,
      publish: createEventCollector().publish,
      logger: silentLogger(),
    });
  });
  afterEach(async () => {
    await worker.close();
    await rm(root, { recursive: true, force: true });
  });

  it('shares an action result between a copy source and a later action, with two outputs', async () => {
    const data = new TextEncoder().encode('x');
    const op = create(llb.OpSchema, {
      op: {
        case: 'file',
        value: {
          actions: [
            { input: -1n, secondaryInput: -1n, output: -1n, action: { case: 'mkfile', value: { path: '/a', mode: 0o644, data, timestamp: -1n } } },
            { input: -1n, secondaryInput: -2n, output: 0n, action: { case: 'copy', value: { src: '/a', dest: '/b', mode: -1, timestamp: -1n } } },
            { input: -2n, secondaryInput: -1n, output: 1n, action: { case: 'mkfile', value: { path: '/c', mode: 0o644, data, timestamp: -1n } } },
          ],
        },
      },
    });
    const bytes = marshalOp(op);
    const { outputRefs } = await worker.run({ buildId: 'b', sessionId: 's', vertexDigest: digestOf(bytes), op: bytes, inputRefs: [] });
    expect(outputRefs).toHaveLength(2);
    expect((await readTar(worker.exportRef(outputRefs[0]!))).map((e) => e.name)).toEqual(['b']);
    expect((await readTar(worker.exportRef(outputRefs[1]!))).map((e) => e.name)).toEqual(['a', 'c']);
    // Only the two outputs remain: intermediate and scratch snapshots are gone.
    expect((await snapshotter.list()).map((i) => i.kind)).toEqual(['committed', 'committed']);
    await worker.release(outputRefs);
    expect(await snapshotter.list()).toEqual([]);
  });

  it('leaves no snapshot behind when an action fails', async () => {
    const op = create(llb.OpSchema, {
      op: {
        case: 'file',
        value: {
          actions: [
            { input: -1n, secondaryInput: -1n, output: -1n, action: { case: 'mkdir', value: { path: '/d', mode: 0o755, timestamp: -1n } } },
            { input: -2n, secondaryInput: -1n, output: 0n, action: { case: 'rm', value: { path: '/missing' } } },
          ],
        },
      },
    });
    const bytes = marshalOp(op);
    await expect(worker.run({ buildId: 'b', sessionId: 's', vertexDigest: digestOf(bytes), op: bytes, inputRefs: [] })).rejects.toMatchObject({ code: 'vertex' });
    expect(await snapshotter.list()).toEqual([]);
  });
});
