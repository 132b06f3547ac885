import { readFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { dumpAST, parseDockerfile, processWord, processWords } from '@kiln/dockerfile';
import { KilnError } from '@kiln/common';
import type { CliIo } from '../cli-io.js';
import { parseFlags } from '../flags/flag-parser.js';
import { UsageError } from '../flags/usage-error.js';

export const DEBUG_USAGE = `Usage:  kiln debug COMMAND

Stable debugging views of the Dockerfile frontend

Commands:
  dockerfile-ast FILE                         Print the parsed Dockerfile, one line per instruction
  shell-word [--env K=V]... [--words] [--] WORD
                                              Expand WORD as the Dockerfile shell lexer does
`;

/** `kiln debug ...`: contract views of the parser and the shell lexer, checked from outside. */
export async function runDebug(argv: readonly string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    (sub === undefined ? io.stderr : io.stdout).write(DEBUG_USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (sub === 'dockerfile-ast') return dockerfileAst(rest, io);
  if (sub === 'shell-word') return shellWord(rest, io);
  throw new UsageError(`unknown command "${sub}" for "kiln debug"`, 'COMMAND');
}

function dockerfileAst(argv: readonly string[], io: CliIo): number {
  const { args } = parseFlags(argv, {});
  if (args.length !== 1) throw new UsageError('kiln debug dockerfile-ast needs exactly one FILE', 'FILE');
  const path = resolve(io.cwd, args[0]!);
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (err) {
    throw new KilnError('not_found', `failed to read ${args[0]}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { file: args[0] });
  }
  // The parser alone, as BuildKit's parser dump: instruction-level checks
  // (flags, stage order) belong to a build, and the dump is of any file.
  io.stdout.write(dumpAST(parseDockerfile(data, { filename: basename(path) })));
  return 0;
}

function shellWord(argv: readonly string[], io: CliIo): number {
  const { flags, args } = parseFlags(argv, { env: { kind: 'list' }, words: { kind: 'bool' } });
  if (args.length !== 1) throw new UsageError('kiln debug shell-word needs exactly one WORD (use -- before a word that starts with -)', 'WORD');
  const env = new Map<string, string>();
  for (const kv of flags.env) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new UsageError(`invalid --env "${kv}": want KEY=VALUE`, '--env');
    env.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  const word = args[0]!;
  if (flags.words) {
    for (const w of processWords(word, env)) io.stdout.write(`${w}\n`);
  } else {
    io.stdout.write(`${processWord(word, env)}\n`);
  }
  return 0;
}
