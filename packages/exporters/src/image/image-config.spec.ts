import { describe, expect, it } from 'vitest';
import { buildImageConfig, GENERATED_HISTORY_COMMENT, rfc3339, type HistoryEntry } from './image-config.js';
import type { LayerDescriptor } from './layers.js';

const layer = (n: number, fromBase = false, createdBy = ''): LayerDescriptor => ({ digest: `sha256:${String(n).repeat(64)}`, size: n, mediaType: 'x', diffId: `sha256:${String(n + 1).repeat(64)}`, fromBase, createdBy, timestampsRewritten: false });
const frontend = (history: object[]) => Buffer.from(JSON.stringify({ architecture: 'arm64', os: 'linux', config: { Cmd: ['sh'] }, rootfs: { type: 'layers', diff_ids: [] }, history }));

describe('buildImageConfig', () => {
  it('sets diff_ids from the layers and keeps the frontend config, in spec field order', () => {
    const cfg = buildImageConfig(frontend([{ created_by: 'RUN a' }]), [layer(1)], { nowSeconds: 100 });
    expect(Object.keys(cfg)).toEqual(['created', 'architecture', 'os', 'config', 'rootfs', 'history']);
    expect(cfg).toMatchObject({ created: '1970-01-01T00:01:40Z', architecture: 'arm64', config: { Cmd: ['sh'] }, rootfs: { type: 'layers', diff_ids: [layer(1).diffId] } });
    expect(cfg.history).toEqual([{ created: '1970-01-01T00:01:40Z', created_by: 'RUN a' }]);
  });

  it('gives leading base layers generated history entries before the frontend ones', () => {
    const cfg = buildImageConfig(frontend([{ created_by: 'ENV A=1', empty_layer: true }, { created_by: 'RUN a' }]), [layer(1, true, 'FROM busybox'), layer(2, true), layer(3, false, 'RUN a')], { nowSeconds: 0 });
    expect(cfg.history).toEqual([
      { created: rfc3339(0), created_by: 'FROM busybox', comment: GENERATED_HISTORY_COMMENT },
      { created: rfc3339(0), comment: GENERATED_HISTORY_COMMENT },
      { created: rfc3339(0), created_by: 'ENV A=1', empty_layer: true },
      { created: rfc3339(0), created_by: 'RUN a' },
    ]);
  });

  it('appends entries for unaccounted layers that are not leading base layers, and empties entries past the last layer', () => {
    const more = buildImageConfig(frontend([{ created_by: 'RUN a' }]), [layer(1), layer(2, false, 'RUN b')], { nowSeconds: 0 });
    expect((more.history as object[]).map((h) => (h as { created_by?: string }).created_by)).toEqual(['RUN a', 'RUN b']);
    const fewer = buildImageConfig(frontend([{ created_by: 'RUN a' }, { created_by: 'RUN b' }]), [layer(1)], { nowSeconds: 0 });
    expect(fewer.history).toEqual([
      { created: rfc3339(0), created_by: 'RUN a' },
      { created: rfc3339(0), created_by: 'RUN b', empty_layer: true },
    ]);
  });

  it('fixes every time to the source date epoch (never later than it)', () => {
    const cfg = buildImageConfig(frontend([{ created: '2000-01-01T00:00:00Z', created_by: 'old' }, { created: '2030-01-01T00:00:00Z', created_by: 'new' }]), [layer(1), layer(2)], { nowSeconds: 2e9, sourceDateEpoch: 1e9 });
    expect(cfg.created).toBe('2001-09-09T01:46:40Z');
    expect((cfg.history as { created: string }[]).map((h) => h.created)).toEqual(['2000-01-01T00:00:00Z', '2001-09-09T01:46:40Z']);
  });

  it('dates history from the layers, as BuildKit from its cache records: the same layers give the same config at any later time', () => {
    const at = (ms: number, l: LayerDescriptor): LayerDescriptor => ({ ...l, createdAtMs: ms });
    const t0 = Date.parse('2026-01-02T03:04:05Z');
    const layers = [at(t0, layer(1, true, 'FROM busybox')), at(t0 + 60_500, layer(2, false, 'RUN a')), at(t0 + 120_000, layer(3, false, 'RUN b'))];
    const fe = frontend([{ created_by: 'WORKDIR /app', empty_layer: true }, { created_by: 'RUN a' }, { created_by: 'ENV B=1', empty_layer: true }, { created_by: 'RUN b' }, { created_by: 'CMD x', empty_layer: true }]);
    const first = buildImageConfig(fe, layers, { nowSeconds: t0 / 1000 + 200 });
    expect(first.created).toBe('2026-01-02T03:06:05Z');
    expect((first.history as HistoryEntry[]).map((h) => [h.created_by, h.created])).toEqual([
      ['FROM busybox', '2026-01-02T03:04:05Z'],
      // Before the first new layer: that layer's time (not the base image's).
      ['WORKDIR /app', '2026-01-02T03:05:05.5Z'],
      ['RUN a', '2026-01-02T03:05:05.5Z'],
      ['ENV B=1', '2026-01-02T03:05:05.5Z'],
      ['RUN b', '2026-01-02T03:06:05Z'],
      ['CMD x', '2026-01-02T03:06:05Z'],
    ]);
    // A rebuild from the cache an hour later: the same bytes.
    const again = buildImageConfig(fe, layers, { nowSeconds: t0 / 1000 + 3600 });
    expect(JSON.stringify(again)).toBe(JSON.stringify(first));
    // A layer whose time the worker does not know: now for config created and the entries without a time.
    const unknown = buildImageConfig(fe, [layers[0]!, layers[1]!, layer(3, false, 'RUN b')], { nowSeconds: 7 });
    expect(unknown.created).toBe(rfc3339(7));
    expect((unknown.history as HistoryEntry[]).map((h) => h.created)).toEqual(['2026-01-02T03:04:05Z', rfc3339(7), '2026-01-02T03:05:05.5Z', rfc3339(7), rfc3339(7), rfc3339(7)]);
    // A layer matched to an entry with an older time of its own (one layer for the base's entry): the layer's time.
    const own = buildImageConfig(frontend([{ created: '2020-01-01T00:00:00Z', created_by: 'base' }, { created_by: 'ENV A=1', empty_layer: true }]), [layers[2]!], { nowSeconds: 0 });
    expect(own.created).toBe('2026-01-02T03:06:05Z');
    expect((own.history as HistoryEntry[]).map((h) => h.created)).toEqual(['2020-01-01T00:00:00Z', '2020-01-01T00:00:00Z']);
    // SOURCE_DATE_EPOCH still wins: no time after it, config created is it.
    const epoch = buildImageConfig(fe, layers, { nowSeconds: 0, sourceDateEpoch: t0 / 1000 + 30 });
    expect(epoch.created).toBe('2026-01-02T03:04:35Z');
    expect((epoch.history as HistoryEntry[]).map((h) => h.created)).toEqual(['2026-01-02T03:04:05Z', ...Array(5).fill('2026-01-02T03:04:35Z')]);
  });

  it('works without a frontend config (LLB-only builds) and rejects one that is not a JSON object', () => {
    expect(buildImageConfig(new Uint8Array(), [], { nowSeconds: 0 })).toMatchObject({ os: 'linux', rootfs: { diff_ids: [] }, history: [] });
    expect(() => buildImageConfig(Buffer.from('[1]'), [], { nowSeconds: 0 })).toThrow(/failed to read the frontend's image config/);
  });
});
