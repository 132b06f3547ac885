import type { control } from '@kiln/api';
import { isRemotePeer, KilnError, type Peer } from '@kiln/common';

/**
 * A `type=local` cache export or import names a path on the daemon's host:
 * the solver writes (as root) or reads there. Only a client on the daemon's
 * own unix socket may ask for that; a TCP client (even an authenticated one)
 * could otherwise make the daemon write root-owned files anywhere.
 */
export function refuseDaemonSidePaths(req: control.SolveRequest, peer: Peer | undefined): void {
  if (!isRemotePeer(peer)) return;
  for (const [field, flag, entries, attr] of [
    ['cache_exports', '--cache-to', req.cacheExports, 'dest'],
    ['cache_imports', '--cache-from', req.cacheImports, 'src'],
  ] as const) {
    const local = entries.find((e) => e.type === 'local');
    if (local) {
      throw new KilnError(
        'permission_denied',
        `${flag} type=local,${attr}=${local.attrs[attr] ?? ''} names a path on the daemon's host, which only a client on the daemon's unix socket may use; over TCP use type=registry`,
        { field },
      );
    }
  }
}
