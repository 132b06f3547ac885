import { create } from '@bufbuild/protobuf';
import type { Client } from '@connectrpc/connect';
import { frontend, gateway, session } from '@kiln/api';
import { InvalidArgumentError, NotFoundError } from '@kiln/common';
import { parseDefinition, type ParsedDefinition } from '@kiln/llb';
import type { ImageConfig, KilnFrontend } from './contract.js';
import { answerSolve } from './respond.js';

/** An image a test offers: its files (path → content) and config. */
export interface FakeImage {
  digest?: string;
  config?: ImageConfig;
  files?: Record<string, string>;
}

export interface RunFrontendOptions {
  /** Files of the client's `dockerfile` dir (the build file) and `context` dir, path → content. */
  dockerfile?: Record<string, string>;
  context?: Record<string, string>;
  attrs?: Record<string, string>;
  /** Images by the reference the frontend uses; `ctx.solve(image(REF))` and `resolveImageConfig(REF)` read them. */
  images?: Record<string, FakeImage>;
}

export interface FrontendRun {
  response: frontend.SolveResponse;
  /** The result definition, decoded and validated as the solver would. */
  definition: ParsedDefinition;
  imageConfig: ImageConfig | undefined;
  /** What the frontend asked the gateway for, in order (`solve docker-image://REF`, `readFile REF /path` ...). */
  calls: string[];
}

/**
 * Runs a frontend's solve in-process against in-memory inputs, for unit
 * specs: session reads come from `dockerfile`/`context`, and gateway solves
 * of a bare image source are answered from `images` (a real build runs
 * through the daemon: see e2e/src/pluggable-frontend.spec.ts).
 */
export async function runFrontend(fe: KilnFrontend, opts: RunFrontendOptions = {}): Promise<FrontendRun> {
  const calls: string[] = [];
  const dirs: Record<string, Record<string, string>> = { dockerfile: opts.dockerfile ?? {}, context: opts.context ?? {} };
  const results = new Map<string, string>();
  const imageOf = (id: string) => {
    const ref = results.get(id);
    // A pinned reference (REF@sha256:...) finds the image offered as REF.
    const img = ref === undefined ? undefined : (opts.images?.[ref] ?? opts.images?.[ref.replace(/@sha256:[a-f0-9]{64}$/, '')]);
    if (!img) throw new NotFoundError(`no result ${id}`);
    return { ref: ref!, files: img.files ?? {} };
  };
  const stat = (path: string, content: string | undefined, isDir: boolean) => ({ path, mode: isDir ? 0o40755 : 0o100644, size: BigInt(content?.length ?? 0), uid: 0, gid: 0, linkname: '', modTimeUnixNano: 0n });
  const sessions = {
    async readFile(req: { dirName: string; path: string }) {
      const data = dirs[req.dirName]?.[req.path];
      return create(session.ReadFileResponseSchema, data === undefined ? { found: false } : { found: true, data: new TextEncoder().encode(data) });
    },
  } as unknown as Client<typeof session.SessionService>;
  const gw = {
    async solve(req: { definition: frontend.SolveResponse['definition'] }) {
      const def = parseDefinition(req.definition!);
      const op = def.result ? def.ops.get(def.result.digest)?.op.op : undefined;
      const id = op?.case === 'source' ? op.value.identifier : '';
      if (!id.startsWith('docker-image://')) throw new InvalidArgumentError('runFrontend answers gateway solves of a bare image source only', 'definition');
      calls.push(`solve ${id}`);
      const resultId = `r${results.size + 1}`;
      results.set(resultId, id.slice('docker-image://'.length));
      return { resultId };
    },
    async readFile(req: { resultId: string; path: string }) {
      const img = imageOf(req.resultId);
      calls.push(`readFile ${img.ref} ${req.path}`);
      const data = img.files[req.path];
      if (data === undefined) throw new NotFoundError(`${req.path}: no such file or directory`);
      return { data: new TextEncoder().encode(data) };
    },
    async statFile(req: { resultId: string; path: string }) {
      const img = imageOf(req.resultId);
      calls.push(`statFile ${img.ref} ${req.path}`);
      const prefix = `${req.path.replace(/\/+$/, '')}/`;
      const isDir = Object.keys(img.files).some((f) => f.startsWith(prefix));
      if (img.files[req.path] === undefined && !isDir) throw new NotFoundError(`${req.path}: no such file or directory`);
      return { stat: stat(req.path, img.files[req.path], isDir) };
    },
    async readDir(req: { resultId: string; path: string }) {
      const img = imageOf(req.resultId);
      calls.push(`readDir ${img.ref} ${req.path}`);
      const prefix = `${req.path.replace(/\/+$/, '')}/`;
      const names = [...new Set(Object.keys(img.files).filter((f) => f.startsWith(prefix)).map((f) => f.slice(prefix.length).split('/')[0]!))].sort();
      return { entries: names.map((n) => stat(n, img.files[prefix + n], img.files[prefix + n] === undefined)) };
    },
    async resolveImageConfig(req: { ref: string }) {
      calls.push(`resolveImageConfig ${req.ref}`);
      const img = opts.images?.[req.ref];
      if (!img) throw new NotFoundError(`${req.ref}: not found`);
      return { digest: img.digest ?? `sha256:${'0'.repeat(64)}`, config: new TextEncoder().encode(JSON.stringify(img.config ?? {})) };
    },
  } as unknown as Client<typeof gateway.GatewayService>;
  const req = create(frontend.SolveRequestSchema, { buildId: 'test-build', sessionId: 'test-session', frontend: fe.names[0] ?? '', attrs: opts.attrs ?? {} });
  const response = await answerSolve(fe, req, { sessions, gateway: gw }, new AbortController().signal);
  return {
    response,
    definition: parseDefinition(response.definition!),
    imageConfig: response.imageConfig.length > 0 ? (JSON.parse(Buffer.from(response.imageConfig).toString('utf8')) as ImageConfig) : undefined,
    calls,
  };
}
