import type { Transport } from '@connectrpc/connect';

/**
 * A transport bound later: tiers in one process need each other's clients
 * before the shared router exists. Calls made before `bind` fail.
 */
export function createDeferredTransport(): Transport & { bind(t: Transport): void } {
  let target: Transport | undefined;
  const get = () => {
    if (!target) throw new Error('transport used before it was bound');
    return target;
  };
  return {
    bind(t) {
      target = t;
    },
    unary: (...args) => get().unary(...args),
    stream: (...args) => get().stream(...args),
  };
}
