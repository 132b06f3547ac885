import type { ServiceImpl } from '@connectrpc/connect';
import type { gateway } from '@kiln/api';
import type { Solver } from '../control/solver.js';

/** The GatewayService over the solver's build gateways (frontends only; see CLUSTER_ACCESS). */
export function createGatewayServiceImpl(solver: Solver): ServiceImpl<typeof gateway.GatewayService> {
  const g = solver.gateways;
  return {
    async solve(req, ctx) {
      return { resultId: await g.solve(req.buildId, req.definition, ctx.signal) };
    },
    async readFile(req, ctx) {
      return { data: await g.readFile(req.buildId, req.resultId, req.path, req.offset, req.length, ctx.signal) };
    },
    async readDir(req, ctx) {
      return { entries: await g.readDir(req.buildId, req.resultId, req.path, req.includePattern, ctx.signal) };
    },
    async statFile(req, ctx) {
      return { stat: await g.statFile(req.buildId, req.resultId, req.path, ctx.signal) };
    },
    async resolveImageConfig(req, ctx) {
      return g.resolveImageConfig(req.buildId, req.ref, req.platform, ctx.signal);
    },
  };
}
