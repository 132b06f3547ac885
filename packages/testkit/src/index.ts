export { freePort } from './ports.js';
export { findNatsServer, startNatsServer, type NatsServer, type StartNatsServerOptions } from './nats.js';
export { repoRoot, kilnBin, runKiln, startKilnd, startKilnCluster, type Kilnd, type KilnCluster, type DaemonProcess, type RunResult } from './kilnd.js';
export { findRegistry, startRegistry, bcryptHash, type StartRegistryOptions, type TestRegistry } from './registry.js';
export { makeTar, makeLayer, makeImage, makeIndex, type TestBlob, type TestImage, type TestIndex, type TestPlatform, type TestImageFormat } from './oci-image.js';
export { findDockerd, findDockerCli, startDockerd, type StartDockerdOptions, type TestDockerd, type DockerRun } from './dockerd.js';
export { busyboxLayer, pushBlob, pushBusyboxImage, type BusyboxLayer, type BusyboxLayerOptions, type PushBusyboxOptions, type PushedBusybox } from './busybox-image.js';
export { startTopology, type KilnTopology, type TopologyName } from './topologies.js';
