import { session } from '@kiln/api';
import { createInMemoryTransport, createKilnClient, NotFoundError } from '@kiln/common';
import { packDirectory } from './tar.js';

/** What the fake serves for one shared directory: a real directory, or raw tar bytes (e.g. hostile). */
export type FakeSharedDir = { dir: string } | { tar: Uint8Array };

export interface FakeSession {
  /** A Connect client of SessionService over an in-memory transport; pass it as `sessions`. */
  readonly client: ReturnType<typeof createKilnClient<typeof session.SessionService>>;
  /** Shared directories by name (mutable: tests add to it). */
  readonly dirs: Map<string, FakeSharedDir>;
  /** Every FetchFiles request received, in order. */
  readonly fetches: session.FetchFilesRequest[];
  /** Secrets served by GetSecret, by id (mutable). */
  readonly secrets: Map<string, Uint8Array>;
}

/** Chunk size of the served tar, small so transfers take several messages. */
const CHUNK = 16 * 1024;

/**
 * A SessionService serving FetchFiles from local directories (tarred with
 * the request's include/exclude patterns honoured) or from fixed tar bytes,
 * and GetSecret from `secrets`.
 * An unknown directory name fails with NotFoundError, as the relay does.
 */
export function createFakeSession(dirs: Record<string, FakeSharedDir> = {}): FakeSession {
  const map = new Map(Object.entries(dirs));
  const fetches: session.FetchFilesRequest[] = [];
  const secrets = new Map<string, Uint8Array>();
  const transport = createInMemoryTransport((router) => {
    router.service(session.SessionService, {
      async *fetchFiles(req) {
        fetches.push(req);
        const shared = map.get(req.dirName);
        if (!shared) throw new NotFoundError(`no shared directory "${req.dirName}" in session ${req.sessionId}`);
        const tar =
          'tar' in shared ? shared.tar : await packDirectory(shared.dir, { include: req.includePatterns, exclude: req.excludePatterns });
        for (let i = 0; i < tar.byteLength; i += CHUNK) yield { tarChunk: tar.subarray(i, i + CHUNK) };
      },
      async getSecret(req) {
        const data = secrets.get(req.id);
        return data ? { found: true, data } : { found: false };
      },
    });
  });
  return { client: createKilnClient(session.SessionService, transport), dirs: map, fetches, secrets };
}
