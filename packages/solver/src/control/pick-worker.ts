import type { llb } from '@kiln/api';
import { KilnError, UnavailableError } from '@kiln/common';
import type { ParsedDefinition } from '@kiln/llb';
import type { WorkerHandle } from './workers.js';

/** "os/arch[/variant]". */
export function formatPlatform(p: { os: string; architecture: string; variant?: string }): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/** Whether a worker platform runs binaries of `want` (a variant is only compared when both name one). */
function runs(have: llb.Platform, want: llb.Platform): boolean {
  return have.os === want.os && have.architecture === want.architecture && (!have.variant || !want.variant || have.variant === want.variant);
}

/**
 * The worker for a build of one or more definitions (one per target
 * platform): the first that can run every exec op's platform, natively or
 * emulated (workers list both in their platforms). Only exec ops bind a
 * platform: sources and file ops run anywhere, so a cross-compiling
 * Dockerfile (`FROM --platform=$BUILDPLATFORM` + COPY into the target
 * stage) needs no emulator. All of a build's ops run on one worker, since
 * refs do not move between workers.
 *
 * Throws `failed_precondition` naming the platform and carrying the first
 * exec op's digest (so the Dockerfile line is shown) when no worker fits.
 */
export function pickWorker(workers: readonly WorkerHandle[], defs: readonly ParsedDefinition[]): WorkerHandle {
  if (workers.length === 0) throw new UnavailableError('no workers are available');
  const needed = new Map<string, { platform: llb.Platform; digest: string }>();
  for (const def of defs) {
    for (const [digest, op] of def.ops) {
      const p = op.op.platform;
      if (op.op.op.case !== 'exec' || !p?.os || !p.architecture) continue;
      const key = formatPlatform(p);
      if (!needed.has(key)) needed.set(key, { platform: p, digest });
    }
  }
  const wanted = [...needed.values()];
  const match = workers.find((w) => wanted.every((n) => w.platforms.some((p) => runs(p, n.platform))));
  if (match) return match;
  const unsupported = wanted.find((n) => !workers.some((w) => w.platforms.some((p) => runs(p, n.platform))));
  const missing = unsupported ?? wanted[0]!;
  const offered = [...new Set(workers.flatMap((w) => w.platforms.map(formatPlatform)))].join(', ') || 'none';
  const reason = unsupported
    ? `no worker can run steps for platform ${formatPlatform(missing.platform)}`
    : `no one worker can run steps for all of ${wanted.map((n) => formatPlatform(n.platform)).join(', ')}`;
  throw new KilnError(
    'failed_precondition',
    `${reason} (workers offer: ${offered}); RUN for another platform needs an emulator registered with binfmt_misc (qemu-user-static) or a worker of that platform`,
    { digest: missing.digest, platform: formatPlatform(missing.platform) },
  );
}
