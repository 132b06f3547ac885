import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { worker as workerApi } from '@kiln/api';
import { createInMemoryTransport, createKilnClient, KilnError, silentLogger } from '@kiln/common';
import { FileChain, local, State } from '@kiln/llb';
import { createDirectorySnapshotter } from '@kiln/snapshotter';
import { createWorker, type Worker } from '../worker.js';
import { createEventCollector, createFakeSession, FakeExecutor, readTar } from '../testing/index.js';
import { createWorkerServiceImpl } from './worker-service.js';

describe('WorkerService', () => {
  let root: string;
  let w: Worker;
  let client: ReturnType<typeof createKilnClient<typeof workerApi.WorkerService>>;

  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'kiln-worker-rpc-'));
    await writeFile(path.join(root, 'a.txt'), 'A');
    w = createWorker({
      id: 'w-rpc',
      backend: 'containerd',
      snapshotter: createDirectorySnapshotter({ root: path.join(root, 'snapshots') }),
      executor: new FakeExecutor(),
      sessions: createFakeSession({ context: { dir: root } }).client,
      publish: createEventCollector().publish,
      logger: silentLogger(),
      platforms: [{ os: 'linux', architecture: 'arm64', variant: 'v8' }],
      labels: { zone: 'a' },
    });
    client = createKilnClient(workerApi.WorkerService, createInMemoryTransport((r) => r.service(workerApi.WorkerService, createWorkerServiceImpl(w))));
  });
  afterEach(async () => {
    await w.close();
    await rm(root, { recursive: true, force: true });
  });

  it('describes the worker', async () => {
    const d = await client.describe({});
    expect(d).toMatchObject({ id: 'w-rpc', backend: 'containerd', labels: { zone: 'a' } });
    expect(d.platforms.map((p) => [p.os, p.architecture, p.variant])).toEqual([['linux', 'arm64', 'v8']]);
  });

  it('runs ops, streams exports and releases refs', async () => {
    const src = local('context', { includePatterns: ['a.txt'] }).output!.vertex.marshal();
    const { outputRefs } = await client.run({ buildId: 'b', sessionId: 's', vertexDigest: src.digest, op: src.bytes, inputRefs: [] });
    expect(outputRefs).toHaveLength(1);
    // Read the whole stream: the export holds its ref until the server's stream ends.
    const chunks = async function* () {
      const all: Uint8Array[] = [];
      for await (const m of client.exportRef({ ref: outputRefs[0]! })) all.push(m.tarChunk);
      yield* all;
    };
    expect((await readTar(chunks())).map((e) => e.name)).toEqual(['a.txt']);
    await client.release({ refs: outputRefs });
    await expect(readTar(chunks())).rejects.toMatchObject({ code: 'not_found' });
  });

  it('keeps VertexError code and digest across the wire', async () => {
    const op = FileChain.start().rm('/nope').apply(State.scratch()).output!.vertex.marshal();
    const err = await client.run({ buildId: 'b', sessionId: 's', vertexDigest: op.digest, op: op.bytes, inputRefs: [] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KilnError);
    expect(err).toMatchObject({ code: 'vertex', message: 'failed to remove /nope: no such file or directory', details: { digest: op.digest } });
  });

  it('rejects an op whose digest does not match', async () => {
    const op = FileChain.start().rm('/nope').apply(State.scratch()).output!.vertex.marshal();
    await expect(client.run({ buildId: 'b', sessionId: 's', vertexDigest: `sha256:${'1'.repeat(64)}`, op: op.bytes, inputRefs: [] })).rejects.toMatchObject({
      code: 'invalid_argument',
    });
  });
});
