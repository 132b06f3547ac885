import type { Client } from '@connectrpc/connect';
import type { llb, worker } from '@kiln/api';
import { InvalidArgumentError, NotFoundError } from '@kiln/common';
import { parseReference, resolveImage, type RegistryClient } from '@kiln/registry';
import { buildRegistryClient } from './build-registry.js';
import type { SessionHost } from '../session/session-host.js';
import type { WorkerPool } from './workers.js';

/** A result a frontend solved through the gateway: a ref on one worker, held until the build ends. */
export interface GatewayResult {
  workerId: string;
  ref: string;
}

/** What the solver lends the gateway for one build (see Solver.solve). */
export interface GatewayBuild {
  sessionId: string;
  /** Solves `definition` in the build's scheduler session, with its entitlements, cache and progress. */
  solve(definition: llb.Definition, signal: AbortSignal): Promise<GatewayResult>;
}

/**
 * The solver's side of BuildKit's gateway API for frontends: while a build
 * runs, its frontend may solve further definitions as part of it and read
 * files of their results. Results are named per build (`r1`, `r2`, ...)
 * and only the build that made a result can read it.
 */
export class BuildGateways {
  private readonly builds = new Map<string, { build: GatewayBuild; results: Map<string, GatewayResult> }>();

  constructor(
    private readonly workers: WorkerPool,
    private readonly registry: () => RegistryClient,
    private readonly sessions: SessionHost,
  ) {}

  /** Opens the gateway of `buildId`; the returned function closes it (its results stop being readable). */
  open(buildId: string, build: GatewayBuild): () => void {
    this.builds.set(buildId, { build, results: new Map() });
    return () => this.builds.delete(buildId);
  }

  async solve(buildId: string, definition: llb.Definition | undefined, signal: AbortSignal): Promise<string> {
    const b = this.buildOf(buildId);
    if (!definition || definition.def.length === 0) throw new InvalidArgumentError('gateway solve needs a definition', 'definition');
    const result = await b.build.solve(definition, signal);
    const id = `r${b.results.size + 1}`;
    b.results.set(id, result);
    return id;
  }

  async readFile(buildId: string, resultId: string, path: string, offset: bigint, length: bigint, signal: AbortSignal): Promise<Uint8Array> {
    const { client, ref } = await this.resultOf(buildId, resultId);
    return (await client.readFile({ ref, path, offset, length }, { signal })).data;
  }

  async readDir(buildId: string, resultId: string, path: string, includePattern: string, signal: AbortSignal): Promise<worker.FileStat[]> {
    const { client, ref } = await this.resultOf(buildId, resultId);
    return (await client.readDir({ ref, path, includePattern }, { signal })).entries;
  }

  async statFile(buildId: string, resultId: string, path: string, signal: AbortSignal): Promise<worker.FileStat | undefined> {
    const { client, ref } = await this.resultOf(buildId, resultId);
    return (await client.statFile({ ref, path }, { signal })).stat;
  }

  /** The digest `ref` resolves to and the platform's image config, with the build client's registry credentials first. */
  async resolveImageConfig(buildId: string, ref: string, platform: llb.Platform | undefined, signal: AbortSignal): Promise<{ digest: string; config: Uint8Array }> {
    const b = this.buildOf(buildId);
    const parsed = parseReference(ref, 'ref');
    const client = buildRegistryClient(this.registry(), this.sessions, b.build.sessionId, signal);
    const p = platform?.os ? { os: platform.os, architecture: platform.architecture, ...(platform.variant ? { variant: platform.variant } : {}) } : { os: 'linux', architecture: hostArchitecture() };
    const resolved = await resolveImage(client, parsed, p, signal);
    const parts: Uint8Array[] = [];
    for await (const chunk of client.fetch(parsed, resolved.manifest.manifest.config, signal)) parts.push(chunk);
    return { digest: resolved.root.digest, config: Buffer.concat(parts) };
  }

  private buildOf(buildId: string) {
    const b = this.builds.get(buildId);
    if (!b) throw new NotFoundError(`build ${buildId} is not running`, { build: buildId });
    return b;
  }

  private async resultOf(buildId: string, resultId: string): Promise<{ client: Client<typeof worker.WorkerService>; ref: string }> {
    const r = this.buildOf(buildId).results.get(resultId);
    if (!r) throw new NotFoundError(`build ${buildId} has no result ${resultId}`, { result: resultId });
    if (!r.ref) throw new InvalidArgumentError(`result ${resultId} is empty (scratch)`, 'result_id');
    const w = await this.workers.get(r.workerId);
    if (!w) throw new NotFoundError(`worker ${r.workerId} holding result ${resultId} is gone`, { worker: r.workerId });
    return { client: w.client, ref: r.ref };
  }
}

function hostArchitecture(): string {
  const a = process.arch;
  return a === 'x64' ? 'amd64' : a === 'ia32' ? '386' : a;
}
