export { Solver, type SolverOptions } from './control/solver.js';
export type { WorkerHandle, WorkerPool } from './control/workers.js';
export { BuildRecords } from './control/build-records.js';
export { Scheduler, type GraphNode } from './graph/scheduler.js';
export { SessionHost } from './session/session-host.js';
export { createControlServiceImpl } from './rpc/control-service.js';
export { createSessionServiceImpl } from './rpc/session-service.js';
export { createGatewayServiceImpl } from './rpc/gateway-service.js';
