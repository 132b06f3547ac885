import { createHash } from 'node:crypto';
import { silentLogger, type Logger } from '@kiln/common';
import { distributionSourceLabel, formatReference, type CredentialStore, type Descriptor, type Manifest, type Reference, type RegistryClient } from '@kiln/registry';
import { hasCode, type ContainerdClient } from './client.js';
import { teeContent, writeContent } from './content-writer.js';
import { OWNER_LABEL } from './containerd-executor.js';
import { HOLDER_LABEL } from './containerd-snapshotter.js';

/** Label of the lease holding one pulled image's content: the image name. */
export const IMAGE_LABEL = 'kiln.image';

export interface ImageRecorderOptions {
  client: ContainerdClient;
  /** The worker's `kiln.owner` label value. */
  owner: string;
  logger?: Logger;
}

/**
 * Puts what the worker pulls from registries into containerd, as `ctr pull`
 * would: manifests, indexes, configs and layer blobs go into containerd's
 * content store (each manifest labelled with the `containerd.io/gc.ref.content.*`
 * references to its config and layers, an index with its manifests), and
 * the reference read is an image record of the worker's namespace pointing
 * at the top manifest, so `ctr -n kiln images ls` lists it. Everything an
 * image pulls is written under a lease of its own (`kiln-image-<hash of the
 * worker's owner and the name>`, labels `kiln.holder` and `kiln.image`)
 * besides the image record. `forget` removes both once the worker holds no
 * ref of the image (see `ImageRefs`).
 *
 * Recording never fails a pull: a containerd error is logged and the bytes
 * still reach the worker.
 */
export class ImageRecorder {
  private readonly logger: Logger;
  private readonly leases = new Map<string, Promise<string>>();

  constructor(private readonly opts: ImageRecorderOptions) {
    this.logger = (opts.logger ?? silentLogger()).child({ component: 'containerd-images' });
  }

  /** A registry client that records through this recorder (and so do the per-build clients made from it). */
  wrap(inner: RegistryClient): RegistryClient {
    const recorder = this;
    return {
      resolve: (ref, signal) => inner.resolve(ref, signal),
      getManifest: async (ref, desc, signal) => {
        const m = await inner.getManifest(ref, desc, signal);
        await recorder.recordManifest(ref, m, desc === undefined, signal);
        return m;
      },
      fetch: (ref, desc, signal) => recorder.teeFetch(ref, desc, inner.fetch(ref, desc, signal), signal),
      pushBlob: (...args) => inner.pushBlob(...args),
      pushManifest: (...args) => inner.pushManifest(...args),
      withCredentials: (first: CredentialStore) => recorder.wrap(inner.withCredentials(first)),
      credentialsKeyFor: (domain, signal) => inner.credentialsKeyFor(domain, signal),
    };
  }

  /** Writes a manifest or index with its GC references; for the reference's top manifest, creates or moves the image record to it. */
  async recordManifest(ref: Reference, m: Manifest, isTop: boolean, signal?: AbortSignal): Promise<void> {
    const name = formatReference(ref);
    try {
      const lease = await this.leaseFor(name);
      const labels: Record<string, string> = { [distributionSourceLabel(ref.domain)]: ref.path };
      if (m.kind === 'manifest') {
        labels['containerd.io/gc.ref.content.config'] = m.manifest.config.digest;
        m.manifest.layers.forEach((l, i) => (labels[`containerd.io/gc.ref.content.l.${i}`] = l.digest));
      } else {
        m.index.manifests.forEach((d, i) => (labels[`containerd.io/gc.ref.content.m.${i}`] = d.digest));
      }
      await writeContent(this.opts.client, one(m.bytes), { ref: ingestRef(m.descriptor.digest), digest: m.descriptor.digest, size: m.descriptor.size, labels, lease, signal });
      if (isTop) await this.upsertImage(name, m.descriptor, signal);
    } catch (err) {
      if (signal?.aborted) return;
      this.logger.warn({ err, image: name, digest: m.descriptor.digest }, 'failed to record a pulled manifest in containerd');
    }
  }

