import { scanFilesystem, type DirEntry, type FileAccess } from './scanner.js';
import { toSpdxDocument } from './spdx.js';

/** An in-memory filesystem: file paths to contents; directories implied. */
function memoryFs(files: Record<string, string>): FileAccess & { listed: string[] } {
  const listed: string[] = [];
  return {
    listed,
    async readFile(p) {
      return files[p] === undefined ? undefined : Buffer.from(files[p]);
    },
    async readDir(dir) {
      listed.push(dir);
      const prefix = dir === '/' ? '/' : `${dir}/`;
      const out = new Map<string, DirEntry>();
      for (const p of Object.keys(files)) {
        if (!p.startsWith(prefix)) continue;
        const rest = p.slice(prefix.length).split('/');
        out.set(rest[0]!, { name: rest[0]!, isDirectory: rest.length > 1 });
      }
      return out.size > 0 ? [...out.values()] : undefined;
    },
  };
}

const DPKG = `Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u4
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Description: GNU C Library
 shared libraries

Package: gone
Status: deinstall ok config-files
Version: 1.0

Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b2
`;

describe('scanFilesystem', () => {
  it('finds dpkg, status.d, apk, npm (scoped, nested) and python packages with purls', async () => {
    const fs = memoryFs({
      '/etc/os-release': 'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
      '/var/lib/dpkg/status': DPKG,
      '/var/lib/dpkg/status.d/base-files': 'Package: base-files\nVersion: 12.4\nArchitecture: amd64\n',
      '/var/lib/dpkg/status.d/base-files.md5sums': 'x',
      '/lib/apk/db/installed': 'C:Q1x\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\no:musl\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\nL:GPL-2.0-only\n',
      '/app/node_modules/left-pad/package.json': JSON.stringify({ name: 'left-pad', version: '1.3.0', license: 'WTFPL' }),
      '/app/node_modules/@scope/util/package.json': JSON.stringify({ name: '@scope/util', version: '2.0.0', author: { name: 'A' } }),
      '/app/node_modules/@scope/util/node_modules/dep/package.json': JSON.stringify({ name: 'dep', version: '0.1.0' }),
      '/app/node_modules/.bin/x': '',
      '/usr/lib/python3/dist-packages/Flask_Login-0.6.3.dist-info/METADATA': 'Metadata-Version: 2.1\nName: Flask_Login\nVersion: 0.6.3\nLicense: MIT\n\nbody: not a header\n',
      '/proc/1/node_modules/evil/package.json': JSON.stringify({ name: 'evil', version: '6.6.6' }),
    });
    const scan = await scanFilesystem(fs);
    expect(scan.packages.map((p) => p.purl)).toEqual([
      'pkg:apk/debian/busybox@1.36.1-r5?arch=x86_64&distro=debian-12',
      'pkg:apk/debian/musl@1.2.4-r2?arch=x86_64&distro=debian-12',
      'pkg:deb/debian/base-files@12.4?arch=amd64&distro=debian-12',
      'pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12',
      'pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc',
      'pkg:npm/%40scope/util@2.0.0',
      'pkg:npm/dep@0.1.0',
      'pkg:npm/left-pad@1.3.0',
      'pkg:pypi/flask-login@0.6.3',
    ]);
    expect(scan.packages.find((p) => p.name === 'libc6')).toMatchObject({ location: '/var/lib/dpkg/status', supplier: 'GNU Libc Maintainers <debian-glibc@lists.debian.org>', source: 'glibc' });
    expect(fs.listed).not.toContain('/proc');
    expect(scan.truncated).toBe(false);
  });

  it('stops the walk at maxDirs and says so', async () => {
    const files: Record<string, string> = {};
    for (let i = 0; i < 50; i++) files[`/d${i}/e/f`] = '';
    expect((await scanFilesystem(memoryFs(files), { maxDirs: 10 })).truncated).toBe(true);
  });
});

describe('toSpdxDocument', () => {
  it('is SPDX 2.3 with one described package per find, purl refs, and the same output for the same input', async () => {
    const scan = await scanFilesystem(memoryFs({ '/var/lib/dpkg/status': DPKG, '/n/node_modules/a/package.json': '{"name":"a","version":"1.0.0","license":"MIT OR Apache-2.0"}' }));
    const created = new Date(0);
    const doc = toSpdxDocument(scan, { name: 'app:1', created }) as Record<string, any>;
    expect(doc).toMatchObject({ spdxVersion: 'SPDX-2.3', dataLicense: 'CC0-1.0', SPDXID: 'SPDXRef-DOCUMENT', name: 'app:1', creationInfo: { created: '1970-01-01T00:00:00Z' } });
    expect(doc.packages.map((p: any) => [p.name, p.versionInfo, p.licenseDeclared])).toEqual([
      ['bash', '5.2.15-2+b2', 'NOASSERTION'],
      ['libc6', '2.36-9+deb12u4', 'NOASSERTION'],
      ['a', '1.0.0', 'MIT OR Apache-2.0'],
    ]);
    for (const p of doc.packages) expect(p.SPDXID).toMatch(/^SPDXRef-[A-Za-z0-9.-]+$/);
    expect(doc.relationships).toHaveLength(3);
    expect(doc.packages[1].supplier).toBe('Person: GNU Libc Maintainers (debian-glibc@lists.debian.org)');
    expect(toSpdxDocument(scan, { name: 'app:1', created })).toEqual(doc);
  });
});
