import { InvalidArgumentError } from '@kiln/common';
import { parseHclExpression, type HclNode } from './hcl-parser.js';
import { callFunction, type HclFunction } from './hcl-functions.js';

/** An evaluated HCL value (cty's types folded onto JSON's: lists and tuples are arrays, maps and objects plain objects). */
export type HclValue = string | number | boolean | null | HclValue[] | { [key: string]: HclValue };

/** What an expression can see: variables (resolved lazily: variables may name each other in any order) and functions. */
export interface EvalScope {
  /** File the expression came from, for messages. */
  readonly filename: string;
  /** The value of a name, or undefined when it is not defined. */
  lookup(name: string): Promise<HclValue | undefined>;
  /** A user function (`function` block) by name; stdlib functions are found after these. */
  userFunction(name: string): HclFunction | undefined;
  /** `target.NAME`: the attributes of another block, evaluated on demand; undefined when there is none. */
  blockRef?(type: string, name: string): Promise<HclValue | undefined>;
}

/** A scope with some names bound over `parent` (for-expression variables, matrix values, function params). */
export function childScope(parent: EvalScope, vars: Readonly<Record<string, HclValue>>): EvalScope {
  return {
    filename: parent.filename,
    lookup: async (name) => (Object.hasOwn(vars, name) ? vars[name]! : parent.lookup(name)),
    userFunction: (name) => parent.userFunction(name),
    ...(parent.blockRef ? { blockRef: parent.blockRef.bind(parent) } : {}),
  };
}

/**
 * Evaluates a value of hcl2json's output: strings holding `${...}` or
 * `%{...}` are templates (a string that is one interpolation keeps the
 * interpolated value's type, as in HCL), arrays and objects are evaluated
 * element by element, everything else is a literal.
 */
export async function evaluateRaw(raw: unknown, scope: EvalScope): Promise<HclValue> {
  if (typeof raw === 'string') return raw.includes('${') || raw.includes('%{') ? evaluateTemplate(raw, scope) : raw;
  if (Array.isArray(raw)) {
    const out: HclValue[] = [];
    for (const v of raw) out.push(await evaluateRaw(v, scope));
    return out;
  }
  if (raw !== null && typeof raw === 'object') {
    const out: Record<string, HclValue> = {};
    for (const [k, v] of Object.entries(raw)) out[k] = await evaluateRaw(v, scope);
    return out;
  }
  if (raw === undefined) return null;
  return raw as HclValue;
}

async function evaluateTemplate(text: string, scope: EvalScope): Promise<HclValue> {
  const whole = soleInterpolation(text);
  if (whole !== undefined) return evaluateExpression(whole, scope);
  // A heredoc template: no escapes to undo, quotes and newlines allowed.
  const ast = await parseHclExpression(scope.filename, `<<KILNHCLEOT\n${text}\nKILNHCLEOT\n`);
  const value = await evaluateNode(ast, scope, { source: '', quoted: false });
  return typeof value === 'string' ? value.replace(/\n$/, '') : value;
}

/** Evaluates one expression's source text. */
export async function evaluateExpression(source: string, scope: EvalScope): Promise<HclValue> {
  const ast = await parseHclExpression(scope.filename, source);
  return evaluateNode(ast, scope, { source, quoted: false });
}

/** `${expr}` alone: the inner source, else undefined. */
function soleInterpolation(text: string): string | undefined {
  if (!text.startsWith('${')) return undefined;
  let depth = 0;
  let quote = false;
  for (let i = 1; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === '\\') i++;
      else if (c === '"') quote = false;
      continue;
    }
    if (c === '"') quote = true;
    else if (c === '{') depth++;
    else if (c === '}') {
      depth--;
      if (depth === 0) return i === text.length - 1 ? text.slice(2, i) : undefined;
    }
  }
  return undefined;
}

interface NodeContext {
  /** Source text the node's byte ranges point into. */
  source: string;
  /** Inside a quoted template: literal parts carry HCL escapes still. */
  quoted: boolean;
}

function fail(scope: EvalScope, message: string): never {
  throw new InvalidArgumentError(`${scope.filename}: ${message}`, scope.filename);
}

