export { parseReference, formatReference, type Reference } from './reference.js';
export type { Descriptor, RegistryClient } from './registry.js';
