import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findDockerd, runKiln, startDockerd, startKilnd, type Kilnd, type TestDockerd, e2eWorker } from '@kiln/testkit';

// No registry: a base stage made of Debian's static busybox from the context.
const BUSYBOX = '/bin/busybox';

const DOCKERFILE = [
  'FROM scratch AS tools',
  'COPY --chmod=0755 busybox /bin/busybox',
  'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
  '',
  // The stage every target shares: its RUN prints a marker and leaves a random token,
  // so a second run of it would show in the progress and in a different token.
  'FROM tools AS shared',
  'RUN echo SHARED-STEP-MARKER && cat /proc/sys/kernel/random/uuid > /token',
  '',
  'FROM tools AS final',
  'ARG NAME',
  'COPY --from=shared /token /token',
  'RUN echo "$NAME" > /name',
  '',
].join('\n');

const BAKE_HCL = `
variable "SUFFIX" { default = "x" }
group "default" { targets = ["t1", "t2", "t3", "t4", "t5", "m"] }
target "common" {
  target = "final"
}
target "t1" {
  inherits = ["common"]
  args = { NAME = "one-\${SUFFIX}" }
  output = ["type=local,dest=out/t1"]
}
target "t2" {
  inherits = ["common"]
  args = { NAME = upper("two") }
  output = ["type=local,dest=out/t2"]
}
target "t3" {
  inherits = ["common"]
  args = { NAME = join("-", ["th", "ree"]) }
  output = ["type=local,dest=out/t3"]
}
target "t4" {
  inherits = ["common"]
  args = { NAME = "four" }
  output = ["type=local,dest=out/t4"]
}
target "t5" {
  inherits = ["common"]
  args = { NAME = "five" }
  output = ["type=local,dest=out/t5"]
}
target "m" {
  name = "m-\${v}"
  matrix = { v = ["a", "b"] }
  inherits = ["common"]
  args = { NAME = "matrix-\${v}" }
  output = ["type=local,dest=out/m-\${v}"]
}
`;

