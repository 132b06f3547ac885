import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { control } from '@kiln/api';
import { asKilnError, describeError, escapeControl, KilnError } from '@kiln/common';
import { buildMetadata, newBuildId } from '../build/build-command.js';
import { compileBuildOptions, parseBuildArgs, type BuildOptions, type ProgressMode } from '../build/build-options.js';
import { loadIntoDocker } from '../build/docker-load.js';
import { resolveLayoutContexts } from '../build/oci-layout-contexts.js';
import { sessionCredentials, sessionDirs, sessionOutputs, sessionSecrets, sessionSshAgents, toSolveRequest } from '../build/solve-request.js';
import type { CliIo } from '../cli-io.js';
import { connectDaemon, type TlsFlags } from '../daemon.js';
import { UsageError } from '../flags/usage-error.js';
import { createProgressPrinter } from '../progress/progress.js';
import { dropLocalWrite, offerLocalWrites, type LocalWriteOffer } from '../session/local-write.js';
import { attachSession, type Session, type SessionOutput } from '../session/session-client.js';
import { targetBuildArgv } from './build-args.js';
import type { Target } from './target.js';

export interface BakeRunOptions {
  targets: ReadonlyMap<string, Target>;
  progress: ProgressMode;
  metadataFile: string | undefined;
  addr: string | undefined;
  /** `--builder`, if given (KILN_BUILDER or the current builder otherwise). */
  builder: string | undefined;
  tls: TlsFlags;
}

/** One target ready to solve. */
interface PlannedBuild {
  name: string;
  opts: BuildOptions;
  /** Targets whose image this one reads (`target:` contexts): solved first. */
  deps: string[];
  ref: string;
  /** Index of its session group. */
  group: number;
}

/** How long the Status streams may trail the last Solve before they are cut. */
const STATUS_TAIL_MS = 3000;

/**
 * Compiles every target to `kiln build` options. Targets that share their
 * session directories, secrets and SSH agents share one session: local
 * sources are keyed by session, so steps that read the same context are
 * then one step for the solver, run once however many targets need them.
 */
function planBuilds(targets: ReadonlyMap<string, Target>, io: CliIo, workDir: string): { builds: PlannedBuild[]; groups: BuildOptions[][] } {
  const linked = new Set<string>();
  for (const t of targets.values()) for (const v of Object.values(t.contexts ?? {})) if (v.startsWith('target:')) linked.add(v.slice('target:'.length));
  const layoutOf = (name: string) => join(workDir, `layout-${name}`);
  const builds: PlannedBuild[] = [];
  const groupKeys: string[] = [];
  const groups: BuildOptions[][] = [];
  let n = 0;
  for (const name of [...targets.keys()].sort()) {
    const t = targets.get(name)!;
    const argv = targetBuildArgv(t, { cwd: io.cwd, workDir, layoutOf, linked });
    let opts: BuildOptions;
    try {
      opts = compileBuildOptions(parseBuildArgs(argv), { cwd: io.cwd, env: io.vars, stdoutIsTTY: io.stdout.isTTY === true });
    } catch (err) {
      if (err instanceof UsageError) throw new UsageError(`target "${name}": ${err.message}`, err.details.field as string | undefined, { cause: err });
      throw err;
    }
    // Output ids are per session: give each target its own.
    const prefix = `t${n++}-`;
    opts = {
      ...opts,
      exports: opts.exports.map((e) => (e.output ? { ...e, attrs: { ...e.attrs, 'session.output': prefix + e.output.id }, output: { ...e.output, id: prefix + e.output.id } } : e)),
    };
    const key = JSON.stringify({ dirs: sessionDirs(opts), secrets: opts.secrets, ssh: opts.ssh });
    let group = groupKeys.indexOf(key);
    if (group < 0) {
      group = groupKeys.push(key) - 1;
      groups.push([]);
    }
    groups[group]!.push(opts);
    const deps = Object.values(t.contexts ?? {}).flatMap((v) => (v.startsWith('target:') ? [v.slice('target:'.length)] : []));
    builds.push({ name, opts, deps, ref: newBuildId(), group });
  }
  return { builds, groups };
}

/**
 * Builds the resolved targets in one CLI process against one daemon: every
 * Solve is sent at once (a target waits only for the targets it reads
 * through `target:` contexts, which are exported to an OCI layout in a
 * scratch directory and read from there), so the solver's scheduler runs
 * the steps they share once. One progress display shows every build. The
 * first failure cancels the other builds. Returns the exit code.
 */
