import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { control } from '@kiln/api';
import { asKilnError, describeError, escapeControl, KilnError, TransportError } from '@kiln/common';
import type { CliIo } from '../cli-io.js';
import { connectDaemon, resolveDaemonAddress } from '../daemon.js';
import { createProgressPrinter } from '../progress/progress.js';
import { attachSession } from '../session/session-client.js';
import { dropLocalWrite, offerLocalWrites } from '../session/local-write.js';
import { compileBuildOptions, parseBuildArgs } from './build-options.js';
import { loadIntoDocker } from './docker-load.js';
import { readStdinInputs } from './stdin-inputs.js';
import { resolveLayoutContexts, withLayoutPaths } from './oci-layout-contexts.js';
import { sessionCredentials, sessionDirs, sessionOutputs, sessionSecrets, sessionSshAgents, toSolveRequest } from './solve-request.js';
import { formatCacheMisses } from '../progress/cache-misses.js';

export const BUILD_USAGE = `Usage:  kiln build [OPTIONS] CONTEXT

Start a build

Options:
      --addr string              Daemon address (unix:///PATH or tcp://HOST:PORT; env KILN_ADDR)
      --builder string           Override the configured builder instance (env KILN_BUILDER)
      --tlscacert string         CA certificate of the cluster, for a TCP daemon (env KILN_TLS_CACERT)
      --tlscert string           Client certificate (env KILN_TLS_CERT)
      --tlskey string            Client key (env KILN_TLS_KEY)
      --allow stringArray        Allow extra privileged entitlement (e.g., "network.host", "security.insecure")
      --add-host stringArray     Add a custom host-to-IP mapping (format: "host:ip"; "host-gateway" is the step's gateway)
      --build-arg stringArray    Set build-time variables (KEY=VALUE, or KEY to take it from the environment)
      --build-context stringArray
                                 Additional build contexts (NAME=PATH|docker-image://REF|oci-layout://PATH[:TAG|@DIGEST])
      --cache-from stringArray   External cache sources (e.g., "type=local,src=path/to/dir", "user/app:cache")
      --cache-to stringArray     Cache export destinations (e.g., "type=inline", "type=local,dest=path/to/dir")
  -f, --file string              Name of the Dockerfile (default: "CONTEXT/Dockerfile")
  -h, --help                     Print usage
      --annotation stringArray   Add annotation to the image ("[TYPE[[PLATFORM]]:]KEY=VALUE"; TYPE manifest, index, manifest-descriptor, index-descriptor)
      --iidfile string           Write the image ID to a file
      --label stringArray        Set metadata for an image (format: "key=value")
      --load                     Load the image into Docker (POST /images/load on DOCKER_HOST or /var/run/docker.sock)
      --metadata-file string     Write build result metadata to a file
      --call string              Set method for evaluating build ("check", "outline", "targets"; ",format=json" prints JSON) (default "build")
      --check                    Shorthand for --call=check
      --explain-cache            After the build, print why each step that ran missed the cache
      --print string             Older name of --call (e.g. "targets")
      --network string           Set the networking mode for the RUN instructions during build ("default", "none", "host") (default "default")
      --no-cache                 Do not use cache when building the image
      --no-cache-filter stringArray
                                 Do not cache specified stages
  -o, --output stringArray       Output destination (format: "type=local,dest=path"; "-o DIR"; "-o -" for a tar on stdout)
      --platform stringArray     Set target platform for build (e.g., "linux/amd64,linux/arm64")
      --progress string          Set type of progress output ("auto", "plain", "tty", "rawjson", "quiet", "none") (default "auto")
      --pull                     Always attempt to pull all referenced images
      --push                     Shorthand for "--output=type=image,push=true"
  -q, --quiet                    Suppress the build output and print image ID on success
      --provenance string        Shorthand for "--attest=type=provenance" ("true" = mode=min, "mode=max", "false")
      --sbom string              Shorthand for "--attest=type=sbom" (SPDX from the built-in scanner)
      --attest stringArray       Attestation parameters (format: "type=provenance,mode=max")
      --shm-size bytes           Shared memory size for build containers
      --secret stringArray       Secret to expose to the build (format: "id=mysecret[,src=/local/secret|env=VAR]")
      --ssh stringArray          SSH agent socket or keys to expose to the build (format: "default|<id>[=<socket>|<key>[,<key>]]")
  -t, --tag stringArray          Name and optionally a tag (format: "name:tag")
      --target string            Set the target build stage to build
      --ulimit ulimit            Ulimit options (default [])
      --frontend string          Frontend to run instead of the Dockerfile frontend (a name a frontend tier serves; also # syntax= and BUILDKIT_SYNTAX)
      --worker-filter stringArray
                                 Run on a worker matching this filter (e.g., "labels.pool==gpu", "id==ID"; all must match)
`;

