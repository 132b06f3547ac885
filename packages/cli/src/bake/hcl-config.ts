import { InvalidArgumentError } from '@kiln/common';
import { childScope, evaluateRaw, stringOf, type EvalScope, type HclValue } from './hcl-eval.js';
import type { HclFunction } from './hcl-functions.js';
import { mergeTarget, targetFromAttributes, TARGET_NAME, type BakeConfig, type Group, type Target } from './target.js';

/**
 * One bake file in hcl2json's shape: block types map labels to a list of
 * bodies (`{"target": {"app": [{...}]}}`), top-level attributes are plain
 * keys. JSON bake files are brought to the same shape (`normalizeJsonBake`).
 */
export interface HclBody {
  filename: string;
  body: Record<string, unknown>;
}

/** What the bake run gives the files: variable overrides from the environment and buildx's built-in variables. */
export interface HclInputs {
  /** Environment lookup for variable overrides (`VAR=x kiln bake`). */
  env: Readonly<Record<string, string | undefined>>;
  /** Built-in variables (BAKE_CMD_CONTEXT, BAKE_LOCAL_PLATFORM): strings, never overridden. */
  builtins: Readonly<Record<string, string>>;
}

const BLOCK_TYPES = new Set(['variable', 'target', 'group', 'function']);

/** JSON bake files write a block as an object; hcl2json writes a list of bodies. */
export function normalizeJsonBake(filename: string, json: unknown): HclBody {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new InvalidArgumentError(`failed to parse ${filename}: want a JSON object`, filename);
  const body: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(json)) {
    if (!BLOCK_TYPES.has(k) || v === null || typeof v !== 'object' || Array.isArray(v)) {
      body[k] = v;
      continue;
    }
    body[k] = Object.fromEntries(Object.entries(v).map(([label, b]) => [label, Array.isArray(b) ? b : [b]]));
  }
  return { filename, body };
}

interface VariableDef {
  filename: string;
  default?: unknown;
  hasDefault: boolean;
}

interface Block {
  filename: string;
  label: string;
  body: Record<string, unknown>;
}

function blocksOf(file: HclBody, type: string): Block[] {
  const section = file.body[type];
  if (section === undefined) return [];
  if (section === null || typeof section !== 'object' || Array.isArray(section)) throw new InvalidArgumentError(`${file.filename}: "${type}" must be blocks with a label`, file.filename);
  return Object.entries(section).flatMap(([label, bodies]) =>
    (Array.isArray(bodies) ? bodies : [bodies]).map((b) => {
      if (b === null || typeof b !== 'object' || Array.isArray(b)) throw new InvalidArgumentError(`${file.filename}: ${type} "${label}": want a block`, file.filename);
      return { filename: file.filename, label, body: b as Record<string, unknown> };
    }),
  );
}

/** An HCL reference written as a bare name (`params = [a, b]` comes out as `"${a}"`). */
function bareName(raw: unknown, where: string): string {
  const m = typeof raw === 'string' ? /^\$\{\s*([A-Za-z_][A-Za-z0-9_-]*)\s*\}$/.exec(raw) : null;
  if (!m) throw new InvalidArgumentError(`${where}: want a parameter name, got ${JSON.stringify(raw)}`, where);
  return m[1]!;
}

/**
 * Evaluates HCL/JSON bake files into targets and groups, as buildx's
 * hclparser: variables (defaults, overridden by the environment and typed
 * after their default; top-level attributes are variables too), user
 * `function` blocks, `${}` interpolation, `matrix` + `name` (the block's
 * label becomes a group of the generated targets). Later files override
 * earlier ones; blocks of the same target merge.
 */
