import { gzipSync } from 'node:zlib';
import { parseDefinition } from '@kiln/llb';
import type { llb } from '@kiln/api';
import { isArchive, loadRemoteContext } from './remote-context.js';
import type { FrontendGateway } from '../frontend.js';

/** A gateway whose results are in-memory file maps, recording what was solved. */
function fakeGateway(files: Record<string, Uint8Array>[]): FrontendGateway & { solved: llb.Definition[] } {
  const solved: llb.Definition[] = [];
  return {
    solved,
    async solve(def) {
      solved.push(def);
      return `r${solved.length}`;
    },
    async readFile(id, path, length = 0) {
      const data = files[Number(id.slice(1)) - 1]?.[path];
      return data && length > 0 ? data.subarray(0, length) : data;
    },
  };
}

const tarHeader = (name: string) => {
  const h = Buffer.alloc(512);
  h.write(name, 0, 'latin1');
  h.write('0000644\0', 100, 'latin1');
  h.write('00000000000\0', 124, 'latin1');
  h.write('ustar\0', 257, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return h;
};

describe('remote build contexts', () => {
  it('tells archives from Dockerfiles by their bytes, as BuildKit', () => {
    expect(isArchive(gzipSync(Buffer.from('x')))).toBe(true);
    expect(isArchive(Buffer.from('BZh91AY'))).toBe(true);
    expect(isArchive(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1]))).toBe(true);
    expect(isArchive(tarHeader('Dockerfile'))).toBe(true);
    const bad = tarHeader('Dockerfile');
    bad[0] = 0x41; // checksum no longer holds
    expect(isArchive(bad)).toBe(false);
    expect(isArchive(Buffer.from('FROM scratch\nCOPY . /\n'.padEnd(600, '#')))).toBe(false);
  });

  it('a git URL is one git source with BuildKit attrs; .git kept only with BUILDKIT_CONTEXT_KEEP_GIT_DIR', async () => {
    const gw = fakeGateway([{ Dockerfile: Buffer.from('FROM scratch') }]);
    const ctx = (await loadRemoteContext('https://example.com/org/repo.git#v1:app', { 'build-arg:BUILDKIT_CONTEXT_KEEP_GIT_DIR': '1' }, gw))!;
    expect(Buffer.from((await ctx.readFile('Dockerfile'))!).toString()).toBe('FROM scratch');
    const ops = [...parseDefinition(gw.solved[0]!).ops.values()];
    const src = ops.map((o) => o.op.op).find((o) => o.case === 'source')!;
    expect(src.value).toMatchObject({ identifier: 'git://example.com/org/repo.git#v1:app', attrs: { 'git.fullurl': 'https://example.com/org/repo.git', 'git.keepgitdir': 'true' } });
    expect(ctx.filename).toBeUndefined();
  });

  it('an http download: a Dockerfile is the file "context"; an archive is unpacked in a second solve', async () => {
    const text = fakeGateway([{ context: Buffer.from('FROM scratch\n') }]);
    const plain = (await loadRemoteContext('http://h/Dockerfile', {}, text))!;
    expect(plain.filename).toBe('context');
    expect(text.solved).toHaveLength(1);
    const tgz = fakeGateway([{ context: gzipSync(Buffer.from('x')) }, { Dockerfile: Buffer.from('FROM scratch') }]);
    const unpacked = (await loadRemoteContext('https://h/ctx.tar.gz', {}, tgz))!;
    expect(tgz.solved).toHaveLength(2);
    expect(unpacked.filename).toBeUndefined();
    expect(Buffer.from((await unpacked.readFile('Dockerfile'))!).toString()).toBe('FROM scratch');
  });

  it('leaves other values alone and needs a gateway for URLs', async () => {
    expect(await loadRemoteContext(undefined, {}, undefined)).toBeUndefined();
    expect(await loadRemoteContext('local:ctx', {}, undefined)).toBeUndefined();
    await expect(loadRemoteContext('https://h/x.tar', {}, undefined)).rejects.toThrow(/gateway/);
  });
});
