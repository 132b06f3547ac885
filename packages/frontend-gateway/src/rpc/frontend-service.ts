import { create } from '@bufbuild/protobuf';
import type { Client, ServiceImpl } from '@connectrpc/connect';
import { frontend, type gateway, type session } from '@kiln/api';
import { InvalidArgumentError, KilnError, type Logger } from '@kiln/common';
import { sessionCredentials } from '@kiln/registry';
import type { Frontend, FrontendGateway } from '../frontend.js';

export interface FrontendServiceOptions {
  frontends: readonly Frontend[];
  /** The session relay (SessionService on the solver). */
  sessions: Client<typeof session.SessionService>;
  /** The solver's GatewayService, for frontends that solve within the build (remote build contexts); optional. */
  gateway?: Client<typeof gateway.GatewayService>;
  logger: Logger;
}

/** The FrontendService: picks the frontend by name and gives it the build's session as input. */
export function createFrontendServiceImpl(opts: FrontendServiceOptions): ServiceImpl<typeof frontend.FrontendService> {
  const byName = new Map(opts.frontends.map((f) => [f.name, f]));
  return {
    async solve(req, ctx) {
      const fe = byName.get(req.frontend);
      if (!fe) throw new InvalidArgumentError(`unknown frontend "${req.frontend}" (have: ${[...byName.keys()].join(', ')})`, 'frontend');
      opts.logger.debug({ buildId: req.buildId, frontend: req.frontend }, 'frontend solve');
      const result = await fe.solve(
        { buildId: req.buildId, attrs: req.attrs },
        {
          async readFile(dirName, path, maxBytes = 0) {
            const res = await opts.sessions.readFile({ sessionId: req.sessionId, dirName, path, maxBytes: BigInt(maxBytes) }, { signal: ctx.signal });
            return res.found ? res.data : undefined;
          },
          registryCredentials: req.sessionId
            ? sessionCredentials(async (host, signal) => opts.sessions.getCredentials({ sessionId: req.sessionId, host }, { signal: signal ?? ctx.signal }))
            : undefined,
          gateway: opts.gateway ? frontendGateway(opts.gateway, req.buildId, ctx.signal) : undefined,
        },
        ctx.signal,
      );
      const source = result.definition.sources[0];
      const enc = new TextEncoder();
      const warnings = (result.warnings ?? []).map((w) => ({
        level: 1n,
        short: enc.encode(w.short),
        detail: w.detail.map((d) => enc.encode(d)),
        url: w.url,
        info: source ? { filename: source.filename, data: source.data, language: source.language } : undefined,
        ranges: [{ startLine: w.startLine, endLine: w.endLine }],
      }));
      return create(frontend.SolveResponseSchema, {
        definition: result.definition,
        imageConfig: result.imageConfig,
        metadata: result.metadata,
        warnings,
        platformResults: result.platforms ?? [],
        forward: result.forward,
      });
    },
  };
}

function frontendGateway(gw: Client<typeof gateway.GatewayService>, buildId: string, callSignal: AbortSignal): FrontendGateway {
  return {
    async solve(definition, signal) {
      return (await gw.solve({ buildId, definition }, { signal: signal ?? callSignal })).resultId;
    },
    async readFile(resultId, path, length = 0, signal) {
      try {
        return (await gw.readFile({ buildId, resultId, path, offset: 0n, length: BigInt(length) }, { signal: signal ?? callSignal })).data;
      } catch (err) {
        if (err instanceof KilnError && err.code === 'not_found') return undefined;
        throw err;
      }
    },
  };
}
