import { hostname } from 'node:os';
import { compileNatsOptions, NATS_FLAGS } from '@kiln/bus';
import { asKilnError, createRootLogger, InvalidArgumentError, loadTlsCredentials } from '@kiln/common';
import type { KilnFrontend } from './contract.js';
import { serveFrontend, type ServeFrontendOptions } from './serve.js';

/** The flags every frontend process takes (the same spelling as `kiln daemon --tier`). */
export const FRONTEND_USAGE =
  '--nats nats://HOST:PORT [--nats-user NAME --nats-password-file FILE | --nats-token-file FILE | --nats-nkey-seed-file FILE | --nats-creds FILE] [--nats-tlscacert FILE] [--nats-tlscert FILE --nats-tlskey FILE] [--listen tcp://HOST:PORT] [--advertise tcp://HOST:PORT] [--id ID] [--tlscacert FILE --tlscert FILE --tlskey FILE] [--insecure-tcp]';

/** Compiles a frontend process's flags (`--name value` or `--name=value`) into serve options. */
export function compileFrontendArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ServeFrontendOptions {
  const flags = new Map<string, string>();
  const known = new Set(['nats', 'listen', 'advertise', 'id', 'tlscacert', 'tlscert', 'tlskey', 'insecure-tcp', ...NATS_FLAGS]);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!m || !known.has(m[1]!)) throw new InvalidArgumentError(`unknown flag ${arg} (usage: ${FRONTEND_USAGE})`, arg);
    const name = m[1]!;
    if (name === 'insecure-tcp') {
      flags.set(name, 'true');
      continue;
    }
    const value = m[2] ?? argv[++i];
    if (value === undefined) throw new InvalidArgumentError(`--${name} needs a value`, `--${name}`);
    flags.set(name, value);
  }
  const nats = compileNatsOptions(flags, undefined, env);
  if (!nats) throw new InvalidArgumentError('--nats is required: a frontend joins a cluster through its NATS', '--nats');
  const tlsFiles = ['tlscacert', 'tlscert', 'tlskey'].map((f) => flags.get(f));
  if (tlsFiles.some(Boolean) && !tlsFiles.every(Boolean)) throw new InvalidArgumentError('mutual TLS needs --tlscacert, --tlscert and --tlskey together', '--tlscert');
  return {
    listen: flags.get('listen') ?? 'tcp://127.0.0.1:0',
    advertise: flags.get('advertise'),
    id: flags.get('id') ?? `${hostname()}-${process.pid}`,
    nats,
    tls: tlsFiles[0] ? loadTlsCredentials({ caCert: tlsFiles[0]!, cert: tlsFiles[1]!, key: tlsFiles[2]! }) : undefined,
    insecureTcp: flags.has('insecure-tcp'),
  };
}

/**
 * The `main` of a frontend process: compiles the flags, serves `fe` until
 * SIGTERM/SIGINT, and exits 2 with the message on a bad flag (1 on other
 * start-up failures).
 */
export async function runFrontendMain(fe: KilnFrontend, argv = process.argv.slice(2)): Promise<void> {
  const logger = createRootLogger(`kiln-frontend-${fe.names[0] ?? 'x'}`);
  let running;
  try {
    running = await serveFrontend(fe, { ...compileFrontendArgs(argv), logger });
  } catch (err) {
    const e = asKilnError(err);
    process.stderr.write(`error: ${e.message}\n`);
    process.exit(e.code === 'invalid_argument' ? 2 : 1);
  }
  const stop = () => {
    void running.close().finally(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
