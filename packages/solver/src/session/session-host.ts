import { create } from '@bufbuild/protobuf';
import { session } from '@kiln/api';
import { createChannel, KilnError, NotFoundError, UnavailableError, type Channel, type Logger } from '@kiln/common';

type AttachRequest = session.AttachRequest;
type AttachResponse = session.AttachResponse;

/** How long a build waits for its client session to attach. */
const ATTACH_WAIT_MS = 10_000;

interface PendingCall {
  data: Channel<Uint8Array>;
  done: (result: session.CallDone) => void;
  /** Set by a `credentials` reply. */
  credentials?: session.CredentialsReply;
}

interface AttachedSession {
  id: string;
  dirs: Set<string>;
  /** SharedDir.shared_key by dir name (non-empty only). */
  sharedKeys: Map<string, string>;
  outputs: Map<string, string>;
  out: Channel<AttachResponse>;
  calls: Map<number, PendingCall>;
  nextCall: number;
}

export interface FetchOptions {
  dirName: string;
  includePatterns: string[];
  excludePatterns: string[];
  followPaths: string[];
  /** Ask for a context diff against `baseManifest` instead of a tar. */
  diff?: boolean;
  baseManifest?: Uint8Array;
  signal?: AbortSignal;
}

/**
 * SessionHost keeps the client sessions attached to this solver and turns
 * tier requests (fetch files, read a file, write an output, read a secret,
 * ask for registry credentials, connect to the SSH agent) into calls over
 * the client's Attach stream. Calls are multiplexed by call id; a session
 * that detaches fails its pending calls with `unavailable`.
 */
export class SessionHost {
  private readonly sessions = new Map<string, AttachedSession>();
  private readonly waiters = new Map<string, Set<() => void>>();

  constructor(private readonly logger: Logger) {}

  /** Serves one client's Attach stream until the client closes it. */
  async *attach(requests: AsyncIterable<AttachRequest>, signal?: AbortSignal): AsyncIterable<AttachResponse> {
    const it = requests[Symbol.asyncIterator]();
    const first = await it.next();
    if (first.done || first.value.msg.case !== 'hello') {
      throw new KilnError('invalid_argument', 'session must start with hello');
    }
    const hello = first.value.msg.value;
    if (!hello.sessionId) throw new KilnError('invalid_argument', 'session id is empty', { field: 'session_id' });
    if (this.sessions.has(hello.sessionId)) {
      throw new KilnError('already_exists', `session ${hello.sessionId} is already attached`);
    }
    const s: AttachedSession = {
      id: hello.sessionId,
      dirs: new Set(hello.dirs.map((d) => d.name)),
      sharedKeys: new Map(hello.dirs.filter((d) => d.sharedKey).map((d) => [d.name, d.sharedKey])),
      outputs: new Map(hello.outputs.map((o) => [o.id, o.kind])),
      out: createChannel(),
      calls: new Map(),
      nextCall: 1,
    };
    this.sessions.set(s.id, s);
    const log = this.logger.child({ session: s.id });
    log.debug('session attached');
    for (const wake of this.waiters.get(s.id) ?? []) wake();
    this.waiters.delete(s.id);

    const onAbort = () => s.out.end();
    signal?.addEventListener('abort', onAbort, { once: true });
    // Read replies in the background while responses flow out.
    const reader = (async () => {
      try {
        for (let r = await it.next(); !r.done; r = await it.next()) this.onReply(s, r.value);
      } catch (err) {
        log.debug({ err }, 'session stream failed');
      } finally {
        this.detach(s);
      }
    })();
    try {
      s.out.push(create(session.AttachResponseSchema, { msg: { case: 'ready', value: {} } }));
      yield* s.out;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.detach(s);
      void reader;
    }
  }