/** buildx's line for a tagged image that went nowhere but Kiln's own store; it says how to get it out. */
export const imageStoreHint = (names: string) =>
  `Image ${names} is kept in the kiln daemon's image store. To get it, build with --load (into Docker) or --push (to its registry), ` +
  'or -o type=docker,dest=FILE|type=oci,dest=FILE for a tarball\n';

export const NO_OUTPUT_WARNING =
  'WARNING: No output specified for kiln build; build result will only remain in the build cache. ' +
  'To push result image into registry use --push or to export it use -o/--output\n';

/** How long the Status stream may trail a finished Solve before it is cut. */
const STATUS_TAIL_MS = 3000;

/** A build id like buildx's: 25 base-36 characters. */
export function newBuildId(): string {
  return BigInt(`0x${randomBytes(16).toString('hex')}`).toString(36).padStart(25, '0').slice(-25);
}

/**
 * `kiln build`: compile options, connect (or start) the daemon, subscribe to
 * Status, attach the session, Solve, render progress, then write the
 * metadata file. Returns the exit code (usage errors are thrown).
 */
export async function runBuild(argv: readonly string[], io: CliIo): Promise<number> {
  const parsed = parseBuildArgs(argv);
  if (parsed.flags.help) {
    io.stdout.write(BUILD_USAGE);
    return 0;
  }
  const stdinInputs = await readStdinInputs(parsed, () => io.stdin);
  try {
    return await buildWith(parsed, io);
  } finally {
    stdinInputs.cleanup();
  }
}

