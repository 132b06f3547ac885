import { llb } from '@kiln/api';
import { sha256 } from '@kiln/common';
import { digestOf, marshalOp, type ParsedOp } from '@kiln/llb';

/**
 * The cache key of an op: the digest of the op with each input's digest
 * replaced by that input's cache key. Two ops doing the same thing to
 * inputs with the same content get the same key, whatever definition (or
 * session) they came from; metadata (descriptions, ignore_cache) never counts.
 */
export function opCacheKey(op: ParsedOp, inputKeys: readonly string[]): string {
  if (inputKeys.length !== op.op.inputs.length) throw new Error(`op ${op.digest} has ${op.op.inputs.length} inputs, got ${inputKeys.length} keys`);
  // Shallow copies of only what changes: a deep clone of the op (protobuf-es reflection) was
  // three quarters of this function's time, and it runs for every vertex of every build.
  const keyed: llb.Op = { ...op.op, inputs: op.op.inputs.map((input, i) => ({ ...input, digest: inputKeys[i]! })) };
  // As BuildKit: proxy settings reach the step's env but never change what it builds.
  if (keyed.op.case === 'exec' && keyed.op.value.meta?.proxyEnv) {
    keyed.op = { case: 'exec', value: { ...keyed.op.value, meta: { ...keyed.op.value.meta, proxyEnv: undefined } } };
  }
  if (keyed.op.case === 'source') {
    // A pinned OCI layout is keyed by its manifest digest alone: the session store it is read from does not count.
    const m = /^oci-layout:\/\/[^@]*@(sha256:[0-9a-f]{64})$/.exec(keyed.op.value.identifier);
    if (m) keyed.op = { case: 'source', value: { ...keyed.op.value, identifier: `oci-layout://@${m[1]}`, attrs: {} } };
  }
  return digestOf(marshalOp(keyed));
}

/** The cache key of a local source: the digest of the content the worker received (see RunResponse.content_digests). */
export function localSourceCacheKey(contentDigest: string): string {
  return sha256(`local-content:${contentDigest}`);
}

/** The key an op input contributes when the op reads only selected paths of it: their checksum (WorkerService.Checksum). */
export function selectedContentKey(checksum: string): string {
  return sha256(`selected-content:${checksum}`);
}

/** True for sources whose result is only known by running them (the client's local files). */
export function isLocalSource(op: llb.Op): boolean {
  return op.op.case === 'source' && op.op.value.identifier.startsWith('local://');
}

/**
 * Whether `--no-cache` / `--no-cache-filter` (the frontend attr `no-cache`:
 * empty = every step, else comma-separated stage names) or the op's own
 * ignore_cache flag bypass the cache for this op. A stage's steps are the
 * ops whose progress group is the stage name or whose description starts
 * with `[stage]` / `[stage ` (the Dockerfile frontend's labels).
 */
export function bypassesCache(op: ParsedOp, noCache: string | undefined): boolean {
  if (op.metadata?.ignoreCache) return true;
  if (noCache === undefined) return false;
  const stages = noCache.split(',').map((s) => s.trim()).filter(Boolean);
  if (stages.length === 0) return true;
  const group = op.metadata?.progressGroup ?? '';
  const desc = op.metadata?.description ?? '';
  return stages.some((s) => group === s || desc.startsWith(`[${s}]`) || desc.startsWith(`[${s} `));
}
