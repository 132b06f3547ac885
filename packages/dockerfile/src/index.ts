export * from './parser/index.js';
export * from './shell/index.js';
export * from './instructions/index.js';
export { convertDockerfile, decorateSourceError, type ConvertOptions, type ConvertResult } from './convert/convert.js';
export type { ImageConfig, HistoryEntry } from './convert/image-config.js';
export type { ImageMeta, ImageMetaResolver } from './convert/image-meta.js';
export { formatPlatform, hostPlatform, parsePlatform, type Platform } from './convert/platform.js';
export { CHECK_RULES, formatWarning, parseCheckDirective, type BuildWarning } from './convert/checks.js';
export { parseNamedContext, parseGitUrl, type NamedContextValue } from './convert/sources.js';
/** Reads a .dockerignore (moby's rules); the patterns go to PatternMatcher from @kiln/common. */
export { parseIgnoreFile as parseDockerignore } from '@kiln/common';
export { formatOutline, outlineDockerfile, REQUEST_OUTLINE, type Outline } from './convert/outline.js';
export { formatTargets, lintReport, listTargets, REQUEST_LINT, REQUEST_TARGETS, type Target } from './convert/subrequests.js';
