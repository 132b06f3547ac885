/**
 * BuildKit's `frontend.outline` subrequest (buildx `--call=outline`): the
 * build args, secrets and SSH agents the target stage and the stages it
 * depends on use. As BuildKit counts them: every ARG declared in one of
 * those stages, the global ARGs their FROM lines expand (and the global
 * ARGs those defaults use), every secret and ssh mount of their RUNs.
 */
import posix from 'node:path/posix';
import { parseInstructions, parseRunMount, type Command, type ParsedDockerfile, type Stage } from '../instructions/index.js';
import { parseDockerfile } from '../parser/index.js';
import { processWord, processWordWithMatches } from '../shell/index.js';
import { tabulate } from './subrequests.js';

export const REQUEST_OUTLINE = 'frontend.outline';

/** BuildKit's pb.Location as Go marshals it (zero fields omitted). */
export interface OutlineLocation {
  ranges: { start: { line: number }; end: { line: number } }[];
}

export interface OutlineArg {
  name: string;
  description?: string;
  value?: string;
  location?: OutlineLocation;
}

export interface OutlineMount {
  name: string;
  required?: boolean;
  location?: OutlineLocation;
}

/** BuildKit's outline.Outline, field for field (JSON names and order). */
export interface Outline {
  name?: string;
  description?: string;
  args?: OutlineArg[];
  secrets?: OutlineMount[];
  ssh?: OutlineMount[];
  /** The Dockerfile, base64 (Go's []byte). */
  sources?: string[];
}

interface ArgInfo {
  name: string;
  value?: string;
  description?: string;
  line: number;
  /** Global ARGs its default expands (they count as used with it). */
  deps: Set<string>;
}

interface StageOutline {
  stage: Stage;
  allArgs: Map<string, ArgInfo>;
  usedArgs: Set<string>;
  secrets: Map<string, OutlineMount>;
  ssh: Map<string, OutlineMount>;
  base?: StageOutline;
  deps: Set<StageOutline>;
}

const at = (line: number): OutlineLocation => ({ ranges: [{ start: { line }, end: { line } }] });

/** The outline of `target` (default: the last stage), build args applied as values. */
export function outlineDockerfile(text: string, opts: { filename?: string; target?: string; buildArgs?: Readonly<Record<string, string>> } = {}): Outline {
  const parsed: ParsedDockerfile = parseInstructions(parseDockerfile(text, { filename: opts.filename ?? 'Dockerfile' }));
  const buildArgs = opts.buildArgs ?? {};
  const globals = new Map<string, string>();
  const globalInfo = new Map<string, ArgInfo>();
  for (const cmd of parsed.metaArgs) {
    for (const a of cmd.args) {
      const expanded = a.value !== undefined ? processWordWithMatches(a.value, globals) : undefined;
      const value = a.key in buildArgs ? buildArgs[a.key] : expanded?.result;
      globalInfo.set(a.key, { name: a.key, value, description: a.comment, line: cmd.line, deps: expanded?.matched ?? new Set() });
      if (value !== undefined) globals.set(a.key, value);
    }
  }

  const outlines: StageOutline[] = [];
  const byName = new Map<string, StageOutline>();
  const stageRef = (ref: string, before: number): StageOutline | undefined => {
    const named = byName.get(ref.toLowerCase());
    if (named) return named;
    return /^\d+$/.test(ref) && Number(ref) < before ? outlines[Number(ref)] : undefined;
  };
  parsed.stages.forEach((stage, index) => {
    const from = processWordWithMatches(stage.baseName, globals);
    const platform = stage.platform ? processWordWithMatches(stage.platform, globals).matched : new Set<string>();
    const o: StageOutline = {
      stage,
      allArgs: new Map(globalInfo),
      usedArgs: new Set([...from.matched, ...platform]),
      secrets: new Map(),
      ssh: new Map(),
      base: byName.get(from.result.toLowerCase()),
      deps: new Set(),
    };
    const env = new Map<string, string>();
    for (const cmd of stage.commands) collect(o, cmd, env, buildArgs, globalInfo, (ref) => stageRef(ref, index));
    outlines.push(o);
    if (stage.name) byName.set(stage.name, o);
  });

  const target = opts.target ? byName.get(opts.target.toLowerCase()) : outlines[outlines.length - 1];
  if (!target) return { sources: [Buffer.from(text).toString('base64')] };
  const byLine = <T extends { location?: OutlineLocation }>(list: T[]) => list.sort((a, b) => (a.location?.ranges[0]?.start.line ?? 0) - (b.location?.ranges[0]?.start.line ?? 0));
  const args = byLine(walk(target, new Set(), (s, seen) => argsOf(s, seen)));
  const secrets = byLine(walk(target, new Set(), (s, seen) => mountsOf(s.secrets, seen)));
  const ssh = byLine(walk(target, new Set(), (s, seen) => mountsOf(s.ssh, seen)));
  return {
    ...(target.stage.name ? { name: target.stage.name } : {}),
    ...(target.stage.comment ? { description: target.stage.comment } : {}),
    ...(args.length > 0 ? { args } : {}),
    ...(secrets.length > 0 ? { secrets } : {}),
    ...(ssh.length > 0 ? { ssh } : {}),
    sources: [Buffer.from(text).toString('base64')],
  };
}

