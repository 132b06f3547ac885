import type { Client, ServiceImpl } from '@connectrpc/connect';
import { control } from '@kiln/api';

type ControlClient = Client<typeof control.ControlService>;

/**
 * The ControlService methods the dashboard may call, each passed to the
 * daemon's own Control service unchanged: the browser sees the same data
 * as `kiln workers`, `kiln history` and a build's progress, through the
 * same code. Solve, Prune and DeleteHistory are absent, so the router
 * answers them `unimplemented`: nothing behind the dashboard can build,
 * delete or change state.
 */
export function createReadOnlyControl(client: ControlClient): Partial<ServiceImpl<typeof control.ControlService>> {
  return {
    info: (req, ctx) => client.info(req, { signal: ctx.signal }),
    listWorkers: (req, ctx) => client.listWorkers(req, { signal: ctx.signal }),
    diskUsage: (req, ctx) => client.diskUsage(req, { signal: ctx.signal }),
    listHistory: (req, ctx) => client.listHistory(req, { signal: ctx.signal }),
    inspectHistory: (req, ctx) => client.inspectHistory(req, { signal: ctx.signal }),
    status: (req, ctx) => client.status(req, { signal: ctx.signal }),
    historyLogs: (req, ctx) => client.historyLogs(req, { signal: ctx.signal }),
  };
}

/** Method names the dashboard serves (the spec checks the write methods are not among them). */
export const DASHBOARD_METHODS = ['Info', 'ListWorkers', 'DiskUsage', 'ListHistory', 'InspectHistory', 'Status', 'HistoryLogs'] as const;
