export { parseInstructions, parseInstruction, isStage } from './parse.js';
export { BFlags, FlagError } from './bflags.js';
export { parseGoDuration } from './duration.js';
export type * from './types.js';
