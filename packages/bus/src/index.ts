export type {
  ConsumeOptions,
  EventBus,
  Message,
  RequestHandler,
  RequestOptions,
  ServeOptions,
  Service,
  SubscribeOptions,
  Subscription,
  WorkHandler,
  WorkItemInfo,
  WorkQueue,
} from './bus.js';
export { busDefaults } from './bus.js';
export { subjectMatches, validateName, validateSubject } from './subject.js';
export { publishEvent, subscribeEvents, type Event, type EventSubscription, type SubscribeEventsOptions } from './events.js';
export {
  createServiceDirectory,
  directoryProbeSubject,
  servicesSubject,
  type AnnounceOptions,
  type Announcement,
  type ServiceAnnouncement,
  type ServiceDirectory,
  type ServiceDirectoryOptions,
  type ServiceInfo,
  type WaitForOptions,
} from './directory.js';
export { createMemoryBus, type MemoryBusOptions } from './memory/memory-bus.js';
export { connectNatsBus, type NatsBusOptions } from './nats/nats-bus.js';
export { workQueueNaming } from './nats/nats-work-queue.js';