export async function evaluateHclFiles(files: readonly HclBody[], inputs: HclInputs): Promise<BakeConfig> {
  const variables = new Map<string, VariableDef>();
  const attributes = new Map<string, { filename: string; raw: unknown }>();
  const functions = new Map<string, Block>();
  for (const f of files) {
    for (const [k, v] of Object.entries(f.body)) if (!BLOCK_TYPES.has(k)) attributes.set(k, { filename: f.filename, raw: v });
    for (const b of blocksOf(f, 'variable')) {
      const prev = variables.get(b.label);
      const hasDefault = Object.hasOwn(b.body, 'default');
      variables.set(b.label, hasDefault || !prev ? { filename: b.filename, default: b.body.default, hasDefault } : prev);
    }
    for (const b of blocksOf(f, 'function')) functions.set(b.label, b);
  }

  const resolved = new Map<string, HclValue>();
  const resolving = new Set<string>();
  const userFunctions = new Map<string, HclFunction>();
  const root: EvalScope = {
    filename: files[0]?.filename ?? 'bake file',
    userFunction: (name) => userFunctions.get(name),
    lookup: async (name) => {
      if (resolved.has(name)) return resolved.get(name)!;
      if (Object.hasOwn(inputs.builtins, name)) return inputs.builtins[name]!;
      const attr = attributes.get(name);
      const def = variables.get(name);
      if (!attr && !def) return undefined;
      if (resolving.has(name)) throw new InvalidArgumentError(`${(attr ?? def)!.filename}: variable cycle not allowed for ${name}`, name);
      resolving.add(name);
      try {
        const scope = { ...root, filename: (attr ?? def)!.filename };
        let value: HclValue;
        if (attr) value = await evaluateRaw(attr.raw, scope);
        else value = await variableValue(name, def!, scope, inputs.env);
        resolved.set(name, value);
        return value;
      } finally {
        resolving.delete(name);
      }
    },
  };
  for (const [name, block] of functions) userFunctions.set(name, userFunction(name, block, root));

  // `target.NAME.ATTR`: a target's own attributes, later blocks of the same name winning per attribute.
  const targetBlocks = files.flatMap((f) => blocksOf(f, 'target'));
  const targetValues = new Map<string, Promise<Record<string, HclValue>>>();
  const evaluatingTargets = new Set<string>();
  root.blockRef = async (type, name) => {
    if (type !== 'target') return undefined;
    const blocks = targetBlocks.filter((b) => b.label === name && b.body.matrix === undefined);
    if (blocks.length === 0) return undefined;
    if (evaluatingTargets.has(name)) throw new InvalidArgumentError(`${blocks[0]!.filename}: target "${name}" refers to itself through target.${name}`, blocks[0]!.filename);
    let p = targetValues.get(name);
    if (!p) {
      evaluatingTargets.add(name);
      p = (async () => {
        const out: Record<string, HclValue> = { name };
        try {
          for (const b of blocks) for (const [k, raw] of Object.entries(b.body)) out[k] = await evaluateRaw(raw, { ...root, filename: b.filename });
        } finally {
          evaluatingTargets.delete(name);
        }
        return out;
      })();
      targetValues.set(name, p);
    }
    return p;
  };

  const config: BakeConfig = { groups: [], targets: [] };
  for (const f of files) {
    for (const b of blocksOf(f, 'group')) {
      const scope = { ...root, filename: f.filename };
      if (b.body.matrix !== undefined) throw new InvalidArgumentError(`${f.filename}: group "${b.label}": matrix is not supported for groups`, f.filename);
      if (b.body.name !== undefined) throw new InvalidArgumentError(`${f.filename}: group "${b.label}": name is not supported for groups`, f.filename);
      const targets = await evaluateRaw(b.body.targets ?? [], scope);
      if (!Array.isArray(targets)) throw new InvalidArgumentError(`${f.filename}: group "${b.label}": targets must be a list`, f.filename);
      const description = b.body.description !== undefined ? stringOf(await evaluateRaw(b.body.description, scope), scope) : undefined;
      addGroup(config, { name: checkName(b.label, f.filename), ...(description ? { description } : {}), targets: targets.map((t) => stringOf(t, scope)) });
    }
    for (const b of blocksOf(f, 'target')) {
      for (const t of await evaluateTarget(b, { ...root, filename: f.filename }, config)) addTarget(config, t);
    }
  }
  return config;
}

function checkName(name: string, filename: string): string {
  if (!TARGET_NAME.test(name)) throw new InvalidArgumentError(`${filename}: invalid name "${name}": only "[a-zA-Z0-9_-]+" are allowed`, filename);
  return name;
}

function addGroup(config: BakeConfig, g: Group): void {
  const prev = config.groups.find((x) => x.name === g.name);
  if (!prev) config.groups.push(g);
  else for (const t of g.targets) if (!prev.targets.includes(t)) prev.targets.push(t);
}

