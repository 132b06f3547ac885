export {
  processWord,
  processWords,
  processWordWithMatches,
  envFromList,
  ShellLexError,
  type ShellEnv,
  type ShellLexOptions,
  type ProcessWordResult,
} from './lex.js';
export { globToRegExp, trimPrefixPattern, trimSuffixPattern, replacePattern } from './pattern.js';
