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

describe('ociSpec /dev/shm', () => {
  const shmOptions = (config: Record<string, unknown>) => (config.mounts as { destination: string; options: string[] }[]).find((m) => m.destination === '/dev/shm')!.options;
  it('is 64 MiB by default and the step\'s shmSizeBytes when set (--shm-size)', () => {
    expect(shmOptions(ociSpec(spec({})))).toContain('size=65536k');
    const sized = shmOptions(ociSpec(spec({ shmSizeBytes: 128 * 1024 * 1024 })));
    expect(sized.filter((o) => o.startsWith('size='))).toEqual(['size=134217728']);
  });
});
