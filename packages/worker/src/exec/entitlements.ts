import { llb } from '@kiln/api';
import { KilnError } from '@kiln/common';
import type { Entitlement } from '../worker.js';

/** The entitlements an exec op needs: insecure security mode, host network. */
export function entitlementsOf(exec: llb.ExecOp): Entitlement[] {
  const out: Entitlement[] = [];
  if (exec.security === llb.SecurityMode.INSECURE) out.push('security.insecure');
  if (exec.network === llb.NetMode.HOST) out.push('network.host');
  return out;
}

/**
 * Throws `permission_denied` (details.entitlement) unless every entitlement
 * the op needs was granted by the build (`--allow`) and is permitted by the
 * daemon (`entitlements` in its config).
 */
export function checkEntitlements(exec: llb.ExecOp, granted: readonly string[], allowed: ReadonlySet<Entitlement>): void {
  for (const e of entitlementsOf(exec)) {
    const what = e === 'security.insecure' ? 'RUN --security=insecure' : 'RUN --network=host';
    if (!allowed.has(e)) {
      throw new KilnError('permission_denied', `${what} needs the entitlement ${e}, which this daemon does not permit (add "${e}" to entitlements in the daemon config)`, { entitlement: e });
    }
    if (!granted.includes(e)) {
      throw new KilnError('permission_denied', `${what} needs the entitlement ${e}, which the build was not granted (pass --allow ${e})`, { entitlement: e });
    }
  }
}
