import { create } from '@bufbuild/protobuf';
import { llb } from '@kiln/api';
import { digestOf, marshalOp, type ParsedDefinition, type ParsedOp } from '@kiln/llb';
import { describe, expect, it } from 'vitest';
import { opCacheKey } from '../llb/cache-keys.js';
import { checkDefinitionEntitlements, grantEntitlements } from './entitlements.js';

function execOp(security: llb.SecurityMode, network: llb.NetMode): ParsedOp {
  const op = create(llb.OpSchema, {
    inputs: [{ digest: `sha256:${'1'.repeat(64)}`, index: 0n }],
    op: { case: 'exec', value: { meta: { args: ['/bin/true'], cwd: '/' }, mounts: [{ input: 0n, dest: '/', output: 0n }], security, network } },
  });
  const bytes = marshalOp(op);
  return { digest: digestOf(bytes), bytes, op };
}

function definitionOf(...ops: ParsedOp[]): ParsedDefinition {
  return { ops: new Map(ops.map((o) => [o.digest, o])), definition: create(llb.DefinitionSchema, {}) };
}

describe('entitlements', () => {
  const insecure = execOp(llb.SecurityMode.INSECURE, llb.NetMode.UNSPECIFIED);
  const host = execOp(llb.SecurityMode.SANDBOX, llb.NetMode.HOST);
  const plain = execOp(llb.SecurityMode.SANDBOX, llb.NetMode.UNSPECIFIED);

  it('grants what the build asks for only when the daemon permits it', () => {
    expect([...grantEntitlements(['security.insecure'], new Set(['security.insecure', 'network.host']))]).toEqual(['security.insecure']);
    expect(() => grantEntitlements(['security.insecure'], new Set(['network.host']))).toThrow(
      expect.objectContaining({ code: 'permission_denied', message: expect.stringMatching(/^granting entitlement security\.insecure is not allowed by build daemon configuration/) }),
    );
    expect(() => grantEntitlements(['root'], new Set())).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
  });

  it('refuses a definition with a step needing an entitlement the build was not granted, naming the step', () => {
    expect(() => checkDefinitionEntitlements([definitionOf(plain, insecure)], new Set())).toThrow(
      expect.objectContaining({ code: 'permission_denied', message: expect.stringMatching(/^security\.insecure is not allowed/), details: expect.objectContaining({ digest: insecure.digest }) }),
    );
    expect(() => checkDefinitionEntitlements([definitionOf(plain), definitionOf(host)], new Set(['security.insecure']))).toThrow(/^network\.host is not allowed/);
    expect(() => checkDefinitionEntitlements([definitionOf(plain, insecure, host)], new Set(['security.insecure', 'network.host']))).not.toThrow();
  });

  it('keys an entitled step apart from the same step without it', () => {
    const keys = [plain, insecure, host].map((o) => opCacheKey(o, ['k']));
    expect(new Set(keys).size).toBe(3);
  });
});
