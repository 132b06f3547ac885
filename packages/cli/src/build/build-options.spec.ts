import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UsageError } from '../flags/usage-error.js';
import { compileBuildOptions, parseBuildArgs, type BuildOptions, type CompileContext } from './build-options.js';
import { sessionDirs, sessionOutputs, toSolveRequest } from './solve-request.js';

let cwd: string;
let ctxDir: string;
beforeAll(() => {
  cwd = mkdtempSync(join(tmpdir(), 'kiln-opts-'));
  ctxDir = join(cwd, 'app');
  mkdirSync(join(ctxDir, 'sub'), { recursive: true });
  mkdirSync(join(cwd, 'other'), { recursive: true });
  mkdirSync(join(cwd, 'named'), { recursive: true });
  mkdirSync(join(cwd, 'ignored-ctx'), { recursive: true });
  writeFileSync(join(ctxDir, 'Dockerfile'), 'FROM scratch\n');
  writeFileSync(join(ctxDir, '.dockerignore'), 'node_modules\n*.log\n');
  writeFileSync(join(cwd, 'other', 'build.Dockerfile'), 'FROM scratch\n');
  writeFileSync(join(cwd, 'other', 'build.Dockerfile.dockerignore'), 'only-this\n');
  writeFileSync(join(cwd, 'named', '.dockerignore'), 'tmp\n');
  writeFileSync(join(cwd, 'token.txt'), 's3cret');
  writeFileSync(join(cwd, 'ignored-ctx', 'Dockerfile'), 'FROM scratch\n');
  writeFileSync(join(cwd, 'ignored-ctx', '.dockerignore'), '[broken\n');
});
afterAll(() => rmSync(cwd, { recursive: true, force: true }));

const env = { HOME: '/root', FROM_ENV: 'env-value', API_TOKEN: 't0k', SSH_AUTH_SOCK: '' };
function compile(argv: string[], extra: Partial<CompileContext> = {}): BuildOptions {
  return compileBuildOptions(parseBuildArgs(argv), { cwd, env, ...extra });
}
function usageError(argv: string[], extra: Partial<CompileContext> = {}): UsageError {
  try {
    compile(argv, extra);
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return err as UsageError;
  }
  throw new Error(`expected a usage error for ${argv.join(' ')}`);
}

describe('compileBuildOptions defaults', () => {
  it('defaults everything from CONTEXT alone', () => {
    const o = compile(['app']);
    expect(o).toEqual({
      contextDir: ctxDir,
      remoteContext: undefined,
      dockerfile: { path: join(ctxDir, 'Dockerfile'), dir: ctxDir, filename: 'Dockerfile' },
      ignoreFile: join(ctxDir, '.dockerignore'),
      contextIgnore: ['node_modules', '*.log'],
      tags: [],
      target: undefined,
      frontend: undefined,
      buildArgs: {},
      labels: {},
      network: undefined,
      namedContexts: [],
      platforms: [],
      secrets: [],
      ssh: [],
      extraHosts: [],
      entitlements: [],
      workerFilters: [],
      exports: [],
      cacheFrom: [],
      cacheTo: [],
      noCache: false,
      noCacheFilter: [],
      explainCache: false,
      pull: false,
      progress: 'auto',
      metadataFile: undefined,
      iidFile: undefined,
      quiet: false,
      attests: {},
      call: undefined,
      addr: undefined,
      builder: undefined,
      tls: { caCert: undefined, cert: undefined, key: undefined },
    } satisfies BuildOptions);
  });

  it('takes flags before or after CONTEXT, and after --', () => {
    expect(compile(['app', '--target', 'x']).target).toBe('x');
    expect(compile(['--target=x', '--', 'app']).target).toBe('x');
  });
});

