import type { Client } from '@connectrpc/connect';
import type { worker } from '@kiln/api';
import { KilnError } from '@kiln/common';
import { scanFilesystem, toSpdxDocument, type FileAccess } from '@kiln/sbom';

/** The outputs that carry an SBOM: attached to images (image, oci) or written beside the files (local, tar). */
export const SBOM_EXPORTERS: ReadonlySet<string> = new Set(['image', 'oci', 'local', 'tar']);

/** `attest:sbom` (buildx `--sbom`, `--attest type=sbom`): asked for unless absent or `disabled=true`. */
export function sbomRequested(value: string | undefined): boolean {
  if (value === undefined) return false;
  return !value.split(',').some((p) => /^disabled=(?!false$)/.test(p.trim()) || /^(false|0)$/i.test(p.trim()));
}

/**
 * The SPDX document (JSON bytes) of the packages in result `ref`, read on
 * its worker with ReadFile/ReadDir (paths walked inside the ref's root by
 * the worker). An empty (scratch) result gives a document with no packages.
 */
export async function resultSbom(client: Client<typeof worker.WorkerService>, ref: string, opts: { name: string; created?: Date; signal: AbortSignal }): Promise<Uint8Array> {
  const empty: FileAccess = { readFile: async () => undefined, readDir: async () => undefined };
  const scan = await scanFilesystem(ref ? workerFiles(client, ref, opts.signal) : empty, { signal: opts.signal });
  return Buffer.from(JSON.stringify(toSpdxDocument(scan, { name: opts.name, ...(opts.created ? { created: opts.created } : {}) })));
}

/** A missing path, or a file where a directory was asked for (and back), reads as absent. */
const absent = (err: unknown) => err instanceof KilnError && (err.code === 'not_found' || err.code === 'invalid_argument');

function workerFiles(client: Client<typeof worker.WorkerService>, ref: string, signal: AbortSignal): FileAccess {
  return {
    async readFile(path) {
      try {
        return (await client.readFile({ ref, path, offset: 0n, length: 0n }, { signal })).data;
      } catch (err) {
        if (absent(err)) return undefined;
        throw err;
      }
    },
    async readDir(path) {
      try {
        const res = await client.readDir({ ref, path, includePattern: '' }, { signal });
        return res.entries.map((e) => ({ name: e.path, isDirectory: (e.mode & 0o170000) === 0o040000 }));
      } catch (err) {
        if (absent(err)) return undefined;
        throw err;
      }
    },
  };
}
