import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { main, warmUpForSnapshot } from './main.js';
import { warmUpBuild } from './snapshot-warmup.js';

const warmupDirs = () => readdirSync(tmpdir()).filter((n) => n.startsWith('kiln-cli-warmup-'));

describe('the start-up snapshot warm-up build', () => {
  it('runs a whole build against its in-process daemon: Dockerfile read, credentials, context diff, Solve', async () => {
    const before = warmupDirs();
    const env = { HOME: process.env.HOME, DOCKER_CONFIG: process.env.DOCKER_CONFIG, XDG_STATE_HOME: process.env.XDG_STATE_HOME };
    const r = await warmUpForSnapshot();
    expect(r.code).toBe(0);
    expect([...r.calls].sort()).toEqual(['credentials', 'fetch', 'read', 'read']);
    // Only src/b.txt differs from the daemon's manifest: its line and its 2 bytes, plus the deletion and framing.
    expect(r.contextBytes).toBeGreaterThan(2);
    expect(r.contextBytes).toBeLessThan(400);
    // The user's environment is back and the temp dir is gone.
    expect({ HOME: process.env.HOME, DOCKER_CONFIG: process.env.DOCKER_CONFIG, XDG_STATE_HOME: process.env.XDG_STATE_HOME }).toEqual(env);
    expect(warmupDirs()).toEqual(before);
  });

  it('reports a build that fails (the snapshot build then keeps no blob)', async () => {
    const failing: typeof main = async (argv, env) => main([...argv.slice(0, -1), '--bogus-flag', argv.at(-1)!], env);
    const r = await warmUpBuild(failing);
    expect(r.code).toBe(2);
    expect(r.calls).toEqual([]);
  });
});
