import { create, toBinary } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { control, events } from '@kiln/api';
import { encodeTarHeader, tarPadding, tarTrailer } from '@kiln/common';
import { describe, expect, it } from 'vitest';
import { decodeHistoryBundle, encodeHistoryBundle } from './history-bundle.js';

function entry(ref: string): control.HistoryBundleEntry {
  const ev = Buffer.from(toBinary(events.BuildEventSchema, create(events.BuildEventSchema, { buildId: ref, event: { case: 'log', value: { vertex: 'sha256:a', stream: 1, msg: new TextEncoder().encode('hello\n') } } })));
  const head = Buffer.alloc(4);
  head.writeUInt32BE(ev.length);
  return create(control.HistoryBundleEntrySchema, {
    record: {
      ref,
      frontend: 'dockerfile.v0',
      frontendAttrs: { target: 't', filename: 'Dockerfile' },
      status: 'completed',
      createdAt: timestampFromMs(1_700_000_000_000),
      completedAt: timestampFromMs(1_700_000_003_000),
      exporterResponse: { 'buildx.build.provenance': Buffer.from('{"buildType":"https://mobyproject.org/buildkit@v1"}').toString('base64'), 'containerimage.digest': 'sha256:b' },
    },
    events: Buffer.concat([head, ev]),
    cacheMisses: [{ vertex: 'sha256:v', name: 'RUN x', reason: 'file a changed' }],
  });
}

async function* once(b: Uint8Array): AsyncIterable<Uint8Array> {
  yield b;
}

function tarOf(files: [string, string | Buffer, ('file' | 'symlink' | 'directory')?][]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, body, type] of files) {
    const data = Buffer.from(body);
    parts.push(encodeTarHeader({ name, size: type && type !== 'file' ? 0 : data.length, type: type ?? 'file', linkname: type === 'symlink' ? '/etc/passwd' : '' }));
    if (!type || type === 'file') parts.push(data, tarPadding(data.length));
  }
  parts.push(tarTrailer());
  return Buffer.concat(parts);
}

const INDEX = (builds: string[]) => JSON.stringify({ format: 'kiln.history.bundle', version: 1, builds });

describe('history bundle', () => {
  it('round-trips records, events and cache misses; the same builds give the same bytes', async () => {
    const a = encodeHistoryBundle([entry('b1'), entry('b2')]);
    expect(encodeHistoryBundle([entry('b1'), entry('b2')]).equals(a)).toBe(true);
    const back = await decodeHistoryBundle(once(a), 'x.kilnbuild');
    expect(back.map((e) => e.record?.ref)).toEqual(['b1', 'b2']);
    expect(back[0]!.record!.frontendAttrs).toEqual({ target: 't', filename: 'Dockerfile' });
    expect(Buffer.from(back[0]!.events).equals(Buffer.from(entry('b1').events))).toBe(true);
    expect(back[0]!.cacheMisses.map((m) => m.reason)).toEqual(['file a changed']);
    // The provenance is there to read too.
    expect(a.toString('latin1')).toContain('builds/b1/provenance.json');
  });

  const bad: [string, Buffer, string][] = [
    ['a path escaping the bundle', tarOf([['index.json', INDEX(['b1'])], ['builds/../../etc/record.json', '{}']]), 'entry "builds/../../etc/record.json": not a bundle entry'],
    ['an absolute path', tarOf([['/etc/passwd', 'x']]), 'entry "/etc/passwd": not a bundle entry'],
    ['a symlink', tarOf([['index.json', INDEX([])], ['builds/b1/record.json', '', 'symlink']]), 'entry "builds/b1/record.json": a symlink'],
    ['a ref that is not one', tarOf([['builds/a.b/record.json', '{}']]), '"a.b" is not a build ref'],
    ['a duplicate entry', tarOf([['index.json', INDEX([])], ['index.json', INDEX([])]]), 'entry "index.json": appears twice'],
    ['an oversized events entry', tarOf([['builds/b1/events.pb', Buffer.alloc((4 << 20) + 1)]]), 'entry "builds/b1/events.pb": larger than 4194304 bytes'],
    ['no index', tarOf([]), 'entry "index.json": missing'],
    ['another format', tarOf([['index.json', '{"format":"docker"}']]), 'not a Kiln history bundle'],
    ['a build not listed', tarOf([['index.json', INDEX([])], ['builds/b1/record.json', '{}']]), 'entry "builds/b1/": not listed in index.json'],
    ['a listed build without record', tarOf([['index.json', INDEX(['b1'])]]), 'entry "builds/b1/record.json": missing'],
    ['a record of another build', tarOf([['index.json', INDEX(['b1'])], ['builds/b1/record.json', '{"ref":"b2"}']]), 'holds build "b2", not b1'],
    ['a record that is not JSON', tarOf([['index.json', INDEX(['b1'])], ['builds/b1/record.json', '{']]), 'entry "builds/b1/record.json": not a build record'],
    ['not a tar', Buffer.from('hello world, not a tar at all'.repeat(40)), 'not a tar archive'],
  ];
  it.each(bad)('refuses %s, naming the file and entry', async (_what, bytes, message) => {
    const err = await decodeHistoryBundle(once(bytes), 'evil.kilnbuild').catch((e: unknown) => e as Error);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toContain('invalid history bundle evil.kilnbuild');
    expect((err as Error).message).toContain(message);
  });
});
