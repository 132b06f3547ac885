import { createRequire } from 'node:module';
import { InvalidArgumentError } from '@kiln/common';

/**
 * The HCL2 parser: HashiCorp's own Go parser compiled to WebAssembly, shipped
 * in the npm package `@cdktf/hcl2json` (loaded lazily: compiling it costs
 * about a second, paid only when a bake file is HCL). `parse` gives the
 * file's structure as JSON (attribute expressions stay as `${...}` source
 * text); `expression` gives the syntax tree of one expression, which
 * `hcl-eval.ts` evaluates.
 */
interface Hcl2Json {
  parse(filename: string, contents: string): Promise<Record<string, unknown>>;
  getExpressionAst(filename: string, expression: string): Promise<HclNode | null>;
}

/** A node of the parser's expression tree (the fields Kiln reads). */
export interface HclNode {
  type: string;
  meta: Record<string, unknown>;
  children: HclNode[];
}

let loaded: Hcl2Json | undefined;

function parser(): Hcl2Json {
  // Not bundled (tools/bundle-cli.mjs keeps it external): it reads its .wasm next to itself.
  loaded ??= createRequire(import.meta.url)('@cdktf/hcl2json') as Hcl2Json;
  return loaded;
}

/** Parses HCL source; a syntax error names the file, line and column, as HCL reports it. */
export async function parseHclFile(filename: string, contents: string): Promise<Record<string, unknown>> {
  try {
    return await parser().parse(filename, contents);
  } catch (err) {
    throw new InvalidArgumentError(`failed to parse ${filename}: ${hclMessage(err)}`, filename, { cause: err });
  }
}

const astCache = new Map<string, HclNode>();

/** The syntax tree of one HCL expression (cached by source text). */
export async function parseHclExpression(filename: string, source: string): Promise<HclNode> {
  const hit = astCache.get(source);
  if (hit) return hit;
  let ast: HclNode | null;
  try {
    ast = await parser().getExpressionAst(filename, source);
  } catch (err) {
    throw new InvalidArgumentError(`failed to parse ${filename}: ${hclMessage(err)} in ${JSON.stringify(source)}`, filename, { cause: err });
  }
  if (!ast) throw new InvalidArgumentError(`failed to parse ${filename}: empty expression ${JSON.stringify(source)}`, filename);
  astCache.set(source, ast);
  return ast;
}

/** The parser's message without its wrapping ("parse config: [a.hcl:3,1-2: Invalid expression; ...]"). */
function hclMessage(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.replace(/^parse config: \[(.*)\]$/s, '$1');
}
