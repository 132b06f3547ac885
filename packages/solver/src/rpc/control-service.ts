import type { ServiceImpl } from '@connectrpc/connect';
import { control } from '@kiln/api';
import { UnimplementedError } from '@kiln/common';
import type { Solver } from '../control/solver.js';

/** The Control API: thin mapping onto the Solver. */
export function createControlServiceImpl(solver: Solver): ServiceImpl<typeof control.ControlService> {
  return {
    solve: (req, ctx) => solver.solve(req, ctx.signal),
    status: (req, ctx) => solver.status(req.ref, ctx.signal),
    listWorkers: () => solver.listWorkers(),
    info: () => solver.info(),
    async diskUsage() {
      throw new UnimplementedError('disk usage needs the persistent solver cache (not built yet)');
    },
    // eslint-disable-next-line require-yield
    async *prune() {
      throw new UnimplementedError('prune needs the persistent solver cache (not built yet)');
    },
  };
}
