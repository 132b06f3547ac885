import { content, control, exporter, frontend, gateway, session, worker } from '@kiln/api';
import type { AccessTable, TierRole } from '@kiln/common';

/** Tiers that read a build client's session (its files, secrets, credentials, SSH agent) through the solver. */
const SESSION_USERS: readonly TierRole[] = ['solver', 'frontend', 'worker', 'exporters'];
/** Tiers that add blobs and leases to the content store. */
const CONTENT_WRITERS: readonly TierRole[] = ['solver', 'worker', 'exporters'];

/**
 * Which role may call which method over mutual TLS (the unix socket is the
 * local user's and is not checked). One table for the cluster, so a review
 * of who may do what reads one file:
 * - only a client builds and administers (Control), and attaches its session;
 * - only the solver runs ops on a worker (so entitlements reach a worker
 *   only from the solver that decided them) and calls frontends/exporters;
 * - only a frontend calls back into the solver's gateway;
 * - the exporters read the refs they export;
 * - the content store deletes and collects garbage only for the solver.
 */
export const CLUSTER_ACCESS: AccessTable = {
  [control.ControlService.typeName]: { '*': ['client'] },
  [session.SessionService.typeName]: { Attach: ['client'], '*': SESSION_USERS },
  [frontend.FrontendService.typeName]: { '*': ['solver'] },
  [exporter.ExporterService.typeName]: { '*': ['solver'] },
  // A frontend builds sub-requests of the build it answers and reads their files (BuildKit's gateway).
  [gateway.GatewayService.typeName]: { '*': ['frontend'] },
  [worker.WorkerService.typeName]: {
    '*': ['solver'],
    Describe: ['solver', 'exporters'],
    ExportRef: ['solver', 'exporters'],
    GetLayers: ['solver', 'exporters'],
    Release: ['solver', 'exporters'],
  },
  [content.ContentService.typeName]: {
    Info: CONTENT_WRITERS,
    Read: CONTENT_WRITERS,
    List: CONTENT_WRITERS,
    Status: CONTENT_WRITERS,
    ListStatuses: CONTENT_WRITERS,
    Write: CONTENT_WRITERS,
    Abort: CONTENT_WRITERS,
    UpdateLabels: CONTENT_WRITERS,
    CreateLease: CONTENT_WRITERS,
    DeleteLease: CONTENT_WRITERS,
    AddLeaseResource: CONTENT_WRITERS,
    DeleteLeaseResource: CONTENT_WRITERS,
    ListLeases: CONTENT_WRITERS,
    ListLeaseResources: CONTENT_WRITERS,
    Delete: ['solver'],
    GarbageCollect: ['solver'],
  },
};

/** The role a tier's certificate must name, by `--tier` (both worker backends are "worker"). */
export function roleOfTier(tier: string): TierRole {
  if (tier === 'worker-oci' || tier === 'worker-containerd' || tier === 'worker') return 'worker';
  return tier as TierRole;
}
