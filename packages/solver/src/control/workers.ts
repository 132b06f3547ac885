import type { Client } from '@connectrpc/connect';
import type { llb, worker } from '@kiln/api';

/** A worker the solver can dispatch to, reached through its Connect client. */
export interface WorkerHandle {
  readonly id: string;
  readonly platforms: readonly llb.Platform[];
  readonly labels: Readonly<Record<string, string>>;
  /**
   * The op kinds it runs (@kiln/llb `opKind`: "exec", "source:git", ...), as
   * announced; absent or empty (a worker that predates the announcement):
   * every kind is assumed.
   */
  readonly ops?: readonly string[];
  readonly client: Client<typeof worker.WorkerService>;
}

/**
 * The workers known to this solver. In the all-in-one daemon it is a fixed
 * list of in-process workers; in a cluster it follows worker announcements
 * on the bus. `list` returns the live workers, possibly none.
 */
export interface WorkerPool {
  list(): Promise<WorkerHandle[]>;
  /** The worker with this id, or undefined when it is not (or no longer) known. */
  get(id: string): Promise<WorkerHandle | undefined>;
}