async function evaluateNode(node: HclNode, scope: EvalScope, ctx: NodeContext): Promise<HclValue> {
  const meta = node.meta;
  switch (node.type) {
    case 'literalValue':
      return literal(meta, ctx);
    case 'template': {
      const quoted = typeof meta.value === 'string' && meta.value.startsWith('"');
      let out = '';
      for (const c of node.children) {
        const v = await evaluateNode(c, scope, { ...ctx, quoted: quoted || (ctx.quoted && c.type === 'literalValue') });
        out += stringOf(v, scope);
      }
      return out;
    }
    case 'templateWrap':
      return evaluateNode(node.children[0]!, scope, ctx);
    case '':
      // Parentheses (and object keys, handled in `object`).
      if (node.children.length === 1) return evaluateNode(node.children[0]!, scope, ctx);
      return fail(scope, `unsupported expression ${JSON.stringify(meta.value ?? '')}`);
    case 'scopeTraversal': {
      const steps = traversalOf(meta);
      const [root, ...rest] = steps;
      if (!root) return fail(scope, 'empty reference');
      let value = await scope.lookup(root.segment);
      // `target.NAME.ATTR` reads another target's attribute (its own, not inherited), as buildx allows.
      if (value === undefined && root.segment === 'target' && rest[0] && scope.blockRef) {
        const block = await scope.blockRef('target', rest[0].segment);
        if (block === undefined) return fail(scope, `unknown target ${JSON.stringify(rest[0].segment)} in ${String(meta.fullAccessor ?? '')}`);
        return traverse(block, rest.slice(1), scope, String(meta.fullAccessor ?? root.segment));
      }
      if (value === undefined) return fail(scope, `unknown variable ${JSON.stringify(root.segment)}`);
      return traverse(value, rest, scope, String(meta.fullAccessor ?? root.segment));
    }
    case 'relativeTraversal': {
      const base = await evaluateNode(node.children[0]!, scope, ctx);
      return traverse(base, traversalOf(meta), scope, String(meta.value ?? ''));
    }
    case 'splat': {
      const base = await evaluateNode(node.children[0]!, scope, ctx);
      const each = node.children[1];
      const list = base === null ? [] : Array.isArray(base) ? base : [base];
      if (!each || each.type !== 'relativeTraversal') return list;
      return list.map((v) => traverse(v, traversalOf(each.meta), scope, String(meta.value ?? '')));
    }
    case 'function': {
      const name = String(meta.name);
      // try() and can() see errors of their arguments: evaluate those lazily.
      if (name === 'try' || name === 'can') {
        for (const c of node.children) {
          try {
            const v = await evaluateNode(c, scope, ctx);
            if (name === 'can') return true;
            return v;
          } catch (err) {
            if (name === 'can') return false;
            if (c === node.children[node.children.length - 1]) throw err;
          }
        }
        return fail(scope, `${name}() needs at least one argument`);
      }
      const args: HclValue[] = [];
      for (const c of node.children) args.push(await evaluateNode(c, scope, ctx));
      if (meta.expandedFinalArgument === true) {
        const last = args.pop();
        if (!Array.isArray(last)) return fail(scope, `${name}(): the argument expanded with ... must be a list`);
        args.push(...last);
      }
      const user = scope.userFunction(name);
      if (user) return user(args);
      return callFunction(name, args, scope.filename);
    }
    case 'binaryOp':
      return binary(String(meta.operator), node, scope, ctx);
    case 'unaryOp': {
      const v = await evaluateNode(node.children[0]!, scope, ctx);
      if (meta.operator === 'logicalNot') return !boolOf(v, scope);
      return -numberOf(v, scope);
    }
    case 'conditional': {
      const cond = boolOf(await evaluateNode(node.children[0]!, scope, ctx), scope);
      return evaluateNode(node.children[cond ? 1 : 2]!, scope, ctx);
    }
    case 'tuple': {
      const out: HclValue[] = [];
      for (const c of node.children) out.push(await evaluateNode(c, scope, ctx));
      return out;
    }
    case 'object':
      return objectOf(node, scope, ctx);
    case 'for':
      return forExpression(node, scope, ctx);
    default:
      return fail(scope, `unsupported expression ${JSON.stringify(meta.value ?? node.type)}`);
  }
}

