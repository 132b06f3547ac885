import { createServer, type IncomingMessage, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeHttpFetch } from './http-fetch.js';

interface Seen {
  method: string;
  url: string;
  auth?: string;
  body: string;
}

async function listen(handler: (req: IncomingMessage, body: string, res: import('node:http').ServerResponse) => void): Promise<{ server: Server; base: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: req.method!, url: req.url!, auth: req.headers.authorization, body });
      handler(req, body, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, base: `http://127.0.0.1:${(server.address() as { port: number }).port}`, seen };
}

describe('nodeHttpFetch (fetch over node:http, for the ports fetch refuses)', () => {
  let other: Awaited<ReturnType<typeof listen>>;
  let main: Awaited<ReturnType<typeof listen>>;

  beforeAll(async () => {
    other = await listen((_req, _body, res) => res.end('blob bytes'));
    main = await listen((req, body, res) => {
      if (req.url === '/away') res.writeHead(307, { location: `${other.base}/blob` }).end();
      else if (req.url === '/see-other') res.writeHead(303, { location: '/echo' }).end();
      else if (req.url === '/echo') res.writeHead(201, { 'x-got': `${req.method}:${body}` }).end('echoed');
      else res.writeHead(404).end();
    });
  });

  afterAll(() => {
    main.server.close();
    other.server.close();
  });

  it('follows a redirect to another origin without the Authorization header', async () => {
    const res = await nodeHttpFetch(`${main.base}/away`, { headers: { authorization: 'Bearer secret' } });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('blob bytes');
    expect(res.url).toBe(`${other.base}/blob`);
    expect(main.seen.at(-1)!.auth).toBe('Bearer secret');
    expect(other.seen.at(-1)!.auth).toBeUndefined();
  });

  it('turns a 303 after a POST into a GET without body; sends streamed bodies; HEAD has no body', async () => {
    const res = await nodeHttpFetch(`${main.base}/see-other`, { method: 'POST', body: 'form' });
    expect(res.headers.get('x-got')).toBe('GET:');
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode('chunk1,'));
        c.enqueue(new TextEncoder().encode('chunk2'));
        c.close();
      },
    });
    const put = await nodeHttpFetch(`${main.base}/echo`, { method: 'PUT', body: stream, duplex: 'half' } as RequestInit);
    expect(put.status).toBe(201);
    expect(put.headers.get('x-got')).toBe('PUT:chunk1,chunk2');
    const head = await nodeHttpFetch(`${main.base}/echo`, { method: 'HEAD' });
    expect(head.status).toBe(201);
    expect(head.body).toBeNull();
  });

  it('rejects a refused connection as fetch does, with the socket error as cause', async () => {
    const closed = await listen(() => undefined);
    closed.server.close();
    const err = await nodeHttpFetch(`${closed.base}/`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TypeError);
    expect((err as TypeError).message).toBe('fetch failed');
    expect(((err as TypeError).cause as { code?: string }).code).toBe('ECONNREFUSED');
  });
});
