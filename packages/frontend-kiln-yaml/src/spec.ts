import { KilnError } from '@kiln/common';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node } from 'yaml';

/** One COPY of `files:`: a context path to a path in the image. */
export interface FileEntry {
  src: string;
  dest: string;
  /** Octal permission bits, e.g. 0o755. */
  mode?: number;
  line: number;
}

/** A kiln.yaml build description, checked, with the line of each part (for errors and progress). */
export interface KilnYaml {
  base: string;
  env: [string, string][];
  workdir?: string;
  user?: string;
  files: FileEntry[];
  run: { command: string; line: number }[];
  packages: string[];
  cmd?: string[];
  entrypoint?: string[];
  labels: Record<string, string>;
  expose: string[];
  lines: Record<'base' | 'user' | 'packages' | 'workdir', number>;
}

const KEYS = ['base', 'env', 'workdir', 'user', 'files', 'run', 'packages', 'cmd', 'entrypoint', 'labels', 'expose'];

/**
 * Parses and checks kiln.yaml. Errors are KilnErrors with `file` and
 * `line` naming the key at fault (unknown keys, wrong types, a missing
 * `base`, a relative `dest`).
 */
export function parseKilnYaml(text: string, file: string): KilnYaml {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc });
  const lineOf = (n: Node | null | undefined) => (n?.range ? lc.linePos(n.range[0]).line : 1);
  const fail = (message: string, n?: Node | null): never => {
    throw new KilnError('invalid_argument', `${file}:${lineOf(n)}: ${message}`, { file, line: lineOf(n) });
  };
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const line = e.linePos?.[0]?.line ?? 1;
    throw new KilnError('invalid_argument', `${file}:${line}: ${e.message.split('\n')[0]}`, { file, line });
  }
  const root = doc.contents;
  if (!isMap(root)) return fail('a kiln.yaml is a mapping (base:, run:, ...)', root);
  const nodes = new Map<string, Node>();
  for (const pair of root.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : '';
    if (!KEYS.includes(key)) fail(`unknown key "${key}" (one of ${KEYS.join(', ')})`, pair.key as Node);
    nodes.set(key, pair.value as Node);
  }
  const str = (key: string): string | undefined => {
    const n = nodes.get(key);
    if (n === undefined) return undefined;
    if (!isScalar(n) || (typeof n.value !== 'string' && typeof n.value !== 'number')) return fail(`${key} must be a string`, n);
    return String(n.value);
  };
  const list = (key: string): string[] | undefined => {
    const n = nodes.get(key);
    if (n === undefined) return undefined;
    if (!isSeq(n)) return fail(`${key} must be a list`, n);
    return n.items.map((i) => (isScalar(i) && i.value !== null ? String(i.value) : fail(`${key} entries must be strings`, i as Node)));
  };
  const map = (key: string): [string, string][] => {
    const n = nodes.get(key);
    if (n === undefined) return [];
    if (!isMap(n)) return fail(`${key} must be a mapping`, n);
    return n.items.map((p) => [isScalar(p.key) ? String(p.key.value) : fail(`${key} keys must be strings`, p.key as Node), isScalar(p.value) ? String(p.value.value ?? '') : fail(`${key} values must be strings`, p.value as Node)]);
  };
  const base = str('base') ?? fail('base is required (an image reference, or "scratch")', root);
  const files: FileEntry[] = [];
  const fileNodes = nodes.get('files');
  if (fileNodes !== undefined) {
    if (!isSeq(fileNodes)) fail('files must be a list of {src, dest, mode}', fileNodes);
    for (const item of (fileNodes as { items: Node[] }).items) {
      if (!isMap(item)) fail('each files entry is {src, dest, mode}', item);
      const get = (k: string) => (item as { get(k: string, keep: true): Node | undefined }).get(k, true);
      const src = get('src');
      const dest = get('dest');
      const mode = get('mode');
      if (!isScalar(src) || !String(src.value ?? '')) fail('files: src is required', item);
      if (!isScalar(dest) || !String((dest as { value: unknown }).value ?? '').startsWith('/')) fail('files: dest must be an absolute path', dest ?? item);
      let m: number | undefined;
      if (mode !== undefined) {
        const raw = String((mode as { value?: unknown }).value ?? '');
        if (!/^0?[0-7]{3,4}$/.test(raw)) fail(`files: mode "${raw}" must be octal, e.g. "0755"`, mode);
        m = parseInt(raw, 8);
      }
      files.push({ src: String((src as { value: unknown }).value), dest: String((dest as { value: unknown }).value), ...(m !== undefined ? { mode: m } : {}), line: lineOf(item) });
    }
  }
  const runNode = nodes.get('run');
  const run: KilnYaml['run'] = [];
  if (runNode !== undefined) {
    if (!isSeq(runNode)) fail('run must be a list of shell commands', runNode);
    for (const i of (runNode as { items: Node[] }).items) {
      if (!isScalar(i) || typeof i.value !== 'string') fail('run entries must be strings', i);
      run.push({ command: String((i as { value: unknown }).value), line: lineOf(i) });
    }
  }
  const workdir = str('workdir');
  if (workdir !== undefined && !workdir.startsWith('/')) fail('workdir must be an absolute path', nodes.get('workdir'));
  return {
    base,
    env: map('env'),
    workdir,
    user: str('user'),
    files,
    run,
    packages: list('packages') ?? [],
    cmd: list('cmd'),
    entrypoint: list('entrypoint'),
    labels: Object.fromEntries(map('labels')),
    expose: (list('expose') ?? []).map((p) => (p.includes('/') ? p : `${p}/tcp`)),
    lines: { base: lineOf(nodes.get('base')), user: lineOf(nodes.get('user')), packages: lineOf(nodes.get('packages')), workdir: lineOf(nodes.get('workdir')) },
  };
}