describe(`kiln bake [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let daemon: Kilnd;
  let dir: string;
  beforeAll(async () => {
    daemon = await startKilnd();
    dir = mkdtempSync(join(tmpdir(), 'kiln-bake-'));
    copyFileSync(BUSYBOX, join(dir, 'busybox'));
    writeFileSync(join(dir, 'Dockerfile'), DOCKERFILE);
    writeFileSync(join(dir, 'docker-bake.hcl'), BAKE_HCL);
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('builds 5 targets and a matrix at once; the stage they share runs once', async () => {
    const res = await runKiln(['bake', '--addr', daemon.addr, '--progress=plain', '--metadata-file', 'meta.json'], { cwd: dir, env: { SUFFIX: 'env' } });
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    // The matrix block is one build per combination, named by its name expression.
    const names = { t1: 'one-env', t2: 'TWO', t3: 'th-ree', t4: 'four', t5: 'five', 'm-a': 'matrix-a', 'm-b': 'matrix-b' };
    const tokens = new Set<string>();
    for (const [t, name] of Object.entries(names)) {
      expect(readFileSync(join(dir, 'out', t, 'name'), 'utf8')).toBe(`${name}\n`);
      tokens.add(readFileSync(join(dir, 'out', t, 'token'), 'utf8'));
    }
    // One run of the shared RUN: one token in all seven outputs, one marker line in the progress.
    expect(tokens.size).toBe(1);
    expect(res.stderr.match(/^#\d+ \d+\.\d+ SHARED-STEP-MARKER$/gm) ?? [], res.stderr).toHaveLength(1);
    const meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as Record<string, unknown>;
    expect(Object.keys(meta).sort()).toEqual(['m-a', 'm-b', 't1', 't2', 't3', 't4', 't5']);
    expect((meta.t1 as Record<string, unknown>)['buildx.build.ref']).toMatch(/^default\/default\/[a-z0-9]{25}$/);
  });

  it('builds the services of a compose.yaml, and a target: context from the target it names', async () => {
    const composeDir = mkdtempSync(join(dir, 'compose-'));
    copyFileSync(BUSYBOX, join(composeDir, 'busybox'));
    writeFileSync(join(composeDir, 'Dockerfile'), DOCKERFILE);
    writeFileSync(join(composeDir, 'compose.yaml'), ['services:', '  web:', '    build:', '      context: .', '      target: final', '      args:', '        NAME: composed', '  db:', '    image: postgres', ''].join('\n'));
    writeFileSync(
      join(composeDir, 'linked.hcl'),
      'target "base" {\n  target = "shared"\n}\ntarget "app" {\n  dockerfile-inline = "FROM scratch\\nCOPY --from=basectx /token /from-base\\n"\n  contexts = { basectx = "target:base" }\n  output = ["type=local,dest=out/app"]\n}\n',
    );
    const res = await runKiln(['bake', '--addr', daemon.addr, '--progress=plain', '--set', 'web.output=type=local,dest=out/web'], { cwd: composeDir });
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    expect(readFileSync(join(composeDir, 'out', 'web', 'name'), 'utf8')).toBe('composed\n');
    const linked = await runKiln(['bake', '--addr', daemon.addr, '--progress=plain', '-f', 'linked.hcl', 'app'], { cwd: composeDir });
    expect(linked.code, `${linked.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    expect(readFileSync(join(composeDir, 'out', 'app', 'from-base'), 'utf8')).toMatch(/^[0-9a-f-]{36}\n$/);
  });

  it('--print writes the resolved definition as buildx prints it, without a daemon', async () => {
    const res = await runKiln(['bake', '--print', '--set', 't1.platform=linux/arm64', 't1', 'm'], { cwd: dir, env: { SUFFIX: 'p' } });
    expect(res.code, res.stderr).toBe(0);
    // Written from buildx's bake/bake.go and commands/bake.go: map keys sorted, the
    // Target struct's field order, defaults for context and dockerfile, 2-space indent.
    expect(res.stdout).toBe(`{
  "group": {
    "default": {
      "targets": [
        "m",
        "t1"
      ]
    },
    "m": {
      "targets": [
        "m-a",
        "m-b"
      ]
    }
  },
  "target": {
    "m-a": {
      "context": ".",
      "dockerfile": "Dockerfile",
      "args": {
        "NAME": "matrix-a"
      },
      "target": "final",
      "output": [
        {
          "dest": "out/m-a",
          "type": "local"
        }
      ]
    },
    "m-b": {
      "context": ".",
      "dockerfile": "Dockerfile",
      "args": {
        "NAME": "matrix-b"
      },
      "target": "final",
      "output": [
        {
          "dest": "out/m-b",
          "type": "local"
        }
      ]
    },
    "t1": {
      "context": ".",
      "dockerfile": "Dockerfile",
      "args": {
        "NAME": "one-p"
      },
      "target": "final",
      "platforms": [
        "linux/arm64"
      ],
      "output": [
        {
          "dest": "out/t1",
          "type": "local"
        }
      ]
    }
  }
}
`);
  });

  describe.skipIf(!findDockerd())('--load', () => {
    let dockerd: TestDockerd;
    beforeAll(async () => {
      dockerd = await startDockerd();
    }, 120_000);
    afterAll(async () => {
      await dockerd?.stop();
    });

    it('loads the image of every target into dockerd with its tags', async () => {
      const res = await runKiln(['bake', '--addr', daemon.addr, '--progress=plain', '--load', '--set', 't4.tags=kiln-bake/four:1', '--set', 't5.tags=kiln-bake/five:1', '--set', '*.output=', 't4', 't5'], {
        cwd: dir,
        env: { DOCKER_HOST: dockerd.host },
      });
      expect(res.code, `${res.stderr}\n${dockerd.logs().slice(-2000)}`).toBe(0);
      expect(res.stderr).toContain('Loaded image: kiln-bake/four:1');
      for (const tag of ['kiln-bake/four:1', 'kiln-bake/five:1']) {
        const inspect = await dockerd.docker(['image', 'inspect', tag, '--format', '{{.Id}}']);
        expect(inspect.stdout.trim()).toMatch(/^sha256:[0-9a-f]{64}$/);
      }
    });
  });
});
