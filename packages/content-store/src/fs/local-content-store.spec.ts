import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sha256 } from '@kiln/common';
import type { BlobInfo } from '../content-store.js';
import { openLocalContentStore, type LocalContentStore } from './local-content-store.js';
import { caught, chunks, collect, readAll } from '../testing/fixtures/helpers.js';

const enc = new TextEncoder();

const hexOf = (digest: string) => digest.slice('sha256:'.length);

describe('LocalContentStore', () => {
  let root: string;
  let store: LocalContentStore;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'kiln-cs-'));
    store = await openLocalContentStore({ root });
  });

  afterEach(async () => {
    await store.close();
    await rm(root, { recursive: true, force: true });
  });

  const blobFile = (digest: string) => join(root, 'blobs', 'sha256', hexOf(digest));
  const ingestEntries = () => readdir(join(root, 'ingest'));

  it('writes a blob, reads it back and reports its info', async () => {
    const before = Date.now();
    const res = await store.write({ ref: 'r1', labels: { a: '1' } }, chunks('hello ', 'world'));
    expect(res).toEqual({ digest: sha256('hello world'), size: 11 });
    expect((await readAll(store.read(res.digest))).toString()).toBe('hello world');
    expect(await readFile(blobFile(res.digest), 'utf8')).toBe('hello world');

    const info = await store.info(res.digest);
    expect(info).toMatchObject({ digest: res.digest, size: 11, labels: { a: '1' } });
    expect(info.createdAt.getTime()).toBeGreaterThanOrEqual(before - 1000);
    expect(info.createdAt.getTime()).toBeLessThanOrEqual(Date.now() + 1000);
    expect(await ingestEntries()).toEqual([]);
  });

  it('writes an empty blob and checks expected digest and size', async () => {
    const res = await store.write({ ref: 'empty', expectedDigest: sha256(''), expectedSize: 0 }, chunks());
    expect(res).toEqual({ digest: sha256(''), size: 0 });
    expect(await readAll(store.read(res.digest))).toHaveLength(0);
  });

  it('reads large blobs in 1 MiB chunks', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 123);
    const parts = [data.subarray(0, 1000), data.subarray(1000, 2_700_000), data.subarray(2_700_000)];
    const { digest } = await store.write({ ref: 'big', expectedDigest: sha256(data), expectedSize: data.length }, chunks(...parts));
    const got = await collect(store.read(digest));
    expect(got.length).toBe(4);
    expect(got.every((c) => c.byteLength > 0 && c.byteLength <= 1024 * 1024)).toBe(true);
    expect(Buffer.concat(got).equals(data)).toBe(true);
  });

  it('reads ranges', async () => {
    const { digest } = await store.write({ ref: 'r' }, chunks('0123456789'));
    const range = async (offset?: number, size?: number) =>
      (await readAll(store.read(digest, { offset, size }))).toString();
    expect(await range(3, 4)).toBe('3456');
    expect(await range(3)).toBe('3456789');
    expect(await range(8, 100)).toBe('89');
    expect(await range(10)).toBe('');
    expect(await range(0, 0)).toBe('');
    expect((await caught(range(11))).code).toBe('invalid_argument');
    expect((await caught(range(-1))).code).toBe('invalid_argument');
    expect((await caught(range(0, 1.5))).code).toBe('invalid_argument');
  });

  it('opens a committed blob\'s file for an in-process reader, which stays readable after the blob is deleted', async () => {
    const { digest } = await store.write({ ref: 'r' }, chunks('file ', 'bytes'));
    const fh = await store.openBlob(digest);
    try {
      await store.delete(digest);
      const buf = Buffer.alloc(20);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      expect(buf.subarray(0, bytesRead).toString()).toBe('file bytes');
    } finally {
      await fh.close();
    }
    expect((await caught(store.openBlob(digest))).code).toBe('not_found');
    expect((await caught(store.openBlob('../../etc/passwd'))).code).toBe('invalid_argument');
  });

  it('reports bad and missing digests by name', async () => {
    const missing = sha256('nope');
    for (const op of [() => store.info(missing), () => readAll(store.read(missing)), () => store.delete(missing), () => store.updateLabels(missing, { a: 'b' })]) {
      const err = await caught(op);
      expect(err.code).toBe('not_found');
      expect(err.message).toContain(missing);
    }
    for (const bad of ['sha256:XYZ', '../../etc/passwd', `sha256:${'a'.repeat(63)}`, `sha384:${'a'.repeat(96)}`, `sha512:${'a'.repeat(64)}`]) {
      const err = await caught(store.info(bad));
      expect(err.code).toBe('invalid_argument');
      expect(err.message).toContain(bad);
      expect((await caught(readAll(store.read(bad)))).code).toBe('invalid_argument');
    }
    expect((await caught(store.write({ ref: 'x', expectedDigest: 'sha256:nope' }, chunks('a')))).message).toContain('sha256:nope');
    expect((await caught(store.write({ ref: '' }, chunks('a')))).code).toBe('invalid_argument');
  });

  it('merges and removes labels', async () => {
    const { digest } = await store.write({ ref: 'l', labels: { a: '1', b: '2' } }, chunks('x'));
    const updated = await store.updateLabels(digest, { b: '', c: '3', a: '10' });
    expect(updated.labels).toEqual({ a: '10', c: '3' });
    expect((await store.info(digest)).labels).toEqual({ a: '10', c: '3' });
    expect((await caught(store.updateLabels(digest, { '': 'x' }))).code).toBe('invalid_argument');
    // Writing the same content again merges the new labels.
    await store.write({ ref: 'l2', labels: { d: '4', c: '' } }, chunks('x'));
    expect((await store.info(digest)).labels).toEqual({ a: '10', d: '4' });
  });

  it('lists with filters', async () => {
    const a = await store.write({ ref: 'a', labels: { kind: 'layer', 'kiln.dev/gc.root': 'yes' } }, chunks('a'));
    const b = await store.write({ ref: 'b', labels: { kind: 'config' } }, chunks('b'));
    const c = await store.write({ ref: 'c' }, chunks('c'));
    const digests = async (filters: string[]) => (await collect(store.list(filters))).map((i: BlobInfo) => i.digest);
    const sorted = (...ds: string[]) => [...ds].sort();

    expect(await digests([])).toEqual(sorted(a.digest, b.digest, c.digest));
    expect(await digests(['labels.kind==layer'])).toEqual([a.digest]);
    expect(await digests(['labels.kind!=layer'])).toEqual([b.digest]);
    expect(await digests(['labels.kind'])).toEqual(sorted(a.digest, b.digest));
    expect(await digests(['labels.kiln.dev/gc.root==yes'])).toEqual([a.digest]);
    expect(await digests(['labels."kiln.dev/gc.root"=="yes"'])).toEqual([a.digest]);
    expect(await digests(['labels.kind', 'labels.kind!=config'])).toEqual([a.digest]);
    expect(await digests([`digest==${c.digest}`])).toEqual([c.digest]);
    expect(await digests([`digest!=${c.digest}`, 'labels.kind'])).toEqual(sorted(a.digest, b.digest));
    expect(await digests(['labels.kind==nothing'])).toEqual([]);
    await store.updateLabels(c.digest, { 'a=b': 'x' });
    expect(await digests(['labels."a=b"'])).toEqual([c.digest]);
    const listed = await collect(store.list(['labels.kind==layer']));
    expect(listed[0]).toMatchObject({ size: 1, labels: { kind: 'layer', 'kiln.dev/gc.root': 'yes' } });

    for (const bad of ['kind==layer', 'labels.==x', 'labels.kind=layer', 'digest', 'labels."unterminated']) {
      const err = await caught(collect(store.list([bad])));
      expect(err.code).toBe('invalid_argument');
      expect(err.message).toContain(JSON.stringify(bad));
    }
  });

  it('lists across pages', async () => {
    const written = new Set<string>();
    for (let i = 0; i < 300; i++) {
      written.add((await store.write({ ref: `p${i}`, labels: { even: String(i % 2 === 0) } }, chunks(`blob ${i}`))).digest);
    }
    const all = (await collect(store.list())).map((i) => i.digest);
    expect(all).toHaveLength(300);
    expect(new Set(all)).toEqual(written);
    expect(all).toEqual([...all].sort());
    expect(await collect(store.list(['labels.even==true']))).toHaveLength(150);
  });

  it('deletes blobs', async () => {
    const { digest } = await store.write({ ref: 'd', labels: { a: '1' } }, chunks('bye'));
    await store.delete(digest);
    expect((await caught(store.info(digest))).code).toBe('not_found');
    expect((await caught(readAll(store.read(digest)))).code).toBe('not_found');
    await expect(stat(blobFile(digest))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await collect(store.list())).toEqual([]);
    expect((await caught(store.delete(digest))).code).toBe('not_found');
    // Rewriting it starts over with fresh labels.
    await store.write({ ref: 'd' }, chunks('bye'));
    expect((await store.info(digest)).labels).toEqual({});
  });

  it('a digest mismatch leaves no blob and no temp file', async () => {
    const expected = sha256('something else');
    const err = await caught(store.write({ ref: 'm', expectedDigest: expected, labels: { a: '1' } }, chunks('actual ', 'content')));
    expect(err.code).toBe('failed_precondition');
    expect(err.message).toContain(expected);
    expect(err.message).toContain(sha256('actual content'));
    expect(await readdir(join(root, 'blobs', 'sha256'))).toEqual([]);
    expect(await ingestEntries()).toEqual([]);
    expect((await caught(store.info(sha256('actual content')))).code).toBe('not_found');
    expect(await collect(store.list())).toEqual([]);
    // The ref is free again.
    await store.write({ ref: 'm' }, chunks('ok'));
  });

  it('a size mismatch (short or long) leaves nothing behind', async () => {
    let pulled = 0;
    async function* endless() {
      for (;;) {
        pulled++;
        yield new Uint8Array(10);
      }
    }
    const long = await caught(store.write({ ref: 's', expectedSize: 25 }, endless()));
    expect(long.code).toBe('failed_precondition');
    expect(long.message).toContain('25');
    expect(pulled).toBe(3);
    const short = await caught(store.write({ ref: 's', expectedSize: 25 }, chunks('0123456789')));
    expect(short.code).toBe('failed_precondition');
    expect(short.message).toMatch(/expected 25 bytes, got 10/);
    expect(await readdir(join(root, 'blobs', 'sha256'))).toEqual([]);
    expect(await ingestEntries()).toEqual([]);
  });

  it('succeeds without reading data when the expected blob exists', async () => {
    const { digest } = await store.write({ ref: 'e', labels: { a: '1' } }, chunks('exists'));
    const untouched: AsyncIterable<Uint8Array> = {
      [Symbol.asyncIterator]() {
        throw new Error('data must not be read');
      },
    };
    expect(await store.write({ ref: 'e2', expectedDigest: digest, labels: { b: '2' } }, untouched)).toEqual({ digest, size: 6 });
    expect((await store.info(digest)).labels).toEqual({ a: '1', b: '2' });
    const err = await caught(store.write({ ref: 'e3', expectedDigest: digest, expectedSize: 7 }, untouched));
    expect(err.code).toBe('failed_precondition');
  });

  it('handles concurrent writes of the same content', async () => {
    const data = randomBytes(600 * 1024);
    const slow = async function* () {
      for (let i = 0; i < data.length; i += 64 * 1024) {
        await new Promise((r) => setTimeout(r, 1));
        yield data.subarray(i, i + 64 * 1024);
      }
    };
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => store.write({ ref: `same-${i}`, labels: { [`w${i}`]: 'y' } }, slow())),
    );
    for (const r of results) expect(r).toEqual({ digest: sha256(data), size: data.length });
    expect(await readdir(join(root, 'blobs', 'sha256'))).toEqual([hexOf(sha256(data))]);
    expect(await ingestEntries()).toEqual([]);
    expect(Object.keys((await store.info(sha256(data))).labels).sort()).toEqual(Array.from({ length: 8 }, (_, i) => `w${i}`));
    expect((await readAll(store.read(sha256(data)))).equals(data)).toBe(true);
  });

  it('refuses a second concurrent write with the same ref', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const first = store.write({ ref: 'busy' }, (async function* () {
      yield enc.encode('a');
      await gate;
      yield enc.encode('b');
    })());
    const err = await caught(store.write({ ref: 'busy' }, chunks('c')));
    expect(err.code).toBe('unavailable');
    expect(err.message).toContain('busy');
    release();
    expect(await first).toEqual({ digest: sha256('ab'), size: 2 });
  });

  it('aborting a write, even while waiting for data, keeps the bytes for a resume', async () => {
    const ac = new AbortController();
    let finalized = false;
    const stuck = (async function* () {
      try {
        yield enc.encode('partial');
        await new Promise(() => {}); // never resolves
      } finally {
        finalized = true;
      }
    })();
    const p = store.write({ ref: 'abort' }, stuck, { signal: ac.signal });
    await new Promise((r) => setTimeout(r, 20));
    ac.abort();
    expect((await caught(p)).code).toBe('canceled');
    expect(await readdir(join(root, 'blobs', 'sha256'))).toEqual([]);
    expect(finalized).toBe(false); // stuck in an await: return() is queued, not awaited
    expect(await store.status('abort')).toMatchObject({ ref: 'abort', offset: 7, active: false });
    expect(await ingestEntries()).toHaveLength(1);
    expect(await store.write({ ref: 'abort', offset: 7 }, chunks(' and the rest'))).toEqual({
      digest: sha256('partial and the rest'),
      size: 20,
    });
    expect(await ingestEntries()).toEqual([]);
    expect((await caught(store.status('abort'))).code).toBe('not_found');
  });

  it('aborting a read stops it', async () => {
    const { digest } = await store.write({ ref: 'r' }, chunks(randomBytes(4 * 1024 * 1024)));
    const ac = new AbortController();
    let n = 0;
    const err = await caught(async () => {
      for await (const _ of store.read(digest, { signal: ac.signal })) {
        if (++n === 2) ac.abort();
      }
    });
    expect(err.code).toBe('canceled');
    expect(n).toBe(2);
  });

  it('never builds paths from refs', async () => {
    await store.write({ ref: '../../../escape' }, chunks('x'));
    await store.write({ ref: '/abs/path\0with nul' }, chunks('y'));
    expect((await readdir(root)).sort()).toEqual(['blobs', 'ingest', 'metadata.db', 'metadata.db-wal']);
  });

  it('close aborts writes in progress (keeping their bytes) and refuses new calls', async () => {
    const pending = store.write({ ref: 'c' }, (async function* () {
      yield enc.encode('x');
      await new Promise(() => {});
    })());
    // Wait until the first byte is in the ingest (a fixed sleep was too short on a loaded CI machine).
    for (let i = 0; i < 500; i++) {
      const status = await store.status('c').catch(() => undefined);
      if (status?.offset === 1) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    await store.close();
    expect((await caught(pending)).code).toBe('canceled');
    expect(await ingestEntries()).toHaveLength(1);
    expect((await caught(store.info(sha256('x')))).code).toBe('unavailable');
    expect((await caught(store.write({ ref: 'd' }, chunks('y')))).code).toBe('unavailable');
    expect((await caught(collect(store.list()))).code).toBe('unavailable');
    expect((await caught(store.status('c'))).code).toBe('unavailable');
    expect((await caught(store.gc())).code).toBe('unavailable');
    await store.close();
    store = await openLocalContentStore({ root });
    expect(await store.status('c')).toMatchObject({ offset: 1, active: false });
  });

  it('recovers on reopen after a crash', async () => {
    const kept = await store.write({ ref: 'k', labels: { keep: 'me' } }, chunks('kept'));
    const vanished = await store.write({ ref: 'v' }, chunks('vanishing'));
    await store.close();

    // Crash leftovers: an ingest file no metadata knows, a committed blob file
    // whose metadata never got written, a blob file that disappeared.
    const orphanIngest = join(root, 'ingest', 'f'.repeat(64));
    await mkdir(orphanIngest);
    await writeFile(join(orphanIngest, 'data'), 'half a blob');
    const orphan = sha256('orphan blob');
    await writeFile(blobFile(orphan), 'orphan blob');
    await unlink(blobFile(vanished.digest));
    await writeFile(join(root, 'blobs', 'sha256', 'not-a-digest'), 'junk');

    store = await openLocalContentStore({ root });
    expect(await ingestEntries()).toEqual([]);
    expect(await store.info(kept.digest)).toMatchObject({ size: 4, labels: { keep: 'me' } });
    const info = await store.info(orphan);
    expect(info).toMatchObject({ digest: orphan, size: 11, labels: {} });
    expect((await readAll(store.read(orphan))).toString()).toBe('orphan blob');
    expect((await caught(store.info(vanished.digest))).code).toBe('not_found');
    expect((await collect(store.list())).map((i) => i.digest).sort()).toEqual([kept.digest, orphan].sort());
    // Rewriting the vanished blob works and it is visible again.
    await store.write({ ref: 'v' }, chunks('vanishing'));
    expect((await store.info(vanished.digest)).size).toBe(9);
  });

  it('opens a store written by the first schema version', async () => {
    await store.close();
    await rm(root, { recursive: true, force: true });
    await mkdir(join(root, 'blobs', 'sha256'), { recursive: true });
    const { openDatabase } = await import('./sqlite.js');
    const db = openDatabase(join(root, 'metadata.db'));
    db.pragma('journal_mode = WAL');
    db.exec(`CREATE TABLE blobs (digest TEXT PRIMARY KEY, size INTEGER NOT NULL, created_at INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE labels (digest TEXT NOT NULL REFERENCES blobs(digest) ON DELETE CASCADE, key TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (digest, key)) WITHOUT ROWID;
      CREATE INDEX labels_by_key ON labels(key, value);
      CREATE TABLE ingests (ref TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, expected_digest TEXT, expected_size INTEGER,
        started_at INTEGER NOT NULL);
      PRAGMA user_version = 1;`);
    const digest = sha256('v1 blob');
    db.prepare('INSERT INTO blobs VALUES (?, ?, ?)').run(digest, 7, 1_000_000);
    db.prepare('INSERT INTO labels VALUES (?, ?, ?)').run(digest, 'kiln.gc.root', 'old');
    db.close();
    await writeFile(blobFile(digest), 'v1 blob');

    store = await openLocalContentStore({ root });
    expect(await store.info(digest)).toMatchObject({ size: 7, labels: { 'kiln.gc.root': 'old' }, lastUsedAt: new Date(1_000_000) });
    expect((await store.gc()).removed).toEqual([]);
    await store.createLease('new-table');
    expect((await store.listLeases()).map((l) => l.id)).toEqual(['new-table']);
  });
});
