import { existsSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { findNatsServer, startNatsServer } from './nats.js';
import { freePort } from './ports.js';

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

describe('freePort', () => {
  it('returns a port that can be bound', async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    const server = createServer();
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', resolve));
    await new Promise((r) => server.close(r));
  });
});

describe.skipIf(!findNatsServer())('startNatsServer (needs nats-server; skipped when it is not installed)', () => {
  it('starts with JetStream on a free loopback port and cleans up on stop', async () => {
    const server = await startNatsServer();
    expect(server.url).toBe(`nats://127.0.0.1:${server.port}`);
    expect(server.storeDir && existsSync(server.storeDir)).toBeTruthy();
    expect(await canConnect(server.port)).toBe(true);
    expect(server.logs()).toMatch(/Server is ready/);
    await server.stop();
    await server.stop(); // idempotent
    expect(existsSync(server.storeDir!)).toBe(false);
    expect(await canConnect(server.port)).toBe(false);
  });

  it('starts without JetStream', async () => {
    await using server = await startNatsServer({ jetstream: false });
    expect(server.storeDir).toBeUndefined();
    expect(server.logs()).not.toMatch(/Starting JetStream/);
  });

  it('fails clearly for a missing binary', async () => {
    await expect(startNatsServer({ binary: '/nonexistent/nats-server' })).rejects.toThrow(/failed to start/);
  });
});
