import { exporter, session, worker } from '@kiln/api';
import { createInMemoryTransport, createKilnClient, silentLogger } from '@kiln/common';
import { describe, expect, it } from 'vitest';
import { builtinExporters } from '../index.js';
import { createExporterServiceImpl } from './exporter-service.js';

/** The exporters tier with a fake worker (serving a tar) and a fake session relay (recording writes). */
function setup() {
  const written: { sessionId: string; outputId: string; bytes: Buffer }[] = [];
  const neighbours = createInMemoryTransport((r) => {
    r.service(worker.WorkerService, {
      async *exportRef(req) {
        if (req.ref !== 'r1') throw new Error(`unknown ref ${req.ref}`);
        yield { tarChunk: new TextEncoder().encode('part1-') };
        yield { tarChunk: new TextEncoder().encode('part2') };
      },
    });
    r.service(session.SessionService, {
      async writeFiles(reqs) {
        let header: { sessionId: string; outputId: string } | undefined;
        const parts: Uint8Array[] = [];
        for await (const m of reqs) {
          if (m.msg.case === 'header') header = m.msg.value;
          else if (m.msg.case === 'chunk') parts.push(m.msg.value);
        }
        const bytes = Buffer.concat(parts);
        written.push({ sessionId: header!.sessionId, outputId: header!.outputId, bytes });
        return { bytes: BigInt(bytes.length) };
      },
    });
  });
  const workerClient = createKilnClient(worker.WorkerService, neighbours);
  const tier = createInMemoryTransport((r) =>
    r.service(
      exporter.ExporterService,
      createExporterServiceImpl({
        exporters: builtinExporters,
        worker: async (id) => (id === 'w1' ? workerClient : undefined),
        sessions: createKilnClient(session.SessionService, neighbours),
        logger: silentLogger(),
      }),
    ),
  );
  return { client: createKilnClient(exporter.ExporterService, tier), written };
}

describe('ExporterService', () => {
  it.each(['local', 'tar'])('streams the result tar to the client output (type=%s)', async (type) => {
    const { client, written } = setup();
    await client.export({ buildId: 'b', sessionId: 's1', type, attrs: { 'session.output': 'o1', dest: '/x' }, workerId: 'w1', ref: 'r1' });
    expect(written).toEqual([{ sessionId: 's1', outputId: 'o1', bytes: Buffer.from('part1-part2') }]);
  });

  it('sends a valid empty tar for an empty (scratch) result', async () => {
    const { client, written } = setup();
    await client.export({ buildId: 'b', sessionId: 's1', type: 'local', attrs: { 'session.output': 'o1' }, workerId: 'w1', ref: '' });
    expect(written[0]!.bytes).toEqual(Buffer.alloc(1024));
  });

  it('names what is wrong: unknown type, missing output, vanished worker', async () => {
    const { client } = setup();
    await expect(client.export({ type: 'zip', attrs: {}, workerId: 'w1', ref: 'r1' })).rejects.toMatchObject({
      code: 'invalid_argument',
      message: expect.stringMatching(/unknown exporter type "zip" \(have: local, tar, oci, docker, image\)/),
    });
    await expect(client.export({ type: 'local', attrs: {}, workerId: 'w1', ref: 'r1' })).rejects.toMatchObject({
      code: 'invalid_argument',
      details: { field: 'type=local' },
    });
    await expect(client.export({ type: 'tar', attrs: { 'session.output': 'o' }, workerId: 'gone', ref: 'r1' })).rejects.toMatchObject({ code: 'not_found' });
  });
});
