export type {
  ConsumeOptions,
  EventBus,
  EventStream,
  EventStreamLimits,
  Message,
  RequestHandler,
  RequestOptions,
  ServeOptions,
  Service,
  StreamConsumeOptions,
  StreamMessage,
  SubscribeOptions,
  Subscription,
  WorkHandler,
  WorkItemInfo,
  WorkQueue,
} from './bus.js';
export { busDefaults } from './bus.js';
export { subjectMatches, validateName, validateSubject } from './subject.js';
export {
  BUILD_EVENT_STREAM,
  buildEventSubject,
  parseWorkerProgressSubject,
  subjectToken,
  workerProgressSubject,
  WORKER_PROGRESS_KINDS,
  WORKER_PROGRESS_WILDCARD,
  type BuildEventKind,
  type WorkerProgressKind,
} from './build-subjects.js';
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
export { redactCredentials, redactUrl, type NatsAuth, type NatsTlsOptions } from './nats/nats-auth.js';
export { workQueueNaming } from './nats/nats-work-queue.js';
export { directoryClient, directoryClientById, directoryFrontends, frontendNamesOf, lazyClient, type DirectoryClientOptions } from './directory-clients.js';
export { compileNatsOptions, NATS_FLAGS, type NatsConnectOptions } from './nats-options.js';
