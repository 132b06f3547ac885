import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve, sep } from 'node:path';

/** Where the per-user secret behind shared keys lives: `$XDG_STATE_HOME/kiln/session-key` (default ~/.local/state). */
export function sessionKeyFile(env: NodeJS.ProcessEnv = process.env): string {
  const state = env.XDG_STATE_HOME || join(env.HOME || homedir(), '.local', 'state');
  return join(state, 'kiln', 'session-key');
}

/**
 * The shared key of a client directory (SharedDir.shared_key): an HMAC of
 * its real path under a random per-user secret, created on first use. The
 * same directory gets the same key in every build of this user, so a
 * worker can send only what changed; another user cannot guess it and
 * reuse this user's files. '' (no incremental transfer) when the secret
 * cannot be read or created.
 */
export function dirSharedKey(dir: string, keyFile = sessionKeyFile()): string {
  const secret = readOrCreateSecret(keyFile);
  if (!secret) return '';
  let real: string;
  try {
    real = realpathSync(dir);
  } catch {
    real = dir;
  }
  return createHash('sha256').update(secret).update('\0').update(real).digest('hex');
}

function readOrCreateSecret(file: string): Buffer | undefined {
  try {
    const b = readFileSync(file);
    if (b.length >= 16) return b;
  } catch {
    // created below
  }
  try {
    makeParents(dirname(file));
    const secret = randomBytes(32);
    writeFileSync(file, secret, { mode: 0o600, flag: 'wx' });
    return secret;
  } catch (err) {
    // Another process may have created it meanwhile.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      try {
        return readFileSync(file);
      } catch {
        return undefined;
      }
    }
    return undefined;
  }
}

/**
 * mkdir -p, one level at a time: Node's `mkdirSync(..., { recursive: true })`
 * never returns for some paths (under /proc it loops), and a CLI must not hang
 * because of where XDG_STATE_HOME points.
 */
function makeParents(dir: string): void {
  let path = '';
  for (const part of resolve(dir).split(sep).filter(Boolean)) {
    path += sep + part;
    try {
      mkdirSync(path, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}
