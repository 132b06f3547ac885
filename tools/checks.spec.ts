import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM tool without types
import { checkLayering } from './check-layering.mjs';
// @ts-expect-error plain ESM tool without types
import { checkProto } from './check-proto.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const temps: string[] = [];
const temp = () => {
  const d = mkdtempSync(join(tmpdir(), 'kiln-checks-'));
  temps.push(d);
  return d;
};
afterEach(() => {
  for (const d of temps.splice(0)) rmSync(d, { recursive: true, force: true });
});

function pkg(root: string, name: string, kind: string, deps: string[], source: string) {
  const dir = join(root, 'packages', name);
  mkdirSync(join(dir, 'src'), { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `@kiln/${name}`, dependencies: Object.fromEntries(deps.map((d) => [`@kiln/${d}`, '0.1.0'])), nx: { tags: [`type:${kind}`] } }));
  writeFileSync(join(dir, 'src', 'index.ts'), source);
}

describe('layering check', () => {
  it('passes on this repository', () => {
    expect(checkLayering(repo)).toEqual([]);
  });

  it('fails when a library imports a tier, a tier another tier, or code uses the testkit', () => {
    const root = temp();
    pkg(root, 'api', 'generated', [], 'export {};\n');
    pkg(root, 'testkit', 'testkit', [], 'export {};\n');
    pkg(root, 'solver', 'tier', ['api'], "import { x } from '@kiln/api';\n");
    pkg(root, 'exporters', 'tier', ['solver'], "import { Solver } from '@kiln/solver';\n");
    pkg(root, 'llb', 'lib', ['solver', 'testkit'], "import { api } from '@kiln/api';\nimport { s } from '@kiln/solver';\nimport { t } from '@kiln/testkit';\nimport { y } from '@kiln/api/src/gen/x.js';\n");
    const problems: string[] = checkLayering(root);
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/packages\/exporters\/src\/index.ts:1: @kiln\/exporters \(tier\) imports @kiln\/solver \(tier\) \(tiers reach each other only through @kiln\/api clients\)/),
        expect.stringMatching(/packages\/llb\/src\/index.ts:2: @kiln\/llb \(lib\) imports @kiln\/solver \(tier\)/),
        expect.stringMatching(/packages\/llb\/src\/index.ts:3: imports @kiln\/testkit; only specs and e2e/),
        expect.stringMatching(/packages\/llb\/src\/index.ts:4: deep import/),
        expect.stringMatching(/packages\/llb\/src\/index.ts:1: imports @kiln\/api but @kiln\/llb's package.json does not declare it/),
        expect.stringMatching(/@kiln\/llb \(lib\) declares a dependency on @kiln\/solver \(tier\)/),
      ]),
    );
    expect(problems.some((p) => p.includes('packages/solver/'))).toBe(false);
  });
});

describe('proto check', () => {
  function copyRepoProto(): string {
    const root = temp();
    cpSync(join(repo, 'proto'), join(root, 'proto'), { recursive: true });
    cpSync(join(repo, 'packages', 'api', 'src'), join(root, 'packages', 'api', 'src'), { recursive: true });
    mkdirSync(join(root, 'tools'));
    cpSync(join(repo, 'tools', 'proto-baseline.binpb'), join(root, 'tools', 'proto-baseline.binpb'));
    return root;
  }
  const controlProto = (root: string) => join(root, 'proto', 'kiln', 'control', 'v1', 'control.proto');

  it('passes on this repository', () => {
    expect(checkProto(repo)).toEqual([]);
  });

  it('fails when generated code is stale or edited by hand', () => {
    const root = copyRepoProto();
    writeFileSync(controlProto(root), readFileSync(controlProto(root), 'utf8').replace('message InfoRequest {}', 'message InfoRequest {\n  string detail = 1;\n}'));
    const gen = join(root, 'packages', 'api', 'src', 'gen', 'kiln', 'llb', 'v1', 'llb_pb.ts');
    writeFileSync(gen, readFileSync(gen, 'utf8') + '\n// hand edit\n');
    const problems: string[] = checkProto(root);
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/control_pb.ts is stale or edited by hand/),
        expect.stringMatching(/llb_pb.ts is stale or edited by hand/),
      ]),
    );
  });

  it('fails on lint and breaking changes', () => {
    const root = copyRepoProto();
    const text = readFileSync(controlProto(root), 'utf8')
      .replace('  repeated string entitlements = 9;\n', '')
      .replace('message InfoRequest {}', 'message InfoRequest {}\n\nenum Mood {\n  HAPPY = 0;\n}');
    writeFileSync(controlProto(root), text);
    const problems: string[] = checkProto(root);
    expect(problems.find((p) => p.startsWith('buf lint'))).toMatch(/HAPPY|Mood/);
    expect(problems.find((p) => p.startsWith('buf breaking'))).toMatch(/entitlements|9/);
  });
});
