import { open, readFile, realpath, stat } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { join, relative, sep } from 'node:path';
import type { Duplex, Writable } from 'node:stream';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { Client } from '@connectrpc/connect';
import { session as sessionApi } from '@kiln/api';
import {
  asKilnError,
  CanceledError,
  cleanRelPath,
  createChannel,
  decodeContextManifest,
  KilnError,
  packContextDiff,
  NotFoundError,
  PatternMatcher,
  silentLogger,
  type Channel,
  type Logger,
} from '@kiln/common';
import { CHUNK_BYTES, followLinks, literalPattern, packSelected, selectFiles } from './dir-pack.js';
import { extractTar, writeFileOutput } from './extract.js';
import { finishLocalWrite } from './local-write.js';
import { dirSharedKey } from './shared-key.js';
import type { SshKeyAgent } from './ssh-key-agent.js';

type AttachRequestInit = MessageInitShape<typeof sessionApi.AttachRequestSchema>;
type AttachResponse = sessionApi.AttachResponse;
type CallResult = Omit<MessageInitShape<typeof sessionApi.CallDoneSchema>, 'callId' | '$typeName'>;
export type SessionClient = Client<typeof sessionApi.SessionService>;

/** A client directory the daemon may read. */
export interface SessionDir {
  /** "context", "dockerfile" or a named context. */
  name: string;
  /** Absolute path on this machine. */
  path: string;
  /**
   * `.dockerignore` patterns applied to every fetch from this directory
   * before the daemon's own: excluded files are never read or sent.
   */
  excludes?: readonly string[];
  /**
   * SharedDir.shared_key: lets workers keep the last copy of this directory
   * and fetch only changes. Default: `dirSharedKey(path)`; '' turns
   * incremental transfer off.
   */
  sharedKey?: string;
}

/** Where the daemon's writes for one exporter go. */
export type SessionOutput =
  | { id: string; kind: 'dir'; /** Absolute directory, created when missing. */ path: string }
  | {
      id: string;
      kind: 'file';
      /** Absolute file path, or "-" for stdout. */ path: string;
      /** The local-write temp file offered to the exporter (local-write.ts), if any. */
      localTemp?: string;
    };

/** A secret the daemon may read (`--secret`): a file read when asked, or a value (from an env var). */
export type SessionSecret = { id: string; kind: 'file'; path: string } | { id: string; kind: 'value'; value: Uint8Array };

/**
 * An SSH agent the daemon may connect to: an agent's unix socket
 * (`--ssh ID=SOCKET`), or the CLI's in-process agent over key files
 * (`--ssh ID=KEYFILE[,KEYFILE]`). `id` is "default" or the id a
 * `RUN --mount=type=ssh,id=` names.
 */
export type SessionSshAgent =
  | { id: string; socket: string }
  | {
      id: string;
      keyAgent: SshKeyAgent;
      /** The key files, for messages. */
      source: string;
    };

/** Registry credentials for a host; undefined when there are none (anonymous). */
export type SessionCredentialStore = (host: string, signal?: AbortSignal) => Promise<{ username: string; secret: string } | undefined>;

export interface SessionOptions {
  sessionId: string;
  dirs: readonly SessionDir[];
  outputs: readonly SessionOutput[];
  /** Secrets served to `GetSecret`; an unknown id answers "not found". */
  secrets?: readonly SessionSecret[];
  /** Agents served to `ForwardSsh`. */
  sshAgents?: readonly SessionSshAgent[];
  /** Answers `GetCredentials` (image pulls of this build); default: no credentials. */
  credentials?: SessionCredentialStore;
  /** Receives "file" outputs whose path is "-". Default: process.stdout. */
  stdout?: Writable;
  logger?: Logger;
  /** Aborting ends the session at once (running calls are canceled). */
  signal?: AbortSignal;
}

/**
 * A client session attached to the daemon: it serves the daemon's calls
 * (fetch, read, write, secret, credentials, SSH agent connections) by call
 * id, concurrently, until closed.
 */
export interface Session {
  readonly id: string;
  /**
   * Resolves once the daemon answered `ready`; rejects with a KilnError if
   * the stream failed or ended first. Solve may go out before (the daemon's
   * build waits for its session to attach); `kiln build` cancels it when
   * this rejects.
   */
  ready(): Promise<void>;
  /**
   * Ends the session after the build: stops sending and cancels calls still
   * running. The daemon then ends its side; after `graceMs` (default 2000)
   * the stream is torn down regardless. Idempotent.
   */
  close(graceMs?: number): void;
  /** Resolves when the stream is over: void when it ended cleanly, else the error. Never rejects. */
  closed(): Promise<void | Error>;
}

