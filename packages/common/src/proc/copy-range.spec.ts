import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { copyFileRange } from './copy-range.js';

describe('copyFileRange', () => {
  let dir: string;
  const data = randomBytes(3 * 1024 * 1024 + 123);
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'kiln-copy-range-'));
    await writeFile(path.join(dir, 'src'), data);
  });
  afterAll(async () => {
    delete process.env.KILN_COPY_FILE_RANGE;
    await rm(dir, { recursive: true, force: true });
  });

  for (const kernel of [true, false]) {
    it(`copies a range between offsets, leaving the bytes around it alone (${kernel ? 'copy_file_range' : 'user space'})`, async () => {
      if (kernel) delete process.env.KILN_COPY_FILE_RANGE;
      else process.env.KILN_COPY_FILE_RANGE = '0';
      const destPath = path.join(dir, `dest-${kernel}`);
      await writeFile(destPath, Buffer.alloc(600, 0x61));
      const src = await open(path.join(dir, 'src'), 'r');
      const dest = await open(destPath, 'r+');
      try {
        const n = await copyFileRange(src, 1000, dest, 512, data.length - 1000 - 77);
        expect(n).toBe(data.length - 1000 - 77);
        // Past the end of the source: only what is there.
        const tail = await copyFileRange(src, data.length - 10, dest, 512 + n, 50);
        expect(tail).toBe(10);
      } finally {
        await src.close();
        await dest.close();
      }
      const out = await readFile(destPath);
      expect(out.length).toBe(512 + data.length - 1000 - 77 + 10);
      expect(out.subarray(0, 512).equals(Buffer.alloc(512, 0x61))).toBe(true);
      expect(out.subarray(512, 512 + data.length - 1077).equals(data.subarray(1000, data.length - 77))).toBe(true);
      expect(out.subarray(-10).equals(data.subarray(-10))).toBe(true);
    });
  }

  it('stops when cancelled', async () => {
    const src = await open(path.join(dir, 'src'), 'r');
    const dest = await open(path.join(dir, 'dest-cancel'), 'w');
    try {
      await expect(copyFileRange(src, 0, dest, 0, 100, AbortSignal.abort())).rejects.toMatchObject({ name: 'AbortError' });
    } finally {
      await src.close();
      await dest.close();
    }
  });
});
