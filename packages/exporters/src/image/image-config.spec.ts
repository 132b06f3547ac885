import { describe, expect, it } from 'vitest';
import { buildImageConfig, GENERATED_HISTORY_COMMENT, rfc3339 } from './image-config.js';
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

  it('works without a frontend config (LLB-only builds) and rejects one that is not a JSON object', () => {
    expect(buildImageConfig(new Uint8Array(), [], { nowSeconds: 0 })).toMatchObject({ os: 'linux', rootfs: { diff_ids: [] }, history: [] });
    expect(() => buildImageConfig(Buffer.from('[1]'), [], { nowSeconds: 0 })).toThrow(/failed to read the frontend's image config/);
  });
});
