import { create, createFileRegistry, type DescService } from '@bufbuild/protobuf';
import { FieldDescriptorProto_Label, FieldDescriptorProto_Type, FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { describe, expect, it } from 'vitest';
import { createChannel } from '../channel.js';
import { createKilnClient } from '../errors/connect.js';
import { KilnError } from '../errors/errors.js';
import { createDirectTransport } from './direct-transport.js';
import { createInMemoryTransport, type Routes } from './transport.js';

// A small service built at runtime (common does not depend on @kiln/api).
const file = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: 'direct_test.proto',
    package: 'kiln.test',
    syntax: 'proto3',
    messageType: [
      {
        name: 'Chunk',
        field: [
          { name: 'data', jsonName: 'data', number: 1, type: FieldDescriptorProto_Type.BYTES, label: FieldDescriptorProto_Label.OPTIONAL },
          { name: 'n', jsonName: 'n', number: 2, type: FieldDescriptorProto_Type.INT64, label: FieldDescriptorProto_Label.OPTIONAL },
        ],
      },
    ],
    service: [
      {
        name: 'Echo',
        method: [
          { name: 'Unary', inputType: '.kiln.test.Chunk', outputType: '.kiln.test.Chunk' },
          { name: 'Server', inputType: '.kiln.test.Chunk', outputType: '.kiln.test.Chunk', serverStreaming: true },
          { name: 'Client', inputType: '.kiln.test.Chunk', outputType: '.kiln.test.Chunk', clientStreaming: true },
          { name: 'Bidi', inputType: '.kiln.test.Chunk', outputType: '.kiln.test.Chunk', clientStreaming: true, serverStreaming: true },
        ],
      },
    ],
  }),
  () => undefined,
);
const Echo = file.getService('kiln.test.Echo') as DescService;
interface Chunk {
  data: Uint8Array;
  n: bigint;
}
type EchoClient = {
  unary(req: Partial<Chunk>, opts?: { signal?: AbortSignal }): Promise<Chunk>;
  server(req: Partial<Chunk>, opts?: { signal?: AbortSignal }): AsyncIterable<Chunk>;
  client(reqs: AsyncIterable<Partial<Chunk>>): Promise<Chunk>;
  bidi(reqs: AsyncIterable<Partial<Chunk>>): AsyncIterable<Chunk>;
};

const big = new Uint8Array(1 << 20).fill(7);
const state = { serverFinally: false, serverSignalAborted: false, unarySignal: undefined as AbortSignal | undefined, release: () => undefined as void };

const routes: Routes = (r) => {
  r.service(Echo, {
    unary(req: Chunk, ctx: { signal: AbortSignal }) {
      state.unarySignal = ctx.signal;
      if (req.n === 404n) throw new KilnError('not_found', 'no such blob', { digest: 'sha256:abc' });
      if (req.n === 1n) return new Promise(() => undefined); // never answers: the client's abort must end the call
      req.data[0] = 9; // mutating the request must not reach the caller
      return { data: req.data, n: req.n + 1n };
    },
    async *server(req: Chunk, ctx: { signal: AbortSignal }) {
      state.serverFinally = false;
      try {
        for (let i = 0n; i < req.n; i++) yield { data: big, n: i };
        if (req.n === 0n) throw new KilnError('failed_precondition', 'empty', { field: 'n' });
      } finally {
        state.serverFinally = true;
        state.serverSignalAborted = ctx.signal.aborted;
      }
    },
    async client(reqs: AsyncIterable<Chunk>) {
      let n = 0n;
      let bytes = 0;
      for await (const r of reqs) {
        n += r.n;
        bytes += r.data.length;
      }
      return { n, data: new Uint8Array(bytes) };
    },
    async *bidi(reqs: AsyncIterable<Chunk>) {
      for await (const r of reqs) yield { data: r.data, n: r.n * 2n };
    },
  } as never);
};

describe.each([
  ['direct', createDirectTransport],
  ['router (reference)', createInMemoryTransport],
])('%s transport', (name, make) => {
  const client = createKilnClient(Echo, make(routes)) as unknown as EchoClient;

  it('answers unary calls without sharing the request with the handler', async () => {
    const data = new Uint8Array([1, 2, 3]);
    const res = await client.unary({ data, n: 41n });
    expect(res.n).toBe(42n);
    expect([...res.data]).toEqual([9, 2, 3]);
    expect([...data]).toEqual([1, 2, 3]);
    // The call is over: the handler's signal says so (what its cleanups wait for), with an AbortError as reason.
    expect(state.unarySignal?.aborted).toBe(true);
    expect(state.unarySignal?.reason).toMatchObject({ name: 'AbortError' });
  });

  it('carries KilnErrors with their code and details', async () => {
    await expect(client.unary({ n: 404n })).rejects.toMatchObject({ code: 'not_found', message: 'no such blob', details: { digest: 'sha256:abc' } });
    await expect(async () => {
      for await (const _ of client.server({ n: 0n })) void _;
    }).rejects.toMatchObject({ code: 'failed_precondition', details: { field: 'n' } });
  });

  it('streams in both directions', async () => {
    const got: Chunk[] = [];
    for await (const c of client.server({ n: 3n })) got.push(c);
    expect(got.map((c) => c.n)).toEqual([0n, 1n, 2n]);
    expect(got.every((c) => c.data.length === big.length && c.data[100] === 7)).toBe(true);
    if (name === 'direct') expect(got[0]!.data).toBe(big); // no copy of bytes fields

    async function* three() {
      for (let i = 1n; i <= 3n; i++) yield { n: i, data: new Uint8Array(10) };
    }
    await expect(client.client(three())).resolves.toMatchObject({ n: 6n });
    const echoed: bigint[] = [];
    for await (const c of client.bidi(three())) echoed.push(c.n);
    expect(echoed).toEqual([2n, 4n, 6n]);
  });

  it("ends the call and the handler when the client's signal aborts", async () => {
    const stop = new AbortController();
    const stream = client.server({ n: 100n }, { signal: stop.signal })[Symbol.asyncIterator]();
    expect((await stream.next()).value).toMatchObject({ n: 0n });
    stop.abort();
    await expect(stream.next()).rejects.toMatchObject({ code: 'canceled' });
    if (name === 'direct') {
      // The router transport leaves the handler suspended; the direct one returns it (its finally runs).
      await new Promise((r) => setTimeout(r, 20));
      expect(state.serverFinally).toBe(true);
      expect(state.serverSignalAborted).toBe(true);
    }

    const abort = new AbortController();
    const call = client.unary({ n: 1n }, { signal: abort.signal });
    setTimeout(() => abort.abort(), 10);
    await expect(call).rejects.toMatchObject({ code: 'canceled' });

    const input = createChannel<Partial<Chunk>>();
    void input.push({ n: 5n, data: new Uint8Array(1) });
    const it = client.bidi(input)[Symbol.asyncIterator]();
    expect((await it.next()).value).toMatchObject({ n: 10n });
    input.end();
    expect((await it.next()).done).toBe(true);
  });
});
