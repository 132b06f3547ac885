import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { dirSharedKey, sessionKeyFile } from './shared-key.js';

describe('dirSharedKey', () => {
  const dirs: string[] = [];
  const temp = () => {
    const d = mkdtempSync(join(tmpdir(), 'kiln-shared-key-'));
    dirs.push(d);
    return d;
  };
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('creates the secret (mode 0600, parents 0700) and gives one key per directory', () => {
    const state = temp();
    const keyFile = sessionKeyFile({ XDG_STATE_HOME: join(state, 'a', 'b') });
    const ctxA = temp();
    const ctxB = temp();
    const k1 = dirSharedKey(ctxA, keyFile);
    expect(k1).toMatch(/^[0-9a-f]{64}$/);
    expect(dirSharedKey(ctxA, keyFile)).toBe(k1);
    expect(dirSharedKey(ctxB, keyFile)).not.toBe(k1);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(statSync(join(state, 'a')).mode & 0o777).toBe(0o700);
  });

  it('another secret gives other keys for the same directory', () => {
    const ctx = temp();
    const k1 = dirSharedKey(ctx, join(temp(), 'kiln', 'session-key'));
    const k2 = dirSharedKey(ctx, join(temp(), 'kiln', 'session-key'));
    expect(k1).not.toBe(k2);
  });

  it('returns no key (full transfer) when the secret cannot be created, without hanging', () => {
    // Node's recursive mkdir never returns under /proc; the CLI must go on without a key.
    expect(dirSharedKey(temp(), '/proc/kiln-no-such-dir/kiln/session-key')).toBe('');
  });
});