function literal(meta: Record<string, unknown>, ctx: NodeContext): HclValue {
  const value = String(meta.value ?? '');
  switch (meta.type) {
    case 'number':
      return Number(value);
    case 'bool':
      return value === 'true';
    case 'string':
      return ctx.quoted ? unescapeHcl(value) : value.replace(/\$\$\{/g, '${').replace(/%%\{/g, '%{');
    default:
      return null;
  }
}

/** Undoes the escapes of a quoted HCL template's literal part. */
function unescapeHcl(s: string): string {
  return s
    .replace(/\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)/g, (_m, e: string) => {
      switch (e[0]) {
        case 'n':
          return '\n';
        case 't':
          return '\t';
        case 'r':
          return '\r';
        case 'u':
        case 'U':
          return String.fromCodePoint(parseInt(e.slice(1), 16));
        default:
          return e;
      }
    })
    .replace(/\$\$\{/g, '${')
    .replace(/%%\{/g, '%{');
}

interface Step {
  kind: string;
  segment: string;
}

function traversalOf(meta: Record<string, unknown>): Step[] {
  const t = Array.isArray(meta.traversal) ? (meta.traversal as { type: string; segment: string }[]) : [];
  return t.map((s) => ({ kind: s.type, segment: s.segment }));
}

function traverse(value: HclValue, steps: readonly Step[], scope: EvalScope, what: string): HclValue {
  let v = value;
  for (const s of steps) {
    let key: string | number = s.segment;
    if (s.kind === 'indexTraversal') {
      try {
        key = JSON.parse(s.segment) as string | number;
      } catch {
        key = s.segment;
      }
    }
    if (Array.isArray(v) && typeof key === 'number') {
      if (key < 0 || key >= v.length) return fail(scope, `invalid index ${key} in ${what}: the list has ${v.length} elements`);
      v = v[key]!;
    } else if (v !== null && typeof v === 'object' && !Array.isArray(v) && Object.hasOwn(v, String(key))) {
      v = v[String(key)]!;
    } else {
      return fail(scope, `unsupported attribute or index ${JSON.stringify(String(key))} in ${what}`);
    }
  }
  return v;
}

async function binary(op: string, node: HclNode, scope: EvalScope, ctx: NodeContext): Promise<HclValue> {
  const left = await evaluateNode(node.children[0]!, scope, ctx);
  // && and || short-circuit as in HCL's unknown-free case.
  if (op === 'logicalAnd' && !boolOf(left, scope)) return false;
  if (op === 'logicalOr' && boolOf(left, scope)) return true;
  const right = await evaluateNode(node.children[1]!, scope, ctx);
  switch (op) {
    case 'equal':
      return deepEqual(left, right);
    case 'notEqual':
      return !deepEqual(left, right);
    case 'logicalAnd':
    case 'logicalOr':
      return boolOf(right, scope);
    case 'add':
      return numberOf(left, scope) + numberOf(right, scope);
    case 'subtract':
      return numberOf(left, scope) - numberOf(right, scope);
    case 'multiply':
      return numberOf(left, scope) * numberOf(right, scope);
    case 'divide':
      return numberOf(left, scope) / numberOf(right, scope);
    case 'modulo':
      return numberOf(left, scope) % numberOf(right, scope);
    case 'greaterThan':
      return numberOf(left, scope) > numberOf(right, scope);
    case 'greaterThanOrEqual':
      return numberOf(left, scope) >= numberOf(right, scope);
    case 'lessThan':
      return numberOf(left, scope) < numberOf(right, scope);
    case 'lessThanOrEqual':
      return numberOf(left, scope) <= numberOf(right, scope);
    default:
      return fail(scope, `unsupported operator ${op}`);
  }
}

async function objectOf(node: HclNode, scope: EvalScope, ctx: NodeContext): Promise<HclValue> {
  const out: Record<string, HclValue> = {};
  const items = node.children;
  // Children come in pairs: key, value. A bare identifier key has no node of its
  // own: its name is the source between the previous item and the value.
  let prevEnd = startOf(node) + 1;
  for (let i = 0; i + 1 < items.length; i += 2) {
    const keyNode = items[i]!;
    const valueNode = items[i + 1]!;
    let key: string;
    if (keyNode.children.length > 0) key = stringOf(await evaluateNode(keyNode.children[0]!, scope, ctx), scope);
    else {
      const between = ctx.source.slice(prevEnd, startOf(valueNode));
      key = between.replace(/^[\s,{]+/, '').replace(/\s*[=:]\s*$/, '').trim();
      if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(key)) return fail(scope, `cannot read the object key in ${JSON.stringify(ctx.source)}`);
    }
    out[key] = await evaluateNode(valueNode, scope, ctx);
    prevEnd = endOf(valueNode);
  }
  return out;
}

function startOf(n: HclNode): number {
  return (n as unknown as { range?: { start?: { byte?: number } } }).range?.start?.byte ?? 0;
}

function endOf(n: HclNode): number {
  return (n as unknown as { range?: { end?: { byte?: number } } }).range?.end?.byte ?? 0;
}

async function forExpression(node: HclNode, scope: EvalScope, ctx: NodeContext): Promise<HclValue> {
  const meta = node.meta;
  const [collectionNode, ...rest] = node.children;
  const keyNode = meta.keyExpression ? rest.shift() : undefined;
  const valueNode = rest.shift();
  const condNode = meta.conditionalExpression ? rest.shift() : undefined;
  if (!collectionNode || !valueNode) return fail(scope, `malformed for expression ${JSON.stringify(meta.value ?? '')}`);
  const collection = await evaluateNode(collectionNode, scope, ctx);
  const entries: [HclValue, HclValue][] = Array.isArray(collection)
    ? collection.map((v, i) => [i, v])
    : collection !== null && typeof collection === 'object'
      ? Object.keys(collection).sort().map((k) => [k, collection[k]!])
      : fail(scope, `for expression over a ${typeof collection}: want a list or an object`);
  const keyVar = typeof meta.keyVar === 'string' && meta.keyVar !== '' ? meta.keyVar : undefined;
  const valVar = String(meta.valVar);
  const list: HclValue[] = [];
  const obj: Record<string, HclValue> = {};
  for (const [k, v] of entries) {
    const inner = childScope(scope, keyVar ? { [keyVar]: k, [valVar]: v } : { [valVar]: v });
    if (condNode && !boolOf(await evaluateNode(condNode, inner, ctx), inner)) continue;
    const value = await evaluateNode(valueNode, inner, ctx);
    if (!keyNode) {
      list.push(value);
      continue;
    }
    const key = stringOf(await evaluateNode(keyNode, inner, ctx), inner);
    if (meta.groupedValue === true) ((obj[key] ??= []) as HclValue[]).push(value);
    else if (Object.hasOwn(obj, key)) return fail(scope, `duplicate object key ${JSON.stringify(key)} in for expression`);
    else obj[key] = value;
  }
  return keyNode ? obj : list;
}

export function deepEqual(a: HclValue, b: HclValue): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((v, i) => deepEqual(v, b[i]!));
  }
  if (typeof a === 'object' && typeof b === 'object') {
    const ka = Object.keys(a).sort();
    const kb = Object.keys(b).sort();
    return ka.length === kb.length && ka.every((k, i) => k === kb[i] && deepEqual(a[k]!, b[k]!));
  }
  return false;
}

/** HCL's conversion to string: numbers and bools print, null is empty, collections are refused. */
export function stringOf(v: HclValue, scope: { filename: string }): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (v === null) return '';
  throw new InvalidArgumentError(`${scope.filename}: cannot use a ${Array.isArray(v) ? 'list' : 'object'} as a string: ${JSON.stringify(v)}`, scope.filename);
}

function boolOf(v: HclValue, scope: EvalScope): boolean {
  if (typeof v === 'boolean') return v;
  if (v === 'true') return true;
  if (v === 'false') return false;
  return fail(scope, `a bool is required, got ${JSON.stringify(v)}`);
}

function numberOf(v: HclValue, scope: EvalScope): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && v.trim() !== '' && !Number.isNaN(Number(v))) return Number(v);
  return fail(scope, `a number is required, got ${JSON.stringify(v)}`);
}
