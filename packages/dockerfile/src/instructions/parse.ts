/**
 * AST nodes to typed instructions and build stages, following BuildKit's
 * `frontend/dockerfile/instructions` checks. Errors are SourceErrors naming
 * the instruction's first line.
 */
import { SourceError } from '@kiln/common';
import { chompHeredocContent, parseHeredoc } from '../parser/heredoc.js';
import type { DockerfileAST, Node } from '../parser/types.js';
import { trimSpace } from '../shell/chars.js';
import { BFlags, FlagError } from './bflags.js';
import { parseGoDuration } from './duration.js';
import { checkRunMountSyntax, MountError } from './run-mount.js';
import type {
  ArgCommand,
  Command,
  HealthConfig,
  KeyValuePair,
  ParsedDockerfile,
  ShellDependantCmdLine,
  ShellInlineFile,
  SourcesAndDest,
  Stage,
} from './types.js';

/** Bad usage of an instruction; parseInstruction adds file and line. */
class InstructionError extends Error {}

const fail = (message: string): never => {
  throw new InstructionError(message);
};

const errAtLeastOneArgument = (cmd: string) => fail(`${cmd} requires at least one argument`);
const errExactlyOneArgument = (cmd: string) => fail(`${cmd} requires exactly one argument`);
const errNoDestination = (cmd: string) =>
  fail(`${cmd} requires at least two arguments, but only one was provided. Destination could not be determined.`);

/** Stage names: lower-case letter first, then letters, digits, `-`, `_`, `.`. */
const VALID_STAGE_NAME = /^[a-z][a-z0-9-_.]*$/;

/** Minimum non-zero HEALTHCHECK duration (1ms), in nanoseconds. */
const MIN_HEALTH_DURATION = 1e6;

interface Request {
  node: Node;
  keyword: string;
  args: string[];
  flags: BFlags;
}

function base(node: Node) {
  return { line: node.startLine, endLine: node.endLine, original: node.original, flags: [...node.flags], node };
}

function parseKvps(args: readonly string[], cmd: string): KeyValuePair[] {
  if (args.length === 0) errAtLeastOneArgument(cmd);
  if (args.length % 3 !== 0) fail(`${cmd} has a malformed argument list`);
  const pairs: KeyValuePair[] = [];
  for (let i = 0; i < args.length; i += 3) {
    const key = args[i]!;
    if (key === '') fail(`${cmd} names can not be blank`);
    pairs.push({ key, value: args[i + 1]!, noDelim: args[i + 2] === '' });
  }
  return pairs;
}

function shellDependant(req: Request): ShellDependantCmdLine & { files: ShellInlineFile[] } {
  const files = req.node.heredocs.map((h) => ({ name: h.name, data: h.content, chomp: h.chomp, expand: h.expand }));
  let cmdLine: string[];
  if (req.args.length === 0) cmdLine = [];
  else if (req.node.json) cmdLine = [...req.args];
  else cmdLine = [req.args.join(' ')];
  return { cmdLine, prependShell: !req.node.json, files };
}

function sourcesAndDest(req: Request): SourcesAndDest {
  const srcs = req.args.slice(0, -1);
  const dest = req.args[req.args.length - 1]!;
  if (!req.node.json && parseHeredoc(dest)) fail(`${req.keyword} cannot accept a heredoc as a destination`);
  const byName = new Map(req.node.heredocs.map((h) => [h.name, h]));
  const sourcePaths: string[] = [];
  const sourceContents: SourcesAndDest['sourceContents'] = [];
  for (const src of srcs) {
    const marker = req.node.json ? undefined : parseHeredoc(src);
    if (marker) {
      const content = byName.get(marker.name)?.content ?? '';
      sourceContents.push({
        path: marker.name,
        data: marker.chomp ? chompHeredocContent(content) : content,
        expand: marker.expand,
      });
    } else {
      sourcePaths.push(src);
    }
  }
  return { destPath: dest, sourcePaths, sourceContents };
}

function parseOptInterval(flags: BFlags, name: string): number {
  const s = flags.string(name);
  if (s === '') return 0;
  let d: number;
  try {
    d = parseGoDuration(s);
  } catch (err) {
    return fail(`--${name}: ${(err as Error).message}`);
  }
  if (d === 0) return 0;
  if (d < MIN_HEALTH_DURATION) fail(`Interval "${name}" cannot be less than 1ms`);
  return d;
}