/** Opens `SessionService.Attach`, sends `hello` and starts serving calls. */
export function attachSession(client: SessionClient, opts: SessionOptions): Session {
  const impl = new SessionImpl(client, opts);
  impl.start();
  return impl;
}

interface WriteCall {
  chunks: Channel<Uint8Array>;
  /** Set once the call finished or failed: later chunks are dropped. */
  done: boolean;
}

/** Buffered incoming write chunks per call before the reader waits for the writer. */
const WRITE_BUFFER_CHUNKS = 64;

class SessionImpl implements Session {
  readonly id: string;
  readonly #client: SessionClient;
  readonly #opts: SessionOptions;
  readonly #log: Logger;
  readonly #out = createChannel<AttachRequestInit>();
  readonly #abort = new AbortController();
  readonly #dirs = new Map<string, SessionDir & { ignore: PatternMatcher }>();
  readonly #outputs = new Map<string, SessionOutput>();
  readonly #calls = new Map<number, AbortController>();
  readonly #writes = new Map<number, WriteCall>();
  readonly #sshConns = new Map<number, Duplex>();
  readonly #ready: Promise<void>;
  #resolveReady!: () => void;
  #rejectReady!: (err: Error) => void;
  #closed!: Promise<void | Error>;
  #closing = false;

  constructor(client: SessionClient, opts: SessionOptions) {
    this.id = opts.sessionId;
    this.#client = client;
    this.#opts = opts;
    this.#log = (opts.logger ?? silentLogger()).child({ component: 'session', sessionId: opts.sessionId });
    for (const d of opts.dirs) this.#dirs.set(d.name, { ...d, ignore: new PatternMatcher(d.excludes ?? [], '.dockerignore') });
    for (const o of opts.outputs) this.#outputs.set(o.id, o);
    this.#ready = new Promise((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.#ready.catch(() => undefined);
    if (opts.signal) {
      if (opts.signal.aborted) this.#abort.abort(opts.signal.reason);
      else opts.signal.addEventListener('abort', () => this.#abort.abort(opts.signal?.reason), { once: true });
    }
  }

  start(): void {
    void this.#out.push({
      msg: {
        case: 'hello',
        value: {
          sessionId: this.id,
          dirs: this.#opts.dirs.map((d) => ({ name: d.name, sharedKey: d.sharedKey ?? dirSharedKey(d.path) })),
          outputs: this.#opts.outputs.map((o) => ({ id: o.id, kind: o.kind })),
        },
      },
    });
    this.#closed = this.#run().then(
      () => {
        this.#rejectReady(new KilnError('unavailable', 'session ended before the daemon was ready'));
        return undefined;
      },
      (err: unknown) => {
        const e = asKilnError(err);
        this.#rejectReady(e);
        // Tearing the stream down after close() is the normal end.
        if (this.#closing && e.code === 'canceled') return undefined;
        return e;
      },
    ).finally(() => this.#teardown());
  }

  ready(): Promise<void> {
    return this.#ready;
  }

