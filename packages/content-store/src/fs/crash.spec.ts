import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleFixture } from '../testing/bundle-fixture.js';
import { collect, readAll } from '../testing/fixtures/helpers.js';
import { openLocalContentStore, type LocalContentStore } from './local-content-store.js';

// kill -9 at random points, many times, then check the store: the child
// (src/testing/fixtures/crash-writer.ts, bundled with esbuild so plain node
// runs it) writes, resumes, deletes and collects in a loop.

const ITERATIONS = 25;
const BUDGET_MS = 16_000;
const HEX: Record<string, RegExp> = { sha256: /^[a-f0-9]{64}$/, sha512: /^[a-f0-9]{128}$/ };

describe('crash safety (kill -9)', () => {
  let work: string;
  let bundle: string;
  let nodePath: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'kiln-cs-crash-'));
    ({ bundle, nodePath } = await bundleFixture('crash-writer', work));
  });

  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('keeps every committed blob intact and the metadata in step with the files', async () => {
    const root = join(work, 'store');
    const committed = new Set<string>(); // acknowledged writes of GC roots
    const maybeGone = new Set<string>(); // a delete of it started
    const verified = new Set<string>(); // blob files already hashed
    const stats = { iterations: 0, lines: 0, resumed: 0, killedBeforeReady: 0, checks: 0 };
    const started = Date.now();

    for (let i = 0; i < ITERATIONS && (i < 10 || Date.now() - started < BUDGET_MS); i++) {
      const lines = await runAndKill(root, i, 40 + Math.floor(Math.random() * 400));
      stats.iterations++;
      stats.lines += lines.length;
      if (!lines.includes('ready')) stats.killedBeforeReady++;
      for (const line of lines) {
        const [what, arg] = line.split(' ');
        if (what === 'committed' && arg) committed.add(arg);
        else if (what === 'deleting' && arg) maybeGone.add(arg);
        else if (what === 'resuming') stats.resumed++;
      }
      // Check after some kills; in between, the next child's own open recovers.
      if (i % 5 === 4 || i === ITERATIONS - 1) {
        const store = await openLocalContentStore({ root, ingestExpiryMs: 10 * 60_000 });
        try {
          await checkStore(root, store, committed, maybeGone, verified);
          stats.checks++;
        } finally {
          await store.close();
        }
      }
    }

    // Last: a final check, then GC keeps every root and the store still works.
    const store = await openLocalContentStore({ root, ingestExpiryMs: 10 * 60_000 });
    try {
      await checkStore(root, store, committed, maybeGone, new Set()); // re-hash every blob
      await store.gc();
      await checkStore(root, store, committed, maybeGone, verified);
      const w = await store.write({ ref: 'after-the-crashes' }, (async function* () {
        yield new TextEncoder().encode('still works');
      })());
      expect((await readAll(store.read(w.digest))).toString()).toBe('still works');
    } finally {
      await store.close();
    }
    console.log(`crash test: ${JSON.stringify({ ...stats, committed: committed.size, ms: Date.now() - started })}`);
    expect(stats.iterations).toBeGreaterThanOrEqual(10);
    expect(committed.size).toBeGreaterThan(20);
    expect(stats.resumed).toBeGreaterThan(0);
  });

  /** Starts the writer, SIGKILLs it `delayMs` after it is ready (or after spawn + 1 s), returns its complete lines. */
  async function runAndKill(root: string, run: number, delayMs: number): Promise<string[]> {
    const child = spawn(process.execPath, [bundle, root, String(run)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NODE_PATH: nodePath },
    });
    let out = '';
    let err = '';
    let timer: NodeJS.Timeout | undefined;
    const kill = () => child.kill('SIGKILL');
    // Some kills land during startup and recovery, most while writing.
    if (run % 4 === 0) timer = setTimeout(kill, delayMs / 4);
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      if (!timer && out.startsWith('ready\n')) timer = setTimeout(kill, delayMs);
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    const fallback = setTimeout(kill, 3000);
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
      child.on('close', (c, s) => resolve([c, s]));
    });
    clearTimeout(fallback);
    if (timer) clearTimeout(timer);
    if (signal !== 'SIGKILL') throw new Error(`crash writer exited on its own (code ${code}): ${err || out.slice(-500)}`);
    const lines = out.split('\n');
    lines.pop(); // the last line may be cut short
    return lines;
  }
});

async function checkStore(
  root: string,
  store: LocalContentStore,
  committed: ReadonlySet<string>,
  maybeGone: ReadonlySet<string>,
  verified: Set<string>,
): Promise<void> {
  // Every blob file is named by a digest, and holds exactly that content.
  const files = new Map<string, number>();
  for (const alg of ['sha256', 'sha512']) {
    for (const name of await readdir(join(root, 'blobs', alg))) {
      expect(name, `unexpected file blobs/${alg}/${name}`).toMatch(HEX[alg] ?? /^$/);
      const digest = `${alg}:${name}`;
      const data = await readFile(join(root, 'blobs', alg, name));
      if (!verified.has(digest)) {
        expect(`${alg}:${createHash(alg).update(data).digest('hex')}`, `content of ${digest}`).toBe(digest);
        verified.add(digest);
      }
      files.set(digest, data.length);
    }
  }
  // Metadata rows == files, with the same sizes.
  const rows = await collect(store.list());
  expect(new Map(rows.map((r) => [r.digest as string, r.size]))).toEqual(files);
  // Every acknowledged write of a root is there and readable, unless a delete of it began.
  for (const digest of committed) {
    if (maybeGone.has(digest)) continue;
    expect(files.has(digest), `committed ${digest} is missing`).toBe(true);
    const info = await store.info(digest);
    expect(info.labels['kiln.gc.root']).toBe('crash-test');
  }
  // A few full reads through the store.
  for (const r of rows.slice(0, 5)) {
    const alg = r.digest.slice(0, r.digest.indexOf(':'));
    const data = await readAll(store.read(r.digest));
    expect(`${alg}:${createHash(alg).update(data).digest('hex')}`).toBe(r.digest);
  }
  // Ingests: one directory per ingest row, each holding at most what is expected; none is a blob.
  const statuses = await store.listStatuses();
  const ids = statuses.map((s) => createHash('sha256').update(s.ref).digest('hex')).sort();
  expect((await readdir(join(root, 'ingest'))).sort()).toEqual(ids);
  for (const s of statuses) {
    expect(s.active).toBe(false);
    if (s.expectedSize !== undefined) expect(s.offset).toBeLessThanOrEqual(s.expectedSize);
  }
}