function addTarget(config: BakeConfig, t: Target): void {
  const prev = config.targets.find((x) => x.name === t.name);
  if (prev) mergeTarget(prev, t);
  else config.targets.push(t);
}

async function variableValue(name: string, def: VariableDef, scope: EvalScope, env: HclInputs['env']): Promise<HclValue> {
  const value = def.hasDefault ? await evaluateRaw(def.default, scope) : '';
  const override = env[name];
  if (override === undefined) return value;
  // Typed after the default, as buildx: a bool or number default parses the override.
  if (typeof value === 'boolean') {
    if (!/^(1|t|true|TRUE|True|0|f|false|FALSE|False)$/.test(override)) throw new InvalidArgumentError(`failed to parse ${name} as bool: ${JSON.stringify(override)}`, name);
    return /^(1|t|true|TRUE|True)$/.test(override);
  }
  if (typeof value === 'number') {
    const n = Number(override);
    if (override.trim() === '' || Number.isNaN(n)) throw new InvalidArgumentError(`failed to parse ${name} as number: ${JSON.stringify(override)}`, name);
    return n;
  }
  if (Array.isArray(value) && value.every((v) => typeof v === 'string')) return override === '' ? [] : override.split(',');
  if (value !== null && typeof value === 'object') throw new InvalidArgumentError(`unsupported type ${Array.isArray(value) ? 'list' : 'object'} for variable ${name} override`, name);
  return override;
}

function userFunction(name: string, block: Block, root: EvalScope): HclFunction {
  const where = `${block.filename}: function "${name}"`;
  const params = Array.isArray(block.body.params) ? block.body.params.map((p) => bareName(p, where)) : [];
  const variadic = block.body.variadic_param !== undefined ? bareName(block.body.variadic_param, where) : undefined;
  if (!Object.hasOwn(block.body, 'result')) throw new InvalidArgumentError(`${where}: result is required`, block.filename);
  return async (args) => {
    if (args.length < params.length || (!variadic && args.length > params.length)) {
      throw new InvalidArgumentError(`${where}: want ${variadic ? 'at least ' : ''}${params.length} argument(s), got ${args.length}`, block.filename);
    }
    const bound: Record<string, HclValue> = Object.fromEntries(params.map((p, i) => [p, args[i]!]));
    if (variadic) bound[variadic] = args.slice(params.length);
    return evaluateRaw(block.body.result, childScope({ ...root, filename: block.filename }, bound));
  };
}

/** A target block, once per matrix combination; a matrix adds a group named after the block's label. */
async function evaluateTarget(block: Block, scope: EvalScope, config: BakeConfig): Promise<Target[]> {
  const { matrix: rawMatrix, name: rawName, ...attrs } = block.body;
  const where = `${block.filename}: target "${block.label}"`;
  if (rawName !== undefined && rawMatrix === undefined) throw new InvalidArgumentError(`${where}: name requires matrix`, block.filename);
  const scopes: EvalScope[] = [];
  if (rawMatrix === undefined) scopes.push(scope);
  else {
    const matrix = await evaluateRaw(rawMatrix, scope);
    if (matrix === null || typeof matrix !== 'object' || Array.isArray(matrix)) throw new InvalidArgumentError(`${where}: matrix must be a map`, block.filename);
    let combos: Record<string, HclValue>[] = [{}];
    for (const [k, values] of Object.entries(matrix)) {
      if (!Array.isArray(values)) throw new InvalidArgumentError(`${where}: matrix values must be a list`, block.filename);
      combos = values.flatMap((v) => combos.map((c) => ({ ...c, [k]: v })));
    }
    for (const c of combos) scopes.push(childScope(scope, c));
  }
  const out: Target[] = [];
  for (const s of scopes) {
    const name = rawName !== undefined ? stringOf(await evaluateRaw(rawName, s), s) : block.label;
    checkName(name, block.filename);
    const values: Record<string, HclValue> = {};
    for (const [k, raw] of Object.entries(attrs)) values[k] = await evaluateRaw(raw, s);
    out.push(targetFromAttributes(name, values, block.filename));
  }
  if (rawMatrix !== undefined) {
    const names = [...new Set(out.map((t) => t.name))];
    if (!(names.length === 1 && names[0] === block.label)) addGroup(config, { name: block.label, targets: names });
  }
  return out;
}