async function buildWith(parsed: ReturnType<typeof parseBuildArgs>, io: CliIo): Promise<number> {
  const compiled = compileBuildOptions(parsed, { cwd: io.cwd, env: io.vars, stdoutIsTTY: io.stdout.isTTY === true });
  resolveDaemonAddress(compiled.addr, io.vars, compiled.builder); // a bad KILN_ADDR or builder is an error too, before any output
  // OCI layout contexts are checked here and their tags pinned (exit 1 when one is unusable).
  const opts = { ...compiled, namedContexts: resolveLayoutContexts(compiled.namedContexts) };
  const sshAgents = sessionSshAgents(opts);
  const localWrites = offerLocalWrites(opts.exports, io.vars);
  if (opts.exports.length === 0) io.stderr.write(NO_OUTPUT_WARNING);

  const conn = await connectDaemon({ addr: opts.addr, builder: opts.builder, tls: opts.tls, env: io.vars, daemonCommand: io.daemonCommand, signal: io.signal, transport: io.transport, pipelined: true });
  const ref = newBuildId();
  const sessionId = newBuildId();
  const log = io.logger.child({ buildId: ref });
  const abort = new AbortController();
  const onAbort = () => abort.abort(io.signal.reason);
  io.signal.addEventListener('abort', onAbort, { once: true });
  // A daemon that does not answer the probe (in time) ends the build, as an awaited probe did.
  conn.ready?.catch((err: unknown) => abort.abort(err));

  const shown = createProgressPrinter(opts.progress, io.stderr, { term: io.vars.TERM });
  const warnings: control.StatusResponse['warnings'] = [];
  const printer = {
    write(s: control.StatusResponse) {
      warnings.push(...s.warnings);
      shown.write(s);
    },
    close: () => shown.close(),
  };
  const statusAbort = new AbortController();
  const statusDone = (async () => {
    try {
      for await (const s of conn.control.status({ ref }, { signal: AbortSignal.any([abort.signal, statusAbort.signal]) })) printer.write(s);
    } catch (err) {
      if (!statusAbort.signal.aborted) log.debug({ err: asKilnError(err).message }, 'status stream failed');
    }
  })();

  const session = attachSession(conn.session, {
    sessionId,
    dirs: sessionDirs(opts),
    outputs: sessionOutputs(opts).map((o) => {
      const offer = localWrites.get(o.id);
      return offer && o.kind === 'file' ? { ...o, localTemp: offer.tempPath } : o;
    }),
    secrets: sessionSecrets(opts, io.vars),
    sshAgents,
    credentials: sessionCredentials(),
    stdout: io.stdout,
    logger: log,
    signal: abort.signal,
  });

  let response: control.SolveResponse | undefined;
  let failure: unknown;
  // Solve goes out right behind the session's hello, not one round trip
  // later: the daemon's build waits for its session to attach. A session
  // the daemon refuses (or that fails first) cancels the Solve and is the error shown.
  let sessionFailure: unknown;
  session.ready().catch((err: unknown) => {
    sessionFailure = err;
    abort.abort(err);
  });
  try {
    const exports = opts.exports.map((e) => {
      const offer = e.output && localWrites.get(e.output.id);
      return offer ? { ...e, attrs: { ...e.attrs, ...offer.attrs } } : e;
    });
    response = await conn.control.solve(toSolveRequest({ ...opts, exports }, { ref, sessionId }), { signal: abort.signal });
  } catch (err) {
    // A daemon that is not there fails every call: say so as the awaited probe would.
    const unreachable = await conn.ready?.then(
      () => undefined,
      (e: unknown) => e,
    );
    failure = unreachable ?? sessionFailure ?? err;
  } finally {
    io.signal.removeEventListener('abort', onAbort);
  }

  session.close();
  // Renamed over dest when the daemon wrote it; else (streamed, failed, canceled) removed.
  for (const offer of localWrites.values()) dropLocalWrite(offer.tempPath);
  const loads = opts.exports.flatMap((e) => (e.output?.load ? [e.output.path] : []));
  try {
    return await finish();
  } finally {
    for (const p of loads) rmSync(p, { force: true });
  }

  async function finish(): Promise<number> {
  const tail = setTimeout(() => statusAbort.abort(), failure ? 500 : STATUS_TAIL_MS);
  await statusDone;
  clearTimeout(tail);
  printer.close();
  const failed = failure !== undefined || !response;
  // After a good Solve nothing needs the session: its clean end (one more
  // round trip to the daemon) is not waited for; the stream ends on exit.
  const sessionErr = failed ? await session.closed() : undefined;
  if (sessionErr) log.debug({ err: sessionErr.message }, 'session ended with an error');

  if (failure !== undefined || !response) {
    let err = asKilnError(failure ?? sessionErr);
    // The daemon (solver) went away mid-build: name it rather than show a bare HTTP/2 stream error.
    if (err instanceof TransportError && !abort.signal.aborted) err = new TransportError('unavailable', `solver at ${conn.address} connection lost: ${err.message}`);
    // A failed RUN carries its last lines of output; show them above the error, as buildx does.
    const output = typeof err.details.output === 'string' ? err.details.output : '';
    if (output !== '') io.stderr.write(escapeControl(`------\n${output.split('\n').map((l) => ` > ${l}`).join('\n')}\n------\n`));
    io.stderr.write(`ERROR: ${escapeControl(withLayoutPaths(describeError(err), opts.namedContexts))}\n`);
    return 1;
  }
  if (opts.call) return printCallResult(opts, response.exporterResponse, io);
  if (opts.explainCache) {
    const { cacheMisses } = await conn.control.inspectHistory({ ref }, { signal: io.signal });
    io.stderr.write(formatCacheMisses(cacheMisses));
  }
  for (const tar of loads) {
    const names = await loadIntoDocker(tar, io.vars, io.signal);
    if (!opts.quiet) for (const n of names) io.stderr.write(`Loaded image: ${escapeControl(n)}\n`);
  }
  const resp = response.exporterResponse;
  const imageId = imageIdOf(resp);
  const storeOnly = opts.exports.length > 0 && opts.exports.every((e) => e.type === 'image' && e.attrs.push !== 'true');
  if (storeOnly && resp['image.name'] && !opts.quiet) io.stderr.write(imageStoreHint(resp['image.name']));
  if (opts.quiet && imageId) io.stdout.write(`${imageId}\n`);
  if (opts.iidFile) {
    if (!imageId) throw new KilnError('failed_precondition', `failed to write --iidfile ${opts.iidFile}: the build made no image (use --load, --push, -t or an image --output)`);
    await mkdir(dirname(opts.iidFile), { recursive: true });
    await writeFile(opts.iidFile, imageId);
  }
  if (opts.metadataFile) {
    await mkdir(dirname(opts.metadataFile), { recursive: true });
    await writeFile(opts.metadataFile, `${JSON.stringify(buildMetadata(resp, ref, warnings, conn.builder), null, 2)}\n`);
  }
  return 0;
  }
}