  close(graceMs = 2000): void {
    if (this.#closing) return;
    this.#closing = true;
    for (const c of this.#calls.values()) c.abort();
    this.#out.end();
    const timer = setTimeout(() => this.#abort.abort(new CanceledError('session closed')), graceMs);
    timer.unref?.();
    void this.#closed.then(() => clearTimeout(timer));
  }

  closed(): Promise<void | Error> {
    return this.#closed;
  }

  async #run(): Promise<void> {
    const responses = this.#client.attach(this.#out, { signal: this.#abort.signal });
    let ready = false;
    for await (const res of responses) {
      if (!ready) {
        if (res.msg.case !== 'ready') throw new KilnError('internal', `session protocol error: expected ready, got ${res.msg.case ?? 'nothing'}`);
        ready = true;
        this.#log.debug('session ready');
        this.#resolveReady();
        continue;
      }
      await this.#dispatch(res);
    }
  }

  #teardown(): void {
    this.#out.end();
    for (const c of this.#sshConns.values()) c.destroy();
    for (const c of this.#calls.values()) c.abort();
    for (const w of this.#writes.values()) w.chunks.abort(new CanceledError('session ended'));
  }

  async #dispatch(res: AttachResponse): Promise<void> {
    const m = res.msg;
    switch (m.case) {
      case 'fetch':
        this.#serve(m.value.callId, (signal) => this.#fetch(m.value, signal));
        return;
      case 'read':
        this.#serve(m.value.callId, (signal) => this.#read(m.value, signal));
        return;
      case 'writeBegin':
        this.#beginWrite(m.value.callId, m.value.outputId, m.value.localWritten ? Number(m.value.localBytes) : undefined);
        return;
      case 'writeData': {
        const w = this.#writes.get(m.value.callId);
        if (!w || w.done) return; // failed or unknown: the daemon was told
        const taken = w.chunks.push(m.value.data);
        if (w.chunks.size > WRITE_BUFFER_CHUNKS) await taken;
        return;
      }
      case 'writeEnd': {
        const w = this.#writes.get(m.value.callId);
        w?.chunks.end();
        return;
      }
      case 'cancel':
        this.#calls.get(m.value.callId)?.abort(new CanceledError('call canceled by the daemon'));
        return;
      case 'secret':
        this.#serve(m.value.callId, (signal) => this.#secret(m.value, signal));
        return;
      case 'credentials':
        this.#serve(m.value.callId, (signal) => this.#credentials(m.value, signal));
        return;
      case 'sshOpen':
        this.#serve(m.value.callId, (signal) => this.#ssh(m.value, signal));
        return;
      case 'sshData': {
        const conn = this.#sshConns.get(m.value.callId);
        if (conn && !conn.write(m.value.data)) await new Promise<void>((resolve) => conn.once('drain', resolve).once('close', resolve));
        return;
      }
      case 'sshClose':
        this.#sshConns.get(m.value.callId)?.end();
        return;
      case 'ready':
        return;
      default:
        this.#log.debug({ case: m.case }, 'ignoring unknown session message');
    }
  }

  /** Runs one call; its result or error is sent as `done`. */
  #serve(callId: number, fn: (signal: AbortSignal) => Promise<CallResult>): void {
    const abort = new AbortController();
    this.#calls.set(callId, abort);
    void fn(abort.signal)
      .then(
        (done): CallResult & { callId: number } => ({ ...done, callId }),
        (err: unknown) => {
          const e = asKilnError(abort.signal.aborted ? new CanceledError('call canceled') : err);
          this.#log.debug({ callId, err: e.message }, 'session call failed');
          return { callId, error: e.message, errorCode: e.code } satisfies CallResult & { callId: number };
        },
      )
      .then((done) => {
        this.#calls.delete(callId);
        return this.#send({ msg: { case: 'done', value: done } });
      });
  }

  #send(msg: AttachRequestInit): Promise<void> {
    return this.#out.push(msg);
  }

  #dir(name: string): SessionDir & { ignore: PatternMatcher } {
    const d = this.#dirs.get(name);
    if (!d) throw new NotFoundError(`session has no directory "${name}"`);
    return d;
  }

