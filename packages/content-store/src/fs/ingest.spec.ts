import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sha256 } from '@kiln/common';
import { caught, chunks, collect, gated, readAll, until, untouched } from '../testing/fixtures/helpers.js';
import { openLocalContentStore, type LocalContentStore } from './local-content-store.js';

const sha512 = (data: Uint8Array | string) => `sha512:${createHash('sha512').update(data).digest('hex')}`;

async function* failingAfter(data: Buffer, cut: number, chunk = 256 * 1024): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < cut; i += chunk) yield data.subarray(i, Math.min(cut, i + chunk));
  throw new Error('connection lost');
}

describe('LocalContentStore ingests', () => {
  let root: string;
  let store: LocalContentStore;
  let clock: number | undefined;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'kiln-cs-ingest-'));
    clock = undefined;
    store = await openLocalContentStore({ root, now: () => clock ?? Date.now() });
  });

  afterEach(async () => {
    await store.close();
    await rm(root, { recursive: true, force: true });
  });

  const ingestEntries = () => readdir(join(root, 'ingest'));

  it('status reports a live write and then the interrupted one', async () => {
    const expectedDigest = sha256('abcdef');
    const ac = new AbortController();
    const g = gated('abcd', 'ef');
    const before = Date.now();
    const p = store.write({ ref: 'live', expectedDigest, expectedSize: 6 }, g.data, { signal: ac.signal });
    await until(async () => (await store.listStatuses()).some((s) => s.offset === 4));
    const live = await store.status('live');
    expect(live).toMatchObject({ ref: 'live', offset: 4, expectedDigest, expectedSize: 6, active: true });
    expect(live.startedAt.getTime()).toBeGreaterThanOrEqual(before - 1000);
    expect(live.updatedAt.getTime()).toBeGreaterThanOrEqual(live.startedAt.getTime());
    expect((await caught(store.abort('live'))).code).toBe('unavailable');

    ac.abort();
    expect((await caught(p)).code).toBe('canceled');
    const interrupted = await store.status('live');
    expect(interrupted).toMatchObject({ ref: 'live', offset: 4, expectedDigest, expectedSize: 6, active: false });
    expect(interrupted.startedAt).toEqual(live.startedAt);
    expect(await store.listStatuses()).toEqual([interrupted]);
    expect((await caught(store.status('nope'))).code).toBe('not_found');
    expect((await caught(store.status(''))).code).toBe('invalid_argument');
  });

  it('resumes from the status offset (or an earlier one), re-hashing what is on disk', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const digest = sha256(data);
    await expect(store.write({ ref: 'big', expectedDigest: digest }, failingAfter(data, 1_500_000))).rejects.toThrow('connection lost');
    const st = await store.status('big');
    expect(st).toMatchObject({ offset: 1_500_000, expectedDigest: digest, active: false });
    expect(await store.list()[Symbol.asyncIterator]().next()).toMatchObject({ done: true }); // nothing visible

    // Resume once more and get cut again, then resume from before the end of what was received.
    await expect(
      store.write({ ref: 'big', offset: st.offset }, failingAfter(data.subarray(st.offset), 1_000_000)),
    ).rejects.toThrow('connection lost');
    expect((await store.status('big')).offset).toBe(2_500_000);
    const from = 2_000_000; // data past the offset is dropped and sent again
    const res = await store.write({ ref: 'big', offset: from }, chunks(data.subarray(from)));
    expect(res).toEqual({ digest, size: data.length });
    expect((await readAll(store.read(digest))).equals(data)).toBe(true);
    expect(await ingestEntries()).toEqual([]);
    expect(await store.listStatuses()).toEqual([]);
  });

  it('a resume must fit the interrupted write, which then stays intact', async () => {
    const expectedDigest = sha256('0123456789');
    const ac = new AbortController();
    const p = store.write({ ref: 'r', expectedDigest, expectedSize: 10 }, gated('01234').data, { signal: ac.signal });
    await until(async () => (await store.listStatuses())[0]?.offset === 5);
    ac.abort();
    await caught(p);

    const fails = async (req: Parameters<LocalContentStore['write']>[0], match: RegExp) => {
      const err = await caught(store.write(req, chunks('x')));
      expect(err.code).toBe('failed_precondition');
      expect(err.message).toMatch(match);
    };
    await fails({ ref: 'other', offset: 3 }, /no interrupted write/);
    await fails({ ref: 'r', offset: 6 }, /only 5 bytes were received/);
    await fails({ ref: 'r', offset: 5, expectedDigest: sha256('else') }, /started expecting sha256:/);
    await fails({ ref: 'r', offset: 5, expectedSize: 11 }, /started expecting 10 bytes/);
    await fails({ ref: 'r', offset: 5, expectedDigest: sha512('0123456789') }, /started expecting/);
    expect((await caught(store.write({ ref: 'r', offset: 11, expectedSize: 10 }, chunks('x')))).code).toBe('invalid_argument');
    expect((await caught(store.write({ ref: 'r', offset: -1 }, chunks('x')))).code).toBe('invalid_argument');
    expect(await store.status('r')).toMatchObject({ offset: 5, expectedDigest, expectedSize: 10 });

    // The expectations carry over to the resume: a wrong tail is a digest mismatch, and discards the data.
    const mismatch = await caught(store.write({ ref: 'r', offset: 5 }, chunks('XXXXX')));
    expect(mismatch.code).toBe('failed_precondition');
    expect(mismatch.message).toContain(expectedDigest);
    expect((await caught(store.status('r'))).code).toBe('not_found');
    expect(await ingestEntries()).toEqual([]);
  });

  it('offset 0 starts over and abort removes an interrupted ingest', async () => {
    await expect(store.write({ ref: 'a', expectedDigest: sha256('nope') }, failingAfter(Buffer.from('junk junk'), 9))).rejects.toThrow();
    expect((await store.status('a')).offset).toBe(9);
    expect(await store.write({ ref: 'a' }, chunks('fresh'))).toEqual({ digest: sha256('fresh'), size: 5 });
    expect(await ingestEntries()).toEqual([]);

    await expect(store.write({ ref: 'b' }, failingAfter(Buffer.from('partial'), 7))).rejects.toThrow();
    expect(await ingestEntries()).toHaveLength(1);
    await store.abort('b');
    expect(await ingestEntries()).toEqual([]);
    expect((await caught(store.abort('b'))).code).toBe('not_found');
    expect((await caught(store.status('b'))).code).toBe('not_found');
  });

  it('an existing blob completes a resume at once and drops the interrupted data', async () => {
    const data = randomBytes(100_000);
    const digest = sha256(data);
    await expect(store.write({ ref: 'x', expectedDigest: digest }, failingAfter(data, 50_000, 10_000))).rejects.toThrow();
    await store.write({ ref: 'other', expectedDigest: digest }, chunks(data));
    expect(await store.write({ ref: 'x', offset: 50_000 }, untouched)).toEqual({ digest, size: data.length });
    expect(await store.listStatuses()).toEqual([]);
    expect(await ingestEntries()).toEqual([]);
  });

  it('stores sha512 blobs next to sha256 ones', async () => {
    const digest = sha512('five twelve');
    const res = await store.write({ ref: 's', expectedDigest: digest, labels: { alg: '512' } }, chunks('five ', 'twelve'));
    expect(res).toEqual({ digest, size: 11 });
    expect(await readFile(join(root, 'blobs', 'sha512', digest.slice(7)), 'utf8')).toBe('five twelve');
    expect((await readAll(store.read(digest, { offset: 5 }))).toString()).toBe('twelve');
    expect(await store.info(digest)).toMatchObject({ digest, size: 11, labels: { alg: '512' } });
    expect((await collect(store.list(['labels.alg==512']))).map((i) => i.digest)).toEqual([digest]);
    const bad = await caught(store.write({ ref: 's2', expectedDigest: sha512('other') }, chunks('five twelve')));
    expect(bad.message).toContain(digest);
    await store.delete(digest);
    expect((await caught(store.info(digest))).code).toBe('not_found');
  });

  it('concurrent writers of one digest do the work once', async () => {
    const data = randomBytes(700 * 1024);
    const digest = sha256(data);
    const first = gated(data.subarray(0, 1000), data.subarray(1000));
    const p1 = store.write({ ref: 'w1', expectedDigest: digest, labels: { one: '1' } }, first.data);
    await until(async () => (await store.listStatuses()).length === 1);
    let secondDone = false;
    const others = Array.from({ length: 4 }, (_, i) =>
      store.write({ ref: `w${i + 2}`, expectedDigest: digest, labels: { [`n${i + 2}`]: 'y' } }, untouched).then((r) => {
        secondDone = true;
        return r;
      }),
    );
    await new Promise((r) => setTimeout(r, 30));
    expect(secondDone).toBe(false); // waiting for the first
    expect(await store.status('w1')).toMatchObject({ active: true });
    first.release();
    for (const r of [await p1, ...(await Promise.all(others))]) expect(r).toEqual({ digest, size: data.length });
    expect(first.pulled()).toBe(2);
    expect(Object.keys((await store.info(digest)).labels).sort()).toEqual(['n2', 'n3', 'n4', 'n5', 'one']);
    expect(await ingestEntries()).toEqual([]);
  });

  it('a waiting writer does the work itself when the first one fails', async () => {
    const digest = sha256('right');
    const wrong = gated('wro', 'ng');
    const p1 = store.write({ ref: 'bad', expectedDigest: digest }, wrong.data);
    await until(async () => (await store.listStatuses()).length === 1);
    const p2 = store.write({ ref: 'good', expectedDigest: digest }, chunks('ri', 'ght'));
    wrong.release();
    expect((await caught(p1)).code).toBe('failed_precondition');
    expect(await p2).toEqual({ digest, size: 5 });
  });

  it('a waiting writer can be aborted', async () => {
    const digest = sha256('slow');
    const slow = gated('sl', 'ow');
    const p1 = store.write({ ref: 'first', expectedDigest: digest }, slow.data);
    await until(async () => (await store.listStatuses()).length === 1);
    const ac = new AbortController();
    const p2 = store.write({ ref: 'second', expectedDigest: digest }, untouched, { signal: ac.signal });
    ac.abort();
    expect((await caught(p2)).code).toBe('canceled');
    slow.release();
    expect(await p1).toEqual({ digest, size: 4 });
  });

  it('refuses a second open of the same root, in this or another process', async () => {
    const err = await caught(openLocalContentStore({ root }));
    expect(err.code).toBe('unavailable');
    expect(err.message).toContain('in use');
    await store.close();
    store = await openLocalContentStore({ root });
  });

  it('removes interrupted ingests past the expiry at open, keeping fresher ones for resume', async () => {
    await store.close();
    clock = Date.now();
    store = await openLocalContentStore({ root, now: () => clock ?? Date.now(), ingestExpiryMs: 60 * 60_000 });
    await expect(store.write({ ref: 'old' }, failingAfter(Buffer.from('old bytes'), 9))).rejects.toThrow();
    clock += 50 * 60_000;
    await expect(store.write({ ref: 'new' }, failingAfter(Buffer.from('new bytes'), 9))).rejects.toThrow();
    await store.close();
    clock += 20 * 60_000;
    store = await openLocalContentStore({ root, now: () => clock ?? Date.now(), ingestExpiryMs: 60 * 60_000 });
    expect((await store.listStatuses()).map((s) => s.ref)).toEqual(['new']);
    expect(await ingestEntries()).toHaveLength(1);
    expect(await store.write({ ref: 'new', offset: 9 }, chunks('!'))).toEqual({ digest: sha256('new bytes!'), size: 10 });
  });

  it('gc removes stale ingests but never an active one', async () => {
    await store.close();
    clock = Date.now();
    store = await openLocalContentStore({ root, now: () => clock ?? Date.now(), ingestExpiryMs: 60_000 });
    await expect(store.write({ ref: 'stale' }, failingAfter(Buffer.from('zzz'), 3))).rejects.toThrow();
    const active = gated('a', 'ctive');
    const p = store.write({ ref: 'active' }, active.data);
    await until(async () => (await store.listStatuses()).length === 2);
    clock += 10 * 60_000;
    const dry = await store.gc({ dryRun: true });
    expect(dry.ingestsRemoved).toEqual(['stale']);
    expect((await store.listStatuses()).map((s) => s.ref)).toEqual(['active', 'stale']);
    const res = await store.gc();
    expect(res.ingestsRemoved).toEqual(['stale']);
    expect((await store.listStatuses()).map((s) => s.ref)).toEqual(['active']);
    active.release();
    expect(await p).toEqual({ digest: sha256('active'), size: 6 });
    expect(await ingestEntries()).toEqual([]);
  });

  it('recovery re-hashes blob files without metadata and removes corrupt ones', async () => {
    const good = await store.write({ ref: 'g' }, chunks('good'));
    await store.close();
    const { writeFile } = await import('node:fs/promises');
    const { openDatabase } = await import('./sqlite.js');
    // Lose the metadata of `good` (as a crash between rename and metadata would), plant a corrupt file.
    const db = openDatabase(join(root, 'metadata.db'));
    db.prepare('DELETE FROM blobs WHERE digest = ?').run(good.digest);
    db.close();
    const liar = sha256('what the name says');
    await writeFile(join(root, 'blobs', 'sha256', liar.slice(7)), 'something else');
    store = await openLocalContentStore({ root });
    expect(await store.info(good.digest)).toMatchObject({ size: 4 });
    expect((await caught(store.info(liar))).code).toBe('not_found');
    expect(await readdir(join(root, 'blobs', 'sha256'))).toEqual([good.digest.slice(7)]);
  });
});
