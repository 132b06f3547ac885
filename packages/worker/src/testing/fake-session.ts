import { session } from '@kiln/api';
import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { createConnection } from 'node:net';
import path from 'node:path';
import {
  createChannel,
  createInMemoryTransport,
  createKilnClient,
  decodeContextManifest,
  InvalidArgumentError,
  NotFoundError,
  packContextDiff,
  PatternMatcher,
  type DiffSourceEntry,
} from '@kiln/common';
import { packDirectory } from './tar.js';

/**
 * What the fake serves for one shared directory: a real directory, or raw
 * tar bytes (e.g. hostile). A directory with a `sharedKey` is announced by
 * DescribeDir, so the worker asks for diffs against its last copy.
 */
export type FakeSharedDir = { dir: string; sharedKey?: string } | { tar: Uint8Array };

export interface FakeSession {
  /** A Connect client of SessionService over an in-memory transport; pass it as `sessions`. */
  readonly client: ReturnType<typeof createKilnClient<typeof session.SessionService>>;
  /** Shared directories by name (mutable: tests add to it). */
  readonly dirs: Map<string, FakeSharedDir>;
  /** Every FetchFiles request received, in order. */
  readonly fetches: session.FetchFilesRequest[];
  /** Secrets served by GetSecret, by id (mutable). */
  readonly secrets: Map<string, Uint8Array>;
  /** SSH agent sockets served by ForwardSsh, by id (mutable). */
  readonly sshAgents: Map<string, string>;
  /** Bytes sent by each FetchFiles answer, in order. */
  readonly sentBytes: number[];
}

/** Chunk size of the served tar, small so transfers take several messages. */
const CHUNK = 16 * 1024;

/**
 * A SessionService serving FetchFiles from local directories (tarred with
 * the request's include/exclude patterns honoured) or from fixed tar bytes,
 * GetSecret from `secrets` and ForwardSsh by connecting to `sshAgents`
 * (an unknown id fails with NotFoundError, as the CLI answers).
 * An unknown directory name fails with NotFoundError, as the relay does.
 */
export function createFakeSession(dirs: Record<string, FakeSharedDir> = {}): FakeSession {
  const map = new Map(Object.entries(dirs));
  const fetches: session.FetchFilesRequest[] = [];
  const secrets = new Map<string, Uint8Array>();
  const sshAgents = new Map<string, string>();
  const sentBytes: number[] = [];
  const transport = createInMemoryTransport((router) => {
    router.service(session.SessionService, {
      async *fetchFiles(req) {
        fetches.push(req);
        const shared = map.get(req.dirName);
        if (!shared) throw new NotFoundError(`no shared directory "${req.dirName}" in session ${req.sessionId}`);
        const at = sentBytes.push(0) - 1;
        if (req.diff && 'dir' in shared) {
          const entries = walkDirectory(shared.dir, req.includePatterns, req.excludePatterns);
          for await (const tarChunk of packContextDiff(shared.dir, entries, decodeContextManifest(req.baseManifest), { chunkBytes: CHUNK })) {
            sentBytes[at]! += tarChunk.byteLength;
            yield { tarChunk };
          }
          return;
        }
        const tar =
          'tar' in shared ? shared.tar : await packDirectory(shared.dir, { include: req.includePatterns, exclude: req.excludePatterns });
        sentBytes[at] = tar.byteLength;
        for (let i = 0; i < tar.byteLength; i += CHUNK) yield { tarChunk: tar.subarray(i, i + CHUNK) };
      },
      async describeDir(req) {
        const shared = map.get(req.dirName);
        if (!shared) throw new NotFoundError(`no shared directory "${req.dirName}" in session ${req.sessionId}`);
        return { sharedKey: 'dir' in shared ? (shared.sharedKey ?? '') : '' };
      },
      async getSecret(req) {
        const data = secrets.get(req.id);
        return data ? { found: true, data } : { found: false };
      },
      async *forwardSsh(requests) {
        const it = requests[Symbol.asyncIterator]();
        const first = await it.next();
        if (first.done || first.value.msg.case !== 'header') throw new InvalidArgumentError('ForwardSsh must start with a header', 'header');
        const id = first.value.msg.value.id || 'default';
        const socket = sshAgents.get(id);
        if (!socket) throw new NotFoundError(`no SSH agent "${id}" was forwarded (pass --ssh ${id})`);
        const conn = createConnection(socket);
        const fromAgent = createChannel<Uint8Array>();
        conn.on('data', (b: Buffer) => void fromAgent.push(Uint8Array.from(b)));
        conn.once('close', () => fromAgent.end());
        conn.once('error', (err) => fromAgent.fail(err));
        void (async () => {
          for (let r = await it.next(); !r.done; r = await it.next()) if (r.value.msg.case === 'data') conn.write(r.value.msg.value);
          conn.end();
        })().catch(() => conn.destroy());
        try {
          for await (const data of fromAgent) yield { data };
        } finally {
          conn.destroy();
        }
      },
    });
  });
  return { client: createKilnClient(session.SessionService, transport), dirs: map, fetches, secrets, sshAgents, sentBytes };
}

/**
 * Walks `root` in sorted order, parents before children, yielding files,
 * symlinks and directories that match `include` (or hold matches) and not
 * `exclude`: what the CLI's walk sends, without its finer points.
 */
export function* walkDirectory(root: string, include: readonly string[] = [], exclude: readonly string[] = []): Generator<DiffSourceEntry> {
  const inc = new PatternMatcher(include);
  const exc = new PatternMatcher(exclude);
  function* walk(rel: string): Generator<DiffSourceEntry> {
    for (const name of readdirSync(path.join(root, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      if (!exc.empty && exc.matches(r)) continue;
      const stat = lstatSync(path.join(root, r));
      const included = inc.empty || inc.matches(r);
      if (stat.isDirectory()) {
        if (!included && !inc.mayMatchUnder(r)) continue;
        yield { path: r, stat };
        yield* walk(r);
      } else if (included && (stat.isFile() || stat.isSymbolicLink())) {
        yield { path: r, stat, ...(stat.isSymbolicLink() ? { linkname: readlinkSync(path.join(root, r)) } : {}) };
      }
    }
  }
  yield* walk('');
}
