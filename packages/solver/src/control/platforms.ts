import type { llb } from '@kiln/api';

/** Whether a worker platform runs binaries of `want` (a variant is only compared when both name one). */
export function runsPlatform(have: llb.Platform, want: llb.Platform): boolean {
  return have.os === want.os && have.architecture === want.architecture && (!have.variant || !want.variant || have.variant === want.variant);
}
