export { parseInstructions, parseInstruction, isStage } from './parse.js';
export { BFlags, FlagError } from './bflags.js';
export { parseGoDuration } from './duration.js';
export type * from './types.js';
export { parseRunMount, splitCsv, MountError, type RunMount, type MountType, type ShareMode } from './run-mount.js';
export { closest, suggestWord } from './suggest.js';
