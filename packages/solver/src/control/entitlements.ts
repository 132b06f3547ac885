import { llb } from '@kiln/api';
import { InvalidArgumentError, KilnError } from '@kiln/common';
import type { ParsedDefinition } from '@kiln/llb';

/** Entitlements a build may be granted (`kiln build --allow`, daemon `entitlements`). */
export const KNOWN_ENTITLEMENTS: readonly string[] = ['security.insecure', 'network.host'];

/**
 * The entitlements a build gets: what it asked for (`--allow`), each of which
 * the daemon's policy must permit. Asking for one the daemon does not permit
 * fails the build before anything runs (BuildKit's wording).
 */
export function grantEntitlements(requested: readonly string[], permitted: ReadonlySet<string>): ReadonlySet<string> {
  const granted = new Set<string>();
  for (const e of requested) {
    if (!KNOWN_ENTITLEMENTS.includes(e)) throw new InvalidArgumentError(`unknown entitlement "${e}" (one of ${KNOWN_ENTITLEMENTS.join(', ')})`, 'entitlements');
    if (!permitted.has(e)) {
      throw new KilnError('permission_denied', `granting entitlement ${e} is not allowed by build daemon configuration (add "${e}" to entitlements in the daemon config)`, { entitlement: e });
    }
    granted.add(e);
  }
  return granted;
}

/**
 * Checks every op of the definitions against the granted entitlements before
 * anything is resolved, so a result cached by an entitled build is never
 * handed to one that was not granted the entitlement. Throws
 * `permission_denied` naming the entitlement and the op (details.digest:
 * the solver adds its Dockerfile line).
 */
export function checkDefinitionEntitlements(defs: readonly ParsedDefinition[], granted: ReadonlySet<string>): void {
  for (const def of defs) {
    for (const [digest, parsed] of def.ops) {
      for (const e of entitlementsOf(parsed.op)) {
        if (granted.has(e)) continue;
        const what = e === 'security.insecure' ? 'RUN --security=insecure' : 'RUN --network=host';
        throw new KilnError('permission_denied', `${e} is not allowed: ${what} needs --allow ${e} (and a daemon that permits it)`, { entitlement: e, digest });
      }
    }
  }
}

/** The entitlements an op needs: an exec op in insecure security mode, or on the host network. */
export function entitlementsOf(op: llb.Op): string[] {
  if (op.op.case !== 'exec') return [];
  const out: string[] = [];
  if (op.op.value.security === llb.SecurityMode.INSECURE) out.push('security.insecure');
  if (op.op.value.network === llb.NetMode.HOST) out.push('network.host');
  return out;
}
