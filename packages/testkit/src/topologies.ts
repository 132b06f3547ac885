import { e2eWorkerTier } from './e2e-worker.js';
import { startKilnCluster, startKilnd } from './kilnd.js';
import { startKilnNats } from './kiln-nats.js';

/** A running Kiln, whichever way it was started: what a CLI-driven test needs. */
export interface KilnTopology {
  /** The address for the CLI's `--addr`. */
  readonly addr: string;
  /** Environment the CLI needs besides `--addr` (the split cluster's client certificate: KILN_TLS_*). */
  readonly env: Record<string, string>;
  logs(): string;
  stop(): Promise<void>;
}

export type TopologyName = 'all-in-one' | 'split';

/**
 * `all-in-one`: one kilnd with the e2e worker (`e2eWorker()`, OCI unless
 * KILN_E2E_WORKER says containerd). `split`: every tier its own process
 * (solver, frontend, exporters, that worker's tier, content) on a fresh
 * nats-server run as deploy/nats ships it (TLS with client certificates,
 * a user per tier, subject permissions), reached by the CLI only through
 * the solver, over mutual TLS (pass `env` to the CLI).
 */
export async function startTopology(name: TopologyName): Promise<KilnTopology> {
  if (name === 'all-in-one') return { ...(await startKilnd()), env: {} };
  const nats = await startKilnNats();
  const cluster = await startKilnCluster(nats, ['solver', 'frontend', 'exporters', e2eWorkerTier(), 'content']).catch(async (err: unknown) => {
    await nats.stop();
    throw err;
  });
  return {
    addr: cluster.addr,
    env: cluster.env,
    logs: () => cluster.logs(),
    async stop() {
      await cluster.stop();
      await nats.stop();
    },
  };
}
