import { randomBytes } from 'node:crypto';
import type { Logger } from '@kiln/common';
import type { Snapshotter } from '@kiln/snapshotter';
import type { VertexProgress } from '../progress.js';

/** What an op runner gets from the worker for one run. */
export interface OpContext {
  snapshotter: Snapshotter;
  /** The vertex digest, for errors and events. */
  digest: string;
  /** Committed snapshot id of each op input, in input order (owned by the worker). */
  inputs: readonly string[];
  signal?: AbortSignal;
  logger: Logger;
  progress: VertexProgress;
}

/**
 * An op runner returns one committed snapshot id per op output, owned by the
 * caller from then on; on failure it leaves no snapshot behind.
 */
export type OpResult = string[];

/** A fresh active-snapshot key for `digest`, unique even for concurrent identical runs. */
export function newSnapshotKey(digest: string, what: string): string {
  return `${digest.replace(/^sha256:/, '').slice(0, 16)}-${what}-${randomBytes(6).toString('hex')}`;
}
