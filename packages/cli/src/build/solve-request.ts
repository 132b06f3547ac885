import type { MessageInitShape } from '@bufbuild/protobuf';
import type { control } from '@kiln/api';
import type { SessionDir, SessionOutput } from '../session/session-client.js';
import type { BuildOptions } from './build-options.js';

export type SolveRequestInit = MessageInitShape<typeof control.SolveRequestSchema>;

/** The frontend Kiln's CLI asks for. */
export const DOCKERFILE_FRONTEND = 'dockerfile.v0';

/**
 * Builds the Control.Solve request for `opts`: frontend attrs as buildx sends
 * them to the Dockerfile frontend, one exporter per output (client-side
 * outputs carry `session.output`; their paths stay on this side), and the
 * cache imports/exports.
 */
export function toSolveRequest(opts: BuildOptions, ids: { ref: string; sessionId: string }): SolveRequestInit {
  const frontendAttrs: Record<string, string> = { filename: opts.dockerfile.filename };
  if (opts.target !== undefined) frontendAttrs.target = opts.target;
  for (const [k, v] of Object.entries(opts.buildArgs)) frontendAttrs[`build-arg:${k}`] = v;
  if (opts.platforms.length > 0) frontendAttrs.platform = opts.platforms.join(',');
  for (const c of opts.namedContexts) frontendAttrs[`context:${c.name}`] = c.kind === 'local' ? `local:${c.name}` : c.value;
  // BuildKit's convention: an empty value means every step, else the stages named.
  if (opts.noCache) frontendAttrs['no-cache'] = '';
  else if (opts.noCacheFilter.length > 0) frontendAttrs['no-cache'] = opts.noCacheFilter.join(',');
  return {
    ref: ids.ref,
    sessionId: ids.sessionId,
    frontend: DOCKERFILE_FRONTEND,
    frontendAttrs,
    exporters: opts.exports.map((e) => ({ type: e.type, attrs: { ...e.attrs } })),
    cacheImports: opts.cacheFrom.map((c) => ({ type: c.type, attrs: { ...c.attrs } })),
    cacheExports: opts.cacheTo.map((c) => ({ type: c.type, attrs: { ...c.attrs } })),
  };
}

/** The directories the session shares: the context, the Dockerfile's dir, local named contexts. */
export function sessionDirs(opts: BuildOptions): SessionDir[] {
  return [
    { name: 'context', path: opts.contextDir, excludes: opts.contextIgnore },
    { name: 'dockerfile', path: opts.dockerfile.dir },
    ...opts.namedContexts.flatMap((c) => (c.kind === 'local' ? [{ name: c.name, path: c.path, excludes: c.ignore }] : [])),
  ];
}

/** The client-side outputs the session receives. */
export function sessionOutputs(opts: BuildOptions): SessionOutput[] {
  return opts.exports.flatMap((e) => (e.output ? [{ id: e.output.id, kind: e.output.kind, path: e.output.path }] : []));
}