  async #fetch(call: sessionApi.FetchCall, signal: AbortSignal): Promise<CallResult> {
    const dir = this.#dir(call.dirName);
    const follow = await followLinks(dir.path, call.followPaths);
    const include = new PatternMatcher([...call.includePatterns, ...follow.map(literalPattern)], 'includePatterns');
    const exclude = [dir.ignore, new PatternMatcher(call.excludePatterns, 'excludePatterns')].filter((m) => !m.empty);
    const entries = selectFiles({ root: dir.path, include, exclude, signal });
    let bytes = 0;
    const stream = call.diff
      ? packContextDiff(dir.path, entries, decodeContextManifest(call.baseManifest), {
          chunkBytes: CHUNK_BYTES,
          signal,
          onDone: (sent) => this.#log.debug({ callId: call.callId, dir: call.dirName, ...sent }, 'context diff sent'),
        })
      : packSelected(dir.path, entries, signal);
    for await (const chunk of stream) {
      if (signal.aborted) throw new CanceledError();
      bytes += chunk.length;
      await this.#send({ msg: { case: 'data', value: { callId: call.callId, data: chunk } } });
    }
    this.#log.debug({ callId: call.callId, dir: call.dirName, bytes }, 'fetch served');
    return { bytes: BigInt(bytes) };
  }

  async #read(call: sessionApi.ReadCall, signal: AbortSignal): Promise<CallResult> {
    const dir = this.#dir(call.dirName);
    const rel = cleanRelPath(call.path);
    if (rel === '') return { found: false };
    // Resolve symlinks, then check the file is still inside the directory.
    let real: string;
    try {
      real = await realpath(join(dir.path, rel));
    } catch {
      return { found: false };
    }
    const root = await realpath(dir.path);
    const inside = relative(root, real);
    if (inside === '' || inside === '..' || inside.startsWith(`..${sep}`)) {
      throw new KilnError('permission_denied', `failed to read "${call.path}": it resolves outside the "${call.dirName}" directory`);
    }
    const st = await stat(real);
    if (!st.isFile()) return { found: false };
    const max = call.maxBytes > 0n ? Number(call.maxBytes) : Number.POSITIVE_INFINITY;
    const fh = await open(real, 'r');
    let bytes = 0;
    try {
      while (bytes < max) {
        if (signal.aborted) throw new CanceledError();
        const buf = new Uint8Array(Math.min(CHUNK_BYTES, max - bytes));
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead === 0) break;
        bytes += bytesRead;
        await this.#send({ msg: { case: 'data', value: { callId: call.callId, data: buf.subarray(0, bytesRead) } } });
      }
    } finally {
      await fh.close();
    }
    return { found: true, bytes: BigInt(bytes) };
  }

  async #secret(call: sessionApi.SecretCall, signal: AbortSignal): Promise<CallResult> {
    const secret = this.#opts.secrets?.find((x) => x.id === call.id);
    if (!secret) return { found: false };
    const data = secret.kind === 'value' ? secret.value : await readFile(secret.path, { signal });
    // Secret bytes are never logged.
    if (data.byteLength > 0) await this.#send({ msg: { case: 'data', value: { callId: call.callId, data } } });
    return { found: true, bytes: BigInt(data.byteLength) };
  }

  async #credentials(call: sessionApi.CredentialsCall, signal: AbortSignal): Promise<CallResult> {
    const creds = this.#opts.credentials ? await this.#opts.credentials(call.host, signal) : undefined;
    if (creds) await this.#send({ msg: { case: 'credentials', value: { callId: call.callId, username: creds.username, secret: creds.secret } } });
    return { found: creds !== undefined };
  }

  /** Connects to the agent and relays bytes until it closes (the daemon's data arrives as sshData). */
  async #ssh(call: sessionApi.SshOpen, signal: AbortSignal): Promise<CallResult> {
    const id = call.id || 'default';
    const agent = this.#opts.sshAgents?.find((a) => a.id === id);
    if (!agent) throw new NotFoundError(`no SSH agent "${id}" was forwarded (pass --ssh ${id})`);
    const conn = 'socket' in agent ? createConnection(agent.socket) : agent.keyAgent.connect();
    const where = 'socket' in agent ? agent.socket : agent.source;
    this.#sshConns.set(call.callId, conn);
    let bytes = 0;
    try {
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => conn.destroy();
        signal.addEventListener('abort', onAbort, { once: true });
        conn.on('data', (data: Buffer) => {
          bytes += data.length;
          conn.pause();
          void this.#send({ msg: { case: 'data', value: { callId: call.callId, data } } }).finally(() => conn.resume());
        });
        conn.once('error', (err) => reject(new KilnError('unavailable', `failed to reach SSH agent "${id}" at ${where}: ${err.message}`)));
        conn.once('close', () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        });
      });
    } finally {
      this.#sshConns.delete(call.callId);
      conn.destroy();
    }
    if (signal.aborted) throw new CanceledError('SSH connection canceled');
    return { bytes: BigInt(bytes) };
  }

  /** `localBytes`: the exporter wrote the output into the local-write temp file; no data follows. */
  #beginWrite(callId: number, outputId: string, localBytes?: number): void {
    const chunks = createChannel<Uint8Array>();
    const w: WriteCall = { chunks, done: false };
    this.#writes.set(callId, w);
    this.#serve(callId, async (signal) => {
      signal.addEventListener('abort', () => chunks.abort(new CanceledError('write canceled')), { once: true });
      try {
        const out = this.#outputs.get(outputId);
        if (!out) throw new NotFoundError(`session has no output "${outputId}"`);
        if (localBytes !== undefined) {
          if (out.kind !== 'file' || !out.localTemp) throw new NotFoundError(`output "${outputId}" offered no local write`);
          for await (const _ of chunks) void _; // the writeEnd
          finishLocalWrite(out.localTemp, out.path, localBytes);
          this.#log.debug({ callId, outputId, bytes: localBytes }, 'local write finished');
          return { bytes: BigInt(localBytes) };
        }
        let bytes = 0;
        const counted = (async function* () {
          for await (const c of chunks) {
            bytes += c.length;
            yield c;
          }
        })();
        if (out.kind === 'dir') {
          // The tar reader closes what it reads when it stops; keep `counted` open to drain it.
          const source = counted[Symbol.asyncIterator]();
          await extractTar({ [Symbol.asyncIterator]: () => ({ next: () => source.next() }) }, out.path);
          // Drain anything after the archive's end blocks.
          for await (const _ of counted) void _;
        } else {
          // Streamed instead of written in place: into the offered temp file, renamed over dest.
          await writeFileOutput(counted, out.path, this.#opts.stdout ?? process.stdout, out.localTemp);
        }
        this.#log.debug({ callId, outputId, bytes }, 'write served');
        return { bytes: BigInt(bytes) };
      } catch (err) {
        // Later chunks for this call are dropped; the daemon gets the error now.
        w.done = true;
        chunks.abort(err);
        throw err;
      } finally {
        w.done = true;
        this.#writes.delete(callId);
      }
    });
  }
}