  /** Passes `src` through, writing its bytes into containerd's content store as they go by (committed when the stream ends whole). */
  teeFetch(ref: Reference, desc: Descriptor, src: AsyncIterable<Uint8Array>, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    const recorder = this;
    return {
      async *[Symbol.asyncIterator]() {
        const name = formatReference(ref);
        let lease: string | undefined;
        try {
          lease = await recorder.leaseFor(name);
        } catch (err) {
          recorder.logger.warn({ err, image: name }, 'failed to create the lease of a pulled image in containerd');
        }
        const labels = { [distributionSourceLabel(ref.domain)]: ref.path };
        const tee = lease ? teeContent(recorder.opts.client, { ref: ingestRef(desc.digest), digest: desc.digest, size: desc.size, labels, lease, signal }) : undefined;
        let whole = false;
        try {
          for await (const chunk of src) {
            await tee?.push(chunk);
            yield chunk;
          }
          whole = true;
        } finally {
          if (tee && whole) {
            await tee.finish().catch((err: unknown) => recorder.logger.warn({ err, image: name, digest: desc.digest }, 'failed to write a pulled blob into containerd'));
          } else {
            tee?.abort();
          }
        }
      },
    };
  }

  /**
   * Removes this worker's lease of image `name` and, unless another worker
   * on the same containerd still holds the image (a lease of its own), the
   * image record; containerd's GC (run before this resolves) then deletes
   * the blobs nothing else references.
   */
  async forget(name: string): Promise<void> {
    const id = imageLeaseId(this.opts.owner, name);
    this.leases.delete(id);
    const { leases } = await this.opts.client.leases.list({ filters: [`labels."${IMAGE_LABEL}"==${JSON.stringify(name)}`] });
    if (!leases.some((l) => l.id !== id)) {
      await this.opts.client.images.delete({ name }).catch((err: unknown) => {
        if (!hasCode(err, 'not_found')) throw err;
      });
    }
    await this.opts.client.leases.delete({ id, sync: true }).catch((err: unknown) => {
      if (!hasCode(err, 'not_found')) throw err;
    });
  }

  /** Names of the images this worker recorded (the records whose `kiln.owner` is this worker's). */
  async recorded(): Promise<string[]> {
    const { images } = await this.opts.client.images.list({ filters: [`labels."${OWNER_LABEL}"==${JSON.stringify(this.opts.owner)}`] });
    return images.map((i) => i.name);
  }

  private async upsertImage(name: string, target: Descriptor, signal?: AbortSignal): Promise<void> {
    const image = { name, labels: { [OWNER_LABEL]: this.opts.owner }, target: { mediaType: target.mediaType, digest: target.digest, size: BigInt(target.size) } };
    try {
      await this.opts.client.images.create({ image }, { signal });
    } catch (err) {
      if (!hasCode(err, 'already_exists')) throw err;
      await this.opts.client.images.update({ image, updateMask: { paths: ['target', `labels.${OWNER_LABEL}`] } }, { signal });
    }
  }

  /** The lease of image `name` (created once; a lease left by an earlier worker is reused). */
  private leaseFor(name: string): Promise<string> {
    const id = imageLeaseId(this.opts.owner, name);
    let p = this.leases.get(id);
    if (!p) {
      p = this.opts.client.leases
        .create({ id, labels: { [HOLDER_LABEL]: this.opts.owner, [IMAGE_LABEL]: name } })
        .then(
          () => id,
          (err: unknown) => {
            if (hasCode(err, 'already_exists')) return id;
            throw err;
          },
        );
      this.leases.set(id, p);
      p.catch(() => this.leases.delete(id));
    }
    return p;
  }
}

/** The lease of image `name` pulled by the worker `owner` (workers sharing one containerd hold their own). */
export function imageLeaseId(owner: string, name: string): string {
  return `kiln-image-${createHash('sha256').update(`${owner}\0${name}`).digest('hex').slice(0, 24)}`;
}

/**
 * The ingest of a blob: one name per digest, so an ingest a killed worker
 * left is restarted (a write from offset 0 truncates it), and two pulls of
 * one blob at once do not both write it (the second is refused while the
 * first holds the ref, and skips it).
 */
function ingestRef(digest: string): string {
  return `kiln-${digest.replace(':', '-')}`;
}

async function* one(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes;
}
