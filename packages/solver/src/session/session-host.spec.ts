import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { session } from '@kiln/api';
import { createChannel, silentLogger } from '@kiln/common';
import { describe, expect, it } from 'vitest';
import { SessionHost } from './session-host.js';

type ReqMsg = MessageInitShape<typeof session.AttachRequestSchema>['msg'];

/** Attaches a fake client that answers calls with `answer`. */
function attachFake(host: SessionHost, id: string, answer: (msg: session.AttachResponse, send: (r: ReqMsg) => void) => void) {
  const requests = createChannel<session.AttachRequest>();
  const send = (msg: ReqMsg) => requests.push(create(session.AttachRequestSchema, { msg }));
  send({ case: 'hello', value: { sessionId: id, dirs: [{ name: 'context' }], outputs: [{ id: 'o1', kind: 'dir' }] } });
  const responses = host.attach(requests);
  const written: Uint8Array[] = [];
  const done = (async () => {
    for await (const msg of responses) {
      if (msg.msg.case === 'writeData') written.push(msg.msg.value.data);
      answer(msg, send);
    }
  })();
  return { requests, written, done };
}

describe('SessionHost', () => {
  it('relays fetch, read and write calls over the attach stream', async () => {
    const host = new SessionHost(silentLogger());
    const client = attachFake(host, 's1', (msg, send) => {
      switch (msg.msg.case) {
        case 'fetch':
          send({ case: 'data', value: { callId: msg.msg.value.callId, data: new TextEncoder().encode(msg.msg.value.includePatterns.join(',')) } });
          send({ case: 'done', value: { callId: msg.msg.value.callId } });
          return;
        case 'read':
          if (msg.msg.value.path === 'Dockerfile') send({ case: 'data', value: { callId: msg.msg.value.callId, data: new TextEncoder().encode('FROM scratch') } });
          send({ case: 'done', value: { callId: msg.msg.value.callId, found: msg.msg.value.path === 'Dockerfile' } });
          return;
        case 'writeEnd':
          send({ case: 'done', value: { callId: msg.msg.value.callId, bytes: 6n } });
          return;
        default:
      }
    });
    const chunks: Uint8Array[] = [];
    for await (const c of host.fetch('s1', { dirName: 'context', includePatterns: ['a', 'b'], excludePatterns: [], followPaths: [] })) chunks.push(c);
    expect(Buffer.concat(chunks).toString()).toBe('a,b');
    expect(Buffer.from((await host.read('s1', 'context', 'Dockerfile', 100))!).toString()).toBe('FROM scratch');
    expect(await host.read('s1', 'context', 'nope', 100)).toBeUndefined();
    async function* data() {
      yield new TextEncoder().encode('abc');
      yield new TextEncoder().encode('def');
    }
    expect(await host.write('s1', 'o1', data())).toBe(6);
    expect(Buffer.concat(client.written).toString()).toBe('abcdef');
    await expect(host.read('s1', 'elsewhere', 'x', 1)).rejects.toMatchObject({ code: 'not_found' });
    client.requests.end();
    await client.done;
  });

  it('carries the client error of a call', async () => {
    const host = new SessionHost(silentLogger());
    const client = attachFake(host, 's2', (msg, send) => {
      if (msg.msg.case === 'fetch') send({ case: 'done', value: { callId: msg.msg.value.callId, error: 'permission denied: a', errorCode: 'permission_denied' } });
    });
    const run = async () => {
      for await (const _ of host.fetch('s2', { dirName: 'context', includePatterns: [], excludePatterns: [], followPaths: [] })) {
        // nothing
      }
    };
    await expect(run()).rejects.toMatchObject({ code: 'permission_denied', message: 'permission denied: a' });
    client.requests.end();
    await client.done;
  });

  it('fails pending calls when the client goes away, and waits for late attaches', async () => {
    const host = new SessionHost(silentLogger());
    const late = host.read('s3', 'context', 'x', 10);
    const client = attachFake(host, 's3', () => {
      client.requests.end();
    });
    await expect(late).rejects.toMatchObject({ code: 'unavailable' });
    await client.done;
    await expect(host.waitFor('never', undefined, 20)).rejects.toMatchObject({ code: 'unavailable' });
  });
});