export async function runBakeBuilds(opts: BakeRunOptions, io: CliIo): Promise<number> {
  const workDir = mkdtempSync(join(tmpdir(), 'kiln-bake-'));
  try {
    return await runPlanned(opts, io, workDir);
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
}

async function runPlanned(opts: BakeRunOptions, io: CliIo, workDir: string): Promise<number> {
  const { builds, groups } = planBuilds(opts.targets, io, workDir);
  const conn = await connectDaemon({ addr: opts.addr, builder: opts.builder, tls: opts.tls, env: io.vars, daemonCommand: io.daemonCommand, signal: io.signal });
  const abort = new AbortController();
  const onAbort = () => abort.abort(io.signal.reason);
  io.signal.addEventListener('abort', onAbort, { once: true });
  const printer = createProgressPrinter(opts.progress, io.stderr, { term: io.vars.TERM });
  const statusAbort = new AbortController();
  const warnings: control.StatusResponse['warnings'][number][] = [];
  const statusDone = builds.map(async (b) => {
    try {
      for await (const s of conn.control.status({ ref: b.ref }, { signal: AbortSignal.any([abort.signal, statusAbort.signal]) })) {
        warnings.push(...s.warnings);
        printer.write(s);
      }
    } catch (err) {
      if (!statusAbort.signal.aborted) io.logger.debug({ err: asKilnError(err).message, target: b.name }, 'status stream failed');
    }
  });

  const localWrites = new Map<string, LocalWriteOffer>();
  const sessions: { id: string; session: Session }[] = groups.map((members) => {
    const first = members[0]!;
    const sessionId = newBuildId();
    const outputs: SessionOutput[] = [];
    for (const m of members) {
      const offers = offerLocalWrites(m.exports, io.vars);
      for (const [id, offer] of offers) localWrites.set(id, offer);
      for (const o of sessionOutputs(m)) {
        const offer = offers.get(o.id);
        outputs.push(offer && o.kind === 'file' ? { ...o, localTemp: offer.tempPath } : o);
      }
    }
    const session = attachSession(conn.session, {
      sessionId,
      dirs: sessionDirs(first),
      outputs,
      secrets: sessionSecrets(first, io.vars),
      sshAgents: sessionSshAgents(first),
      credentials: sessionCredentials(),
      stdout: io.stdout,
      logger: io.logger.child({ session: sessionId }),
      signal: abort.signal,
    });
    return { id: sessionId, session };
  });

  const responses = new Map<string, control.SolveResponse>();
  const solving = new Map<string, Promise<void>>();
  const solve = (b: PlannedBuild): Promise<void> => {
    let p = solving.get(b.name);
    if (p) return p;
    p = (async () => {
      await Promise.all(b.deps.map((d) => solve(builds.find((x) => x.name === d)!)));
      // A dependency's layout exists only now: pin its tag like any oci-layout context.
      const built = { ...b.opts, namedContexts: resolveLayoutContexts(b.opts.namedContexts) };
      const exports = built.exports.map((e) => {
        const offer = e.output && localWrites.get(e.output.id);
        return offer ? { ...e, attrs: { ...e.attrs, ...offer.attrs } } : e;
      });
      const s = sessions[b.group]!;
      await s.session.ready();
      const resp = await conn.control.solve(toSolveRequest({ ...built, exports }, { ref: b.ref, sessionId: s.id }), { signal: abort.signal });
      responses.set(b.name, resp);
      // `docker` outputs without dest (--load): the tarball the session received goes to dockerd.
      for (const e of built.exports) {
        if (!e.output?.load) continue;
        const names = await loadIntoDocker(e.output.path, io.vars, abort.signal);
        for (const n of names) io.stderr.write(`Loaded image: ${escapeControl(n)}\n`);
      }
    })();
    solving.set(b.name, p);
    return p;
  };

  let failure: { name: string; err: unknown } | undefined;
  const loadTars = builds.flatMap((b) => b.opts.exports.flatMap((e) => (e.output?.load ? [e.output.path] : [])));
  await Promise.all(
    builds.map((b) =>
      solve(b).catch((err: unknown) => {
        if (!failure) {
          failure = { name: b.name, err };
          abort.abort(new Error(`target ${b.name} failed`));
        }
      }),
    ),
  );
  io.signal.removeEventListener('abort', onAbort);
  for (const p of loadTars) rmSync(p, { force: true });
  for (const s of sessions) s.session.close();
  for (const offer of localWrites.values()) dropLocalWrite(offer.tempPath);
  const tail = setTimeout(() => statusAbort.abort(), failure ? 500 : STATUS_TAIL_MS);
  await Promise.all(statusDone);
  clearTimeout(tail);
  printer.close();

  if (failure) {
    const err = asKilnError(failure.err);
    const output = typeof err.details.output === 'string' ? err.details.output : '';
    if (output !== '') io.stderr.write(escapeControl(`------\n${output.split('\n').map((l) => ` > ${l}`).join('\n')}\n------\n`));
    const message = err instanceof KilnError ? describeError(err) : String(failure.err);
    io.stderr.write(`ERROR: target ${escapeControl(failure.name)}: ${escapeControl(message)}\n`);
    return 1;
  }
  if (opts.metadataFile) {
    // buildx: one key per target, each the build's metadata as `build --metadata-file` writes it,
    // and the warnings of all builds under buildx.build.warnings.
    const out: Record<string, unknown> = {};
    for (const b of [...builds].sort((x, y) => (x.name < y.name ? -1 : 1))) {
      const resp = responses.get(b.name);
      if (resp) out[b.name] = buildMetadata(resp.exporterResponse, b.ref, [], conn.builder);
    }
    const all = buildMetadata({}, '', warnings)['buildx.build.warnings'];
    if (all !== undefined) out['buildx.build.warnings'] = all;
    await mkdir(dirname(opts.metadataFile), { recursive: true });
    await writeFile(opts.metadataFile, `${JSON.stringify(out, null, 2)}\n`);
  }
  return 0;
}
