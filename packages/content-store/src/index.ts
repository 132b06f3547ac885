export type {
  BlobInfo,
  ContentStore,
  Labels,
  ListOptions,
  ReadOptions,
  WriteOptions,
  WriteRequest,
  WriteResult,
} from './content-store.js';
export { openLocalContentStore, type LocalContentStoreOptions } from './fs/local-content-store.js';
export { createContentServiceImpl, READ_CHUNK_SIZE } from './rpc/content-service.js';
