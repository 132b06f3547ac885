import type { ServiceImpl } from '@connectrpc/connect';
import { session } from '@kiln/api';
import { KilnError } from '@kiln/common';
import type { SessionHost } from '../session/session-host.js';

/** Largest single file ReadFile returns (Dockerfiles, ignore files). */
const READ_LIMIT = 8 * 1024 * 1024;

/** The SessionService on the solver: the client's Attach plus the relay RPCs other tiers call. */
export function createSessionServiceImpl(host: SessionHost): ServiceImpl<typeof session.SessionService> {
  return {
    attach(requests, ctx) {
      return host.attach(requests, ctx.signal);
    },
    async *fetchFiles(req, ctx) {
      for await (const tarChunk of host.fetch(req.sessionId, {
        dirName: req.dirName,
        includePatterns: req.includePatterns,
        excludePatterns: req.excludePatterns,
        followPaths: req.followPaths,
        diff: req.diff,
        baseManifest: req.baseManifest,
        signal: ctx.signal,
      })) {
        yield { tarChunk };
      }
    },
    async describeDir(req, ctx) {
      return { sharedKey: await host.sharedKey(req.sessionId, req.dirName, ctx.signal) };
    },
    async readFile(req, ctx) {
      const max = req.maxBytes > 0n ? Math.min(Number(req.maxBytes), READ_LIMIT) : READ_LIMIT;
      const data = await host.read(req.sessionId, req.dirName, req.path, max, ctx.signal);
      return data ? { found: true, data } : { found: false };
    },
    async writeFiles(requests, ctx) {
      const it = requests[Symbol.asyncIterator]();
      const first = await it.next();
      if (first.done || first.value.msg.case !== 'header') throw new KilnError('invalid_argument', 'WriteFiles must start with a header');
      const { sessionId, outputId, localWritten, localBytes } = first.value.msg.value;
      async function* chunks() {
        for (let r = await it.next(); !r.done; r = await it.next()) {
          if (r.value.msg.case === 'chunk') yield r.value.msg.value;
        }
      }
      const bytes = await host.write(sessionId, outputId, chunks(), ctx.signal, localWritten ? Number(localBytes) : undefined);
      return { bytes: BigInt(bytes) };
    },
    async getSecret(req, ctx) {
      const data = await host.secret(req.sessionId, req.id, ctx.signal);
      return data ? { found: true, data } : { found: false };
    },
    async getCredentials(req, ctx) {
      return host.credentials(req.sessionId, req.host, ctx.signal);
    },
    async *forwardSsh(requests, ctx) {
      const it = requests[Symbol.asyncIterator]();
      const first = await it.next();
      if (first.done || first.value.msg.case !== 'header') throw new KilnError('invalid_argument', 'ForwardSsh must start with a header');
      const { sessionId, id } = first.value.msg.value;
      async function* input() {
        for (let r = await it.next(); !r.done; r = await it.next()) {
          if (r.value.msg.case === 'data') yield r.value.msg.value;
        }
      }
      for await (const data of host.ssh(sessionId, id || 'default', input(), ctx.signal)) yield { data };
    },
  };
}
