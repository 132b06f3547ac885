export { freePort } from './ports.js';
export { findNatsServer, startNatsServer, type NatsServer, type StartNatsServerOptions } from './nats.js';
export { repoRoot, kilnBin, runKiln, startKilnd, startKilnCluster, type Kilnd, type KilnCluster, type DaemonProcess, type RunResult } from './kilnd.js';
