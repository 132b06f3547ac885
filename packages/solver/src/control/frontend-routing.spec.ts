import { create } from '@bufbuild/protobuf';
import type { Client } from '@connectrpc/connect';
import { frontend } from '@kiln/api';
import { KilnError, NotFoundError } from '@kiln/common';
import { solveWithFrontend } from './frontend-routing.js';

type FrontendClient = Client<typeof frontend.FrontendService>;

/** Frontends by name; each answers with its own name in the metadata, or with `forward`. */
function pool(answers: Record<string, frontend.SolveResponse | ((attrs: Record<string, string>) => frontend.SolveResponse)>) {
  const asked: string[] = [];
  const resolve = async (name: string): Promise<FrontendClient> => {
    asked.push(name);
    const a = answers[name];
    if (!a) throw new NotFoundError(`no frontend serves "${name}" (this cluster offers: ${Object.keys(answers).sort().join(', ')})`);
    return { solve: async (req: { attrs: Record<string, string> }) => (typeof a === 'function' ? a(req.attrs) : a) } as unknown as FrontendClient;
  };
  return { resolve, asked };
}

const built = (by: string) => create(frontend.SolveResponseSchema, { metadata: { by } });
const forward = (name: string, line = 1) => create(frontend.SolveResponseSchema, { forward: { frontend: name, filename: 'Dockerfile', line } });
const req = (attrs: Record<string, string> = {}, fe = 'dockerfile.v0') => ({ buildId: 'b', sessionId: 's', frontend: fe, attrs });
const signal = new AbortController().signal;

describe('solveWithFrontend', () => {
  it('follows a # syntax= hand-over to the frontend serving the name', async () => {
    const p = pool({ 'dockerfile.v0': forward('kiln-yaml.v0'), 'kiln-yaml.v0': built('yaml') });
    expect((await solveWithFrontend(p.resolve, req(), signal)).metadata).toEqual({ by: 'yaml' });
    expect(p.asked).toEqual(['dockerfile.v0', 'kiln-yaml.v0']);
  });

  it('names the # syntax= line and the frontends offered when none serves it', async () => {
    const p = pool({ 'dockerfile.v0': forward('acme/unknown:1', 3), 'kiln-yaml.v0': built('yaml') });
    const err = (await solveWithFrontend(p.resolve, req(), signal).catch((e: unknown) => e)) as KilnError;
    expect(err.code).toBe('invalid_argument');
    expect(err.message).toBe('"# syntax=acme/unknown:1" (Dockerfile:3): no frontend serves "acme/unknown:1" (this cluster offers: dockerfile.v0, kiln-yaml.v0)');
    expect(err.details).toMatchObject({ file: 'Dockerfile', line: 3 });
  });

  it('BUILDKIT_SYNTAX picks the frontend without asking the Dockerfile frontend', async () => {
    const p = pool({ 'dockerfile.v0': built('dockerfile'), 'kiln-yaml.v0': built('yaml') });
    expect((await solveWithFrontend(p.resolve, req({ 'build-arg:BUILDKIT_SYNTAX': 'kiln-yaml.v0' }), signal)).metadata).toEqual({ by: 'yaml' });
    expect(p.asked).toEqual(['kiln-yaml.v0']);
    const alias = pool({ 'dockerfile.v0': built('dockerfile') });
    expect((await solveWithFrontend(alias.resolve, req({ 'build-arg:BUILDKIT_SYNTAX': 'docker/dockerfile:1.7' }), signal)).metadata).toEqual({ by: 'dockerfile' });
  });

  it('--frontend names a frontend directly, and an unknown one names the flag', async () => {
    const p = pool({ 'dockerfile.v0': built('dockerfile'), 'kiln-yaml.v0': built('yaml') });
    expect((await solveWithFrontend(p.resolve, req({}, 'kiln-yaml.v0'), signal)).metadata).toEqual({ by: 'yaml' });
    const err = (await solveWithFrontend(p.resolve, req({}, 'nope.v1'), signal).catch((e: unknown) => e)) as KilnError;
    expect(err.message).toMatch(/^--frontend nope.v1: no frontend serves "nope.v1"/);
    expect(err.details.field).toBe('--frontend');
  });

  it('allows one hand-over only', async () => {
    const p = pool({ 'dockerfile.v0': forward('a.v1'), 'a.v1': forward('b.v1'), 'b.v1': built('b') });
    await expect(solveWithFrontend(p.resolve, req(), signal)).rejects.toThrow(/one hand-over is allowed/);
  });
});
