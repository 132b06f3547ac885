import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { linkSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { exporter, session, worker } from '@kiln/api';
import { createInMemoryTransport, createKilnClient, silentLogger } from '@kiln/common';
import type { BlobSpan, OutputChunk } from './exporter.js';
import { builtinExporters } from './index.js';
import { LOCAL_WRITE_PATH_ATTR, LOCAL_WRITE_TOKEN_ATTR, localWriteTarget, openLocalWrite, writeLocal } from './local-write.js';
import { createExporterServiceImpl } from './rpc/exporter-service.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'kiln-local-write-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const tempName = () => `.kiln-out-${randomBytes(8).toString('hex')}.tmp`;
/** A temp file as the CLI makes it: the token's bytes only. */
function offer(token = randomBytes(32), name = tempName()) {
  const path = join(dir, name);
  writeFileSync(path, token, { flag: 'wx' });
  return { path, token, attrs: { [LOCAL_WRITE_PATH_ATTR]: path, [LOCAL_WRITE_TOKEN_ATTR]: token.toString('hex') } };
}
async function* chunks(...parts: string[]) {
  for (const p of parts) yield Buffer.from(p);
}

describe('local write: the token check', () => {
  it('opens the file holding the token, writes the output in place (same inode) and reports its size', async () => {
    const o = offer();
    const ino = statSync(o.path).ino;
    const opened = await openLocalWrite(localWriteTarget(o.attrs)!);
    expect('fh' in opened).toBe(true);
    if (!('fh' in opened)) return;
    expect(await writeLocal(opened.fh, o.path, chunks('tar-', 'bytes'))).toBe(9);
    expect(readFileSync(o.path, 'utf8')).toBe('tar-bytes');
    expect(statSync(o.path).ino).toBe(ino);
  });

  it('writes a big output of uneven chunks (gathered writes across 8 MiB blocks) byte for byte', async () => {
    const o = offer();
    const opened = await openLocalWrite(localWriteTarget(o.attrs)!);
    if (!('fh' in opened)) throw new Error(opened.reason);
    const parts = Array.from({ length: 23 }, (_, i) => randomBytes(i % 3 === 0 ? 512 : (1 << 20) + i));
    const expected = Buffer.concat(parts);
    expect(await writeLocal(opened.fh, o.path, (async function* () { yield* parts; })())).toBe(expected.length);
    expect(readFileSync(o.path).equals(expected)).toBe(true);
  });

  /** A blob of the store as the layout tar yields it: with its file when `file` is given, else only readable. */
  function span(data: Buffer, file?: string, size = data.length): BlobSpan {
    return {
      kind: 'blob',
      digest: `sha256:${'ab'.repeat(32)}`,
      size,
      async *read() {
        for (let at = 0; at < data.length; at += 1 << 20) yield data.subarray(at, at + (1 << 20));
      },
      ...(file ? { open: () => open(file, 'r') } : {}),
    };
  }

  it('copies blobs from their files in the kernel between buffered bytes, and reads blobs without a file, byte for byte', async () => {
    const o = offer();
    const opened = await openLocalWrite(localWriteTarget(o.attrs)!);
    if (!('fh' in opened)) throw new Error(opened.reason);
    const big = randomBytes((9 << 20) + 5);
    const small = randomBytes(3000);
    writeFileSync(join(dir, 'big.blob'), big);
    const head = Buffer.from('header-512');
    const timing = { writeMs: 0, fileCopiedBytes: 0 };
    const out = (async function* (): AsyncGenerator<OutputChunk> {
      yield head;
      yield span(big, join(dir, 'big.blob'));
      yield Buffer.from('pad');
      yield span(small);
      yield Buffer.from('end');
    })();
    const expected = Buffer.concat([head, big, Buffer.from('pad'), small, Buffer.from('end')]);
    expect(await writeLocal(opened.fh, o.path, out, timing)).toBe(expected.length);
    expect(readFileSync(o.path).equals(expected)).toBe(true);
    expect(timing.fileCopiedBytes).toBe(big.length);
  });

  it('fails an export whose blob file is not the descriptor\'s size, naming the digest', async () => {
    const o = offer();
    const opened = await openLocalWrite(localWriteTarget(o.attrs)!);
    if (!('fh' in opened)) throw new Error(opened.reason);
    writeFileSync(join(dir, 'short.blob'), randomBytes(100));
    const out = (async function* (): AsyncGenerator<OutputChunk> {
      yield span(randomBytes(200), join(dir, 'short.blob'), 200);
    })();
    await expect(writeLocal(opened.fh, o.path, out)).rejects.toMatchObject({ code: 'failed_precondition', message: expect.stringMatching(/sha256:(ab){32}: the content store has 100 bytes, the layer descriptor says 200/) });
  });

  it('refuses a file whose content is not the token (another filesystem, a stale file)', async () => {
    const o = offer();
    const other = localWriteTarget({ ...o.attrs, [LOCAL_WRITE_TOKEN_ATTR]: randomBytes(32).toString('hex') })!;
    const r = await openLocalWrite(other);
    expect(r).toEqual({ reason: `${o.path} does not hold the token` });
    expect(readFileSync(o.path)).toEqual(o.token); // untouched
  });

  it('refuses a missing file, a symlink to the token file, a hard-linked file and a FIFO', async () => {
    const o = offer();
    const missing = await openLocalWrite({ path: join(dir, tempName()), token: o.token });
    expect((missing as { reason: string }).reason).toMatch(/ENOENT/);

    const link = join(dir, tempName());
    symlinkSync(o.path, link);
    const viaLink = await openLocalWrite({ path: link, token: o.token });
    expect((viaLink as { reason: string }).reason).toMatch(/ELOOP/);

    const hard = join(dir, tempName());
    linkSync(o.path, hard);
    expect(await openLocalWrite({ path: hard, token: o.token })).toEqual({ reason: `${hard} has 2 links` });
    expect(readFileSync(o.path)).toEqual(o.token);

    const fifo = join(dir, tempName());
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    expect(await openLocalWrite({ path: fifo, token: o.token })).toEqual({ reason: `${fifo} is not a regular file` });
  });

  it('takes only offers naming a CLI temp file by absolute path with a 32-byte hex token', () => {
    const token = randomBytes(32).toString('hex');
    expect(localWriteTarget({ [LOCAL_WRITE_PATH_ATTR]: '/etc/hostname', [LOCAL_WRITE_TOKEN_ATTR]: token })).toBeUndefined();
    expect(localWriteTarget({ [LOCAL_WRITE_PATH_ATTR]: `rel/${tempName()}`, [LOCAL_WRITE_TOKEN_ATTR]: token })).toBeUndefined();
    expect(localWriteTarget({ [LOCAL_WRITE_PATH_ATTR]: `/x/${tempName()}`, [LOCAL_WRITE_TOKEN_ATTR]: token.slice(2) })).toBeUndefined();
    expect(localWriteTarget({ [LOCAL_WRITE_PATH_ATTR]: `/x/${tempName()}` })).toBeUndefined();
    expect(localWriteTarget({ [LOCAL_WRITE_PATH_ATTR]: `/x/${tempName()}`, [LOCAL_WRITE_TOKEN_ATTR]: token })?.token).toEqual(Buffer.from(token, 'hex'));
  });
});

/** The tier with a fake worker and a fake session relay recording each WriteFiles call. */
function tier() {
  const calls: { localWritten: boolean; localBytes: bigint; streamed: Buffer }[] = [];
  const neighbours = createInMemoryTransport((r) => {
    r.service(worker.WorkerService, {
      async *exportRef() {
        yield { tarChunk: Buffer.from('part1-') };
        yield { tarChunk: Buffer.from('part2') };
      },
    });
    r.service(session.SessionService, {
      async writeFiles(reqs) {
        const call = { localWritten: false, localBytes: 0n, streamed: Buffer.alloc(0) };
        const parts: Uint8Array[] = [];
        for await (const m of reqs) {
          if (m.msg.case === 'header') Object.assign(call, { localWritten: m.msg.value.localWritten, localBytes: m.msg.value.localBytes });
          else if (m.msg.case === 'chunk') parts.push(m.msg.value);
        }
        call.streamed = Buffer.concat(parts);
        calls.push(call);
        return { bytes: call.localWritten ? call.localBytes : BigInt(call.streamed.length) };
      },
    });
  });
  const workerClient = createKilnClient(worker.WorkerService, neighbours);
  const t = createInMemoryTransport((r) =>
    r.service(
      exporter.ExporterService,
      createExporterServiceImpl({
        exporters: builtinExporters,
        worker: async () => workerClient,
        sessions: createKilnClient(session.SessionService, neighbours),
        logger: silentLogger(),
      }),
    ),
  );
  return { client: createKilnClient(exporter.ExporterService, t), calls };
}

describe('ExporterService: local write or stream', () => {
  it('writes a tar output into the offered temp file and tells the client (no chunks)', async () => {
    const { client, calls } = tier();
    const o = offer();
    await client.export({ buildId: 'b', sessionId: 's1', type: 'tar', attrs: { 'session.output': 'o1', ...o.attrs }, workerId: 'w1', ref: 'r1' });
    expect(calls).toEqual([{ localWritten: true, localBytes: 11n, streamed: Buffer.alloc(0) }]);
    expect(readFileSync(o.path, 'utf8')).toBe('part1-part2');
  });

  it('streams when the token does not match, and when the path is a symlink; the files stay as they were', async () => {
    const { client, calls } = tier();
    const o = offer();
    const wrongToken = { ...o.attrs, [LOCAL_WRITE_TOKEN_ATTR]: randomBytes(32).toString('hex') };
    await client.export({ buildId: 'b', sessionId: 's1', type: 'tar', attrs: { 'session.output': 'o1', ...wrongToken }, workerId: 'w1', ref: 'r1' });
    const link = join(dir, tempName());
    symlinkSync(o.path, link);
    await client.export({ buildId: 'b', sessionId: 's1', type: 'tar', attrs: { 'session.output': 'o1', ...o.attrs, [LOCAL_WRITE_PATH_ATTR]: link }, workerId: 'w1', ref: 'r1' });
    expect(calls).toEqual([
      { localWritten: false, localBytes: 0n, streamed: Buffer.from('part1-part2') },
      { localWritten: false, localBytes: 0n, streamed: Buffer.from('part1-part2') },
    ]);
    expect(readFileSync(o.path)).toEqual(o.token);
  });
});
