import { trimSpace } from '../shell/chars.js';
import { goQuote } from './text.js';
import type { DockerfileAST, Node } from './types.js';

/**
 * One instruction as BuildKit's `Node.Dump` prints it, wrapped in parentheses:
 * `(copy ["--from=a"] "src" "/dst")`, `(onbuild (run "echo hi"))`.
 */
export function dumpNode(node: Node): string {
  let s = node.value.toLowerCase();
  if (node.flags.length > 0) s += ` [${node.flags.map(goQuote).join(' ')}]`;
  for (const arg of node.next) s += ` ${goQuote(arg)}`;
  if (node.child) s += ` ${dumpNode(node.child)}`;
  return `(${trimSpace(s)})`;
}

/** The whole AST in the conformance `result` format: one line per instruction, each ending in a newline. */
export function dumpAST(ast: DockerfileAST): string {
  return ast.children.map((n) => `${dumpNode(n)}\n`).join('');
}
