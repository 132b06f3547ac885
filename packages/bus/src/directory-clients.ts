import type { DescService } from '@bufbuild/protobuf';
import type { Client } from '@connectrpc/connect';
import { createKilnClient, createNodeTransport, DOCKERFILE_FRONTEND, FRONTEND_NAMES_LABEL, NotFoundError, sleep, UnavailableError, type TierRole, type TlsCredentials } from '@kiln/common';
import type { ServiceAnnouncement, ServiceDirectory } from './directory.js';

export interface DirectoryClientOptions {
  /** How long to wait for a first announcement; default 30000. */
  timeoutMs?: number;
  /** Mutual TLS: the announced endpoint must prove the tier's role. */
  tls?: TlsCredentials;
}

/**
 * A client of the tier `tier`, found through the directory: the first live
 * announcement, waited for up to `timeoutMs`. Transports are cached per URL.
 */
export function directoryClient<S extends DescService>(directory: ServiceDirectory, tier: string, service: S, opts: DirectoryClientOptions = {}): () => Promise<Client<S>> {
  const byUrl = new Map<string, Client<S>>();
  return async () => {
    const a = await directory.waitFor(tier, { timeoutMs: opts.timeoutMs ?? 30_000 });
    return clientForUrl(byUrl, a.url, tier, service, opts.tls);
  };
}

/** A client of the process announced in `tier` with this id, or undefined. */
export function directoryClientById<S extends DescService>(directory: ServiceDirectory, tier: string, service: S, opts: Pick<DirectoryClientOptions, 'tls'> = {}): (id: string) => Promise<Client<S> | undefined> {
  const byUrl = new Map<string, Client<S>>();
  return async (id) => {
    const a = directory.list(tier).find((x) => x.id === id);
    return a ? clientForUrl(byUrl, a.url, tier, service, opts.tls) : undefined;
  };
}

function clientForUrl<S extends DescService>(cache: Map<string, Client<S>>, url: string, tier: string, service: S, tls: TlsCredentials | undefined): Client<S> {
  let c = cache.get(url);
  if (!c) {
    if (!/^(tcp|http):\/\//.test(url)) throw new UnavailableError(`announced url "${url}" is not tcp://`);
    // Directory tier names are the roles their certificates name (both worker backends announce as "worker").
    c = createKilnClient(service, createNodeTransport(url, { tls, serverRoles: [tier as TierRole] }));
    cache.set(url, c);
  }
  return c;
}

/**
 * A client that resolves its target on each call (e.g. through the
 * directory), so a tier can start before the tiers it calls.
 */
export function lazyClient<S extends DescService>(service: S, get: () => Promise<Client<S>>): Client<S> {
  const out: Record<string, unknown> = {};
  for (const method of service.methods) {
    const name = method.localName;
    const call = async (...args: unknown[]) => ((await get()) as Record<string, (...a: unknown[]) => unknown>)[name]!(...args);
    out[name] =
      method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming'
        ? async function* (...args: unknown[]) {
            yield* (await call(...args)) as AsyncIterable<unknown>;
          }
        : call;
  }
  return out as Client<S>;
}

/** The frontend names an announced frontend tier serves (its label; an older one without it serves the Dockerfile frontend). */
export function frontendNamesOf(a: ServiceAnnouncement): string[] {
  return (a.labels[FRONTEND_NAMES_LABEL] ?? DOCKERFILE_FRONTEND).split(',').map((n) => n.trim()).filter(Boolean);
}

/**
 * A client of a frontend tier serving `name`, found through the directory
 * (instances serving it take turns). The built-in Dockerfile frontend is
 * waited for up to `timeoutMs` (default 30000), as any tier; another name
 * only briefly (`pluggableWaitMs`, default 3000, for a directory still
 * filling), then NotFoundError lists the names the cluster offers.
 */
export function directoryFrontends<S extends DescService>(
  directory: ServiceDirectory,
  service: S,
  opts: DirectoryClientOptions & { pluggableWaitMs?: number } = {},
): (name: string) => Promise<Client<S>> {
  const byUrl = new Map<string, Client<S>>();
  let turn = 0;
  return async (name) => {
    const waitMs = name === DOCKERFILE_FRONTEND ? (opts.timeoutMs ?? 30_000) : (opts.pluggableWaitMs ?? 3_000);
    const deadline = Date.now() + waitMs;
    for (;;) {
      const all = directory.list('frontend');
      const serving = all.filter((a) => frontendNamesOf(a).includes(name));
      if (serving.length > 0) return clientForUrl(byUrl, serving[turn++ % serving.length]!.url, 'frontend', service, opts.tls);
      if (Date.now() >= deadline) {
        const offered = [...new Set(all.flatMap(frontendNamesOf))].sort();
        throw new NotFoundError(`no frontend serves "${name}" (this cluster offers: ${offered.join(', ') || 'none'})`, { frontend: name });
      }
      await sleep(Math.min(200, Math.max(1, deadline - Date.now())));
    }
  };
}