function parseHealthcheck(req: Request): HealthConfig {
  if (req.args.length === 0) errAtLeastOneArgument('HEALTHCHECK');
  const flags = req.flags
    .addString('interval')
    .addString('timeout')
    .addString('start-period')
    .addString('start-interval')
    .addString('retries')
    .parse();
  const typ = req.args[0]!.toUpperCase();
  const rest = req.args.slice(1);
  if (typ === 'NONE') {
    if (rest.length !== 0) fail('HEALTHCHECK NONE takes no arguments');
    return { test: ['NONE'], interval: 0, timeout: 0, startPeriod: 0, startInterval: 0, retries: 0 };
  }
  if (typ !== 'CMD') fail(`Unknown type "${typ}" in HEALTHCHECK (try CMD)`);
  const cmd = rest.length === 0 ? [] : req.node.json ? rest : [rest.join(' ')];
  if (cmd.length === 0) fail('Missing command after HEALTHCHECK CMD');
  let retries = 0;
  const r = flags.string('retries');
  if (r !== '') {
    if (!/^[+-]?\d+$/.test(r) || Math.abs(Number(r)) > 2 ** 31 - 1) fail(`--retries: invalid value ${JSON.stringify(r)}`);
    retries = Number(r);
    if (retries < 0) fail(`--retries cannot be negative (${retries})`);
  }
  return {
    test: [req.node.json ? 'CMD' : 'CMD-SHELL', ...cmd],
    interval: parseOptInterval(flags, 'interval'),
    timeout: parseOptInterval(flags, 'timeout'),
    startPeriod: parseOptInterval(flags, 'start-period'),
    startInterval: parseOptInterval(flags, 'start-interval'),
    retries,
  };
}

function parseStage(req: Request): Stage {
  const args = req.args;
  let name = '';
  if (args.length === 3 && args[1]!.toLowerCase() === 'as') {
    name = args[2]!.toLowerCase();
    if (!VALID_STAGE_NAME.test(name)) {
      fail(`invalid name for build stage: "${args[2]}", name can't start with a number or contain symbols`);
    }
  } else if (args.length !== 1) {
    fail('FROM requires either one or three arguments');
  }
  const flags = req.flags.addString('platform').parse();
  const stage: Stage = {
    name,
    baseName: args[0]!,
    platform: flags.string('platform'),
    commands: [],
    line: req.node.startLine,
    endLine: req.node.endLine,
    original: trimSpace(req.node.original),
    node: req.node,
  };
  const comment = req.node.comments.find((c) => name !== '' && c.startsWith(`${name} `));
  if (comment !== undefined) stage.comment = comment.slice(name.length + 1).trim();
  return stage;
}

