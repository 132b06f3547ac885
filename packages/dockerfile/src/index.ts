export * from './parser/index.js';
export * from './shell/index.js';
export * from './instructions/index.js';
export { convertDockerfile, type ConvertOptions, type ConvertResult } from './convert/convert.js';
export type { ImageConfig } from './convert/image-config.js';
/** Reads a .dockerignore (moby's rules); the patterns go to PatternMatcher from @kiln/common. */
export { parseIgnoreFile as parseDockerignore } from '@kiln/common';
