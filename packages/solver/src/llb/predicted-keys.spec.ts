import { execState, FileChain, image, local, marshal, parseDefinition } from '@kiln/llb';
import { describe, expect, it } from 'vitest';
import { opCacheKey } from './cache-keys.js';
import { predictedCacheKeys } from './predicted-keys.js';

describe('predictedCacheKeys', () => {
  // FROM alpine; RUN a; COPY . /app; RUN b
  const base = image('alpine:3.20@sha256:' + 'a'.repeat(64));
  const runA = execState(base, ['sh', '-c', 'a'], {}, { description: 'RUN a' });
  const copied = FileChain.start().copy(local('context'), '/', '/app').apply(runA, { description: 'COPY . /app' });
  const runB = execState(copied, ['sh', '-c', 'b'], {}, { description: 'RUN b' });
  const def = parseDefinition(marshal(runB));
  const op = (kind: string, text?: string) =>
    [...def.ops.values()].find((o) => o.op.op.case === kind && (!text || JSON.stringify(o.op.op.value, (_, v) => (typeof v === 'bigint' ? String(v) : v)).includes(text)))!;

  it('keys the leading chain from the image source as runVertex will (the op with its inputs\' keys)', () => {
    const keys = predictedCacheKeys(def, undefined);
    const imageKey = opCacheKey(op('source', 'docker-image'), []);
    const runAKey = opCacheKey(op('exec', '"a"'), [imageKey]);
    expect(keys).toEqual([imageKey, runAKey]);
  });

  it('stops at the local source and at what reads selected paths of an input (their keys need results)', () => {
    const keys = predictedCacheKeys(def, undefined);
    expect(keys).toHaveLength(2);
    expect(keys).not.toContain(opCacheKey(op('exec', '"b"'), ['x']));
  });

  it('leaves out steps that bypass the cache, still keying what is above them', () => {
    const keys = predictedCacheKeys(def, '');
    expect(keys).toEqual([]);
    const imageOnly = parseDefinition(marshal(execState(base, ['true'])));
    const [img] = predictedCacheKeys(imageOnly, undefined);
    expect(img).toBe(opCacheKey(op('source', 'docker-image'), []));
  });
});