describe('each flag', () => {
  it('-f/--file is relative to the cwd; <Dockerfile>.dockerignore wins', () => {
    for (const argv of [['-f', 'other/build.Dockerfile', 'app'], ['--file=other/build.Dockerfile', 'app'], ['-fother/build.Dockerfile', 'app']]) {
      const o = compile(argv);
      expect(o.dockerfile).toEqual({ path: join(cwd, 'other/build.Dockerfile'), dir: join(cwd, 'other'), filename: 'build.Dockerfile' });
      expect(o.ignoreFile).toBe(join(cwd, 'other/build.Dockerfile.dockerignore'));
      expect(o.contextIgnore).toEqual(['only-this']);
    }
  });

  it('-t/--tag repeats', () => {
    expect(compile(['-t', 'a:1', '--tag', 'b:2', '--tag=c', 'app']).tags).toEqual(['a:1', 'b:2', 'c']);
  });

  it('--build-arg K=V and K from the environment (skipped when unset)', () => {
    const o = compile(['--build-arg', 'A=1', '--build-arg', 'B==x=', '--build-arg', 'FROM_ENV', '--build-arg', 'UNSET', '--build-arg=EMPTY=', 'app']);
    expect(o.buildArgs).toEqual({ A: '1', B: '=x=', FROM_ENV: 'env-value', EMPTY: '' });
  });

  it('--build-context: local dirs (with their .dockerignore) and refs', () => {
    const o = compile([
      '--build-context', 'named=named',
      '--build-context', 'alpine=docker-image://alpine:3.19',
      '--build-context', `layout=oci-layout:///tmp/layout:v1@sha256:${'a'.repeat(64)}`,
      '--build-context', 'rel=oci-layout://rel/layout',
      '--build-context', 'stage=target:base',
      '--build-context', 'repo=https://github.com/x/y.git',
      'app',
    ]);
    expect(o.namedContexts).toEqual([
      { name: 'named', kind: 'local', path: join(cwd, 'named'), ignore: ['tmp'] },
      { name: 'alpine', kind: 'ref', value: 'docker-image://alpine:3.19' },
      { name: 'layout', kind: 'oci-layout', path: '/tmp/layout', tag: 'v1', digest: `sha256:${'a'.repeat(64)}`, store: expect.stringMatching(/^oci-layout-[0-9a-f]{16}$/) },
      { name: 'rel', kind: 'oci-layout', path: join(cwd, 'rel/layout'), store: expect.stringMatching(/^oci-layout-[0-9a-f]{16}$/) },
      { name: 'stage', kind: 'ref', value: 'target:base' },
      { name: 'repo', kind: 'ref', value: 'https://github.com/x/y.git' },
    ]);
  });

  it('--platform takes comma lists, repeats, normalizes and dedupes', () => {
    expect(compile(['--platform', 'linux/amd64,Linux/ARM64/v8', '--platform=linux/amd64', '--platform', 'linux/riscv64', 'app']).platforms).toEqual([
      'linux/amd64',
      'linux/arm64',
      'linux/riscv64',
    ]);
  });

  it('--secret id=,src= / env= / id alone', () => {
    const o = compile([
      '--secret', 'id=tok,src=token.txt',
      '--secret', 'id=tok2,source=token.txt,type=file',
      '--secret', 'id=api,env=API_TOKEN',
      '--secret', 'type=env,id=api2,src=API_TOKEN',
      '--secret', 'env=API_TOKEN',
      '--secret', 'id=API_TOKEN',
      '--secret', 'id=token.txt',
      'app',
    ]);
    expect(o.secrets).toEqual([
      { id: 'tok', kind: 'file', path: join(cwd, 'token.txt') },
      { id: 'tok2', kind: 'file', path: join(cwd, 'token.txt') },
      { id: 'api', kind: 'env', name: 'API_TOKEN' },
      { id: 'api2', kind: 'env', name: 'API_TOKEN' },
      { id: 'API_TOKEN', kind: 'env', name: 'API_TOKEN' },
      { id: 'API_TOKEN', kind: 'env', name: 'API_TOKEN' },
      { id: 'token.txt', kind: 'file', path: join(cwd, 'token.txt') },
    ]);
  });

  it('--ssh default uses SSH_AUTH_SOCK; ID=PATH takes paths', () => {
    const sock = join(cwd, 'token.txt');
    expect(compile(['--ssh', 'default', 'app'], { env: { SSH_AUTH_SOCK: sock } }).ssh).toEqual([{ id: 'default', paths: [sock] }]);
    expect(compile(['--ssh', 'key=token.txt,token.txt', 'app']).ssh).toEqual([{ id: 'key', paths: [sock, sock] }]);
  });

  it('--add-host takes host:ip or host=ip and reaches the frontend as add-hosts', () => {
    const o = compile(['--add-host', 'db:10.0.0.5', '--add-host', 'v6=[fd00::1]', '--add-host', 'raw6:fd00::2', 'app']);
    expect(o.extraHosts).toEqual([
      { host: 'db', ip: '10.0.0.5' },
      { host: 'v6', ip: 'fd00::1' },
      { host: 'raw6', ip: 'fd00::2' },
    ]);
    expect(toSolveRequest(o, { ref: 'r', sessionId: 's' }).frontendAttrs?.['add-hosts']).toBe('db=10.0.0.5,v6=fd00::1,raw6=fd00::2');
    expect(() => compile(['--add-host', 'db', 'app'])).toThrow(/invalid argument "db" for "--add-host" flag: want host:ip/);
    expect(() => compile(['--add-host', 'db:not-an-ip', 'app'])).toThrow(/"--add-host" flag: want host:ip/);
    // host-gateway stays a name for the worker to fill in.
    expect(toSolveRequest(compile(['--add-host', 'gw:host-gateway', 'app']), { ref: 'r', sessionId: 's' }).frontendAttrs?.['add-hosts']).toBe('gw=host-gateway');
  });

  it('--call takes buildx\'s NAME[,format=json][,ignorestatus=true]; --check is check', () => {
    expect(compile(['--call', 'outline,format=json', 'app'])).toMatchObject({ call: 'outline', callFormat: 'json' });
    expect(compile(['--call=check,ignorestatus=true', 'app'])).toMatchObject({ call: 'check', callIgnoreStatus: true });
    expect(compile(['--check', 'app']).call).toBe('check');
    expect(compile(['--call', 'build', 'app']).call).toBeUndefined();
    expect(toSolveRequest(compile(['--call', 'outline', 'app']), { ref: 'r', sessionId: 's' }).frontendAttrs?.['requestid']).toBe('frontend.outline');
    expect(() => compile(['--call', 'nope', 'app'])).toThrow('invalid argument "nope" for "--call" flag: want build, check, outline or targets');
    expect(() => compile(['--call', 'targets,color=red', 'app'])).toThrow('invalid print field: color=red');
  });

  it('--ulimit (repeated) and --shm-size reach the frontend as buildx sends them', () => {
    const o = compile(['--ulimit', 'nofile=1024:2048', '--ulimit', 'nproc=300', '--shm-size', '128m', 'app']);
    const attrs = toSolveRequest(o, { ref: 'r', sessionId: 's' }).frontendAttrs;
    expect(attrs?.['ulimit']).toBe('nofile=1024:2048,nproc=300:300');
    expect(attrs?.['shm-size']).toBe('134217728');
  });

  it('--allow takes entitlements, comma-separated or repeated, once each', () => {
    expect(compile(['--allow', 'network.host', '--allow', 'security.insecure,network.host', 'app']).entitlements).toEqual(['network.host', 'security.insecure']);
  });

  it('-o DIR and -o - short forms', () => {
    expect(compile(['-o', 'out', 'app']).exports).toEqual([
      { type: 'local', attrs: { 'session.output': 'out0' }, output: { id: 'out0', kind: 'dir', path: join(cwd, 'out') } },
    ]);
    expect(compile(['-o', '-', 'app']).exports).toEqual([
      { type: 'tar', attrs: { 'session.output': 'out0' }, output: { id: 'out0', kind: 'file', path: '-' } },
    ]);
  });

  it('-o csv forms for every type', () => {
    const o = compile([
      '-t', 'me/app:1',
      '--output', 'type=local,dest=out/dir',
      '--output=type=tar,dest=out.tar',
      '-o', 'type=oci,dest=img.oci.tar,compression=zstd',
      '-o', 'type=docker,dest=img.docker.tar,name=other:2',
      '-o', 'type=image,name=reg.local/x:1,push=true',
      '-o', '"type=cacheonly"',
      'app',
    ]);
    expect(o.exports).toEqual([
      { type: 'local', attrs: { 'session.output': 'out0' }, output: { id: 'out0', kind: 'dir', path: join(cwd, 'out/dir') } },
      { type: 'tar', attrs: { 'session.output': 'out1' }, output: { id: 'out1', kind: 'file', path: join(cwd, 'out.tar') } },
      { type: 'oci', attrs: { compression: 'zstd', name: 'me/app:1', 'session.output': 'out2' }, output: { id: 'out2', kind: 'file', path: join(cwd, 'img.oci.tar') } },
      { type: 'docker', attrs: { name: 'other:2', 'session.output': 'out3' }, output: { id: 'out3', kind: 'file', path: join(cwd, 'img.docker.tar') } },
      { type: 'image', attrs: { name: 'reg.local/x:1', push: 'true' } },
      { type: 'cacheonly', attrs: {} },
    ]);
  });

  it('type=registry is image,push=true; tar without dest goes to a non-tty stdout', () => {
    expect(compile(['-t', 'r/x', '-o', 'type=registry', 'app']).exports).toEqual([{ type: 'image', attrs: { push: 'true', name: 'r/x' } }]);
    expect(compile(['-o', 'type=tar', 'app']).exports[0]?.output).toEqual({ id: 'out0', kind: 'file', path: '-' });
  });

  it('quoted csv values keep commas', () => {
    expect(compile(['-o', 'type=image,"name=a:1,b:2"', 'app']).exports).toEqual([{ type: 'image', attrs: { name: 'a:1,b:2' } }]);
  });

  it('--push adds or marks an image exporter named from the tags', () => {
    expect(compile(['--push', '-t', 'r/a:1', '-t', 'r/b:2', 'app']).exports).toEqual([{ type: 'image', attrs: { push: 'true', name: 'r/a:1,r/b:2' } }]);
    expect(compile(['--push', '-o', 'type=image,name=r/c', 'app']).exports).toEqual([{ type: 'image', attrs: { name: 'r/c', push: 'true' } }]);
    expect(compile(['--push', '-t', 'r/a', '-o', 'out', 'app']).exports.map((e) => e.type)).toEqual(['local', 'image']);
  });

  it('-t alone keeps a named image in the daemon (image exporter, no push); -o DIR alone stays local', () => {
    expect(compile(['-t', 'a:1', '-t', 'b', 'app']).exports).toEqual([{ type: 'image', attrs: { name: 'a:1,b' } }]);
    expect(compile(['-t', 'a', '-o', 'out', 'app']).exports.map((e) => e.type)).toEqual(['local']);
    expect(compile(['app']).exports).toEqual([]);
  });

  it('tar=false makes an oci/docker output a directory', () => {
    expect(compile(['-o', 'type=oci,dest=layout,tar=false', 'app']).exports).toEqual([
      { type: 'oci', attrs: { tar: 'false', 'session.output': 'out0' }, output: { id: 'out0', kind: 'dir', path: join(cwd, 'layout') } },
    ]);
    expect(() => compile(['-o', 'type=oci,tar=false', 'app'])).toThrow(/dest directory is required for oci output with tar=false/);
  });

  it('SOURCE_DATE_EPOCH (build arg, else env) reaches image exporters as source-date-epoch', () => {
    const withArg = compile(['--build-arg', 'SOURCE_DATE_EPOCH=123', '-o', 'type=oci,dest=x.tar', '-o', 'type=tar,dest=y.tar', '-t', 'a', '--push', 'app']);
    expect(withArg.exports.map((e) => e.attrs['source-date-epoch'])).toEqual(['123', undefined, '123']);
    const fromEnv = compileBuildOptions(parseBuildArgs(['-o', 'type=docker,dest=x.tar', 'app']), { cwd, env: { SOURCE_DATE_EPOCH: '42' } });
    expect(fromEnv.buildArgs).toEqual({ SOURCE_DATE_EPOCH: '42' });
    expect(fromEnv.exports[0]!.attrs['source-date-epoch']).toBe('42');
    expect(() => compile(['--build-arg', 'SOURCE_DATE_EPOCH=soon', 'app'])).toThrow(/invalid SOURCE_DATE_EPOCH: soon/);
  });

  it('SOURCE_DATE_EPOCH=context (a local context has no commit time) sets no exporter epoch but reaches the frontend', () => {
    const o = compile(['--build-arg', 'SOURCE_DATE_EPOCH=context', '-o', 'type=oci,dest=x.tar', 'app']);
    expect(o.exports[0]!.attrs['source-date-epoch']).toBeUndefined();
    expect(toSolveRequest(o, { ref: 'r', sessionId: 's' }).frontendAttrs!['build-arg:SOURCE_DATE_EPOCH']).toBe('context');
  });

  it('--label K=V becomes label:K frontend attrs; a label without = is a usage error', () => {
    const o = compile(['--label', 'bar=baz', '--label', 'empty=', '--label', 'a=b=c', 'app']);
    expect(o.labels).toEqual({ bar: 'baz', empty: '', 'a': 'b=c' });
    expect(toSolveRequest(o, { ref: 'r', sessionId: 's' }).frontendAttrs).toMatchObject({ 'label:bar': 'baz', 'label:empty': '', 'label:a': 'b=c' });
    expect(usageError(['--label', 'novalue', 'app']).message).toMatch(/invalid argument "novalue" for "--label" flag/);
  });

  it('--network: none and host force the RUN default (host also asks for network.host), default sends nothing, others refused', () => {
    const host = toSolveRequest(compile(['--network=host', 'app']), { ref: 'r', sessionId: 's' });
    expect(host.frontendAttrs!['force-network-mode']).toBe('host');
    expect(host.entitlements).toEqual(['network.host']);
    const none = toSolveRequest(compile(['--network', 'none', 'app']), { ref: 'r', sessionId: 's' });
    expect(none.frontendAttrs!['force-network-mode']).toBe('none');
    expect(none.entitlements).toEqual([]);
    expect(toSolveRequest(compile(['--network=default', 'app']), { ref: 'r', sessionId: 's' }).frontendAttrs).toEqual({ filename: 'Dockerfile' });
    expect(usageError(['--network=bridge', 'app']).message).toMatch(/network mode "bridge" not supported/);
  });

  it('without -f, a lowercase dockerfile is used when Dockerfile is absent', () => {
    mkdirSync(join(cwd, 'lower'), { recursive: true });
    writeFileSync(join(cwd, 'lower', 'dockerfile'), 'FROM scratch\n');
    const o = compile(['lower']);
    expect(o.dockerfile).toEqual({ path: join(cwd, 'lower', 'dockerfile'), dir: join(cwd, 'lower'), filename: 'dockerfile' });
    // Dockerfile wins when both exist.
    writeFileSync(join(cwd, 'lower', 'Dockerfile'), 'FROM scratch\n');
    expect(compile(['lower']).dockerfile.filename).toBe('Dockerfile');
  });

  it('--load writes a docker tarball to a temp file the CLI loads into dockerd (with --push: both)', () => {
    const load = { loadTarPath: '/tmp/load.tar' };
    const docker = (i: number, attrs: Record<string, string>) => ({ type: 'docker', attrs: { ...attrs, 'session.output': `out${i}` }, output: { id: `out${i}`, kind: 'file', path: '/tmp/load.tar', load: true } });
    expect(compile(['--load', '-t', 'a', 'app'], load).exports).toEqual([docker(0, { name: 'a' })]);
    expect(compile(['--load', '--push', '-t', 'a', 'app'], load).exports).toEqual([{ type: 'image', attrs: { push: 'true', name: 'a' } }, docker(1, { name: 'a' })]);
    expect(compile(['--load', 'app'], load).exports).toEqual([docker(0, {})]);
  });

  it('--annotation becomes the image exporters\' annotation attrs (OCI media types for them)', () => {
    const o = compile(['-t', 'a', '--annotation', 'org.opencontainers.image.title=t', '--annotation', 'index:k=v', '--annotation', 'manifest[linux/amd64]:m=1', 'app']);
    expect(o.exports).toEqual([
      { type: 'image', attrs: { 'annotation.org.opencontainers.image.title': 't', 'annotation-index.k': 'v', 'annotation-manifest[linux/amd64].m': '1', 'oci-mediatypes': 'true', name: 'a' } },
    ]);
    expect(usageError(['--annotation', 'bogus:k=v', 'app']).message).toContain('unknown annotation type "bogus"');
  });

  it('--provenance, --sbom and --attest become attest:provenance / attest:sbom', () => {
    expect(compile(['--provenance', 'true', 'app']).attests).toEqual({ provenance: 'mode=min' });
    expect(compile(['--provenance=mode=max', 'app']).attests).toEqual({ provenance: 'mode=max' });
    expect(compile(['--attest', 'type=provenance,mode=max', 'app']).attests).toEqual({ provenance: 'mode=max' });
    expect(compile(['--provenance=false', 'app']).attests).toEqual({});
    expect(usageError(['--provenance=mode=huge', 'app']).message).toContain('mode must be min or max');
    expect(compile(['--sbom=true', 'app']).attests).toEqual({ sbom: '' });
    expect(compile(['--attest', 'type=sbom', '--provenance=1', 'app']).attests).toEqual({ sbom: '', provenance: 'mode=min' });
    expect(compile(['--sbom=false', 'app']).attests).toEqual({});
    expect(usageError(['--sbom=generator=docker/scout-sbom-indexer:1', 'app']).message).toContain('generator=docker/scout-sbom-indexer:1: Kiln runs its built-in scanner');
  });

  it('registry pushes get mode=min provenance by default, as buildx; opt-outs, --load, -t alone and OCI tarballs get none', () => {
    expect(compile(['--push', '-t', 'r/a', 'app']).attests).toEqual({ provenance: 'mode=min' });
    expect(compile(['-o', 'type=image,name=r/a,push=true', 'app']).attests).toEqual({ provenance: 'mode=min' });
    expect(compile(['-o', 'type=registry,name=r/a', 'app']).attests).toEqual({ provenance: 'mode=min' });
    expect(compile(['--push', '-t', 'r/a', '--provenance=mode=max', 'app']).attests).toEqual({ provenance: 'mode=max' });
    expect(compile(['--push', '-t', 'r/a', '--provenance=false', 'app']).attests).toEqual({});
    expect(compile(['--push', '-t', 'r/a', '--attest', 'type=provenance,disabled=true', 'app']).attests).toEqual({});
    expect(compile(['--push', '-t', 'r/a', 'app'], { env: { ...env, BUILDX_NO_DEFAULT_ATTESTATIONS: '1' } }).attests).toEqual({});
    expect(compile(['--push', '-t', 'r/a', 'app'], { env: { ...env, BUILDX_NO_DEFAULT_ATTESTATIONS: 'false' } }).attests).toEqual({ provenance: 'mode=min' });
    expect(compile(['--push', '-t', 'r/a', '--sbom=true', 'app']).attests).toEqual({ provenance: 'mode=min', sbom: '' });
    expect(compile(['--load', '-t', 'a', 'app']).attests).toEqual({});
    expect(compile(['-t', 'a', 'app']).attests).toEqual({});
    expect(compile(['-o', 'type=oci,dest=/tmp/x.tar', 'app']).attests).toEqual({});
    expect(compile(['-o', 'type=image,name=r/a,push=false', 'app']).attests).toEqual({});
  });

  it('-q/--quiet is quiet progress; --iidfile is resolved; --progress=none', () => {
    expect(compile(['-q', 'app'])).toMatchObject({ quiet: true, progress: 'quiet' });
    expect(compile(['--iidfile', 'id.txt', 'app']).iidFile).toBe(join(cwd, 'id.txt'));
    expect(compile(['--progress=none', 'app']).progress).toBe('none');
  });

  it('--platform local is this machine; unknown systems and architectures are refused by name', () => {
    expect(compile(['--platform', 'local', 'app']).platforms).toEqual([process.arch === 'arm64' ? 'linux/arm64' : 'linux/amd64']);
    expect(compile(['--platform', 'linux/x86_64,linux/aarch64', 'app']).platforms).toEqual(['linux/amd64', 'linux/arm64']);
    expect(usageError(['--platform', 'linux/amd65', 'app']).message).toContain('unknown architecture "amd65"');
    expect(usageError(['--platform', 'lunix/amd64', 'app']).message).toContain('unknown operating system "lunix"');
  });

  it('--cache-from/--cache-to: csv, bare refs, local paths made absolute', () => {
    const o = compile([
      '--cache-from', 'reg/cache:main',
      '--cache-from', 'type=local,src=cache',
      '--cache-to', 'type=inline',
      '--cache-to', 'type=local,dest=/abs/cache,mode=max',
      '--cache-to', 'type=registry,ref=reg/cache:main,mode=max',
      'app',
    ]);
    expect(o.cacheFrom).toEqual([
      { type: 'registry', attrs: { ref: 'reg/cache:main' } },
      { type: 'local', attrs: { src: join(cwd, 'cache') } },
    ]);
    expect(o.cacheTo).toEqual([
      { type: 'inline', attrs: {} },
      { type: 'local', attrs: { dest: '/abs/cache', mode: 'max' } },
      { type: 'registry', attrs: { ref: 'reg/cache:main', mode: 'max' } },
    ]);
  });

  it('--no-cache, --progress, --metadata-file, --addr, --target', () => {
    const o = compile(['--no-cache', '--progress', 'rawjson', '--metadata-file', 'meta.json', '--addr', 'tcp://127.0.0.1:1234', '--target', 'final', 'app']);
    expect(o).toMatchObject({ noCache: true, progress: 'rawjson', metadataFile: join(cwd, 'meta.json'), addr: 'tcp://127.0.0.1:1234', target: 'final' });
    expect(compile(['--no-cache=false', 'app']).noCache).toBe(false);
    expect(compile(['--no-cache-filter', 'a,b', '--no-cache-filter=c', 'app']).noCacheFilter).toEqual(['a', 'b', 'c']);
    for (const p of ['auto', 'plain', 'tty', 'rawjson']) expect(compile([`--progress=${p}`, 'app']).progress).toBe(p);
  });

  it('--help is a flag, -h too', () => {
    expect(parseBuildArgs(['--help']).flags.help).toBe(true);
    expect(parseBuildArgs(['-h']).flags.help).toBe(true);
  });
});

