import { create } from '@bufbuild/protobuf';
import { durationFromMs } from '@bufbuild/protobuf/wkt';
import type { Client } from '@connectrpc/connect';
import { control, type content } from '@kiln/api';
import { InvalidArgumentError } from '@kiln/common';

type ContentClient = Client<typeof content.ContentService>;

/**
 * Disk usage and pruning of the content store, as Control records: one
 * record per blob (type "content"). Pruning runs the store's garbage
 * collector, so leased and referenced blobs are never removed; it reports
 * each removed blob with the size it had.
 */
export class ContentUsage {
  constructor(private readonly content: () => Promise<ContentClient>) {}

  async records(signal?: AbortSignal): Promise<control.UsageRecord[]> {
    const client = await this.content();
    const out: control.UsageRecord[] = [];
    for await (const { info } of client.list({ filters: [] }, { signal })) {
      if (!info) continue;
      out.push(
        create(control.UsageRecordSchema, {
          id: info.digest,
          size: info.size,
          createdAt: info.createdAt,
          lastUsedAt: info.lastUsedAt ?? info.createdAt,
          description: Object.entries(info.labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(', '),
          recordType: 'content',
        }),
      );
    }
    return out;
  }

  async *prune(req: control.PruneRequest, signal?: AbortSignal): AsyncIterable<control.PruneResponse> {
    let keepDurationMs = req.keepDurationSeconds > 0n ? Number(req.keepDurationSeconds) * 1000 : undefined;
    for (const f of req.filter) {
      const m = /^until=(\d+)(s|m|h)$/.exec(f);
      if (!m) throw new InvalidArgumentError(`unsupported prune filter "${f}" (supported: until=<N>s|m|h)`, '--filter');
      keepDurationMs = Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 's' | 'm' | 'h'];
    }
    const before = new Map((await this.records(signal)).map((r) => [r.id, r]));
    const client = await this.content();
    const res = await client.garbageCollect(
      {
        keepBytes: req.keepBytes > 0n ? req.keepBytes : undefined,
        keepDuration: keepDurationMs !== undefined ? durationFromMs(keepDurationMs) : undefined,
      },
      { signal },
    );
    for (const digest of res.removed) {
      yield create(control.PruneResponseSchema, { record: before.get(digest) ?? { id: digest, recordType: 'content' } });
    }
  }
}
