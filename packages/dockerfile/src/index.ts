export * from './parser/index.js';
export * from './shell/index.js';
export * from './instructions/index.js';
export { convertDockerfile, type ConvertOptions, type ConvertResult } from './convert/convert.js';
export type { ImageConfig } from './convert/image-config.js';
export { parseDockerignore } from './dockerignore.js';
