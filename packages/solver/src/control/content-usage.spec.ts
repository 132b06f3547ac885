import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { content, control } from '@kiln/api';
import { createInMemoryTransport, createKilnClient } from '@kiln/common';
import { describe, expect, it } from 'vitest';
import { ContentUsage } from './content-usage.js';

function setup() {
  const gcCalls: content.GarbageCollectRequest[] = [];
  const blobs: { digest: string; size: bigint; labels: Record<string, string> }[] = [
    { digest: 'sha256:' + 'a'.repeat(64), size: 10n, labels: { kind: 'layer' } },
    { digest: 'sha256:' + 'b'.repeat(64), size: 20n, labels: {} },
  ];
  const transport = createInMemoryTransport((r) =>
    r.service(content.ContentService, {
      async *list() {
        for (const b of blobs) yield { info: { ...b, createdAt: timestampFromMs(1000), lastUsedAt: timestampFromMs(2000) } };
      },
      async garbageCollect(req) {
        gcCalls.push(req);
        return { removed: [blobs[1]!.digest], bytesFreed: 20n };
      },
    }),
  );
  return { usage: new ContentUsage(async () => createKilnClient(content.ContentService, transport)), gcCalls, blobs };
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('ContentUsage', () => {
  it('reports one record per blob', async () => {
    const { usage, blobs } = setup();
    const records = await usage.records();
    expect(records.map((r) => [r.id, r.size, r.recordType, r.description])).toEqual([
      [blobs[0]!.digest, 10n, 'content', 'kind=layer'],
      [blobs[1]!.digest, 20n, 'content', ''],
    ]);
  });

  it('prunes through the garbage collector and reports what went, with sizes', async () => {
    const { usage, gcCalls, blobs } = setup();
    const res = await collect(usage.prune(create(control.PruneRequestSchema, { filter: ['until=2h'], keepBytes: 5n })));
    expect(res.map((r) => [r.record?.id, r.record?.size])).toEqual([[blobs[1]!.digest, 20n]]);
    expect(gcCalls[0]?.keepBytes).toBe(5n);
    expect(gcCalls[0]?.keepDuration?.seconds).toBe(7200n);
  });

  it('rejects a filter it does not know, naming it', async () => {
    const { usage } = setup();
    await expect(collect(usage.prune(create(control.PruneRequestSchema, { filter: ['type=regular'] })))).rejects.toMatchObject({
      code: 'invalid_argument',
      details: { field: '--filter' },
    });
  });
});
