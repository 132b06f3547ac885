import { createHash } from 'node:crypto';
import { chown, lutimes, open } from 'node:fs/promises';
import path from 'node:path';
import { CanceledError, InvalidArgumentError } from '@kiln/common';
import { OpFailure } from './op-failure.js';
import { newSnapshotKey, type OpContext, type OpResult } from './op-context.js';

/** BuildKit's attribute names (solver/pb/attr.go), so LLB from either side means the same. */
export const HTTP_ATTRS = {
  checksum: 'http.checksum',
  filename: 'http.filename',
  perm: 'http.perm',
  uid: 'http.uid',
  gid: 'http.gid',
} as const;

export interface HttpSourceParams {
  /** The whole identifier: `https://...` or `http://...`. */
  url: string;
  attrs: Record<string, string>;
  progressIntervalMs: number;
  /** Default: global fetch. */
  fetch?: typeof fetch;
}

interface HttpOptions {
  checksum?: string;
  filename?: string;
  mode: number;
  uid: number;
  gid: number;
}

/**
 * `https://URL` / `http://URL` (BuildKit's llb.HTTP): downloads URL
 * (following redirects) into a new snapshot holding one file, named by
 * `http.filename`, else the Content-Disposition filename, else the last
 * URL path segment (`index` when there is none); mode `http.perm` (default
 * 0600), owner `http.uid`/`http.gid` (default 0), mtime from Last-Modified
 * when the server sends it. With `http.checksum` ("sha256:..."), a body
 * with another digest fails the op naming both. Publishes "downloading
 * URL" status events with the bytes received.
 */
export async function runHttpSource(ctx: OpContext, p: HttpSourceParams): Promise<OpResult> {
  const opts = parseHttpAttrs(p.attrs);
  let url: URL;
  try {
    url = new URL(p.url);
  } catch {
    throw new InvalidArgumentError(`invalid http source URL "${p.url}"`, 'identifier');
  }
  const shown = redact(url);
  const statusId = `downloading ${shown}`;
  const startedMs = Date.now();
  let lastMs = startedMs;
  const key = newSnapshotKey(ctx.digest, 'http');
  const active = await ctx.snapshotter.prepare(key, undefined, { signal: ctx.signal });
  try {
    const res = await (p.fetch ?? fetch)(url, { redirect: 'follow', signal: ctx.signal });
    if (!res.ok || !res.body) {
      await res.body?.cancel().catch(() => undefined);
      throw new OpFailure(`failed to download ${shown}: server answered ${res.status} ${res.statusText}`.trim());
    }
    const total = Number(res.headers.get('content-length') ?? '') || undefined;
    const name = fileNameOf(opts.filename, res.headers.get('content-disposition'), url);
    const abs = path.join(active.path, name);
    const hash = createHash('sha256');
    let bytes = 0;
    const file = await open(abs, 'wx', opts.mode);
    try {
      for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
        hash.update(chunk);
        bytes += chunk.byteLength;
        await file.write(chunk);
        const now = Date.now();
        if (now - lastMs >= p.progressIntervalMs) {
          lastMs = now;
          void ctx.progress.status({ id: statusId, name: statusId, current: bytes, total, startedMs });
        }
      }
      await file.chmod(opts.mode); // open's mode is filtered by the umask
    } finally {
      await file.close();
    }
    const digest = `sha256:${hash.digest('hex')}`;
    if (opts.checksum !== undefined && opts.checksum !== digest) {
      throw new OpFailure(`failed to download ${shown}: digest mismatch: ${opts.checksum} was expected, the content is ${digest}`);
    }
    await chown(abs, opts.uid, opts.gid);
    const modified = Date.parse(res.headers.get('last-modified') ?? '');
    if (Number.isFinite(modified)) await lutimes(abs, new Date(modified), new Date(modified));
    const id = await ctx.snapshotter.commit(key);
    await ctx.progress.status({ id: statusId, name: statusId, current: bytes, total, startedMs, completedMs: Date.now() });
    return [id];
  } catch (err) {
    await ctx.snapshotter.remove(key).catch(() => undefined);
    if (ctx.signal?.aborted) throw new CanceledError(`download of ${shown} canceled`, { cause: err });
    if (err instanceof OpFailure || err instanceof InvalidArgumentError) throw err;
    throw OpFailure.wrap(`failed to download ${shown}`, err instanceof TypeError && err.cause ? err.cause : err);
  }
}

function parseHttpAttrs(attrs: Record<string, string>): HttpOptions {
  const checksum = attrs[HTTP_ATTRS.checksum] || undefined;
  if (checksum !== undefined && !/^sha256:[0-9a-f]{64}$/.test(checksum)) {
    throw new InvalidArgumentError(`${HTTP_ATTRS.checksum} must be sha256:<64 hex digits>, got "${checksum}"`, HTTP_ATTRS.checksum);
  }
  const filename = attrs[HTTP_ATTRS.filename] || undefined;
  if (filename !== undefined && (filename.includes('/') || filename === '.' || filename === '..')) {
    throw new InvalidArgumentError(`${HTTP_ATTRS.filename} must be a plain file name, got "${filename}"`, HTTP_ATTRS.filename);
  }
  return {
    checksum,
    filename,
    mode: intAttr(attrs, HTTP_ATTRS.perm, 0o600, 0o7777),
    uid: intAttr(attrs, HTTP_ATTRS.uid, 0, 2 ** 32 - 2),
    gid: intAttr(attrs, HTTP_ATTRS.gid, 0, 2 ** 32 - 2),
  };
}

/** An integer attribute in Go's strconv base-0 syntax ("0644" octal, "0x1a4" hex, "420" decimal). */
function intAttr(attrs: Record<string, string>, key: string, dflt: number, max: number): number {
  const v = attrs[key];
  if (v === undefined || v === '') return dflt;
  const m = /^(0[xX][0-9a-fA-F]+|0[oO]?[0-7]+|[1-9][0-9]*|0)$/.exec(v);
  const n = !m ? NaN : /^0[xX]/.test(v) ? parseInt(v.slice(2), 16) : /^0[oO]?/.test(v) && v !== '0' ? parseInt(v.replace(/^0[oO]?/, ''), 8) : parseInt(v, 10);
  if (!Number.isInteger(n) || n < 0 || n > max) throw new InvalidArgumentError(`${key} must be a number between 0 and ${max}, got "${v}"`, key);
  return n;
}

/** BuildKit's choice of name: the attribute, else Content-Disposition's filename, else the URL's last segment, else "index". */
function fileNameOf(attr: string | undefined, disposition: string | null, url: URL): string {
  if (attr) return attr;
  const m = disposition ? /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition) : null;
  const fromHeader = m ? path.posix.basename(decodeURIComponentSafe(m[1]!)) : '';
  if (fromHeader && fromHeader !== '.' && fromHeader !== '..' && fromHeader !== '/') return fromHeader;
  const last = path.posix.basename(decodeURIComponentSafe(url.pathname));
  return last && last !== '.' && last !== '..' && last !== '/' ? last : 'index';
}

function decodeURIComponentSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** The URL without credentials, for messages and events. */
function redact(url: URL): string {
  if (!url.username && !url.password) return url.href;
  const u = new URL(url.href);
  u.username = '';
  u.password = '';
  return u.href;
}