/** The image id buildx prints for -q and writes to --iidfile: the config digest of a single-platform image, else the manifest/index digest. */
export function imageIdOf(resp: Readonly<Record<string, string>>): string | undefined {
  return resp['containerimage.config.digest'] || resp['containerimage.digest'] || undefined;
}

/**
 * The --metadata-file content, with buildx's keys: the exporter response
 * (base64 JSON values inlined), `buildx.build.ref` (builder/node/ref) and,
 * when the build warned, `buildx.build.warnings` as client.VertexWarning JSON.
 */
export function buildMetadata(resp: Readonly<Record<string, string>>, ref: string, warnings: readonly control.StatusResponse['warnings'][number][], builder = 'default'): Record<string, unknown> {
  const out = decodeExporterResponse(resp);
  // builder/node/ref; a stored builder's one node is NAME0 (as buildx names them), the default's "default".
  out['buildx.build.ref'] = `${builder}/${builder === 'default' ? builder : `${builder}0`}/${ref}`;
  if (warnings.length > 0) {
    const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');
    out['buildx.build.warnings'] = warnings.map((w) => ({
      vertex: w.vertex,
      level: Number(w.level),
      short: b64(w.short),
      ...(w.detail.length > 0 ? { detail: w.detail.map(b64) } : {}),
      ...(w.url ? { url: w.url } : {}),
      ...(w.info ? { sourceInfo: { filename: w.info.filename, data: b64(w.info.data), ...(w.info.language ? { language: w.info.language } : {}) } } : {}),
      ...(w.ranges.length > 0 ? { range: w.ranges.map((r) => ({ start: { line: r.startLine }, end: { line: r.endLine } })) } : {}),
    }));
  }
  return out;
}

/**
 * The metadata file content, as buildx writes it: exporter response values
 * that are base64 of a JSON object are inlined as that object.
 */
export function decodeExporterResponse(resp: Readonly<Record<string, string>>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(resp)) {
    out[k] = v;
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(v) || v.length % 4 !== 0) continue;
    try {
      const parsed: unknown = JSON.parse(Buffer.from(v, 'base64').toString('utf8'));
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed) && Object.keys(parsed).length > 0) out[k] = parsed;
    } catch {
      // not base64 JSON: keep the string
    }
  }
  return out;
}

/**
 * Prints a `--call` answer as buildx does, on stdout: the frontend's
 * result.txt (result.json with `format=json`); for `check`, the warnings,
 * a summary and exit status 1 when any were found (unless `ignorestatus`).
 */
function printCallResult(
  opts: { call?: 'targets' | 'check' | 'outline'; callFormat?: 'json'; callIgnoreStatus?: boolean },
  resp: Readonly<Record<string, string>>,
  io: { stdout: { write(s: string): unknown }; stderr: { write(s: string): unknown } },
): number {
  const txt = resp['result.txt'] ?? '';
  const status = opts.callIgnoreStatus ? 0 : Number(resp['result.statuscode'] ?? 0) === 0 ? 0 : 1;
  if (opts.callFormat === 'json') {
    io.stdout.write(`${resp['result.json'] ?? ''}\n`);
    return opts.call === 'check' ? status : 0;
  }
  if (opts.call !== 'check') {
    io.stdout.write(txt);
    return 0;
  }
  const found = (txt.match(/^WARNING: /gm) ?? []).length;
  // On stdout, as buildx prints it.
  io.stdout.write(txt);
  io.stdout.write(found === 0 ? 'Check complete, no warnings found.\n' : `\nCheck complete, ${found} warning${found === 1 ? ' has' : 's have'} been found!\n`);
  if (opts.callIgnoreStatus) return 0;
  return Number(resp['result.statuscode'] ?? (found > 0 ? 1 : 0)) === 0 ? 0 : 1;
}
