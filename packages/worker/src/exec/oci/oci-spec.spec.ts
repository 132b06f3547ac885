import type { ExecSpec } from '../../executor.js';
import { ociSpec } from './oci-spec.js';

function spec(over: Partial<ExecSpec>): ExecSpec {
  return {
    rootfs: '/tmp/rootfs',
    readonlyRootfs: false,
    mounts: [],
    process: { args: ['/bin/true'], env: [], cwd: '/', user: { uid: 0, gid: 0, additionalGids: [0] } },
    network: 'sandbox',
    hostname: 'kiln',
    security: 'sandbox',
    rlimits: [],
    ...over,
  };
}

function networkNamespaces(config: Record<string, unknown>): unknown[] {
  const linux = config.linux as { namespaces: { type: string }[] };
  return linux.namespaces.filter((n) => n.type === 'network');
}

describe('ociSpec network namespace', () => {
  it('joins the worker-wired namespace of a sandboxed step by path', () => {
    expect(networkNamespaces(ociSpec(spec({ networkNamespace: '/var/lib/kiln/exec/netns/abc' })))).toEqual([{ type: 'network', path: '/var/lib/kiln/exec/netns/abc' }]);
  });

  it('gives a fresh namespace without a path, and none to a host-network step', () => {
    expect(networkNamespaces(ociSpec(spec({})))).toEqual([{ type: 'network' }]);
    expect(networkNamespaces(ociSpec(spec({ network: 'none', networkNamespace: '/x' })))).toEqual([{ type: 'network' }]);
    expect(networkNamespaces(ociSpec(spec({ network: 'host', networkNamespace: '/x' })))).toEqual([]);
  });
});
