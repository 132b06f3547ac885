import { isIP } from 'node:net';
import { posix } from 'node:path';
import { DOCKERFILE_FRONTEND, frontendNameOf, InvalidArgumentError, NotFoundError, parseUlimit, type Ulimit } from '@kiln/common';
import { create } from '@bufbuild/protobuf';
import { llb } from '@kiln/api';
import { convertDockerfile, formatOutline, formatPlatform, formatTargets, outlineDockerfile, REQUEST_OUTLINE, lintReport, listTargets, parseDockerignore, REQUEST_LINT, REQUEST_TARGETS, parsePlatform, type BuildWarning, type ImageMetaResolver, type Platform } from '@kiln/dockerfile';
import { marshal } from '@kiln/llb';
import type { CredentialStore } from '@kiln/registry';
import type { Frontend, FrontendWarning } from '../frontend.js';
import { layoutMetaResolver } from './oci-layout-resolver.js';
import { loadRemoteContext } from './remote-context.js';
import { syntaxDirective } from './syntax-directive.js';

const DOCKERFILE_MAX = 4 * 1024 * 1024;

export interface DockerfileFrontendOptions {
  /**
   * Base image lookups (config + digest pinning); without one, images stay
   * unpinned. With `withCredentials` (see createRegistryImageResolver), each
   * build looks images up with its client's registry credentials first.
   */
  imageResolver?: ImageMetaResolver & { withCredentials?(credentials: CredentialStore, opts?: { fresh?: boolean }): ImageMetaResolver; fresh?(): ImageMetaResolver };
}

/**
 * dockerfile.v0: reads the Dockerfile (attr `filename`, default
 * "Dockerfile") and the ignore file from the client, converts to LLB.
 * `<Dockerfile>.dockerignore` next to the Dockerfile wins over the context's
 * `.dockerignore`, as in BuildKit. Attrs: `target`, `build-arg:K`,
 * `platform` (a comma list: with several, one conversion per platform and
 * a multi-platform result; stages shared between platforms, such as
 * `FROM --platform=$BUILDPLATFORM` ones, give identical ops that the solver
 * runs once), `build-platform` (BUILDPLATFORM), `context:NAME`,
 * `add-hosts` (`host=ip,...`, BuildKit's spelling; `host-gateway` is left for
 * the worker), `ulimit` (`nofile=1024:2048,...`), `shm-size` (bytes), `hostname`, `label:K`
 * (image labels over the Dockerfile's) and `force-network-mode` (RUN's
 * default network). The response metadata carries `source-date-epoch`.
 * `context:NAME=oci-layout://STORE[:TAG][@DIGEST]` reads the layout the
 * client shares as session directory STORE (image config and manifest digest).
 * `context` (a git or http(s) URL, buildx's remote build context) replaces
 * the client's context dir: see remote-context.ts; `dockerfilekey` names
 * the client dir holding the Dockerfile then (default: the remote context).
 */
