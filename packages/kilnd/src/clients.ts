import type { DescService } from '@bufbuild/protobuf';
import type { Client } from '@connectrpc/connect';
import type { ServiceDirectory } from '@kiln/bus';
import { createKilnClient, createNodeTransport, UnavailableError, type TlsCredentials } from '@kiln/common';
import { roleOfTier } from './access.js';

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
    c = createKilnClient(service, createNodeTransport(url, { tls, serverRoles: [roleOfTier(tier)] }));
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
