import type { ServiceImpl } from '@connectrpc/connect';
import { worker } from '@kiln/api';
import { parseCompression } from '../layers/media-types.js';
import type { Worker } from '../worker.js';

/**
 * The WorkerService over a Worker: maps messages and delegates, passing the
 * call's abort signal down. Errors are KilnErrors (VertexError carries the
 * vertex digest); register the service with `serverErrorInterceptor` from
 * @kiln/common (as `serveRoutes`/`createInMemoryTransport` do) so codes and
 * details reach the client.
 */
export function createWorkerServiceImpl(w: Worker): ServiceImpl<typeof worker.WorkerService> {
  return {
    async describe() {
      const d = await w.describe();
      return {
        id: d.id,
        backend: d.backend,
        labels: d.labels,
        ops: d.ops,
        platforms: d.platforms.map((p) => ({ os: p.os, architecture: p.architecture, variant: p.variant ?? '' })),
      };
    },

    async run(req, ctx) {
      const res = await w.run({
        buildId: req.buildId,
        sessionId: req.sessionId,
        vertexDigest: req.vertexDigest,
        op: req.op,
        inputRefs: req.inputRefs,
        description: req.description,
        entitlements: req.entitlements,
        noCache: req.noCache,
        signal: ctx.signal,
      });
      return { outputRefs: res.outputRefs, contentDigests: res.contentDigests ?? [], contentFiles: res.contentFiles ?? [] };
    },

    async *exportRef(req, ctx) {
      for await (const chunk of w.exportRef(req.ref, { signal: ctx.signal })) yield { tarChunk: chunk };
    },

    async release(req) {
      await w.release(req.refs);
      return {};
    },

    async retain(req) {
      return w.retain(req.refs, req.owner, { ephemeral: req.ephemeral });
    },

    async drop(req) {
      await w.drop(req.refs, req.owner);
      return {};
    },

    async refUsage(req) {
      const usage = await w.refUsage(req.refs);
      return { usage: usage.map((u) => ({ ref: u.ref, found: u.found, size: BigInt(u.sizeBytes), owners: u.owners })) };
    },

    async importLayers(req, ctx) {
      const layers = req.layers.map((l) => ({ digest: l.digest, size: Number(l.size), mediaType: l.mediaType, diffId: l.diffId, ...(l.createdBy ? { createdBy: l.createdBy } : {}) }));
      return { ref: await w.importLayers(layers, { signal: ctx.signal }) };
    },

    async checksum(req) {
      return { digest: await w.checksum(req.ref, req.selectors.map((s) => ({ path: s.path, wildcard: s.wildcard, followSymlink: s.followSymlink }))) };
    },

    async readFile(req) {
      return { data: await w.refFiles(req.ref).read(req.path, Number(req.offset), Number(req.length)) };
    },

    async statFile(req) {
      return { stat: await w.refFiles(req.ref).stat(req.path) };
    },

    async readDir(req) {
      return { entries: await w.refFiles(req.ref).list(req.path, req.includePattern) };
    },

    async getLayers(req, ctx) {
      const layers = await w.getLayers(req.ref, {
        compression: parseCompression(req.compression),
        compressionLevel: req.compressionLevel,
        forceCompression: req.forceCompression,
        ociMediaTypes: req.ociMediaTypes,
        sourceDateEpoch: req.sourceDateEpoch === undefined ? undefined : Number(req.sourceDateEpoch),
        lease: req.lease,
        signal: ctx.signal,
      });
      return {
        layers: layers.map((l) => ({ digest: l.digest, size: BigInt(l.size), mediaType: l.mediaType, diffId: l.diffId, fromBase: l.fromBase, createdBy: l.createdBy ?? '', timestampsRewritten: l.timestampsRewritten, createdAtUnixMs: BigInt(l.createdAtMs ?? 0) })),
      };
    },
  };
}
