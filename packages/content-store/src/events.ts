import { create, toBinary } from '@bufbuild/protobuf';
import { events } from '@kiln/api';

/**
 * Publishes one event (e.g. `EventBus.publish` bound to a bus). The store
 * never waits for it: a rejection or throw is logged and otherwise ignored.
 */
export type Publish = (subject: string, data: Uint8Array) => void | Promise<void>;

export type ContentEventKind = 'committed' | 'deleted';

export const CONTENT_EVENT_SUBJECTS: Readonly<Record<ContentEventKind, string>> = {
  committed: 'kiln.content.committed',
  deleted: 'kiln.content.deleted',
};

/** The wire form of a content event: `events.ContentEvent` in protobuf binary. */
export function encodeContentEvent(kind: ContentEventKind, digest: string, size: number): Uint8Array {
  return toBinary(events.ContentEventSchema, create(events.ContentEventSchema, { digest, kind, size: BigInt(size) }));
}