export function createDockerfileFrontend(opts: DockerfileFrontendOptions = {}): Frontend {
  return {
    name: 'dockerfile.v0',
    async solve(req, inputs, signal) {
      // `context` = a git or http(s) URL: the workers fetch the main context, and the Dockerfile comes from it
      // unless `dockerfilekey` names a client dir that holds it (buildx: an absolute -f, or -f -).
      const remote = await loadRemoteContext(req.attrs['context'], req.attrs, inputs.gateway, signal);
      const dockerfileDir = req.attrs['dockerfilekey'] || 'dockerfile';
      const fromRemote = remote !== undefined && !req.attrs['dockerfilekey'];
      const filename = (fromRemote && remote.filename) || req.attrs['filename'] || 'Dockerfile';
      const readDockerfile = (name: string, max?: number) => (fromRemote ? remote.readFile(name, max) : inputs.readFile(dockerfileDir, name, max));
      // The three reads are round trips to the client: ask them all at once. A remote context has no ignore file, as in BuildKit.
      const reads = [
        readDockerfile(filename, DOCKERFILE_MAX),
        remote ? Promise.resolve(undefined) : inputs.readFile(dockerfileDir, `${filename}.dockerignore`),
        remote ? Promise.resolve(undefined) : inputs.readFile('context', '.dockerignore'),
      ] as const;
      for (const r of reads) r.catch(() => undefined);
      // As BuildKit: a lowercase `dockerfile` serves when `Dockerfile` is absent from a remote context.
      const data = (await reads[0]) ?? (fromRemote && posix.basename(filename) === 'Dockerfile' ? await readDockerfile(posix.join(posix.dirname(filename), 'dockerfile'), DOCKERFILE_MAX) : undefined);
      if (!data) throw new NotFoundError(`failed to read Dockerfile: ${filename} not found${fromRemote ? ` in ${redactUrl(req.attrs['context']!)}` : ''}`, { file: filename });
      // `# syntax=` naming another frontend hands the build over (the BUILDKIT_SYNTAX build arg, which the solver reads, wins).
      const syntax = req.attrs['build-arg:BUILDKIT_SYNTAX'] ? undefined : syntaxDirective(Buffer.from(data).toString('utf8'));
      if (syntax && frontendNameOf(syntax.value) !== DOCKERFILE_FRONTEND) {
        return { definition: create(llb.DefinitionSchema, {}), imageConfig: new Uint8Array(), metadata: {}, forward: { frontend: syntax.value, filename, line: syntax.line } };
      }
      const ignore = (await reads[1]) ?? (await reads[2]);
      const buildArgs: Record<string, string> = {};
      const namedContexts: Record<string, string> = {};
      const labels: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.attrs)) {
        if (k.startsWith('build-arg:')) buildArgs[k.slice('build-arg:'.length)] = v;
        if (k.startsWith('context:')) namedContexts[k.slice('context:'.length)] = v;
        if (k.startsWith('label:')) labels[k.slice('label:'.length)] = v;
      }
      const forceNetwork = networkAttr(req.attrs['force-network-mode']);
      const platforms = platformList(req.attrs['platform']);
      const buildPlatform = platformList(req.attrs['build-platform'], 'build-platform')[0];
      const extraHosts = addHostsAttr(req.attrs['add-hosts']);
      const ulimits = ulimitAttr(req.attrs['ulimit']);
      const shmSizeBytes = shmSizeAttr(req.attrs['shm-size']);
      const excludePatterns = ignore ? parseDockerignore(Buffer.from(ignore).toString('utf8')) : [];
      // `--pull` (image-resolve-mode=pull): base images are looked up again, not taken from the resolver's cache.
      const pull = req.attrs['image-resolve-mode'] === 'pull';
      const registryResolver =
        inputs.registryCredentials && opts.imageResolver?.withCredentials
          ? opts.imageResolver.withCredentials(inputs.registryCredentials, { fresh: pull })
          : pull && opts.imageResolver?.fresh
            ? opts.imageResolver.fresh()
            : opts.imageResolver;
      // oci-layout:// contexts are read from the client's layout over the session; without a registry, images stay unpinned.
      const imageResolver: ImageMetaResolver = {
        resolve: registryResolver ? (ref, platform, sig) => registryResolver.resolve(ref, platform, sig) : async () => ({ digest: '', config: undefined }),
        resolveOciLayout: layoutMetaResolver(inputs),
      };
      const convert = async (platform: Platform | undefined) => {
        const converted = await convertDockerfile(Buffer.from(data).toString('utf8'), {
          filename,
          target: req.attrs['target'] || undefined,
          buildArgs,
          namedContexts,
          platform,
          buildPlatform,
          excludePatterns,
          mainContext: remote?.state,
          extraHosts,
          ulimits,
          shmSizeBytes,
          hostname: req.attrs['hostname'] || undefined,
          labels,
          forceNetwork,
          imageResolver,
          signal,
        });
        return {
          definition: marshal(converted.state, { sources: [{ filename, data, language: 'Dockerfile' }] }),
          imageConfig: new TextEncoder().encode(JSON.stringify(converted.imageConfig)),
          warnings: converted.warnings,
          sourceDateEpoch: converted.sourceDateEpoch,
        };
      };
      // The epoch (build arg or the Dockerfile's ARG default) goes to the solver, which gives it to image exporters.
      const metadataOf = (epoch: number | undefined): Record<string, string> => (epoch !== undefined ? { [SOURCE_DATE_EPOCH_METADATA]: String(epoch) } : {});
      // buildx --call: answer the subrequest with metadata (result.txt is what the client prints), build nothing.
      const requestId = req.attrs['requestid'];
      if (requestId) {
        const text = Buffer.from(data).toString('utf8');
        const answer = (metadata: Record<string, string>) => ({ definition: create(llb.DefinitionSchema, {}), imageConfig: new Uint8Array(), metadata });
        if (requestId === REQUEST_TARGETS) {
          const targets = listTargets(text, filename);
          const json = JSON.stringify({ targets, sources: [Buffer.from(data).toString('base64')] }, null, 2);
          return answer({ 'result.json': json, 'result.txt': formatTargets(targets), version: '1.0.0' });
        }
        if (requestId === REQUEST_OUTLINE) {
          const outline = outlineDockerfile(text, { filename, target: req.attrs['target'] || undefined, buildArgs });
          return answer({ 'result.json': JSON.stringify(outline, null, 2), 'result.txt': formatOutline(outline), version: '1.0.0' });
        }
        if (requestId === REQUEST_LINT) {
          const one = await convert(platforms[0]);
          const report = lintReport(one.warnings, text, filename);
          return answer({ 'result.json': report.json, 'result.txt': report.txt, 'result.statuscode': String(report.statusCode), version: '1.0.0' });
        }
        throw new InvalidArgumentError(`unsupported subrequest "${requestId}": want ${REQUEST_TARGETS}, ${REQUEST_OUTLINE} or ${REQUEST_LINT}`, 'requestid');
      }
      if (platforms.length <= 1) {
        const one = await convert(platforms[0]);
        return { definition: one.definition, imageConfig: one.imageConfig, metadata: metadataOf(one.sourceDateEpoch), warnings: one.warnings.map(toFrontendWarning) };
      }
      const results = await Promise.all(platforms.map((p) => convert(p)));
      // Each platform's conversion lints the same file: report each warning once.
      const warnings = new Map(results.flatMap((r) => r.warnings.map(toFrontendWarning)).map((w) => [`${w.short}:${w.startLine}`, w]));
      return {
        definition: results[0]!.definition,
        imageConfig: results[0]!.imageConfig,
        metadata: metadataOf(results[0]!.sourceDateEpoch),
        warnings: [...warnings.values()],
        platforms: results.map((r, i) => ({ platform: formatPlatform(platforms[i]!), definition: r.definition, imageConfig: r.imageConfig })),
      };
    },
  };
}

