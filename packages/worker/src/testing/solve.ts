import { type Output, type State, type Vertex } from '@kiln/llb';
import type { Worker } from '../worker.js';

export interface SolveOptions {
  buildId?: string;
  sessionId?: string;
  /** Entitlements granted to the build (`--allow`). */
  entitlements?: string[];
  signal?: AbortSignal;
}

/**
 * A solver in miniature for worker tests: runs every vertex behind `state`
 * on `worker` (inputs first, each once), releases the intermediate refs and
 * returns the ref of the state's output, owned by the caller (undefined for
 * scratch). A failing vertex rejects with the worker's error.
 */
export async function solve(worker: Worker, state: State, opts: SolveOptions = {}): Promise<string | undefined> {
  if (!state.output) return undefined;
  const runs = new Map<Vertex, Promise<string[]>>();
  const produced: string[] = [];
  const run = (v: Vertex): Promise<string[]> => {
    let p = runs.get(v);
    if (!p) {
      p = (async () => {
        const inputRefs = await Promise.all(v.inputs.map((i: Output) => refOf(i)));
        const { bytes, digest } = v.marshal();
        const res = await worker.run({
          buildId: opts.buildId ?? 'build-1',
          sessionId: opts.sessionId ?? 'session-1',
          vertexDigest: digest,
          op: bytes,
          inputRefs,
          description: String(v.metadata.description ?? ''),
          entitlements: opts.entitlements,
          signal: opts.signal,
        });
        produced.push(...res.outputRefs);
        return res.outputRefs;
      })();
      runs.set(v, p);
    }
    return p;
  };
  const refOf = async (o: Output): Promise<string> => {
    const ref = (await run(o.vertex))[o.index];
    if (ref === undefined) throw new Error(`vertex has no output ${o.index}`);
    return ref;
  };
  try {
    const result = await refOf(state.output);
    // Keep one reference to the result; drop everything else this solve produced.
    await worker.release(dropOne(produced, result));
    return result;
  } catch (err) {
    await Promise.allSettled([...runs.values()]);
    await worker.release(produced);
    throw err;
  }
}

function dropOne(list: string[], item: string): string[] {
  const i = list.indexOf(item);
  return i < 0 ? list : [...list.slice(0, i), ...list.slice(i + 1)];
}
