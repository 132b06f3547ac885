import { create, toBinary, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { events } from '@kiln/api';
import { workerProgressSubject } from '@kiln/bus';
import type { Logger } from '@kiln/common';
import type { PublishFn } from './worker.js';

/**
 * Publishes BuildEvents of one vertex on the worker's own progress subject
 * (`kiln.progress.<workerId>.<buildId>.<kind>`), which the solver relays
 * into the build. Publishing never throws: a failed publish is logged,
 * because progress must not fail a build step.
 */
export class VertexProgress {
  constructor(
    private readonly publishFn: PublishFn,
    private readonly workerId: string,
    private readonly buildId: string,
    private readonly vertex: string,
    private readonly logger: Logger,
  ) {}

  /** Publishes a VertexStatus (id, name, current, total, started/completed in ms). */
  async status(s: { id: string; name: string; current: number; total?: number; startedMs: number; completedMs?: number }): Promise<void> {
    await this.publish('status', {
      buildId: this.buildId,
      event: {
        case: 'status',
        value: {
          id: s.id,
          vertex: this.vertex,
          name: s.name,
          current: BigInt(s.current),
          total: BigInt(s.total ?? 0),
          timestamp: timestampFromMs(Date.now()),
          started: timestampFromMs(s.startedMs),
          completed: s.completedMs === undefined ? undefined : timestampFromMs(s.completedMs),
        },
      },
    });
  }

  /** Publishes process output (stream 1 stdout, 2 stderr). */
  async log(stream: 1 | 2, msg: Uint8Array): Promise<void> {
    await this.publish('log', {
      buildId: this.buildId,
      event: { case: 'log', value: { vertex: this.vertex, stream, msg, timestamp: timestampFromMs(Date.now()) } },
    });
  }

  private async publish(kind: 'status' | 'log', ev: MessageInitShape<typeof events.BuildEventSchema>): Promise<void> {
    try {
      await this.publishFn(workerProgressSubject(this.workerId, this.buildId, kind), toBinary(events.BuildEventSchema, create(events.BuildEventSchema, ev)));
    } catch (err) {
      this.logger.warn({ err, buildId: this.buildId, vertex: this.vertex }, 'failed to publish build event');
    }
  }
}
