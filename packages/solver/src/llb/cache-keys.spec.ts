import { execState, marshal, ociLayout, parseDefinition, State, type ParsedOp } from '@kiln/llb';
import { describe, expect, it } from 'vitest';
import { opCacheKey } from './cache-keys.js';

function sourceOp(ref: string): ParsedOp {
  const def = parseDefinition(marshal(ociLayout(ref, { platform: { os: 'linux', architecture: 'amd64' } })));
  return [...def.ops.values()].find((o) => o.op.op.case === 'source')!;
}

describe('opCacheKey of oci-layout sources', () => {
  const m1 = `sha256:${'1'.repeat(64)}`;
  const m2 = `sha256:${'2'.repeat(64)}`;

  it('is the manifest digest: the session store does not count, another manifest does', () => {
    expect(opCacheKey(sourceOp(`oci-a@${m1}`), [])).toBe(opCacheKey(sourceOp(`oci-b@${m1}`), []));
    expect(opCacheKey(sourceOp(`oci-a@${m1}`), [])).not.toBe(opCacheKey(sourceOp(`oci-a@${m2}`), []));
  });

  it('keeps an unpinned layout reference as it is', () => {
    expect(opCacheKey(sourceOp('oci-a:v1'), [])).not.toBe(opCacheKey(sourceOp('oci-b:v1'), []));
  });
});

describe('opCacheKey of exec ops', () => {
  function execOp(env: string[], proxyEnv?: { httpProxy?: string; noProxy?: string }): ParsedOp {
    const def = parseDefinition(marshal(execState(State.scratch(), ['/bin/true'], { env, proxyEnv })));
    return [...def.ops.values()].find((o) => o.op.op.case === 'exec')!;
  }
  const key = (op: ParsedOp) => opCacheKey(op, op.op.inputs.map((i) => i.digest));

  it('leaves the proxy settings out (BuildKit), while the env counts', () => {
    const plain = execOp(['A=1']);
    expect(plain.digest).not.toBe(execOp(['A=1'], { httpProxy: 'http://p:3128' }).digest);
    expect(key(execOp(['A=1'], { httpProxy: 'http://p:3128' }))).toBe(key(plain));
    expect(key(execOp(['A=1'], { httpProxy: 'http://q:3128', noProxy: 'x' }))).toBe(key(plain));
    expect(key(execOp(['A=2']))).not.toBe(key(plain));
  });

  it('leaves the op it keys as it was (inputs and proxy settings are replaced in copies)', () => {
    const base = ociLayout('oci-a:v1', { platform: { os: 'linux', architecture: 'amd64' } });
    const def = parseDefinition(marshal(execState(base, ['/bin/true'], { env: ['A=1'], proxyEnv: { httpProxy: 'http://p:3128' } })));
    const op = [...def.ops.values()].find((o) => o.op.op.case === 'exec')!;
    const input = op.op.inputs[0]!.digest;
    const other = opCacheKey(op, [`sha256:${'1'.repeat(64)}`]);
    expect(other).not.toBe(key(op));
    expect(op.op.inputs[0]!.digest).toBe(input);
    expect(op.op.op.case === 'exec' && op.op.op.value.meta?.proxyEnv?.httpProxy).toBe('http://p:3128');
  });
});
