import { InvalidArgumentError } from '@kiln/common';
import type { LayerDescriptor } from './layers.js';

/** One image history entry (OCI image spec field names). */
export interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

/** Comment on the history entries the exporter makes for layers the frontend's history does not account for. */
export const GENERATED_HISTORY_COMMENT = 'kiln.exporter.image.v0';

/** An RFC 3339 UTC time as Go writes it (no fractional part when whole). */
export function rfc3339(unixSeconds: number): string {
  return new Date(unixSeconds * 1000).toISOString().replace(/\.000Z$/, 'Z');
}

/**
 * The image config the exporter writes: the frontend's config (empty for an
 * LLB-only build) with `rootfs.diff_ids` from `layers` and a history that
 * matches them, as BuildKit's image exporter normalises it:
 * - non-empty history entries are matched 1:1, in order, to layers; entries
 *   beyond the last layer become `empty_layer`;
 * - layers no entry accounts for get generated entries: before the
 *   frontend's entries when they are the base image's leading layers (Kiln's
 *   frontend does not carry the base image's history), else after them;
 * - times as BuildKit dates them from its cache records: an entry for a
 *   layer gets the time the worker committed that layer's snapshot; an
 *   entry without a time (an empty layer) gets the first new layer's time
 *   or the time of the layer before it; config `created` is the last
 *   history time (or the newest layer's, when later). So a build whose steps all come from the cache gives the
 *   same config (and manifest, and image digest) as the build that made
 *   them. When a layer has no time (or there is no layer): `now` for config
 *   `created` and every entry without a time;
 * - with a source date epoch, config `created` is the epoch and no history
 *   time is later than it.
 * Key order is fixed, so the same inputs give the same bytes.
 */
export function buildImageConfig(frontendConfig: Uint8Array, layers: readonly LayerDescriptor[], opts: { nowSeconds: number; sourceDateEpoch?: number }): Record<string, unknown> {
  let base: Record<string, unknown> = {};
  if (frontendConfig.length > 0) {
    try {
      const parsed: unknown = JSON.parse(Buffer.from(frontendConfig).toString('utf8'));
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not a JSON object');
      base = parsed as Record<string, unknown>;
    } catch (err) {
      throw new InvalidArgumentError(`failed to read the frontend's image config: ${(err as Error).message}`, 'image_config');
    }
  }
  const epoch = opts.sourceDateEpoch;
  const now = rfc3339(epoch ?? opts.nowSeconds);
  const history = normaliseHistory(Array.isArray(base.history) ? (base.history as HistoryEntry[]) : [], layers, now);
  let created = now;
  if (epoch !== undefined) {
    for (const h of history) if (!h.created || Date.parse(h.created) > epoch * 1000) h.created = now;
  } else {
    created = layers.length > 0 && layers.every((l) => l.createdAtMs !== undefined) ? latestTime(history, layers) : now;
  }
  const { created: _c, author, architecture, variant, os, 'os.version': osVersion, 'os.features': osFeatures, config, rootfs: _r, history: _h, ...rest } = base;
  const out: Record<string, unknown> = { created };
  if (author !== undefined) out.author = author;
  out.architecture = architecture ?? process.arch.replace('x64', 'amd64');
  if (variant !== undefined) out.variant = variant;
  out.os = os ?? 'linux';
  if (osVersion !== undefined) out['os.version'] = osVersion;
  if (osFeatures !== undefined) out['os.features'] = osFeatures;
  out.config = config ?? {};
  out.rootfs = { type: 'layers', diff_ids: layers.map((l) => l.diffId) };
  out.history = history;
  return { ...out, ...rest };
}

/** A layer's time in RFC 3339 as Go writes it (no trailing zeros in the fraction). */
const layerTime = (l: LayerDescriptor): string | undefined =>
  l.createdAtMs === undefined ? undefined : new Date(l.createdAtMs).toISOString().replace(/(\.\d*?)0+Z$/, '$1Z').replace(/\.Z$/, 'Z');

function normaliseHistory(input: readonly HistoryEntry[], layers: readonly LayerDescriptor[], now: string): HistoryEntry[] {
  let history = input.map((h) => ({ ...h }));
  let matched = 0;
  for (const h of history) {
    if (h.empty_layer) continue;
    if (matched >= layers.length) h.empty_layer = true;
    else matched++;
  }
  const missing = layers.length - matched;
  if (missing > 0) {
    const generated = (l: LayerDescriptor): HistoryEntry => ({ created_by: l.createdBy, comment: GENERATED_HISTORY_COMMENT });
    let leadingBase = 0;
    while (leadingBase < layers.length && layers[leadingBase]!.fromBase) leadingBase++;
    history =
      leadingBase >= missing
        ? [...layers.slice(0, missing).map(generated), ...history]
        : [...history, ...layers.slice(matched).map(generated)];
  }
  // Now each entry that is not empty_layer is the entry of the layer at its position.
  let layer = 0;
  for (const h of history) {
    if (h.empty_layer) continue;
    const time = layerTime(layers[layer++]!);
    h.created ??= time;
  }
  // Times as BuildKit's only when every layer has one; else (a worker that
  // does not say) entries without a time get `now`, as before.
  if (layers.every((l) => l.createdAtMs !== undefined)) fillHistoryTimes(history, now);
  else for (const h of history) h.created ??= now;
  // Field order as the spec (and Go's encoder) has it.
  return history.map((h) => {
    const o: HistoryEntry = {};
    if (h.created !== undefined) o.created = h.created;
    if (h.created_by !== undefined && h.created_by !== '') o.created_by = h.created_by;
    if (h.author !== undefined) o.author = h.author;
    if (h.comment !== undefined) o.comment = h.comment;
    if (h.empty_layer) o.empty_layer = true;
    return o;
  });
}

/**
 * Gives each entry without a time one, as BuildKit's exporter does: the
 * first time that follows an entry without one (the first new layer's; the
 * last time when every entry has one), then, after the first entry without
 * a time, the latest time seen. `now` only when no entry has a time.
 */
/**
 * Config `created`: the last history time (BuildKit's), or the newest
 * layer's time when that is later (a layer matched to an entry that kept an
 * older time of its own, e.g. a base image's).
 */
function latestTime(history: readonly HistoryEntry[], layers: readonly LayerDescriptor[]): string {
  const last = history.findLast((h) => h.created !== undefined)?.created;
  const newest = layers.reduce((a, b) => (b.createdAtMs! > a.createdAtMs! ? b : a));
  return last !== undefined && !(Date.parse(last) < newest.createdAtMs!) ? last : layerTime(newest)!;
}

function fillHistoryTimes(history: HistoryEntry[], now: string): void {
  let created: string | undefined;
  let untimed = false;
  for (const h of history) {
    if (h.created !== undefined) {
      created = h.created;
      if (untimed) break;
    } else untimed = true;
  }
  untimed = false;
  for (const h of history) {
    if (h.created !== undefined) {
      if (untimed) created = h.created;
    } else {
      untimed = true;
      h.created = created ?? now;
    }
  }
}