describe('usage errors name the flag', () => {
  it.each([
    [['--frobnicate', 'app'], /unknown flag: --frobnicate/, '--frobnicate'],
    [['-z', 'app'], /unknown shorthand flag: 'z' in -z/, '-z'],
    [['app', '--tag'], /flag needs an argument: --tag/, '--tag'],
    [['app', '-t'], /flag needs an argument: 't' in -t/, '--tag'],
    [['-t', '--push', 'app'], /flag needs an argument: 't' in -t/, '--tag'],
    [['app', '--file'], /flag needs an argument: --file/, '--file'],
    [['app', '--target'], /flag needs an argument: --target/, '--target'],
    [['app', '--target='], /--target/, '--target'],
    [['app', '--build-arg'], /flag needs an argument: --build-arg/, '--build-arg'],
    [['app', '--build-arg', '=v'], /"--build-arg" flag/, '--build-arg'],
    [['app', '--build-context', 'noequals'], /"--build-context" flag: expected NAME=VALUE/, '--build-context'],
    [['app', '--build-context', 'x=missing-dir'], /"--build-context" flag: directory "missing-dir" not found/, '--build-context'],
    [['app', '--build-context', 'context=named'], /reserved/, '--build-context'],
    [['app', '--build-context', 'l=oci-layout:///tmp/l@sha256:abc'], /"--build-context" flag: invalid oci-layout reference .*not a sha256 digest/, '--build-context'],
    [['app', '--build-context', 'a=named', '--build-context', 'a=docker-image://x'], /duplicate build context "a"/, '--build-context'],
    [['app', '--platform', 'linux/amd64/v1/extra'], /"--platform" flag/, '--platform'],
    [['app', '--platform', 'linux amd64'], /"--platform" flag/, '--platform'],
    [['app', '--secret', 'id=x,src=nope.txt'], /--secret: secret file "nope.txt" not found/, '--secret'],
    [['app', '--secret', 'id=x,env=NOPE'], /--secret: environment variable NOPE is not set/, '--secret'],
    [['app', '--secret', 'src=token.txt'], /--secret: id is required/, '--secret'],
    [['app', '--secret', 'id=x,type=magic'], /--secret: unsupported secret type "magic"/, '--secret'],
    [['app', '--secret', 'id=x,color=red'], /--secret: unexpected key "color"/, '--secret'],
    [['app', '--secret', 'id=x,novalue'], /--secret: field "novalue" must be a key=value pair/, '--secret'],
    [['app', '--ssh', 'default'], /"--ssh" flag: SSH_AUTH_SOCK is not set/, '--ssh'],
    [['app', '--ssh', 'k=/no/such/key'], /"--ssh" flag: "\/no\/such\/key" not found/, '--ssh'],
    [['app', '--ssh', '=x'], /"--ssh" flag/, '--ssh'],
    [['app', '--allow', 'root'], /invalid value "root" for "--allow" flag: want security.insecure or network.host/, '--allow'],
    [['app', '--worker-filter', ' '], /flag needs a non-empty argument: --worker-filter/, '--worker-filter'],
    [['app', '-o', 'dest=out'], /--output: type is required/, '--output'],
    [['app', '-o', 'type=local'], /--output: dest is required for local output/, '--output'],
    [['app', '-o', 'type=local,dest=-'], /--output: a local output needs a directory/, '--output'],
    [['app', '-o', 'type=zip,dest=x'], /--output: unknown output type "zip"/, '--output'],
    [['app', '-o', 'type=image,dest=x'], /--output: image output takes no dest/, '--output'],
    [['app', '-o', 'type=tar,dest='], /--output: dest must not be empty/, '--output'],
    [['app', '-o', 'type="local,dest=x'], /--output: bare " in unquoted field/, '--output'],
    [['app', '-o', '"type=local,dest=x'], /--output: unterminated quote/, '--output'],
    [['app', '-o', '"type=local"x,dest=x'], /--output: extraneous text/, '--output'],
    [['app', '-o', ''], /--output/, '--output'],
    [['app', '-o', '-', '-o', 'type=tar,dest=-'], /only one output can be written to stdout/, '--output'],
    [['app', '-o', 'type=image,push=true'], /tag is needed when pushing/, '--output'],
    [['app', '--push'], /tag is needed when pushing/, '--push'],
    [['app', '--push=maybe'], /invalid argument "maybe" for "--push" flag/, '--push'],
    [['app', '--load=2'], /"--load" flag/, '--load'],
    [['app', '--no-cache=x'], /"--no-cache" flag/, '--no-cache'],
    [['app', '--cache-from', 'type=local'], /--cache-from: src is required for local cache/, '--cache-from'],
    [['app', '--cache-to', 'type=local'], /--cache-to: dest is required for local cache/, '--cache-to'],
    [['app', '--cache-to', 'mode=max'], /--cache-to: type is required/, '--cache-to'],
    [['app', '--cache-from', 'type=registry'], /--cache-from: ref is required/, '--cache-from'],
    [['app', '--cache-to'], /flag needs an argument: --cache-to/, '--cache-to'],
    [['app', '--progress', 'fancy'], /invalid argument "fancy" for "--progress" flag/, '--progress'],
    [['app', '--progress'], /flag needs an argument: --progress/, '--progress'],
    [['app', '--metadata-file'], /flag needs an argument: --metadata-file/, '--metadata-file'],
    [['app', '--metadata-file='], /--metadata-file/, '--metadata-file'],
    [['app', '--addr', 'http://nope'], /invalid argument "http:\/\/nope" for "--addr" flag/, '--addr'],
    [['app', '--addr'], /flag needs an argument: --addr/, '--addr'],
    [['app', '-f', 'nope/Dockerfile'], /--file: Dockerfile "nope\/Dockerfile" not found/, '--file'],
    [['other'], /Dockerfile not found in the build context/, '--file'],
    [['app', '-f', '-'], /stdin/, '--file'],
    [[], /requires exactly 1 argument/, 'CONTEXT'],
    [['app', 'other'], /requires exactly 1 argument/, 'CONTEXT'],
    [['no-such-dir'], /path "no-such-dir" not found/, 'CONTEXT'],
    [['app/Dockerfile'], /not a directory/, 'CONTEXT'],
    [['-'], /stdin/, 'CONTEXT'],
    [['https://github.com/x/y.git', '-f', '/no/such/Dockerfile'], /--file: Dockerfile "\/no\/such\/Dockerfile" not found/, '--file'],
    [['ignored-ctx'], /invalid pattern "\[broken"/, '.dockerignore'],
  ])('%j', (argv, message, field) => {
    const err = usageError(argv as string[]);
    expect(err.message).toMatch(message);
    expect(err.details.field).toBe(field);
  });

  it('refuses to write a tar to a terminal', () => {
    expect(usageError(['-o', '-', 'app'], { stdoutIsTTY: true }).message).toMatch(/refusing to write/);
    expect(usageError(['-o', 'type=tar', 'app'], { stdoutIsTTY: true }).message).toMatch(/refusing to write to console/);
  });
});

describe('remote build contexts (buildx: a git or http(s) URL the daemon fetches)', () => {
  it.each([
    ['https://example.com/repo.git#main:sub', 'Dockerfile'],
    ['git@example.com:org/repo.git#v1', 'Dockerfile'],
    ['git://127.0.0.1:9418/repo.git', 'Dockerfile'],
    ['ssh://git@example.com/repo.git', 'Dockerfile'],
    ['http://127.0.0.1:8080/ctx.tar.gz', 'Dockerfile'],
  ])('%s: sent as the frontend attr `context`, no context dir is shared', (url, filename) => {
    const o = compile([url]);
    expect(o).toMatchObject({ contextDir: '', remoteContext: url, dockerfile: { path: '', dir: '', filename }, ignoreFile: undefined, contextIgnore: [] });
    expect(toSolveRequest(o, { ref: 'r', sessionId: 's' }).frontendAttrs).toEqual({ filename, context: url });
    expect(sessionDirs(o)).toEqual([]);
  });

  it('a relative -f names a file in the remote context; an absolute -f is shared as the dockerfile dir (dockerfilekey)', () => {
    const rel = compile(['-f', 'sub/Dockerfile.alt', 'https://example.com/r.git']);
    expect(toSolveRequest(rel, { ref: 'r', sessionId: 's' }).frontendAttrs).toEqual({ filename: 'sub/Dockerfile.alt', context: 'https://example.com/r.git' });
    const local = join(ctxDir, 'Dockerfile');
    const abs = compile(['-f', local, 'https://example.com/r.git']);
    expect(toSolveRequest(abs, { ref: 'r', sessionId: 's' }).frontendAttrs).toEqual({ filename: 'Dockerfile', context: 'https://example.com/r.git', dockerfilekey: 'dockerfile' });
    expect(sessionDirs(abs)).toEqual([{ name: 'dockerfile', path: ctxDir }]);
  });

  it('a local directory wins over a URL-looking name', () => {
    expect(compile(['app']).remoteContext).toBeUndefined();
  });
});

describe('toSolveRequest', () => {
  it('maps options to frontend attrs, exporters and caches', () => {
    const o = compile([
      '-f', 'other/build.Dockerfile',
      '--target', 'final',
      '--build-arg', 'A=1',
      '--build-arg', 'FROM_ENV',
      '--platform', 'linux/amd64,linux/arm64',
      '--build-context', 'named=named',
      '--build-context', 'alpine=docker-image://alpine',
      '--no-cache',
      '-t', 'x:1',
      '-o', 'type=local,dest=out',
      '--push',
      '--cache-from', 'reg/c',
      '--cache-to', 'type=inline',
      '--allow', 'network.host',
      '--worker-filter', 'labels.pool==gpu',
      '--worker-filter', 'id==w1',
      'app',
    ]);
    const req = toSolveRequest(o, { ref: 'build-1', sessionId: 'sess-1' });
    expect(req).toEqual({
      ref: 'build-1',
      sessionId: 'sess-1',
      frontend: 'dockerfile.v0',
      frontendAttrs: {
        filename: 'build.Dockerfile',
        target: 'final',
        'build-arg:A': '1',
        'build-arg:FROM_ENV': 'env-value',
        platform: 'linux/amd64,linux/arm64',
        'context:named': 'local:named',
        'context:alpine': 'docker-image://alpine',
        'no-cache': '',
        // --push: buildx's default provenance.
        'attest:provenance': 'mode=min',
      },
      exporters: [
        { type: 'local', attrs: { 'session.output': 'out0' } },
        { type: 'image', attrs: { push: 'true', name: 'x:1' } },
      ],
      cacheImports: [{ type: 'registry', attrs: { ref: 'reg/c' } }],
      cacheExports: [{ type: 'inline', attrs: {} }],
      entitlements: ['network.host'],
      workerFilter: ['labels.pool==gpu', 'id==w1'],
    });
    expect(sessionDirs(o)).toEqual([
      { name: 'context', path: ctxDir, excludes: ['only-this'] },
      { name: 'dockerfile', path: join(cwd, 'other') },
      { name: 'named', path: join(cwd, 'named'), excludes: ['tmp'] },
    ]);
    expect(sessionOutputs(o)).toEqual([{ id: 'out0', kind: 'dir', path: join(cwd, 'out') }]);
  });

  it('sends only the filename for a plain build', () => {
    const req = toSolveRequest(compile(['app']), { ref: 'r', sessionId: 's' });
    expect(req.frontendAttrs).toEqual({ filename: 'Dockerfile' });
    expect(req.exporters).toEqual([]);
  });
});
