import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { control } from '@kiln/api';
import { createKilnClient, createNodeTransport, NotFoundError, serveRoutes, type KilnError } from '@kiln/common';
import { describe, expect, it } from 'vitest';
import { installLightHeaders, LightHeaders } from './light-headers.js';

describe('LightHeaders', () => {
  it('behaves like the standard Headers for what Connect does with them', () => {
    const h = new LightHeaders({ 'Content-Type': 'application/proto', 'X-A': 'y' });
    h.append('Grpc-Status', ' 0 ');
    h.append('grpc-status', '1');
    h.append('set-cookie', 'a=1');
    h.append('set-cookie', 'b=2');
    expect(h.get('content-type')).toBe('application/proto');
    expect(h.get('GRPC-STATUS')).toBe('0, 1');
    expect(h.has('Content-Type')).toBe(true);
    expect(h.get('missing')).toBeNull();
    expect([...h]).toEqual([...new Headers([...h])]);
    expect([...h.keys()]).toEqual(['content-type', 'grpc-status', 'set-cookie', 'set-cookie', 'x-a']);
    expect(h.getSetCookie()).toEqual(['a=1', 'b=2']);
    h.set('grpc-status', '2');
    h.delete('content-type');
    const seen: string[] = [];
    h.forEach((v, k) => seen.push(`${k}=${v}`));
    expect(seen).toEqual(['grpc-status=2', 'set-cookie=a=1', 'set-cookie=b=2', 'x-a=y']);
    expect(new LightHeaders(h).get('grpc-status')).toBe('2');
    expect(new LightHeaders([['A', 'b']]).get('a')).toBe('b');
    expect(() => new LightHeaders([['a']])).toThrow(TypeError);
  });

  it('replaces only the lazy global, and Connect over HTTP/2 works with it (metadata, errors)', async () => {
    const plain = { Headers: 1 };
    expect(installLightHeaders(plain)).toBe(false);
    const before = Object.getOwnPropertyDescriptor(globalThis, 'Headers')!;
    const lazy = {};
    Object.defineProperty(lazy, 'Headers', { get: () => Headers, configurable: true });
    expect(installLightHeaders(lazy)).toBe(true);
    expect((lazy as { Headers: unknown }).Headers).toBe(LightHeaders);

    Object.defineProperty(globalThis, 'Headers', { value: LightHeaders, writable: true, configurable: true });
    const sock = join(mkdtempSync(join(tmpdir(), 'kiln-headers-')), 's.sock');
    const server = await serveRoutes(`unix://${sock}`, (r) =>
      r.service(control.ControlService, {
        info: async () => ({ version: 'light' }),
        listWorkers: async () => {
          throw new NotFoundError('no such worker', { digest: 'sha256:abc' });
        },
      }),
    );
    try {
      const client = createKilnClient(control.ControlService, createNodeTransport(`unix://${sock}`));
      expect((await client.info({})).version).toBe('light');
      const err = (await client.listWorkers({}).catch((e: unknown) => e)) as KilnError;
      expect(err.code).toBe('not_found');
      expect(err.details).toMatchObject({ digest: 'sha256:abc' });
    } finally {
      await server.close();
      Object.defineProperty(globalThis, 'Headers', before);
    }
  });
});
