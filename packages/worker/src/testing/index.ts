export { runWorkerConformance, type WorkerConformanceDeps, type WorkerConformanceOptions } from './conformance.js';
export { createFakeSession, walkDirectory, type FakeSession, type FakeSharedDir } from './fake-session.js';
export { FakeExecutor, type FakeExecHandler } from './fake-executor.js';
export { createEventCollector, type CollectedEvent } from './events.js';
export { execState, outputOf, type ExecInit, type ExecMountInit } from './exec-state.js';
export { solve, type SolveOptions } from './solve.js';
export { buildTar, collect, packDirectory, readTar, type TarEntry, type TarEntryInit } from './tar.js';
export { execOp, type ExecOpInit, type ExecOpMount } from './exec-op.js';
export { createMemoryContent, type MemoryContent } from './memory-content.js';
