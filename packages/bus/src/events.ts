import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from '@bufbuild/protobuf';
import type { EventBus, SubscribeOptions } from './bus.js';

/**
 * Encodes `message` (a message of `schema` or an init object for it) with
 * protobuf binary and publishes it. Same guarantees and errors as
 * `EventBus.publish`.
 */
export function publishEvent<Desc extends DescMessage>(
  bus: EventBus,
  subject: string,
  schema: Desc,
  message: MessageInitShape<Desc>,
): Promise<void> {
  return bus.publish(subject, toBinary(schema, create(schema, message)));
}

/** One decoded event and the concrete subject it came on. */
export interface Event<T> {
  readonly subject: string;
  readonly message: T;
}

export interface SubscribeEventsOptions extends SubscribeOptions {
  /**
   * Called for a payload that does not decode as the schema; the event is
   * then skipped (one bad publisher must not end every reader's stream).
   * Default: skip silently.
   */
  onDecodeError?: (err: unknown, subject: string) => void;
}

/** A typed subscription: iterate decoded events; `unsubscribe()` as on `Subscription`. */
export interface EventSubscription<T> extends AsyncIterable<Event<T>> {
  readonly subject: string;
  unsubscribe(): void;
}

/**
 * Subscribes to `subject` and decodes each message as `schema`. Lifecycle,
 * ordering and errors are those of `EventBus.subscribe`.
 */
export function subscribeEvents<Desc extends DescMessage>(
  bus: EventBus,
  subject: string,
  schema: Desc,
  opts: SubscribeEventsOptions = {},
): EventSubscription<MessageShape<Desc>> {
  const { onDecodeError, ...subscribeOpts } = opts;
  const sub = bus.subscribe(subject, subscribeOpts);
  return {
    subject: sub.subject,
    unsubscribe: () => sub.unsubscribe(),
    async *[Symbol.asyncIterator]() {
      try {
        for await (const m of sub) {
          let message: MessageShape<Desc>;
          try {
            message = fromBinary(schema, m.data);
          } catch (err) {
            onDecodeError?.(err, m.subject);
            continue;
          }
          yield { subject: m.subject, message };
        }
      } finally {
        sub.unsubscribe();
      }
    },
  };
}
