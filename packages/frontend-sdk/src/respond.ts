import { create, isMessage } from '@bufbuild/protobuf';
import type { Client } from '@connectrpc/connect';
import { KilnError } from '@kiln/common';
import { frontend, gateway, llb, type session } from '@kiln/api';
import { marshal, State } from '@kiln/llb';
import type { FileInfo, FrontendContext, FrontendOutput, KilnFrontend, SolvedResult } from './contract.js';

/** The solver's services a frontend calls during a build: the session relay and the gateway. */
export interface SolverClients {
  sessions: Pick<Client<typeof session.SessionService>, 'readFile'>;
  gateway: Client<typeof gateway.GatewayService>;
}

/**
 * Answers one FrontendService.Solve with `fe`: builds the context the
 * frontend sees (session reads, gateway solves and reads) and turns its
 * output into the wire response.
 */
export async function answerSolve(fe: KilnFrontend, req: frontend.SolveRequest, clients: SolverClients, signal: AbortSignal): Promise<frontend.SolveResponse> {
  const ctx = contextFor(req, clients, signal);
  const out = await fe.solve(ctx);
  return toResponse(out);
}

function contextFor(req: frontend.SolveRequest, clients: SolverClients, signal: AbortSignal): FrontendContext {
  const { buildId, sessionId } = req;
  return {
    buildId,
    attrs: req.attrs,
    filename: req.attrs['filename'] || 'Dockerfile',
    signal,
    async readFile(dir, path, maxBytes = 0) {
      const res = await clients.sessions.readFile({ sessionId, dirName: dir, path, maxBytes: BigInt(maxBytes) }, { signal });
      return res.found ? res.data : undefined;
    },
    async solve(state) {
      const definition = state instanceof State ? marshal(state) : state;
      const { resultId } = await clients.gateway.solve({ buildId, definition }, { signal });
      return solvedResult(clients.gateway, buildId, resultId, signal);
    },
    async resolveImageConfig(ref, platform) {
      const res = await clients.gateway.resolveImageConfig({ buildId, ref, platform: platform ? { os: platform.os, architecture: platform.architecture, variant: platform.variant ?? '' } : undefined }, { signal });
      return { digest: res.digest, config: JSON.parse(Buffer.from(res.config).toString('utf8')) };
    },
  };
}

function solvedResult(gw: Client<typeof gateway.GatewayService>, buildId: string, resultId: string, signal: AbortSignal): SolvedResult {
  const info = (s: { path: string; mode: number; size: bigint; uid: number; gid: number; linkname: string } | undefined): FileInfo => ({
    path: s?.path ?? '',
    mode: s?.mode ?? 0,
    size: Number(s?.size ?? 0n),
    uid: s?.uid ?? 0,
    gid: s?.gid ?? 0,
    linkname: s?.linkname ?? '',
    isDirectory: ((s?.mode ?? 0) & 0o170000) === 0o040000,
  });
  const result: SolvedResult = {
    id: resultId,
    async readFile(path, range = {}) {
      return (await gw.readFile({ buildId, resultId, path, offset: BigInt(range.offset ?? 0), length: BigInt(range.length ?? 0) }, { signal })).data;
    },
    async readDir(path, pattern = '') {
      return (await gw.readDir({ buildId, resultId, path, includePattern: pattern }, { signal })).entries.map(info);
    },
    async stat(path) {
      return info((await gw.statFile({ buildId, resultId, path }, { signal })).stat);
    },
    async exists(path) {
      try {
        await gw.statFile({ buildId, resultId, path }, { signal });
        return true;
      } catch (err) {
        if (err instanceof KilnError && err.code === 'not_found') return false;
        throw err;
      }
    },
  };
  return result;
}


/** The wire response for a frontend's output (a State is marshalled with the output's sources). */
export function toResponse(out: FrontendOutput): frontend.SolveResponse {
  const definition = isMessage(out.result, llb.DefinitionSchema) ? out.result : marshal(out.result as State, { sources: out.sources });
  return create(frontend.SolveResponseSchema, {
    definition,
    imageConfig: out.imageConfig ? new TextEncoder().encode(JSON.stringify(out.imageConfig)) : new Uint8Array(),
    metadata: out.metadata ?? {},
  });
}
