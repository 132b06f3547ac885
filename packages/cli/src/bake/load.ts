import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { InvalidArgumentError } from '@kiln/common';
import { UsageError } from '../flags/usage-error.js';
import { parseComposeFiles } from './compose.js';
import { evaluateHclFiles, normalizeJsonBake, type HclBody, type HclInputs } from './hcl-config.js';
import { parseHclFile } from './hcl-parser.js';
import { mergeTarget, type BakeConfig } from './target.js';

/** The files bake reads when no -f is given, in buildx's order; every one that exists is read. */
export const DEFAULT_BAKE_FILES: readonly string[] = [
  'compose.yaml',
  'compose.yml',
  'docker-compose.yml',
  'docker-compose.yaml',
  'docker-bake.json',
  'docker-bake.hcl',
  'docker-bake.override.json',
  'docker-bake.override.hcl',
];

export interface BakeFile {
  /** As given (or the default name): messages quote it. */
  name: string;
  data: string;
}

/**
 * Reads `-f` files in order (a missing one is an error), or else every
 * default file found in `cwd`. `-` reads stdin. No file at all is an error.
 */
export function readBakeFiles(names: readonly string[], cwd: string, stdin: () => string = () => readFileSync(0, 'utf8')): BakeFile[] {
  const out: BakeFile[] = [];
  if (names.length === 0) {
    for (const n of DEFAULT_BAKE_FILES) {
      let data: string;
      try {
        data = readFileSync(resolve(cwd, n), 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw new InvalidArgumentError(`failed to read ${n}: ${(err as Error).message}`, n, { cause: err });
      }
      out.push({ name: n, data });
    }
  } else {
    for (const n of names) {
      if (n === '-') {
        out.push({ name: '-', data: stdin() });
        continue;
      }
      try {
        out.push({ name: n, data: readFileSync(resolve(cwd, n), 'utf8') });
      } catch (err) {
        throw new UsageError(`failed to read bake file ${n}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : (err as Error).message}`, '--file', { cause: err });
      }
    }
  }
  if (out.length === 0) throw new UsageError("couldn't find a bake definition", '--file');
  return out;
}

type Kind = 'compose' | 'json' | 'hcl';

/** As buildx: the extension decides; other names are tried as compose, then JSON, then HCL. */
function kindOf(f: BakeFile): Kind | undefined {
  const n = f.name.toLowerCase();
  if (n.endsWith('.yml') || n.endsWith('.yaml')) return 'compose';
  if (n.endsWith('.json')) return 'json';
  if (n.endsWith('.hcl')) return 'hcl';
  return undefined;
}

function guessKind(f: BakeFile): Kind {
  const text = f.data.trimStart();
  if (text.startsWith('{')) return 'json';
  // Compose files have a top-level `services:` key; HCL uses blocks and `=`.
  if (/^services\s*:/m.test(f.data)) return 'compose';
  return 'hcl';
}

/**
 * Parses and evaluates the files into one config: compose files first, then
 * HCL and JSON ones over them (a target defined in both merges, the bake
 * file's fields winning).
 */
export async function loadBakeConfig(files: readonly BakeFile[], inputs: HclInputs): Promise<BakeConfig> {
  const compose: { filename: string; data: string }[] = [];
  const hcl: HclBody[] = [];
  for (const f of files) {
    const kind = kindOf(f) ?? guessKind(f);
    if (kind === 'compose') compose.push({ filename: f.name, data: f.data });
    else if (kind === 'json') {
      let json: unknown;
      try {
        json = JSON.parse(f.data);
      } catch (err) {
        throw new InvalidArgumentError(`failed to parse ${f.name}: ${(err as Error).message}`, f.name, { cause: err });
      }
      hcl.push(normalizeJsonBake(f.name, json));
    } else hcl.push({ filename: f.name, body: await parseHclFile(f.name, f.data) });
  }
  let config: BakeConfig = { groups: [], targets: [] };
  if (compose.length > 0) config = parseComposeFiles(compose, inputs.env);
  if (hcl.length > 0) {
    const fromHcl = await evaluateHclFiles(hcl, inputs);
    for (const g of fromHcl.groups) {
      const prev = config.groups.find((x) => x.name === g.name);
      if (!prev) config.groups.push(g);
      else for (const t of g.targets) if (!prev.targets.includes(t)) prev.targets.push(t);
    }
    for (const t of fromHcl.targets) {
      const prev = config.targets.find((x) => x.name === t.name);
      if (prev) mergeTarget(prev, t);
      else config.targets.push(t);
    }
  }
  return config;
}
