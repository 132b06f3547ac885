import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleFixture } from '../testing/bundle-fixture.js';

// Which content-store writes are fsynced, counted with strace on a child
// process (src/testing/fixtures/fsync-steps.ts) that makes one export's
// writes twice: blobs and labels are durable against a power loss; leases
// and writes of blobs already present with the same labels (what a fully
// cached export makes) are left to the next durable write.

describe('content store durability (fsyncs per write, strace)', () => {
  let work: string;
  let bundle: string;
  let nodePath: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'kiln-cs-fsync-'));
    ({ bundle, nodePath } = await bundleFixture('fsync-steps', work));
  });

  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  /** fsync/fdatasync calls of the child (all threads) per step it announced. */
  async function fsyncsPerStep(): Promise<Record<string, number>> {
    const trace = join(work, 'trace.txt');
    execFileSync('strace', ['-f', '-qq', '-e', 'trace=fsync,fdatasync,write', '-o', trace, process.execPath, bundle, join(work, 'store')], {
      env: { ...process.env, NODE_PATH: nodePath },
      stdio: 'ignore',
    });
    const counts: Record<string, number> = {};
    let step = 'open';
    for (const line of (await readFile(trace, 'utf8')).split('\n')) {
      const marker = /write\(2, "STEP ([^\\"]+)\\n"/.exec(line);
      if (marker) step = marker[1]!;
      else if (/\b(fsync|fdatasync)\(\d+/.test(line)) counts[step] = (counts[step] ?? 0) + 1;
    }
    return counts;
  }

  it('fsyncs new blobs and label changes, not leases nor blobs written again unchanged', async () => {
    const n = await fsyncsPerStep();
    const of = (step: string) => n[step] ?? 0;
    // Durable: a new blob (file, directory, metadata: three fsyncs, none for the ingest row
    // it starts with, which only serves a resume) and every label change.
    expect(of('first:layer')).toBe(3);
    expect(of('first:manifest')).toBe(3);
    expect(of('first:name')).toBe(1);
    expect(of('again:name')).toBe(1);
    // Left to the next durable write: leases, and what a cached export writes again.
    for (const step of ['create-lease', 'lease-layer', 'delete-lease']) {
      expect(of(`first:${step}`), step).toBe(0);
      expect(of(`again:${step}`), step).toBe(0);
    }
    expect(of('again:layer')).toBe(0);
    expect(of('again:manifest')).toBe(0);
  });
});
