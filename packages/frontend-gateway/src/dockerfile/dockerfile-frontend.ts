import { InvalidArgumentError, NotFoundError } from '@kiln/common';
import { convertDockerfile, parseDockerignore, parsePlatform, type BuildWarning, type ImageMetaResolver, type Platform } from '@kiln/dockerfile';
import { marshal } from '@kiln/llb';
import type { CredentialStore } from '@kiln/registry';
import type { Frontend, FrontendWarning } from '../frontend.js';

const DOCKERFILE_MAX = 4 * 1024 * 1024;

export interface DockerfileFrontendOptions {
  /**
   * Base image lookups (config + digest pinning); without one, images stay
   * unpinned. With `withCredentials` (see createRegistryImageResolver), each
   * build looks images up with its client's registry credentials first.
   */
  imageResolver?: ImageMetaResolver & { withCredentials?(credentials: CredentialStore): ImageMetaResolver };
}

/**
 * dockerfile.v0: reads the Dockerfile (attr `filename`, default
 * "Dockerfile") and the ignore file from the client, converts to LLB.
 * `<Dockerfile>.dockerignore` next to the Dockerfile wins over the context's
 * `.dockerignore`, as in BuildKit. Attrs: `target`, `build-arg:K`,
 * `platform` (the first of a list), `context:NAME`.
 */
export function createDockerfileFrontend(opts: DockerfileFrontendOptions = {}): Frontend {
  return {
    name: 'dockerfile.v0',
    async solve(req, inputs, signal) {
      const filename = req.attrs['filename'] || 'Dockerfile';
      const data = await inputs.readFile('dockerfile', filename, DOCKERFILE_MAX);
      if (!data) throw new NotFoundError(`failed to read Dockerfile: ${filename} not found`, { file: filename });
      const ignore = (await inputs.readFile('dockerfile', `${filename}.dockerignore`)) ?? (await inputs.readFile('context', '.dockerignore'));
      const buildArgs: Record<string, string> = {};
      const namedContexts: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.attrs)) {
        if (k.startsWith('build-arg:')) buildArgs[k.slice('build-arg:'.length)] = v;
        if (k.startsWith('context:')) namedContexts[k.slice('context:'.length)] = v;
      }
      const converted = await convertDockerfile(Buffer.from(data).toString('utf8'), {
        filename,
        target: req.attrs['target'] || undefined,
        buildArgs,
        namedContexts,
        platform: platformAttr(req.attrs['platform']),
        excludePatterns: ignore ? parseDockerignore(Buffer.from(ignore).toString('utf8')) : [],
        imageResolver: inputs.registryCredentials && opts.imageResolver?.withCredentials ? opts.imageResolver.withCredentials(inputs.registryCredentials) : opts.imageResolver,
        signal,
      });
      const definition = marshal(converted.state, { sources: [{ filename, data, language: 'Dockerfile' }] });
      return {
        definition,
        imageConfig: new TextEncoder().encode(JSON.stringify(converted.imageConfig)),
        metadata: {},
        warnings: converted.warnings.map(toFrontendWarning),
      };
    },
  };
}

/** The Dockerfile frontend without registry lookups. */
export const dockerfileFrontend: Frontend = createDockerfileFrontend();

function platformAttr(value: string | undefined): Platform | undefined {
  const first = value?.split(',')[0]?.trim();
  if (!first) return undefined;
  try {
    return parsePlatform(first);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message, 'platform', { cause: err });
  }
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
