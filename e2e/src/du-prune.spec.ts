import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { content } from '@kiln/api';
import { createKilnClient, createNodeTransport, sha256 } from '@kiln/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnd, type Kilnd } from '@kiln/testkit';

describe('kiln du and kiln prune over the content store [topology=all-in-one]', () => {
  let daemon: Kilnd;
  beforeAll(async () => {
    daemon = await startKilnd();
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop();
  });

  it('lists blobs, prunes the unreferenced ones and keeps leased ones', async () => {
    const store = createKilnClient(content.ContentService, createNodeTransport(daemon.addr));
    const write = async (text: string) => {
      const data = new TextEncoder().encode(text);
      async function* reqs() {
        yield { msg: { case: 'header' as const, value: { ref: `e2e-${sha256(text)}`, expectedDigest: sha256(data) } } };
        yield { msg: { case: 'data' as const, value: data } };
      }
      return (await store.write(reqs())).digest;
    };
    const loose = await write('loose blob '.repeat(100));
    const kept = await write('leased blob');
    const { lease } = await store.createLease({ expiresAt: timestampFromMs(Date.now() + 3_600_000) });
    await store.addLeaseResource({ lease: lease!.id, digest: kept });

    const du = await runKiln(['du', '--addr', daemon.addr]);
    expect(du.code, du.stderr).toBe(0);
    expect(du.stdout).toContain(loose);
    expect(du.stdout).toContain(kept);
    expect(du.stdout).toMatch(/Total:\s+1\.\d+kB/);

    const prune = await runKiln(['prune', '--addr', daemon.addr]);
    expect(prune.code, prune.stderr).toBe(0);
    expect(prune.stdout).toContain(loose);
    expect(prune.stdout).not.toContain(kept);

    const after = await runKiln(['du', '--addr', daemon.addr]);
    expect(after.stdout).not.toContain(loose);
    expect(after.stdout).toContain(kept);

    const bad = await runKiln(['prune', '--addr', daemon.addr, '--filter', 'type=regular']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/unsupported prune filter "type=regular".*--filter/);
  });
});
