export {
  GC_REF_LABEL_PREFIXES,
  GC_ROOT_LABELS,
  type BlobInfo,
  type ContentStore,
  type CreateLeaseOptions,
  type GcOptions,
  type GcResult,
  type IngestStatus,
  type Labels,
  type Lease,
  type ListOptions,
  type ReadOptions,
  type RootProvider,
  type WriteOptions,
  type WriteRequest,
  type WriteResult,
} from './content-store.js';
export { CONTENT_EVENT_SUBJECTS, encodeContentEvent, type ContentEventKind, type Publish } from './events.js';
export {
  openLocalContentStore,
  type GcPolicy,
  type GcPolicyHandle,
  type LocalContentStore,
  type LocalContentStoreOptions,
} from './fs/local-content-store.js';
export { createContentServiceImpl, READ_CHUNK_SIZE } from './rpc/content-service.js';
