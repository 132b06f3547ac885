import { execFile } from 'node:child_process';

/** How long the scan of one host may take before the fetch goes on without pinned keys. */
const KEYSCAN_TIMEOUT_MS = 5000;

/** Host and port of an SSH git remote (`ssh://[USER@]HOST[:PORT]/PATH`, `USER@HOST:PATH`); undefined for other remotes. */
export function sshHostOf(url: string): { host: string; port: number } | undefined {
  const m = /^(?:ssh|git\+ssh):\/\/(?:[^@/]+@)?(\[[^\]]+\]|[^:/]+)(?::(\d+))?\//i.exec(url);
  if (m) return { host: m[1]!.replace(/^\[|\]$/g, ''), port: m[2] ? Number(m[2]) : 22 };
  const scp = !url.includes('://') ? /^[^/@]+@([^/:]+):/.exec(url) : null;
  return scp ? { host: scp[1]!, port: 22 } : undefined;
}

/**
 * Trust on first use, as BuildKit's LLB client does for SSH git sources:
 * the host's keys are scanned (`ssh-keyscan`) when the definition is made
 * and pinned in the op (`git.knownsshhosts`), so the fetch checks the host
 * key strictly against them. Best effort: a scan that fails or times out
 * gives undefined, and the fetch then checks no host key (BuildKit's rule).
 */
export function scanSshHostKeys(url: string, signal?: AbortSignal): Promise<string | undefined> {
  const target = sshHostOf(url);
  if (!target || target.host.startsWith('-')) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    execFile('ssh-keyscan', ['-T', '3', '-p', String(target.port), '--', target.host], { timeout: KEYSCAN_TIMEOUT_MS, signal }, (err, stdout) => {
      const lines = String(stdout ?? '')
        .split('\n')
        .filter((l) => l.trim() !== '' && !l.startsWith('#'));
      resolve(err && lines.length === 0 ? undefined : lines.length > 0 ? `${lines.join('\n')}\n` : undefined);
    });
  });
}
