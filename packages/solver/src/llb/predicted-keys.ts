import { walkPostOrder, type Digest } from '@kiln/common';
import type { ParsedDefinition } from '@kiln/llb';
import { bypassesCache, isLocalSource, opCacheKey } from './cache-keys.js';
import { outputKey } from './definition-keys.js';
import { inputSelectors } from './input-selectors.js';

/**
 * The solver cache keys of a definition's steps that are known before
 * anything runs, for placing the build where they are cached: the keys
 * runVertex will compute, for ops whose inputs are all known and read
 * whole. A local source's key needs the content the worker receives, and
 * an input the op reads only some paths of is keyed by their checksum in
 * its result (see Solver.contentKeys): neither is known ahead, nor is
 * anything above them. What is left is the leading chain from image,
 * git and http sources (FROM, the RUNs on it, ...). Steps the build runs
 * without looking at the cache (`--no-cache[-filter]`, ignore_cache) are
 * left out, their keys still key the steps above them.
 */
export function predictedCacheKeys(def: ParsedDefinition, noCache: string | undefined): string[] {
  return [...predictedKeysByDigest(def, noCache).values()];
}

/** predictedCacheKeys by the digest of the op each keys. */
export function predictedKeysByDigest(def: ParsedDefinition, noCache: string | undefined): Map<string, string> {
  const keys = new Map<Digest, string>();
  const counted = new Map<string, string>();
  walkPostOrder<Digest>(
    def.ops.keys(),
    (d) => d,
    (d) => def.ops.get(d)!.op.inputs.map((i) => i.digest as Digest),
    (digest) => {
      const op = def.ops.get(digest)!;
      if (op.op.op.case === undefined || isLocalSource(op.op)) return;
      const selectors = inputSelectors(op.op);
      const inputs: string[] = [];
      for (const [i, input] of op.op.inputs.entries()) {
        const k = keys.get(input.digest as Digest);
        if (k === undefined || selectors[i]) return;
        inputs.push(outputKey(k, Number(input.index)));
      }
      const key = opCacheKey(op, inputs);
      keys.set(digest, key);
      if (!bypassesCache(op, noCache)) counted.set(digest, key);
    },
  );
  return counted;
}