function parseCommand(req: Request): Command {
  const { node, args } = req;
  const b = base(node);
  const noFlags = () => req.flags.parse();
  switch (node.value) {
    case 'env':
      noFlags();
      return { kind: 'env', env: parseKvps(args, 'ENV'), ...b };
    case 'label':
      noFlags();
      return { kind: 'label', labels: parseKvps(args, 'LABEL'), ...b };
    case 'maintainer':
      noFlags();
      if (args.length !== 1) errExactlyOneArgument('MAINTAINER');
      return { kind: 'maintainer', maintainer: args[0]!, ...b };
    case 'add': {
      if (args.length < 2) errNoDestination('ADD');
      const f = req.flags
        .addString('chown')
        .addString('chmod')
        .addBool('link')
        .addBool('keep-git-dir')
        .addString('checksum')
        .addStrings('exclude')
        .addBool('unpack')
        .parse();
      return {
        kind: 'add',
        ...sourcesAndDest(req),
        chown: f.string('chown'),
        chmod: f.string('chmod'),
        link: f.bool('link'),
        keepGitDir: f.bool('keep-git-dir'),
        checksum: f.string('checksum'),
        exclude: f.strings('exclude'),
        ...(f.isUsed('unpack') ? { unpack: f.bool('unpack') } : {}),
        ...b,
      };
    }
    case 'copy': {
      if (args.length < 2) errNoDestination('COPY');
      const f = req.flags
        .addString('from')
        .addString('chown')
        .addString('chmod')
        .addBool('link')
        .addBool('parents')
        .addStrings('exclude')
        .parse();
      return {
        kind: 'copy',
        ...sourcesAndDest(req),
        from: f.string('from'),
        chown: f.string('chown'),
        chmod: f.string('chmod'),
        link: f.bool('link'),
        parents: f.bool('parents'),
        exclude: f.strings('exclude'),
        ...b,
      };
    }
    case 'run': {
      const f = req.flags.addStrings('mount').addString('network').addString('security').addStrings('device').parse();
      for (const m of f.strings('mount')) {
        try {
          checkRunMountSyntax(m);
        } catch (err) {
          if (err instanceof MountError) fail(`RUN --mount=${m}: ${err.message}`);
          throw err;
        }
      }
      return {
        kind: 'run',
        ...shellDependant(req),
        mounts: f.strings('mount'),
        network: f.string('network'),
        security: f.string('security'),
        devices: f.strings('device'),
        ...b,
      };
    }
    case 'cmd':
      noFlags();
      return { kind: 'cmd', ...shellDependant(req), ...b };
    case 'entrypoint':
      noFlags();
      return { kind: 'entrypoint', ...shellDependant(req), ...b };
    case 'expose':
      noFlags();
      if (args.length === 0) errAtLeastOneArgument('EXPOSE');
      // As BuildKit: the values sorted as written (so history lists 1234/udp before 2375/tcp).
      return { kind: 'expose', ports: [...args].sort(), ...b };
    case 'user':
      noFlags();
      if (args.length !== 1) errExactlyOneArgument('USER');
      return { kind: 'user', user: args[0]!, ...b };
    case 'volume': {
      noFlags();
      if (args.length === 0) errAtLeastOneArgument('VOLUME');
      const volumes = args.map((v) => trimSpace(v));
      if (volumes.some((v) => v === '')) fail('VOLUME specified can not be an empty string');
      return { kind: 'volume', volumes, ...b };
    }
    case 'workdir':
      noFlags();
      if (args.length !== 1) errExactlyOneArgument('WORKDIR');
      return { kind: 'workdir', path: args[0]!, ...b };
    case 'stopsignal':
      noFlags();
      if (args.length !== 1) errExactlyOneArgument('STOPSIGNAL');
      return { kind: 'stopsignal', signal: args[0]!, ...b };
    case 'arg': {
      noFlags();
      if (args.length === 0) errAtLeastOneArgument('ARG');
      const pairs = args.map((arg) => {
        const eq = arg.indexOf('=');
        const key = eq >= 0 ? arg.slice(0, eq) : arg;
        if (key === '') fail(`ARG names can not be blank: ${JSON.stringify(arg)}`);
        const pair: ArgCommand['args'][number] = { key };
        if (eq >= 0) pair.value = arg.slice(eq + 1);
        const comment = node.comments.find((c) => c.startsWith(`${key} `));
        if (comment !== undefined) pair.comment = comment.slice(key.length + 1).trim();
        return pair;
      });
      return { kind: 'arg', args: pairs, ...b };
    }
    case 'shell':
      noFlags();
      if (args.length === 0) errAtLeastOneArgument('SHELL');
      if (!node.json) fail('SHELL requires the arguments to be in JSON form');
      return { kind: 'shell', shell: [...args], ...b };
    case 'healthcheck':
      return { kind: 'healthcheck', health: parseHealthcheck(req), ...b };
    case 'onbuild': {
      noFlags();
      const trigger = node.child;
      if (!trigger) return errAtLeastOneArgument('ONBUILD');
      const keyword = trigger.value.toUpperCase();
      if (keyword === 'ONBUILD') fail('Chaining ONBUILD via `ONBUILD ONBUILD` isn\'t allowed');
      if (keyword === 'MAINTAINER' || keyword === 'FROM') fail(`${keyword} isn't allowed as an ONBUILD trigger`);
      let expression = node.original.replace(/^\s*ONBUILD\s*/i, '');
      for (const h of node.heredocs) expression += `\n${h.content}${h.name}`;
      return { kind: 'onbuild', expression, trigger, ...b };
    }
    default:
      return fail(`unknown instruction: ${node.value.toUpperCase()}`);
  }
}

function request(node: Node): Request {
  return { node, keyword: node.value.toUpperCase(), args: node.next, flags: new BFlags(node.flags) };
}

function wrap<T>(node: Node, filename: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof InstructionError || err instanceof FlagError) {
      const message = err instanceof FlagError ? `${node.value.toUpperCase()}: ${err.message}` : err.message;
      throw new SourceError(message, filename, node.startLine, { cause: err });
    }
    throw err;
  }
}

/** Parses one node into a command, or a Stage for FROM. Errors name the node's line. */
export function parseInstruction(node: Node, filename = 'Dockerfile'): Command | Stage {
  return wrap(node, filename, () => (node.value === 'from' ? parseStage(request(node)) : parseCommand(request(node))));
}

/** Type guard distinguishing a Stage (FROM) from a command. */
export function isStage(x: Command | Stage): x is Stage {
  return !('kind' in x);
}

/**
 * Turns a parsed Dockerfile into build stages. ARGs before the first FROM are
 * meta args; any other instruction before a FROM is an error.
 */
export function parseInstructions(ast: DockerfileAST): ParsedDockerfile {
  const stages: Stage[] = [];
  const metaArgs: ArgCommand[] = [];
  for (const node of ast.children) {
    const cmd = parseInstruction(node, ast.filename);
    if (isStage(cmd)) {
      stages.push(cmd);
      continue;
    }
    const stage = stages[stages.length - 1];
    if (!stage) {
      if (cmd.kind === 'arg') {
        metaArgs.push(cmd);
        continue;
      }
      throw new SourceError(
        `${node.value.toUpperCase()} before the first FROM: no build stage in current context`,
        ast.filename,
        node.startLine,
      );
    }
    stage.commands.push(cmd);
    stage.endLine = cmd.endLine;
  }
  return { stages, metaArgs };
}
