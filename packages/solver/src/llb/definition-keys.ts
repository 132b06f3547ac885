import { sha256, walkPostOrder, type Digest } from '@kiln/common';
import type { ParsedDefinition } from '@kiln/llb';
import { isLocalSource, opCacheKey } from './cache-keys.js';

/** An input's key: the vertex key for output 0, else the key with the output index (as the solver's outputKey). */
export function outputKey(key: string, index: number): string {
  return index === 0 ? key : sha256(`${key}#${index}`);
}

/**
 * Definition keys (BuildKit's digest-based keys): each op keyed by its
 * digest with every input replaced by that input's definition key, never
 * by a checksum of the paths it reads. Unlike the solver's cache key, it
 * needs no input's result, only the local sources' content keys
 * (`localKey`); a vertex under a local source without one has none.
 */
export function definitionKeys(def: ParsedDefinition, localKey: (digest: string) => string | undefined): Map<Digest, string> {
  const keys = new Map<Digest, string>();
  // Inputs before users, iteratively (a chain may be thousands of ops long).
  walkPostOrder<Digest>(
    def.ops.keys(),
    (d) => d,
    (d) => def.ops.get(d)!.op.inputs.map((i) => i.digest as Digest),
    (digest) => {
      const op = def.ops.get(digest)!;
      let key: string | undefined;
      if (isLocalSource(op.op)) key = localKey(digest);
      else {
        const inputs = op.op.inputs.map((i) => {
          const k = keys.get(i.digest as Digest);
          return k === undefined ? undefined : outputKey(k, Number(i.index));
        });
        if (inputs.every((k) => k !== undefined)) key = opCacheKey(op, inputs as string[]);
      }
      if (key !== undefined) keys.set(digest, key);
    },
  );
  return keys;
}
