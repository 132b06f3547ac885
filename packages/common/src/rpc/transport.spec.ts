import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAddress } from './address.js';
import { serveRoutes } from './transport.js';

describe('serveRoutes', () => {
  it('replaces a stale socket file but never steals a live one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-rpc-'));
    const path = join(dir, 'd.sock');
    writeFileSync(path, '');
    const first = await serveRoutes(`unix://${path}`, () => undefined);
    await expect(serveRoutes(`unix://${path}`, () => undefined)).rejects.toMatchObject({ code: 'already_exists', details: { field: '--addr' } });
    await first.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('binds a free TCP port for port 0 and reports it', async () => {
    const srv = await serveRoutes('tcp://127.0.0.1:0', () => undefined);
    expect(srv.address.kind === 'tcp' && srv.address.port).toBeGreaterThan(0);
    await srv.close();
  });
});

describe('parseAddress', () => {
  it('parses unix and tcp addresses and names the flag on error', () => {
    expect(parseAddress('unix:///run/kiln/kiln.sock')).toEqual({ kind: 'unix', path: '/run/kiln/kiln.sock' });
    expect(parseAddress('tcp://127.0.0.1:8750')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 8750 });
    expect(parseAddress('tcp://[::1]:1')).toEqual({ kind: 'tcp', host: '::1', port: 1 });
    expect(() => parseAddress('tcp://host:99999', '--listen')).toThrow(expect.objectContaining({ details: { field: '--listen' } }));
    expect(() => parseAddress('unix://rel/path')).toThrow(/absolute/);
  });
});
