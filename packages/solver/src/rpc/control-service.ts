import type { ServiceImpl } from '@connectrpc/connect';
import { control } from '@kiln/api';
import { peerKey, type Peer } from '@kiln/common';
import type { Solver } from '../control/solver.js';
import { refuseDaemonSidePaths } from './daemon-paths.js';

/** The Control API: thin mapping onto the Solver. */
export function createControlServiceImpl(solver: Solver): ServiceImpl<typeof control.ControlService> {
  return {
    solve: (req, ctx) => {
      const peer = ctx.values.get(peerKey);
      refuseDaemonSidePaths(req, peer);
      return solver.solve(req, ctx.signal, describePeer(peer));
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
    exportHistory: (req) => solver.exportHistory(req.refs, req.all),
    importHistory: (req) => solver.importHistory(req.entry),
    openHistory: (req) => solver.openHistory(req.ref),
  };
}

/** Who a build came from, for its history record (the dashboard's "who"). */
export function describePeer(peer: Peer | undefined): string {
  if (!peer) return '';
  if (peer.kind === 'local') return 'unix socket';
  return peer.kind === 'tls' ? `${peer.role} certificate from ${peer.remote}` : `plain TCP from ${peer.remote}`;
}
