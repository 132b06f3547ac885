import type { Client, ServiceImpl } from '@connectrpc/connect';
import { exporter, session, type content, type worker } from '@kiln/api';
import { InvalidArgumentError, NotFoundError, type Logger } from '@kiln/common';
import { sessionCredentials, type RegistryClient } from '@kiln/registry';
import type { ClientOutputs, Exporter, OutputChunk, ResultSource } from '../exporter.js';
import { outputBytes } from '../output-chunks.js';
import { emptyTar } from '../empty-tar.js';
import { localWriteTarget, openLocalWrite, writeLocal } from '../local-write.js';
import { contentBlobStore, type LocalBlobFiles } from '../image/blob-store.js';
import type { LayerDescriptor, LayerRequest } from '../image/layers.js';

export interface ExporterServiceOptions {
  exporters: readonly Exporter[];
  /** The worker that holds a result, by id. */
  worker(id: string): Promise<Client<typeof worker.WorkerService> | undefined>;
  /** The session relay (SessionService on the solver). */
  sessions: Client<typeof session.SessionService>;
  /** The content store tier (image, oci and docker exporters). */
  content?: Client<typeof content.ContentService>;
  /**
   * Registry access for `type=image,push=true`, with the daemon's
   * credentials; each export asks its build's client session first.
   */
  registry?: RegistryClient;
  /**
   * The content store's blob files, when it runs in this process (the
   * all-in-one daemon): a local write copies layer blobs from them in the
   * kernel instead of reading them through ContentService.
   */
  localBlobFiles?: LocalBlobFiles;
  logger: Logger;
}

/** The Exporter tier's RPC surface: resolves the exporter, wires the result's tar and the client. */
export function createExporterServiceImpl(opts: ExporterServiceOptions): ServiceImpl<typeof exporter.ExporterService> {
  const byType = new Map(opts.exporters.map((e) => [e.type, e]));
  const store = opts.content ? contentBlobStore(opts.content, opts.localBlobFiles) : undefined;
  const streamTo = async (sessionId: string, outputId: string, data: AsyncIterable<OutputChunk>, signal?: AbortSignal, localBytes?: number) => {
    async function* requests() {
      const local = localBytes === undefined ? {} : { localWritten: true, localBytes: BigInt(localBytes) };
      yield { msg: { case: 'header' as const, value: { sessionId, outputId, ...local } } };
      if (localBytes !== undefined) return;
      for await (const chunk of outputBytes(data)) yield { msg: { case: 'chunk' as const, value: chunk } };
    }
    const res = await opts.sessions.writeFiles(requests(), { signal });
    return Number(res.bytes);
  };
  /** The client outputs of one export: written in place when the client's local-write offer checks out, else streamed. */
  const outputsFor = (attrs: Record<string, string>, logger: Logger): ClientOutputs => ({
    async write(sessionId, outputId, data, signal) {
      const target = localWriteTarget(attrs);
      if (target) {
        const opened = await openLocalWrite(target);
        if ('fh' in opened) {
          const timing = { writeMs: 0, fileCopiedBytes: 0 };
          const size = await writeLocal(opened.fh, target.path, data, timing, signal);
          logger.debug({ path: target.path, bytes: size, ...timing }, 'output written in place (local write)');
          return streamTo(sessionId, outputId, data, signal, size);
        }
        logger.debug({ reason: opened.reason }, 'local write refused: streaming the output');
      }
      return streamTo(sessionId, outputId, data, signal);
    },
  });
  return {
    async export(req, ctx) {
      const exp = byType.get(req.type);
      if (!exp) {
        throw new InvalidArgumentError(`unknown exporter type "${req.type}" (have: ${[...byType.keys()].join(', ')})`, '--output');
      }
      const instance = exp.resolve(req.attrs);
      const result = async (workerId: string, ref: string, imageConfig: Uint8Array, sbom: Uint8Array): Promise<ResultSource> => {
        const client = ref ? await opts.worker(workerId) : undefined;
        if (ref && !client) throw new NotFoundError(`worker ${workerId} that holds the result is gone`);
        return {
          imageConfig,
          openTar: (signal) => (client ? tarChunks(client.exportRef({ ref }, { signal })) : emptyTar()),
          getLayers: async (layerReq, signal) => (client ? getLayers(client, ref, layerReq, signal) : []),
          ...(sbom.length > 0 ? { sbom } : {}),
        };
      };
      const platforms = await Promise.all(req.platforms.map(async (p) => ({ platform: p.platform, ...(await result(p.workerId, p.ref, p.imageConfig, p.sbom)) })));
      const top = platforms[0] ?? (await result(req.workerId, req.ref, req.imageConfig, req.sbom));
      const logger = opts.logger.child({ buildId: req.buildId, exporter: req.type });
      const outputs = outputsFor(req.attrs, logger);
      const registry =
        opts.registry && req.sessionId
          ? opts.registry.withCredentials(sessionCredentials((host, signal) => opts.sessions.getCredentials({ sessionId: req.sessionId, host }, { signal: signal ?? ctx.signal })))
          : opts.registry;
      const response = await instance.export(
        { buildId: req.buildId, sessionId: req.sessionId, ...top, ...(platforms.length > 0 ? { platforms } : {}), ...(req.provenance.length > 0 ? { provenance: req.provenance } : {}) },
        { outputs, content: store, registry, logger, signal: ctx.signal },
      );
      return { response };
    },
  };
}

async function* tarChunks(it: AsyncIterable<{ tarChunk: Uint8Array }>): AsyncIterable<Uint8Array> {
  for await (const m of it) yield m.tarChunk;
}

async function getLayers(client: Client<typeof worker.WorkerService>, ref: string, req: LayerRequest, signal?: AbortSignal): Promise<LayerDescriptor[]> {
  const res = await client.getLayers(
    {
      ref,
      compression: req.compression,
      compressionLevel: req.compressionLevel,
      forceCompression: req.forceCompression,
      ociMediaTypes: req.ociMediaTypes,
      sourceDateEpoch: req.sourceDateEpoch === undefined ? undefined : BigInt(req.sourceDateEpoch),
      lease: req.lease,
    },
    { signal },
  );
  return res.layers.map((l) => ({ digest: l.digest, size: Number(l.size), mediaType: l.mediaType, diffId: l.diffId, fromBase: l.fromBase, createdBy: l.createdBy, timestampsRewritten: l.timestampsRewritten, ...(l.createdAtUnixMs > 0n ? { createdAtMs: Number(l.createdAtUnixMs) } : {}) }));
}
