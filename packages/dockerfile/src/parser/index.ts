export { parseDockerfile, DEFAULT_ESCAPE_TOKEN, INSTRUCTIONS } from './parser.js';
export { dumpAST, dumpNode } from './dump.js';
export { parseHeredoc, heredocsFromLine, chompHeredocContent } from './heredoc.js';
export { decodeDockerfile, encodeDockerfileText, goQuote } from './text.js';
export { parseWords, splitWhitespace, extractBuilderFlags } from './line-parsers.js';
export type { DockerfileAST, Directives, Heredoc, Node, ParseOptions, ParseWarning } from './types.js';