/** A URL without its user info, for messages. */
function redactUrl(value: string): string {
  return value.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^@/]*@/i, '$1');
}

/** Response metadata key of the build's SOURCE_DATE_EPOCH (seconds), when it has one. */
export const SOURCE_DATE_EPOCH_METADATA = 'source-date-epoch';

/** `force-network-mode` (buildx's `--network`): `none` or `host`; empty or `default` leaves RUN's default. */
function networkAttr(value: string | undefined): 'none' | 'host' | undefined {
  if (value === undefined || value === '' || value === 'default' || value === 'sandbox') return undefined;
  if (value === 'none' || value === 'host') return value;
  throw new InvalidArgumentError(`network mode "${value}" not supported: want default, none or host`, 'force-network-mode');
}

/** The Dockerfile frontend without registry lookups. */
export const dockerfileFrontend: Frontend = createDockerfileFrontend();

/** The platforms of a comma list, parsed and deduplicated in order. */
function platformList(value: string | undefined, attr = 'platform'): Platform[] {
  const out = new Map<string, Platform>();
  for (const raw of (value ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    try {
      const p = parsePlatform(raw);
      out.set(formatPlatform(p), p);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message, attr, { cause: err });
    }
  }
  return [...out.values()];
}

/** `ulimit` (buildx `--ulimit`): comma-separated `name=soft[:hard]`, as BuildKit's dockerui reads it. */
function ulimitAttr(value: string | undefined): Ulimit[] {
  if (!value) return [];
  return value
    .split(',')
    .map((v) => v.trim())
    .filter(Boolean)
    .map((v) => parseUlimit(v, 'ulimit'));
}

/** `shm-size` (buildx `--shm-size`): bytes. */
function shmSizeAttr(value: string | undefined): number | undefined {
  if (!value) return undefined;
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`failed to parse shm size "${value}": want bytes`, 'shm-size');
  return Number(value);
}

/** `add-hosts`: comma-separated `host=ip` (or `host:ip`) entries. */
function addHostsAttr(value: string | undefined): { host: string; ip: string }[] {
  if (!value) return [];
  return value
    .split(',')
    .map((v) => v.trim())
    .filter(Boolean)
    .map((v) => {
      const sep = v.includes('=') ? v.indexOf('=') : v.indexOf(':');
      const host = sep > 0 ? v.slice(0, sep) : '';
      const ip = sep > 0 ? v.slice(sep + 1).replace(/^\[(.*)\]$/, '$1') : '';
      if (!host || (isIP(ip) === 0 && ip !== 'host-gateway')) throw new InvalidArgumentError(`invalid add-hosts entry "${v}": want host=ip`, 'add-hosts');
      return { host, ip };
    });
}

function toFrontendWarning(w: BuildWarning): FrontendWarning {
  return {
    short: `${w.rule}: ${w.message} (${w.file}:${w.line})`,
    detail: [w.description],
    url: w.url,
    startLine: w.line,
    endLine: w.endLine,
  };
}
