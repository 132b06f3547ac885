import { NotFoundError } from '@kiln/common';
import { convertDockerfile, parseDockerignore } from '@kiln/dockerfile';
import { marshal } from '@kiln/llb';
import type { Frontend } from '../frontend.js';

const DOCKERFILE_MAX = 4 * 1024 * 1024;

/**
 * dockerfile.v0: reads the Dockerfile (attr `filename`, default
 * "Dockerfile") and the ignore file from the client, converts to LLB.
 * `<Dockerfile>.dockerignore` next to the Dockerfile wins over the context's
 * `.dockerignore`, as in BuildKit.
 */
export const dockerfileFrontend: Frontend = {
  name: 'dockerfile.v0',
  async solve(req, inputs) {
    const filename = req.attrs['filename'] || 'Dockerfile';
    const data = await inputs.readFile('dockerfile', filename, DOCKERFILE_MAX);
    if (!data) throw new NotFoundError(`failed to read Dockerfile: ${filename} not found`, { file: filename });
    const ignore = (await inputs.readFile('dockerfile', `${filename}.dockerignore`)) ?? (await inputs.readFile('context', '.dockerignore'));
    const buildArgs: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.attrs)) if (k.startsWith('build-arg:')) buildArgs[k.slice('build-arg:'.length)] = v;
    const converted = convertDockerfile(Buffer.from(data).toString('utf8'), {
      filename,
      target: req.attrs['target'] || undefined,
      buildArgs,
      excludePatterns: ignore ? parseDockerignore(Buffer.from(ignore).toString('utf8')) : [],
    });
    const definition = marshal(converted.state, { sources: [{ filename, data, language: 'Dockerfile' }] });
    return { definition, imageConfig: new TextEncoder().encode(JSON.stringify(converted.imageConfig)), metadata: {} };
  },
};
