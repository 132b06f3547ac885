import type { ServiceImpl } from '@connectrpc/connect';
import { control } from '@kiln/api';
import { peerKey } from '@kiln/common';
import type { Solver } from '../control/solver.js';
import { refuseDaemonSidePaths } from './daemon-paths.js';

/** The Control API: thin mapping onto the Solver. */
export function createControlServiceImpl(solver: Solver): ServiceImpl<typeof control.ControlService> {
  return {
    solve: (req, ctx) => {
      refuseDaemonSidePaths(req, ctx.values.get(peerKey));
      return solver.solve(req, ctx.signal);
    },
    status: (req, ctx) => solver.status(req.ref, ctx.signal),
    listWorkers: (req) => solver.listWorkers(req.filter),
    info: () => solver.info(),
    diskUsage: (req, ctx) => solver.diskUsage(req.filter, ctx.signal),
    prune: (req, ctx) => solver.prune(req, ctx.signal),
    listHistory: (req) => solver.listHistory(req.limit),
    inspectHistory: (req) => solver.inspectHistory(req.ref),
    historyLogs: (req, ctx) => solver.historyLogs(req.ref, ctx.signal),
    deleteHistory: (req) => solver.deleteHistory(req.refs),
  };
}