/** What one command adds to its stage's outline. */
function collect(o: StageOutline, cmd: Command, env: Map<string, string>, buildArgs: Readonly<Record<string, string>>, globalInfo: ReadonlyMap<string, ArgInfo>, stageRef: (ref: string) => StageOutline | undefined): void {
  const expand = (w: string) => processWord(w, env);
  switch (cmd.kind) {
    case 'arg':
      for (const a of cmd.args) {
        const given = a.key in buildArgs;
        // `ARG NAME` of a global ARG inherits it: the global declaration stays the one shown.
        const inherited = !given && a.value === undefined && globalInfo.has(a.key);
        const value = given ? buildArgs[a.key] : a.value !== undefined ? expand(a.value) : inherited ? globalInfo.get(a.key)!.value : undefined;
        if (!inherited) o.allArgs.set(a.key, { name: a.key, value, description: a.comment, line: cmd.line, deps: new Set() });
        o.usedArgs.add(a.key);
        if (value !== undefined) env.set(a.key, value);
      }
      return;
    case 'env':
      for (const e of cmd.env) env.set(e.key, expand(e.value));
      return;
    case 'copy': {
      const dep = cmd.from ? stageRef(expand(cmd.from)) : undefined;
      if (dep) o.deps.add(dep);
      return;
    }
    case 'run':
      for (const raw of cmd.mounts) {
        let m;
        try {
          m = parseRunMount(raw, expand);
        } catch {
          continue; // the build reports a bad mount; the outline leaves it out
        }
        if (m.type === 'secret') {
          const id = m.source || m.id || (m.target ? posix.basename(m.target) : '');
          if (id && !o.secrets.has(id)) o.secrets.set(id, { name: id, ...(m.required ? { required: true } : {}), location: at(cmd.line) });
        } else if (m.type === 'ssh') {
          const id = m.id || 'default';
          if (!o.ssh.has(id)) o.ssh.set(id, { name: id, ...(m.required ? { required: true } : {}), location: at(cmd.line) });
        } else if (m.from) {
          const dep = stageRef(m.from);
          if (dep) o.deps.add(dep);
        }
      }
      return;
    default:
      return;
  }
}

/** The stage's entries, then its base's, then its dependencies', each name once (BuildKit's order before sorting). */
function walk<T>(s: StageOutline, seen: Set<string>, own: (s: StageOutline, seen: Set<string>) => T[], stages = new Set<StageOutline>()): T[] {
  if (stages.has(s)) return [];
  stages.add(s);
  const out = own(s, seen);
  if (s.base) out.push(...walk(s.base, seen, own, stages));
  for (const d of s.deps) out.push(...walk(d, seen, own, stages));
  return out;
}

function argsOf(s: StageOutline, seen: Set<string>): OutlineArg[] {
  const used = new Set<string>();
  const mark = (names: Iterable<string>) => {
    for (const n of names) {
      if (used.has(n)) continue;
      used.add(n);
      const info = s.allArgs.get(n);
      if (info) mark(info.deps);
    }
  };
  mark(s.usedArgs);
  const out: OutlineArg[] = [];
  for (const n of used) {
    const info = s.allArgs.get(n);
    if (!info || seen.has(n)) continue;
    seen.add(n);
    out.push({
      name: info.name,
      ...(info.description ? { description: info.description } : {}),
      ...(info.value ? { value: info.value } : {}),
      location: at(info.line),
    });
  }
  return out;
}

function mountsOf(mounts: ReadonlyMap<string, OutlineMount>, seen: Set<string>): OutlineMount[] {
  const out: OutlineMount[] = [];
  for (const [name, m] of mounts) {
    if (seen.has(name)) continue;
    seen.add(name);
    out.push(m);
  }
  return out;
}

/** buildx's text for an outline (BuildKit's PrintOutline): the target, then the BUILD ARG, SECRET and SSH tables. */
export function formatOutline(o: Outline): string {
  let out = '';
  if (o.name || o.description) {
    out += tabulate([['TARGET:', o.name || '(default)'], ...(o.description ? [['DESCRIPTION:', o.description]] : [])], 1) + '\n';
  }
  if (o.args?.length) out += tabulate([['BUILD ARG', 'VALUE', 'DESCRIPTION'], ...o.args.map((a) => [a.name, a.value ?? '', a.description ?? ''])], 3) + '\n';
  if (o.secrets?.length) out += tabulate([['SECRET', 'REQUIRED'], ...o.secrets.map((s) => [s.name, s.required ? 'true' : ''])], 3) + '\n';
  if (o.ssh?.length) out += tabulate([['SSH', 'REQUIRED'], ...o.ssh.map((s) => [s.name, s.required ? 'true' : ''])], 3) + '\n';
  return out;
}
