import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { listTargets, parseListFlag } from './list.js';
import { loadBakeConfig, readBakeFiles, type BakeFile } from './load.js';
import { printBake } from './print.js';
import { readTargets } from './resolve.js';

const builtins = { BAKE_CMD_CONTEXT: 'cwd://', BAKE_LOCAL_PLATFORM: 'linux/amd64' };

async function bake(files: BakeFile[], opts: { targets?: string[]; set?: string[]; env?: Record<string, string> } = {}) {
  const config = await loadBakeConfig(files, { env: opts.env ?? {}, builtins });
  return readTargets(config, opts.targets ?? [], opts.set ?? [], opts.env ?? {});
}

async function print(files: BakeFile[], opts: Parameters<typeof bake>[1] = {}): Promise<string> {
  return printBake(await bake(files, opts));
}

const hcl = (data: string): BakeFile[] => [{ name: 'docker-bake.hcl', data }];

describe('bake files', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  const dirWith = (files: Record<string, string>) => {
    const d = mkdtempSync(join(tmpdir(), 'kiln-bake-unit-'));
    dirs.push(d);
    for (const [n, data] of Object.entries(files)) writeFileSync(join(d, n), data);
    return d;
  };

  it('reads every default file that exists, in buildx order; -f names files (missing one is an error)', () => {
    const d = dirWith({ 'docker-bake.hcl': 'a', 'compose.yaml': 'b', 'docker-bake.override.hcl': 'c', 'other.hcl': 'd' });
    expect(readBakeFiles([], d).map((f) => f.name)).toEqual(['compose.yaml', 'docker-bake.hcl', 'docker-bake.override.hcl']);
    expect(readBakeFiles(['other.hcl', 'docker-bake.hcl'], d).map((f) => f.data)).toEqual(['d', 'a']);
    expect(() => readBakeFiles(['nope.hcl'], d)).toThrow(/failed to read bake file nope.hcl: no such file/);
    expect(() => readBakeFiles([], dirWith({}))).toThrow("couldn't find a bake definition");
  });

  // buildx's tests/bake.go testBakePrint, HCL and compose cases: the same expected JSON.
  it('prints an HCL target and a compose service as buildx does', async () => {
    const expected = `{
  "group": {
    "default": {
      "targets": [
        "build"
      ]
    }
  },
  "target": {
    "build": {
      "context": ".",
      "dockerfile": "Dockerfile",
      "args": {
        "HELLO": "foo"
      }
    }
  }
}
`;
    expect(await print(hcl('target "build" {\n  args = {\n    HELLO = "foo"\n  }\n}\n'), { targets: ['build'] })).toBe(expected);
    expect(await print([{ name: 'compose.yml', data: 'services:\n  build:\n    build:\n      context: .\n      args:\n        HELLO: foo\n' }], { targets: ['build'] })).toBe(expected);
  });

  // buildx's testBakePrintKeepEscaped: escaped templates stay escaped in the output.
  it('keeps $${ and %%{ escaped when printing', async () => {
    const out = await print(
      hcl(`target "default" {
	dockerfile-inline = <<EOT
ARG VERSION=latest
FROM alpine:$\${VERSION}
EOT
	args = {
		VERSION = "3.21"
	}
	annotations = [
		"org.opencontainers.image.authors=$\${user}"
	]
	labels = {
		foo = "hello %%{bar}"
	}
}
`),
    );
    expect(JSON.parse(out)).toEqual({
      group: { default: { targets: ['default'] } },
      target: {
        default: {
          annotations: ['org.opencontainers.image.authors=$${user}'],
          context: '.',
          dockerfile: 'Dockerfile',
          'dockerfile-inline': 'ARG VERSION=latest\nFROM alpine:$${VERSION}\n',
          args: { VERSION: '3.21' },
          labels: { foo: 'hello %%{bar}' },
        },
      },
    });
  });

  it('evaluates variables (env overrides typed after the default), functions, inherits and matrix', async () => {
    const files = hcl(`
variable "TAG" { default = "latest" }
variable "REPO" { default = "kiln/\${lower("APP")}" }
variable "DEBUG" { default = false }
variable "N" { default = 1 }
function "tag" {
  params = [name, t]
  result = ["\${REPO}-\${name}:\${t}"]
}
function "all" {
  params = [first]
  variadic_param = rest
  result = concat([first], rest)
}
group "default" { targets = ["app", "m"] }
target "base" {
  dockerfile = "Dockerfile.base"
  args = { BASE = "1", N = N + 1 }
  labels = { "org.x" = "y" }
  tags = ["base"]
}
target "app" {
  inherits = ["base"]
  tags = tag("app", TAG)
  args = {
    X = "\${upper(TAG)}-1"
    Y = TAG == "latest" ? "y" : "n"
    D = DEBUG ? "on" : "off"
    J = join(",", split("-", "a-b-c"))
    F = format("%s-%03d", "v", 7)
    T = trimprefix("v1.2", "v")
    C = coalesce("", "fallback")
    A = and(true, notequal(TAG, "x")) ? "yes" : "no"
    V = join(" ", all("a", "b", "c"))
  }
  no-cache = true
}
target "m" {
  name = "m-\${item}-\${replace(v, ".", "-")}"
  matrix = { item = ["x", "y"], v = ["1.0"] }
  args = { I = item }
  tags = [for s in ["1", "2"]: "m:\${s}-\${item}" if s != "2"]
}
`);
    const r = await bake(files, { env: { TAG: 'v1', DEBUG: 'true', N: '41' } });
    const app = r.targets.get('app')!;
    expect(app.tags).toEqual(['kiln/app-app:v1']);
    expect(app.dockerfile).toBe('Dockerfile.base');
    expect(app.args).toEqual({ BASE: '1', N: '42', X: 'V1-1', Y: 'n', D: 'on', J: 'a,b,c', F: 'v-007', T: '1.2', C: 'fallback', A: 'yes', V: 'a b c' });
    expect(app.labels).toEqual({ 'org.x': 'y' });
    expect(app['no-cache']).toBe(true);
    expect([...r.targets.keys()].sort()).toEqual(['app', 'm-x-1-0', 'm-y-1-0']);
    expect(r.targets.get('m-y-1-0')).toMatchObject({ args: { I: 'y' }, tags: ['m:1-y'] });
    // The matrix block's label is a group of what it generated.
    expect(r.groups.get('m')?.targets).toEqual(['m-x-1-0', 'm-y-1-0']);
    expect(r.groups.get('default')?.targets).toEqual(['app', 'm']);
    // A bad override for a bool variable names it.
    await expect(bake(files, { env: { DEBUG: 'maybe' } })).rejects.toThrow(/failed to parse DEBUG as bool/);
  });

  it('applies --set with patterns, appends with +=, and --push/--load as buildx', async () => {
    const files = hcl(`
target "a" {
  tags = ["a:1"]
  output = ["type=image"]
}
target "b" {
  tags = ["b:1"]
  output = ["type=local,dest=out"]
}
target "c" {}
`);
    const r = await bake(files, {
      targets: ['a', 'b', 'c'],
      set: ['*.platform=linux/arm64', 'a.tags+=a:2', 'b.tags=b:2', 'a.args.K=v', '*.push=true', 'c.load=true', 'b.no-cache=true', 'c.contexts.x=docker-image://busybox'],
    });
    expect(r.targets.get('a')).toMatchObject({ tags: ['a:1', 'a:2'], platforms: ['linux/arm64'], args: { K: 'v' }, output: [{ type: 'image', attrs: { push: 'true' } }] });
    expect(r.targets.get('b')).toMatchObject({ tags: ['b:2'], 'no-cache': true, output: [{ type: 'local', dest: 'out', attrs: {} }] });
    // Nothing but docker outputs (none here) gets a pushing image output; load adds a docker one.
    expect(r.targets.get('c')?.output).toEqual([
      { type: 'image', attrs: { push: 'true' } },
      { type: 'docker', attrs: {} },
    ]);
    expect(r.targets.get('c')?.contexts).toEqual({ x: 'docker-image://busybox' });
    await expect(bake(files, { set: ['zz*.tags=x'] })).rejects.toThrow(`could not find any target matching 'zz*'`);
    await expect(bake(files, { targets: ['a'], set: ['a.bogus=1'] })).rejects.toThrow('unknown key: bogus');
    await expect(bake(files, { targets: ['a'], set: ['a.no-cache=maybe'] })).rejects.toThrow('invalid value maybe for boolean key no-cache');
    // buildx's testBakePrintOverrideEmpty: an empty value clears the list.
    const cleared = await print(hcl('target "default" {\n  cache-to = ["type=gha,mode=min,scope=integration-tests"]\n}\n'), { set: ['*.cache-to='] });
    expect(JSON.parse(cleared)).toEqual({ group: { default: { targets: ['default'] } }, target: { default: { context: '.', dockerfile: 'Dockerfile' } } });
  });

  // buildx's testBakeSecretSourceOverride.
  it('overrides a declared secret by id and refuses an undeclared one', async () => {
    const files = hcl('target "build" {\n  secret = [\n    "id=aws,src=aws-default",\n    "id=token,env=TOKEN",\n  ]\n}\n');
    const r = await bake(files, { targets: ['build'], set: ['build.secret.aws=env=AWS_CREDENTIALS', 'build.secret.token=src=tokenfile'] });
    expect(r.targets.get('build')?.secret).toEqual([
      { id: 'aws', env: 'AWS_CREDENTIALS' },
      { id: 'token', src: 'tokenfile' },
    ]);
    await expect(bake(files, { targets: ['build'], set: ['build.secret.missing=env=MISSING'] })).rejects.toThrow('secret "missing" must be declared before it can be overridden');
  });

  it('adds targets used as target: contexts with a cacheonly output and refuses cycles', async () => {
    const r = await bake(hcl('target "base" {}\ntarget "app" {\n  contexts = { b = "target:base" }\n}\n'), { targets: ['app'] });
    expect(r.targets.get('base')?.output).toEqual([{ type: 'cacheonly', attrs: {} }]);
    expect([...r.groups.keys()]).toEqual(['default']);
    await expect(bake(hcl('target "a" {\n  contexts = { x = "target:b" }\n}\ntarget "b" {\n  contexts = { y = "target:a" }\n}\n'), { targets: ['a'] })).rejects.toThrow('infinite loop from b to a');
  });

  it('merges later files over earlier ones, compose first', async () => {
    const r = await bake(
      [
        { name: 'compose.yaml', data: 'services:\n  web:\n    image: example/web:1\n    build:\n      context: ./web\n      args: [A=1, B]\n    environment:\n      B: from-env\n' },
        { name: 'docker-bake.hcl', data: 'target "web" {\n  args = { C = "3" }\n}\n' },
        { name: 'docker-bake.override.json', data: JSON.stringify({ variable: { V: { default: 'x' } }, target: { web: { tags: ['example/web:${V}'] } } }) },
      ],
      { env: { V: 'json' } },
    );
    expect(r.targets.get('web')).toMatchObject({ context: './web', args: { A: '1', B: 'from-env', C: '3' }, tags: ['example/web:json'] });
  });

  it('names the file and line of an HCL syntax error, and unknown variables and functions', async () => {
    await expect(bake(hcl('target "a" {\n  tags = [\n}\n'))).rejects.toThrow(/failed to parse docker-bake.hcl: docker-bake.hcl:3,1/);
    await expect(bake(hcl('target "default" {\n  tags = [NOPE]\n}\n'))).rejects.toThrow('docker-bake.hcl: unknown variable "NOPE"');
    await expect(bake(hcl('target "default" {\n  tags = [nofunc("x")]\n}\n'))).rejects.toThrow('there is no function named "nofunc"');
    await expect(bake(hcl('target "default" {\n  bogus = 1\n}\n'))).rejects.toThrow('target "default": bogus: unsupported attribute');
    await expect(bake(hcl('target "a" {}\n'), { targets: ['b'] })).rejects.toThrow('failed to find target b');
  });

  it('reads another target\'s attributes through target.NAME.ATTR', async () => {
    const r = await bake(hcl('target "base" {\n  tags = ["base:1"]\n  args = { V = "2" }\n}\ntarget "app" {\n  tags = concat(target.base.tags, ["app:${target.base.args.V}"])\n}\n'), { targets: ['app'] });
    expect(r.targets.get('app')?.tags).toEqual(['base:1', 'app:2']);
    await expect(bake(hcl('target "app" {\n  tags = target.nope.tags\n}\n'), { targets: ['app'] })).rejects.toThrow('unknown target "nope"');
    await expect(bake(hcl('target "app" {\n  tags = target.app.tags\n}\n'), { targets: ['app'] })).rejects.toThrow('refers to itself');
  });

  it('lists targets and groups as buildx --list=targets (table with tabs, or json)', async () => {
    const config = await loadBakeConfig(
      hcl('group "default" {\n  targets = ["web", "api"]\n}\ntarget "api" {\n  description = "The API"\n}\ntarget "web" {}\ntarget "_private" {}\ntarget "a-very-long-target-name" {}\n'),
      { env: {}, builtins },
    );
    expect(listTargets(config, 'table')).toBe('TARGET\t\t\tDESCRIPTION\na-very-long-target-name\t\napi\t\t\tThe API\ndefault\t\t\tapi, web\nweb\t\t\t\n');
    expect(JSON.parse(listTargets(config, 'json'))).toEqual([
      { name: 'a-very-long-target-name' },
      { name: 'api', description: 'The API' },
      { name: 'default', description: 'api, web', group: true },
      { name: 'web' },
    ]);
    expect(parseListFlag('type=targets,format=json')).toEqual({ type: 'targets', format: 'json' });
    expect(() => parseListFlag('bogus')).toThrow('invalid list type "bogus"');
  });

  it('escapes HTML characters as Go does', async () => {
    const out = await print(hcl('target "default" {\n  labels = { x = "<a&b>" }\n}\n'));
    expect(out).toContain('"x": "\\u003ca\\u0026b\\u003e"');
  });
});
