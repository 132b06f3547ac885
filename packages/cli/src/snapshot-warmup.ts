import { lstatSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { control, session } from '@kiln/api';
import { createInMemoryTransport, encodeContextManifest, type ContextEntry } from '@kiln/common';
import { pino } from 'pino';
import type { CliEnv } from './cli-io.js';

type StatusInit = MessageInitShape<typeof control.StatusResponseSchema>;
type AttachResponseInit = MessageInitShape<typeof session.AttachResponseSchema>;

/** What the warm-up build did: its exit code and the session calls the CLI answered. */
export interface WarmUpResult {
  code: number;
  /** `read`, `credentials`, `fetch`, each once its `done` came back. */
  calls: string[];
  /** Bytes of context the CLI sent (the changed file only). */
  contextBytes: number;
}

const DIGEST = (n: number) => `sha256:${n.toString(16).padStart(64, '0')}`;

/**
 * One `kiln build --progress=plain -t NAME CONTEXT` against an in-process
 * stand-in for the daemon, run by tools/cli-snapshot-entry.cjs while the
 * CLI's start-up snapshot is built. Why: V8 keeps the bytecode of every
 * function compiled before the snapshot is taken, and compiles every other
 * function from source in each process that first calls it; a cached
 * `kiln build` spent about a quarter of its CPU compiling the build path
 * (options, Connect client, protobuf, session, context walk and diff,
 * progress printer). After this run that code is compiled in the snapshot.
 *
 * The stand-in answers as a daemon does for a cached build: Info, Status
 * with cached vertexes, the session's Dockerfile read, a registry
 * credentials call and a context diff against a manifest where one file
 * changed, then Solve's exporter response. It touches no daemon, network or
 * user file: the context, HOME, DOCKER_CONFIG and XDG_STATE_HOME point into
 * a temp directory removed at the end, and the process environment is put
 * back. Nothing the run leaves in module state is read by a later build
 * (the CLI keeps no caches across builds; ids are random per run).
 */
export async function warmUpBuild(main: (argv: string[], env: CliEnv) => Promise<number>): Promise<WarmUpResult> {
  const work = mkdtempSync(join(tmpdir(), 'kiln-cli-warmup-'));
  const saved = { HOME: process.env.HOME, DOCKER_CONFIG: process.env.DOCKER_CONFIG, XDG_STATE_HOME: process.env.XDG_STATE_HOME };
  try {
    process.env.HOME = work;
    process.env.DOCKER_CONFIG = join(work, 'docker');
    process.env.XDG_STATE_HOME = join(work, 'state');
    const ctx = join(work, 'ctx');
    mkdirSync(join(ctx, 'src'), { recursive: true });
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM busybox\nCOPY src/ /src/\nRUN cat /src/a.txt\n');
    writeFileSync(join(ctx, '.dockerignore'), '*.log\n');
    writeFileSync(join(ctx, 'src', 'a.txt'), 'a\n');
    writeFileSync(join(ctx, 'src', 'b.txt'), 'b\n');
    // The daemon's copy: all but b.txt as they are now, and a file since deleted.
    const base: ContextEntry[] = ['Dockerfile', '.dockerignore', 'src', 'src/a.txt'].map((p) => entryOf(ctx, p));
    base.push({ ...entryOf(ctx, 'src/a.txt'), path: 'src/gone.txt' });

    const fake = new WarmUpDaemon(encodeContextManifest(base));
    const sink = () => new Writable({ write: (_chunk, _enc, done) => done() });
    const code = await main(['build', '--progress=plain', '-t', 'kiln-warmup:latest', '--addr', 'unix:///kiln-warmup.sock', ctx], {
      daemonCommand: [],
      vars: { HOME: work, PATH: '' },
      cwd: work,
      stdout: sink(),
      stderr: sink(),
      signal: new AbortController().signal,
      // Not pino's default destination: that registers an exit hook (and a FinalizationRegistry entry) the snapshot must not hold.
      logger: pino({ level: 'silent' }, sink()),
      transport: createInMemoryTransport((router) => fake.routes(router)),
    });
    return { code, calls: fake.calls, contextBytes: fake.contextBytes };
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    rmSync(work, { recursive: true, force: true });
  }
}

function entryOf(root: string, path: string): ContextEntry {
  const st = lstatSync(join(root, path));
  return {
    path,
    type: st.isDirectory() ? 'dir' : 'file',
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    size: st.isDirectory() ? 0 : st.size,
    mtimeMs: st.mtimeMs,
    linkname: '',
  };
}

/** The daemon side of the warm-up build (Control and Session services, in process). */
class WarmUpDaemon {
  readonly calls: string[] = [];
  contextBytes = 0;
  readonly #manifest: Uint8Array;
  readonly #sessionDone: Promise<void>;
  #finishSession!: () => void;

  constructor(manifest: Uint8Array) {
    this.#manifest = manifest;
    this.#sessionDone = new Promise((resolve) => {
      this.#finishSession = resolve;
    });
  }

  routes(router: Parameters<Parameters<typeof createInMemoryTransport>[0]>[0]): void {
    router.service(control.ControlService, {
      info: () => ({ version: 'warm-up', tiers: ['all'] }),
      status: (_req) => this.#status(),
      solve: async (req) => {
        await this.#sessionDone;
        return {
          exporterResponse: {
            'image.name': req.exporters[0]?.attrs.name ?? 'kiln-warmup:latest',
            'containerimage.digest': DIGEST(1),
            'containerimage.config.digest': DIGEST(2),
          },
        };
      },
    });
    router.service(session.SessionService, {
      attach: (requests) => this.#attach(requests),
    });
  }

  async *#status(): AsyncGenerator<StatusInit> {
    const t0 = Date.now();
    const at = (ms: number) => timestampFromMs(t0 + ms);
    const steps = ['[internal] load build definition from Dockerfile', '[internal] load build context', '[1/3] FROM docker.io/library/busybox:latest', '[2/3] COPY src/ /src/', '[3/3] RUN cat /src/a.txt'];
    yield { vertexes: [{ digest: DIGEST(10), name: steps[0], started: at(0) }] };
    yield { vertexes: [{ digest: DIGEST(10), name: steps[0], started: at(0), completed: at(1) }] };
    yield { vertexes: [{ digest: DIGEST(11), name: steps[1], started: at(1) }, { digest: DIGEST(12), name: steps[2], cached: true, started: at(1), completed: at(1) }] };
    yield { statuses: [{ id: 'transferring context', vertex: DIGEST(11), name: 'transferring context', current: 3n, total: 3n, timestamp: at(2), started: at(1), completed: at(2) }] };
    yield { logs: [{ vertex: DIGEST(11), timestamp: at(2), stream: 2, msg: new TextEncoder().encode('context unchanged\n') }] };
    await this.#sessionDone;
    yield {
      vertexes: [
        { digest: DIGEST(11), name: steps[1], started: at(1), completed: at(2) },
        { digest: DIGEST(13), inputs: [DIGEST(11), DIGEST(12)], name: steps[3], cached: true, started: at(2), completed: at(2) },
        { digest: DIGEST(14), inputs: [DIGEST(13)], name: steps[4], cached: true, started: at(2), completed: at(2) },
        { digest: DIGEST(15), inputs: [DIGEST(14)], name: 'exporting to image', started: at(2) },
      ],
    };
    yield { vertexes: [{ digest: DIGEST(15), inputs: [DIGEST(14)], name: 'exporting to image', started: at(2), completed: at(3) }] };
  }

  async *#attach(requests: AsyncIterable<session.AttachRequest>): AsyncGenerator<AttachResponseInit> {
    const it = requests[Symbol.asyncIterator]();
    const hello = await it.next();
    if (hello.done || hello.value.msg.case !== 'hello') return;
    const names = new Map<number, string>([
      [1, 'read'],
      [2, 'read'],
      [3, 'credentials'],
      [4, 'fetch'],
    ]);
    yield { msg: { case: 'ready', value: {} } };
    yield { msg: { case: 'read', value: { callId: 1, dirName: 'dockerfile', path: 'Dockerfile' } } };
    yield { msg: { case: 'read', value: { callId: 2, dirName: 'dockerfile', path: 'Dockerfile.dockerignore' } } };
    yield { msg: { case: 'credentials', value: { callId: 3, host: 'docker.io' } } };
    yield {
      msg: { case: 'fetch', value: { callId: 4, dirName: 'context', includePatterns: ['src'], excludePatterns: [], followPaths: ['src'], diff: true, baseManifest: this.#manifest } },
    };
    // Every call answered, then the build ends; the stream stays open until the client closes it.
    const drain = (async () => {
      for (;;) {
        const next = await it.next();
        if (next.done) break;
        const m = next.value.msg;
        if (m.case === 'data' && m.value.callId === 4) this.contextBytes += m.value.data.byteLength;
        if (m.case === 'done' && names.has(m.value.callId)) {
          this.calls.push(names.get(m.value.callId)!);
          names.delete(m.value.callId);
          if (names.size === 0) this.#finishSession();
        }
      }
      this.#finishSession();
    })();
    await drain;
  }
}
