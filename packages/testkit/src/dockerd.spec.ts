import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { findDockerd, startDockerd } from './dockerd.js';
import { encodeTarHeader, tarPadding, tarTrailer } from '@kiln/common';

const canRun = !!findDockerd() && process.getuid?.() === 0;

describe.skipIf(!canRun)('startDockerd (needs root and dockerd from docker.io; skipped otherwise)', () => {
  it('runs a private daemon that loads and runs an image, and leaves nothing behind on stop', async () => {
    const dockerd = await startDockerd();
    try {
      expect(dockerd.env.DOCKER_HOST).toBe(`unix://${dockerd.socket}`);
      const info = await dockerd.docker(['info', '--format', '{{.DockerRootDir}}']);
      expect(info.code, info.stderr).toBe(0);
      expect(info.stdout.trim()).toBe(`${dockerd.dir}/data`);
      // A one-file image through `docker import` (stdin tar), run without network.
      const busybox = readFileSync('/bin/busybox');
      const tar = Buffer.concat([encodeTarHeader({ name: 'bin/busybox', size: busybox.length, mode: 0o755, mtime: 0 }), busybox, tarPadding(busybox.length), tarTrailer()]);
      const imported = await dockerd.docker(['import', '-c', 'CMD ["/bin/busybox","echo","hi from dockerd"]', '-', 'kiln-test/busybox:1'], { input: tar });
      expect(imported.code, imported.stderr).toBe(0);
      const run = await dockerd.docker(['run', '--rm', '--network=none', 'kiln-test/busybox:1']);
      expect(run.code, run.stderr + dockerd.logs()).toBe(0);
      expect(run.stdout).toBe('hi from dockerd\n');
    } finally {
      await dockerd.stop();
      await dockerd.stop(); // idempotent
    }
    expect(existsSync(dockerd.dir)).toBe(false);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(dockerd.dir);
  }, 120_000);
});
