export { parseReference, formatReference, type Reference } from './reference.js';
export type { RegistryClient, Manifest, PushBlobOptions, PushBlobResult } from './registry.js';
export {
  MediaType,
  MANIFEST_TYPES,
  IMAGE_MANIFEST_TYPES,
  INDEX_TYPES,
  isIndexType,
  isImageManifestType,
  isManifestType,
  parseManifest,
  baseMediaType,
  type Descriptor,
  type ImageManifest,
  type ImageIndex,
  type ParsedManifest,
} from './media.js';
export {
  parsePlatform,
  formatPlatform,
  normalizePlatform,
  defaultPlatform,
  compatiblePlatforms,
  platformEquals,
  chooseManifest,
  type Platform,
} from './platform.js';
export {
  staticCredentials,
  chainCredentials,
  sessionCredentials,
  credentialsKey,
  type SessionCredentialsAsk,
  dockerConfigCredentials,
  runCredentialHelper,
  DOCKER_HUB_SERVER,
  type Credentials,
  type CredentialStore,
  type DockerConfigCredentialsOptions,
} from './credentials.js';
export { parseChallenges, type Challenge } from './auth.js';
export { DEFAULT_RETRY, type RetryPolicy } from './retry.js';
export { createRegistryClient, HttpRegistryClient, isLoopbackHost, type RegistryClientOptions, type RetryEvent } from './client.js';
export { resolveImage, type ResolvedImage } from './image.js';
export { DISTRIBUTION_SOURCE_LABEL_PREFIX, distributionSourceLabel, distributionSources, withDistributionSource } from './distribution-source.js';
export {
  LAYOUT_REF_NAME,
  DEFAULT_LAYOUT_TAG,
  LAYOUT_DOC_MAX,
  parseLayoutRef,
  formatLayoutRef,
  layoutBlobPath,
  parseLayoutIndex,
  findLayoutManifest,
  verifyLayoutBlob,
  readLayoutBlob,
  resolveLayoutImage,
  type LayoutRef,
  type LayoutReader,
  type ResolvedLayoutImage,
} from './oci-layout.js';
export { FETCH_BAD_PORTS, nodeHttpFetch, registryFetch } from './http-fetch.js';
