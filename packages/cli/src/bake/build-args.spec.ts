import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compileBuildOptions, parseBuildArgs } from '../build/build-options.js';
import { envBakeFiles } from './bake-command.js';
import { contextInRemote, remoteInput } from './remote-definition.js';
import { targetBuildArgv } from './build-args.js';
import type { Target } from './target.js';

describe('a bake target as kiln build arguments', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-bake-args-'));
  writeFileSync(join(dir, 'Dockerfile'), 'FROM scratch\n');
  writeFileSync(join(dir, 'secret.txt'), 's3cret');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const ctx = { cwd: dir, workDir: join(dir, 'work'), layoutOf: (n: string) => join(dir, 'work', `layout-${n}`), linked: new Set(['base']) };
  const compile = (t: Target) => compileBuildOptions(parseBuildArgs(targetBuildArgv(t, ctx)), { cwd: dir, env: { TOKEN: 't' } });

  it('compiles every field kiln build knows, as the build command reads its flags', () => {
    const opts = compile({
      name: 'app',
      context: '.',
      dockerfile: 'Dockerfile',
      target: 'final',
      args: { A: '1', UNSET: null, COMMA: 'x,y' },
      labels: { 'org.l': 'v' },
      tags: ['app:1', 'app:2'],
      platforms: ['linux/amd64'],
      contexts: { base: 'target:base', img: 'docker-image://busybox:1' },
      'cache-from': [{ type: 'registry', attrs: { ref: 'r/app:cache' } }],
      'cache-to': [{ type: 'inline', attrs: {} }],
      secret: [{ id: 'file', src: 'secret.txt' }, { id: 'tok', env: 'TOKEN' }],
      output: [{ type: 'local', dest: 'out', attrs: {} }, { type: 'cacheonly', attrs: {} }],
      'no-cache': true,
      'no-cache-filter': ['deps'],
      network: 'none',
      'extra-hosts': { 'db.local': '10.0.0.2' },
    });
    expect(opts.contextDir).toBe(dir);
    expect(opts.dockerfile.path).toBe(join(dir, 'Dockerfile'));
    expect(opts.target).toBe('final');
    expect(opts.buildArgs).toEqual({ A: '1', COMMA: 'x,y' });
    expect(opts.labels).toEqual({ 'org.l': 'v' });
    expect(opts.tags).toEqual(['app:1', 'app:2']);
    expect(opts.platforms).toEqual(['linux/amd64']);
    expect(opts.namedContexts).toEqual([
      { name: 'base', kind: 'oci-layout', path: join(dir, 'work', 'layout-base'), tag: 'latest', store: expect.stringMatching(/^oci-layout-/) as unknown },
      { name: 'img', kind: 'ref', value: 'docker-image://busybox:1' },
    ]);
    expect(opts.cacheFrom).toEqual([{ type: 'registry', attrs: { ref: 'r/app:cache' } }]);
    expect(opts.cacheTo).toEqual([{ type: 'inline', attrs: {} }]);
    expect(opts.secrets).toEqual([
      { id: 'file', kind: 'file', path: join(dir, 'secret.txt') },
      { id: 'tok', kind: 'env', name: 'TOKEN' },
    ]);
    // cacheonly is no exporter; a local output keeps its dest.
    expect(opts.exports.map((e) => [e.type, e.output?.path])).toEqual([['local', join(dir, 'out')]]);
    expect(opts.noCache).toBe(true);
    expect(opts.noCacheFilter).toEqual(['deps']);
    expect(opts.network).toBe('none');
    expect(opts.extraHosts).toEqual([{ host: 'db.local', ip: '10.0.0.2' }]);
  });

  it('writes an inline Dockerfile to the work dir and exports a linked target to its layout', () => {
    const opts = compile({ name: 'base', context: '.', 'dockerfile-inline': 'FROM scratch\nLABEL a=b\n', output: [{ type: 'cacheonly', attrs: {} }] });
    expect(readFileSync(opts.dockerfile.path, 'utf8')).toBe('FROM scratch\nLABEL a=b\n');
    expect(opts.dockerfile.path.startsWith(join(dir, 'work'))).toBe(true);
    expect(opts.exports).toEqual([{ type: 'oci', attrs: { tar: 'false', name: 'kiln-bake/base:latest', 'session.output': 'out0' }, output: { id: 'out0', kind: 'dir', path: join(dir, 'work', 'layout-base') } }]);
  });

  it('builds a remote context as kiln build URL (relative Dockerfile inside it); cwd:// paths are local', () => {
    const remote = compile({ name: 'r', context: 'https://example.com/x/y.git#main:app', dockerfile: 'Dockerfile.alt' });
    expect(remote.remoteContext).toBe('https://example.com/x/y.git#main:app');
    expect(remote.dockerfile.filename).toBe('Dockerfile.alt');
    writeFileSync(join(dir, 'Dockerfile'), 'FROM scratch\n');
    const local = compile({ name: 'l', context: 'cwd://', contexts: { extra: 'cwd://.' } });
    expect(local.contextDir).toBe(dir);
    expect(local.namedContexts).toEqual([expect.objectContaining({ name: 'extra', kind: 'local', path: dir })]);
  });

  it('resolves contexts of a remote definition as buildx', () => {
    const input = remoteInput('git://127.0.0.1/repo.git#v1:sub');
    expect(contextInRemote(undefined, input, 'c')).toBe('git://127.0.0.1/repo.git#v1:sub');
    expect(contextInRemote('app/x', input, 'c')).toBe('git://127.0.0.1/repo.git#v1:sub/app/x');
    expect(contextInRemote('cwd://here', input, 'c')).toBe('cwd://here');
    expect(contextInRemote('target:base', input, 'c')).toBe('target:base');
    expect(() => contextInRemote('../x', input, 'c')).toThrow('outside of the remote definition');
    expect(() => contextInRemote('x', remoteInput('https://example.com/ctx.tar.gz'), 'c')).toThrow('http(s) remote definition');
  });

  it('reads BUILDX_BAKE_FILE as buildx (separator BUILDX_BAKE_FILE_SEPARATOR)', () => {
    expect(envBakeFiles({})).toEqual([]);
    expect(envBakeFiles({ BUILDX_BAKE_FILE: 'a.hcl: b.hcl' })).toEqual(['a.hcl', 'b.hcl']);
    expect(envBakeFiles({ BUILDX_BAKE_FILE: 'a.hcl;b.hcl', BUILDX_BAKE_FILE_SEPARATOR: ';' })).toEqual(['a.hcl', 'b.hcl']);
  });
});