  /** Resolves once the session is attached (the CLI attaches concurrently with Solve). */
  async waitFor(sessionId: string, signal?: AbortSignal, timeoutMs = ATTACH_WAIT_MS): Promise<void> {
    if (this.sessions.has(sessionId)) return;
    await new Promise<void>((resolve, reject) => {
      const set = this.waiters.get(sessionId) ?? new Set();
      this.waiters.set(sessionId, set);
      const finish = (err?: Error) => {
        clearTimeout(timer);
        set.delete(wake);
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      const wake = () => finish();
      const onAbort = () => finish(new KilnError('canceled', 'build canceled while waiting for its session'));
      const timer = setTimeout(() => finish(new UnavailableError(`session ${sessionId} did not attach within ${timeoutMs} ms`)), timeoutMs);
      set.add(wake);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** The shared key the client gave directory `dirName` ('' when none). */
  async sharedKey(sessionId: string, dirName: string, signal?: AbortSignal): Promise<string> {
    const s = await this.get(sessionId, signal);
    if (!s.dirs.has(dirName)) throw new NotFoundError(`session ${sessionId} shares no directory "${dirName}"`);
    return s.sharedKeys.get(dirName) ?? '';
  }

  /** Streams a tar (or a context diff, see FetchOptions.diff) of the matching files of a client directory. */
  async *fetch(sessionId: string, opts: FetchOptions): AsyncIterable<Uint8Array> {
    const s = await this.get(sessionId, opts.signal);
    if (!s.dirs.has(opts.dirName)) throw new NotFoundError(`session ${sessionId} shares no directory "${opts.dirName}"`);
    const call = this.open(s);
    s.out.push(create(session.AttachResponseSchema, {
      msg: { case: 'fetch', value: { callId: call.id, dirName: opts.dirName, includePatterns: opts.includePatterns, excludePatterns: opts.excludePatterns, followPaths: opts.followPaths, diff: opts.diff ?? false, baseManifest: opts.baseManifest ?? new Uint8Array() } },
    }));
    yield* this.drain(s, call, opts.signal);
  }

  /** Reads one small file from a client directory; `undefined` when absent. */
  async read(sessionId: string, dirName: string, path: string, maxBytes: number, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    const s = await this.get(sessionId, signal);
    if (!s.dirs.has(dirName)) throw new NotFoundError(`session ${sessionId} shares no directory "${dirName}"`);
    const call = this.open(s);
    s.out.push(create(session.AttachResponseSchema, { msg: { case: 'read', value: { callId: call.id, dirName, path, maxBytes: BigInt(maxBytes) } } }));
    const parts: Uint8Array[] = [];
    for await (const chunk of this.drain(s, call, signal)) parts.push(chunk);
    const done = await call.result;
    return done.found ? Buffer.concat(parts) : undefined;
  }

  /**
   * Streams bytes to one of the client's outputs; resolves with the bytes the
   * client wrote. With `localBytes` the exporter already wrote the client's
   * local-write temp file: `chunks` is empty and the client only checks and renames it.
   */
  async write(sessionId: string, outputId: string, chunks: AsyncIterable<Uint8Array>, signal?: AbortSignal, localBytes?: number): Promise<number> {
    const s = await this.get(sessionId, signal);
    if (!s.outputs.has(outputId)) throw new NotFoundError(`session ${sessionId} has no output "${outputId}"`);
    const call = this.open(s);
    const local = localBytes === undefined ? {} : { localWritten: true, localBytes: BigInt(localBytes) };
    s.out.push(create(session.AttachResponseSchema, { msg: { case: 'writeBegin', value: { callId: call.id, outputId, ...local } } }));
    try {
      for await (const data of chunks) {
        if (call.finished) break;
        // Paced by the client: a big output is never buffered whole here.
        await s.out.push(create(session.AttachResponseSchema, { msg: { case: 'writeData', value: { callId: call.id, data } } }));
      }
    } catch (err) {
      s.out.push(create(session.AttachResponseSchema, { msg: { case: 'cancel', value: { callId: call.id } } }));
      s.calls.delete(call.id);
      throw err;
    }
    s.out.push(create(session.AttachResponseSchema, { msg: { case: 'writeEnd', value: { callId: call.id } } }));
    for await (const _ of this.drain(s, call, signal)) {
      // write calls carry no data back
    }
    return Number((await call.result).bytes);
  }

  /** Reads a secret the client exposes; `undefined` when it has none by that id. Never logged. */
  async secret(sessionId: string, id: string, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    const s = await this.get(sessionId, signal);
    const call = this.open(s);
    s.out.push(create(session.AttachResponseSchema, { msg: { case: 'secret', value: { callId: call.id, id } } }));
    const parts: Uint8Array[] = [];
    for await (const chunk of this.drain(s, call, signal)) parts.push(chunk);
    const done = await call.result;
    return done.found ? Buffer.concat(parts) : undefined;
  }

  /** Registry credentials for `host` from the client's docker config (empty strings: none). */
  async credentials(sessionId: string, host: string, signal?: AbortSignal): Promise<{ username: string; secret: string }> {
    const s = await this.get(sessionId, signal);
    const call = this.open(s);
    s.out.push(create(session.AttachResponseSchema, { msg: { case: 'credentials', value: { callId: call.id, host } } }));
    for await (const _ of this.drain(s, call, signal)) {
      // the answer comes as a credentials message
    }
    const reply = call.pending.credentials;
    return { username: reply?.username ?? '', secret: reply?.secret ?? '' };
  }

  /**
   * One connection to the client's SSH agent `id`: `input` is sent to the
   * agent (its end half-closes the client's socket), the agent's bytes are
   * yielded until it closes. Ending the iteration early closes the connection.
   */
  async *ssh(sessionId: string, id: string, input: AsyncIterable<Uint8Array>, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    const s = await this.get(sessionId, signal);
    const call = this.open(s);
    s.out.push(create(session.AttachResponseSchema, { msg: { case: 'sshOpen', value: { callId: call.id, id } } }));
    const pump = (async () => {
      try {
        for await (const data of input) {
          if (call.finished) return;
          await s.out.push(create(session.AttachResponseSchema, { msg: { case: 'sshData', value: { callId: call.id, data } } }));
        }
        if (!call.finished) s.out.push(create(session.AttachResponseSchema, { msg: { case: 'sshClose', value: { callId: call.id } } }));
      } catch {
        if (!call.finished) s.out.push(create(session.AttachResponseSchema, { msg: { case: 'cancel', value: { callId: call.id } } }));
      }
    })();
    try {
      yield* this.drain(s, call, signal);
    } finally {
      if (!call.finished) s.out.push(create(session.AttachResponseSchema, { msg: { case: 'cancel', value: { callId: call.id } } }));
      call.finished = true;
      void pump;
    }
  }

  private async get(sessionId: string, signal?: AbortSignal): Promise<AttachedSession> {
    await this.waitFor(sessionId, signal);
    const s = this.sessions.get(sessionId);
    if (!s) throw new UnavailableError(`session ${sessionId} is gone`);
    return s;
  }

  private open(s: AttachedSession) {
    const id = s.nextCall++;
    const data = createChannel<Uint8Array>();
    let resolveDone!: (d: session.CallDone) => void;
    const result = new Promise<session.CallDone>((r) => (resolveDone = r));
    const pending: PendingCall = {
      data,
      done: (d) => {
        call.finished = true;
        resolveDone(d);
      },
    };
    const call = { id, data, result, finished: false, pending };
    s.calls.set(id, pending);
    return call;
  }

  /** Yields a call's data until its done message; throws the client's error. */
  private async *drain(s: AttachedSession, call: { id: number; data: Channel<Uint8Array>; result: Promise<session.CallDone> }, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    const onAbort = () => {
      s.out.push(create(session.AttachResponseSchema, { msg: { case: 'cancel', value: { callId: call.id } } }));
      call.data.fail(new KilnError('canceled', 'session call canceled'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      yield* call.data;
      const done = await call.result;
      if (done.error) throw new KilnError((done.errorCode || 'internal') as never, done.error);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      s.calls.delete(call.id);
    }
  }

  private onReply(s: AttachedSession, req: AttachRequest): void {
    switch (req.msg.case) {
      case 'data': {
        s.calls.get(req.msg.value.callId)?.data.push(req.msg.value.data);
        return;
      }
      case 'credentials': {
        const c = s.calls.get(req.msg.value.callId);
        if (c) c.credentials = req.msg.value;
        return;
      }
      case 'done': {
        const c = s.calls.get(req.msg.value.callId);
        if (!c) return;
        c.done(req.msg.value);
        c.data.end();
        return;
      }
      default:
        return;
    }
  }

  private detach(s: AttachedSession): void {
    if (this.sessions.get(s.id) !== s) return;
    this.sessions.delete(s.id);
    s.out.end();
    for (const c of s.calls.values()) {
      c.data.fail(new UnavailableError(`session ${s.id} closed`));
      c.done(create(session.CallDoneSchema, { error: `session ${s.id} closed`, errorCode: 'unavailable' }));
    }
    s.calls.clear();
    this.logger.debug({ session: s.id }, 'session detached');
  }
}
