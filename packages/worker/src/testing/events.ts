import { fromBinary } from '@bufbuild/protobuf';
import { events } from '@kiln/api';
import type { PublishFn } from '../worker.js';

export interface CollectedEvent {
  subject: string;
  event: events.BuildEvent;
}

/** A PublishFn that decodes and keeps every BuildEvent, for assertions. */
export function createEventCollector(): { publish: PublishFn; events: CollectedEvent[] } {
  const collected: CollectedEvent[] = [];
  return {
    events: collected,
    publish: async (subject, data) => {
      collected.push({ subject, event: fromBinary(events.BuildEventSchema, data) });
    },
  };
}
