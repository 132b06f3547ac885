import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { emulatedPlatforms, nativeAndEmulated } from './emulation.js';

const entry = (state: string, interpreter: string, flags: string) =>
  `${state}\ninterpreter ${interpreter}\nflags: ${flags}\noffset 0\nmagic 7f454c46\nmask ffffffff\n`;

describe('emulatedPlatforms', () => {
  const dirs: string[] = [];
  afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

  it('lists enabled qemu handlers with a usable interpreter as OCI platforms', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'binfmt-'));
    dirs.push(dir);
    writeFileSync(path.join(dir, 'register'), '');
    writeFileSync(path.join(dir, 'status'), 'enabled\n');
    writeFileSync(path.join(dir, 'qemu-aarch64'), entry('enabled', '/nonexistent/qemu-aarch64', 'PF'));
    writeFileSync(path.join(dir, 'qemu-arm'), entry('enabled', '/nonexistent/qemu-arm', 'P'));
    writeFileSync(path.join(dir, 'qemu-riscv64'), entry('disabled', '/bin/sh', 'F'));
    writeFileSync(path.join(dir, 'qemu-s390x'), entry('enabled', '/bin/sh', ''));
    writeFileSync(path.join(dir, 'python3.11'), entry('enabled', '/usr/bin/python3.11', ''));
    expect(emulatedPlatforms(dir)).toEqual([
      { os: 'linux', architecture: 'arm64' },
      { os: 'linux', architecture: 's390x' },
    ]);
  });

  it('is empty without binfmt_misc, and never repeats the host platform', () => {
    expect(emulatedPlatforms('/nonexistent/binfmt_misc')).toEqual([]);
    const host = { os: 'linux', architecture: 'amd64' };
    expect(nativeAndEmulated(host, [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }])).toEqual([host, { os: 'linux', architecture: 'arm64' }]);
  });
});
