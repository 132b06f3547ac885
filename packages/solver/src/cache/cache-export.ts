import type { Logger } from '@kiln/common';
import type { CacheConfig, CacheLayer, CacheRecord } from './cache-config.js';

/** One vertex result of a finished build, as the cache exporter needs it. */
export interface BuiltVertex {
  digest: string;
  /** The solver's cache key (see opCacheKey). */
  key: string;
  /** Keys of its inputs, in input order. */
  parents: string[];
  /** Digests of the vertices it read. */
  inputs: string[];
  description: string;
  workerId: string;
  /** One ref per op output. */
  refs: string[];
  /** Local sources are never exported: their key is the content, known only by transferring it. */
  exportable: boolean;
  /** See CacheRecord.definitionKey; set before the cache is exported. */
  definitionKey?: string;
}

/** A layer of a ref's chain as GetLayers returns it. */
export type ChainLayer = Omit<CacheLayer, 'parent'>;

/** The layer chain of a ref on its worker (WorkerService.GetLayers). */
export type LayersOf = (workerId: string, ref: string) => Promise<ChainLayer[]>;

/**
 * Builds the cache config of a build. `max`: every exportable vertex;
 * `min`: the final result's vertex and its ancestors whose chains are a
 * prefix of the final chain (the steps whose layers are in the result).
 * The final chain is entered first, so layer i of the table is layer i of
 * the final image (what an inline cache's indexes name). A vertex whose
 * layers cannot be made is left out (logged).
 */
export async function collectCacheConfig(
  vertices: ReadonlyMap<string, BuiltVertex>,
  final: { digest: string; index: number } | undefined,
  mode: 'min' | 'max',
  layersOf: LayersOf,
  logger: Logger,
): Promise<CacheConfig & { finalLayers: number }> {
  const table: CacheLayer[] = [];
  const byChain = new Map<string, number>();
  /** Enters a chain into the table; returns its top index (-1 for no layers). */
  const enter = (chain: ChainLayer[]): number => {
    let parent = -1;
    for (const l of chain) {
      const id = `${parent}|${l.digest}`;
      let i = byChain.get(id);
      if (i === undefined) {
        i = table.push({ ...l, parent }) - 1;
        byChain.set(id, i);
      }
      parent = i;
    }
    return parent;
  };
  const chains = new Map<string, ChainLayer[]>();
  const chainOf = async (workerId: string, ref: string): Promise<ChainLayer[]> => {
    let c = chains.get(ref);
    if (!c) chains.set(ref, (c = await layersOf(workerId, ref)));
    return c;
  };

  const finalVertex = final && vertices.get(final.digest);
  let finalChain: ChainLayer[] | undefined;
  if (finalVertex?.refs[final!.index]) {
    finalChain = await chainOf(finalVertex.workerId, finalVertex.refs[final!.index]!);
    enter(finalChain);
  }
  const candidates = mode === 'max' ? [...vertices.values()] : ancestors(vertices, final?.digest);
  const records: CacheRecord[] = [];
  for (const v of candidates) {
    if (!v.exportable || v.refs.length === 0 || v.refs.some((r) => !r)) continue;
    try {
      const own = await Promise.all(v.refs.map((r) => chainOf(v.workerId, r)));
      if (mode === 'min' && !own.every((c) => finalChain && isPrefix(c, finalChain))) continue;
      records.push({ key: v.key, parents: v.parents, results: own.map(enter), description: v.description, ...(v.definitionKey ? { definitionKey: v.definitionKey } : {}) });
    } catch (err) {
      logger.warn({ err, vertex: v.digest }, 'failed to make the layers of a vertex for the cache export; leaving it out');
    }
  }
  return { layers: table, records, finalLayers: finalChain?.length ?? 0 };
}

function isPrefix(a: readonly ChainLayer[], b: readonly ChainLayer[]): boolean {
  return a.length <= b.length && a.every((l, i) => l.diffId === b[i]!.diffId);
}

function ancestors(vertices: ReadonlyMap<string, BuiltVertex>, top: string | undefined): BuiltVertex[] {
  const out: BuiltVertex[] = [];
  const seen = new Set<string>();
  const visit = (d: string | undefined) => {
    const v = d === undefined ? undefined : vertices.get(d);
    if (!v || seen.has(d!)) return;
    seen.add(d!);
    out.push(v);
    for (const i of v.inputs) visit(i);
  };
  visit(top);
  return out;
}

/** The inline form: records only, result indexes naming the final image's layers (see collectCacheConfig). */
export function inlineConfig(config: CacheConfig, finalLayers: number): { records: CacheRecord[] } {
  return { records: config.records.filter((r) => r.results.every((i) => i < finalLayers)) };
}
