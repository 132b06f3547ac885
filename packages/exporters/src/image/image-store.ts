import type { BlobStore } from './blob-store.js';

/** The label that makes a blob a GC root in the content store. */
export const GC_ROOT_LABEL = 'kiln.gc.root';
/** Label prefix naming an image a manifest is stored as: `kiln.image.name/<normalized name>` = RFC 3339 time. */
export const IMAGE_NAME_LABEL_PREFIX = 'kiln.image.name/';

/**
 * Keeps an image in the content store under `names` (normalized): its
 * manifest gets a `kiln.image.name/<name>` label per name and becomes a GC
 * root (its gc.ref labels keep config and layers). A name moves: the
 * manifest that held it loses the label, and its root when no name is left.
 * When every name already labels this manifest alone and it is a root (a
 * cached rebuild with the same -t), nothing is written: a label change is a
 * durable content-store commit (an fsync on the cached build's path), and
 * the names keep the time they were first given.
 */
export async function keepImage(store: BlobStore, manifestDigest: string, names: readonly string[], nowIso: string, signal?: AbortSignal): Promise<void> {
  let unchanged = names.length > 0;
  for (const name of names) {
    const key = `${IMAGE_NAME_LABEL_PREFIX}${name}`;
    let held = false;
    for (const prev of await store.find([`labels.${JSON.stringify(key)}`], signal)) {
      if (prev.digest === manifestDigest) {
        held = !!prev.labels[key] && !!prev.labels[GC_ROOT_LABEL];
        continue;
      }
      const left = Object.keys(prev.labels).filter((k) => k.startsWith(IMAGE_NAME_LABEL_PREFIX) && k !== key);
      await store.setLabels(prev.digest, { [key]: '', ...(left.length === 0 ? { [GC_ROOT_LABEL]: '' } : {}) }, signal);
    }
    if (!held) unchanged = false;
  }
  if (unchanged) return;
  const labels: Record<string, string> = { [GC_ROOT_LABEL]: nowIso };
  for (const name of names) labels[`${IMAGE_NAME_LABEL_PREFIX}${name}`] = nowIso;
  await store.setLabels(manifestDigest, labels, signal);
}

/** The manifest digest stored under `name` (normalized), if any. */
export async function findImage(store: BlobStore, name: string, signal?: AbortSignal): Promise<string | undefined> {
  const found = await store.find([`labels.${JSON.stringify(`${IMAGE_NAME_LABEL_PREFIX}${name}`)}`], signal);
  return found[0]?.digest;
}
