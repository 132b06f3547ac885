import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { KilnError } from '@kiln/common';
import { UsageError } from '../flags/usage-error.js';
import { extractTar } from '../session/extract.js';
import type { BuildFlags } from './build-options.js';

/** The largest Dockerfile `-f -` or a Dockerfile-only context `-` may send. */
const MAX_STDIN_DOCKERFILE = 16 << 20;

/**
 * `kiln build -` and `kiln build -f - CONTEXT`, as buildx reads them: stdin
 * is a tar of the context (plain or gzip; recognised by its bytes) or a
 * lone Dockerfile (an empty context), or for `-f -` the Dockerfile. What
 * arrives is written to a temp dir that `parsed` then points at; `cleanup`
 * removes it. Both from stdin is a UsageError. Without `-`, nothing happens
 * and `stdin` is not called (opening process.stdin costs a few ms of CPU).
 */
export async function readStdinInputs(parsed: BuildFlags, stdin: () => Readable): Promise<{ cleanup(): void }> {
  const contextFromStdin = parsed.args.length === 1 && parsed.args[0] === '-';
  const fileFromStdin = parsed.flags.file === '-';
  if (!contextFromStdin && !fileFromStdin) return { cleanup() {} };
  if (contextFromStdin && fileFromStdin) throw new UsageError('invalid argument: can\'t use stdin for both the build context and the Dockerfile', '--file');
  const dir = mkdtempSync(join(tmpdir(), 'kiln-stdin-'));
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  try {
    const data = await readAll(stdin());
    if (fileFromStdin) {
      writeFileSync(join(dir, 'Dockerfile'), limited(data, 'the Dockerfile from stdin'));
      (parsed.flags as { file: string | undefined }).file = join(dir, 'Dockerfile');
      return { cleanup };
    }
    const ctx = join(dir, 'context');
    if (isGzip(data) || isTar(data)) {
      const tar = isGzip(data) ? await gunzip(data) : data;
      if (!isTar(tar)) throw new KilnError('invalid_argument', 'failed to read the build context from stdin: gzip data that is not a tar archive');
      await extractTar((async function* () { yield tar; })(), ctx, { chown: false });
    } else {
      // A lone Dockerfile: the context is empty (docker build - < Dockerfile).
      const df = join(dir, 'dockerfile-only');
      writeFileSync(join(dir, 'Dockerfile'), limited(data, 'the Dockerfile from stdin'));
      mkdirSync(df);
      (parsed.flags as { file: string | undefined }).file ??= join(dir, 'Dockerfile');
      parsed.args[0] = df;
      return { cleanup };
    }
    parsed.args[0] = ctx;
    return { cleanup };
  } catch (err) {
    cleanup();
    throw err;
  }
}

function limited(data: Buffer, what: string): Buffer {
  if (data.length > MAX_STDIN_DOCKERFILE) throw new KilnError('invalid_argument', `failed to read ${what}: larger than ${MAX_STDIN_DOCKERFILE} bytes`);
  return data;
}

async function readAll(stdin: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stdin) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c as string));
  return Buffer.concat(chunks);
}

const isGzip = (b: Buffer) => b.length > 2 && b[0] === 0x1f && b[1] === 0x8b;
/** A POSIX/GNU tar header: "ustar" at offset 257. */
const isTar = (b: Buffer) => b.length >= 512 && b.subarray(257, 262).toString('latin1') === 'ustar';

async function gunzip(data: Buffer): Promise<Buffer> {
  const z = createGunzip();
  z.end(data);
  return readAll(z);
}
