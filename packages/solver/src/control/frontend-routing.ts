import type { Client } from '@connectrpc/connect';
import type { frontend } from '@kiln/api';
import { DOCKERFILE_FRONTEND, frontendNameOf, InvalidArgumentError, KilnError, type ErrorDetails } from '@kiln/common';

type FrontendClient = Client<typeof frontend.FrontendService>;
type SolveArgs = { buildId: string; sessionId: string; frontend: string; attrs: Record<string, string> };

/**
 * Runs the frontend a build asks for and follows one hand-over: the
 * `BUILDKIT_SYNTAX` build arg (over the Dockerfile frontend) or the
 * request's frontend (`--frontend`, default dockerfile.v0) picks the first;
 * a `# syntax=NAME` line the Dockerfile frontend finds comes back as
 * `forward`, and the same request goes to a frontend serving NAME. A name
 * no frontend serves is an error naming where it was asked for (the
 * `# syntax=` line with file and line, or the flag) and what is offered.
 */
export async function solveWithFrontend(resolve: (name: string) => Promise<FrontendClient>, req: SolveArgs, signal: AbortSignal): Promise<frontend.SolveResponse> {
  let name = frontendNameOf(req.frontend || DOCKERFILE_FRONTEND);
  let origin: Origin = { text: `--frontend ${req.frontend}`, details: { field: '--frontend' } };
  const syntaxArg = req.attrs['build-arg:BUILDKIT_SYNTAX'];
  if (name === DOCKERFILE_FRONTEND && syntaxArg) {
    name = frontendNameOf(syntaxArg);
    origin = { text: `--build-arg BUILDKIT_SYNTAX=${syntaxArg}`, details: { field: '--build-arg' } };
  }
  const first = await solveOn(resolve, name, origin, req, signal);
  const fwd = first.forward;
  if (!fwd) return first;
  const next = frontendNameOf(fwd.frontend);
  const where: Origin = { text: `"# syntax=${fwd.frontend}" (${fwd.filename}:${fwd.line})`, details: { file: fwd.filename, line: fwd.line } };
  if (next === name) throw new InvalidArgumentError(`${where.text}: frontend ${name} handed the build to itself`, 'frontend');
  const second = await solveOn(resolve, next, where, { ...req, frontend: next }, signal);
  if (second.forward) throw new KilnError('invalid_argument', `${where.text}: frontend ${next} handed the build on again (to ${second.forward.frontend}); one hand-over is allowed`, where.details);
  return second;
}

interface Origin {
  text: string;
  details: ErrorDetails;
}

async function solveOn(resolve: (name: string) => Promise<FrontendClient>, name: string, origin: Origin, req: SolveArgs, signal: AbortSignal): Promise<frontend.SolveResponse> {
  let client: FrontendClient;
  try {
    client = await resolve(name);
  } catch (err) {
    const e = err as KilnError;
    if (e.code !== 'not_found') throw err;
    throw new KilnError('invalid_argument', `${origin.text}: ${e.message}`, { ...origin.details, frontend: name }, { cause: err });
  }
  return client.solve({ ...req, frontend: name }, { signal });
}
