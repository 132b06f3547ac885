#!/usr/bin/env node
// Fails when proto/ breaks its rules or packages/api is stale:
//  1. `buf lint` on proto/;
//  2. `buf breaking` against tools/proto-baseline.binpb (the last released
//     shape; refresh it deliberately with `--update-baseline`);
//  3. regenerates the code into a temp dir and compares it, file by file,
//     with packages/api/src (generated code is never edited by hand).
// Usage: node tools/check-proto.mjs [WORKSPACE_ROOT] [--update-baseline]
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const bin = join(here, '..', 'node_modules', '.bin');

function run(cmd, args, cwd) {
  try {
    execFileSync(join(bin, cmd), args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    return '';
  } catch (err) {
    return `${err.stdout ?? ''}${err.stderr ?? ''}`.trim() || String(err);
  }
}

function files(dir) {
  const out = [];
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...files(p));
    else out.push(p);
  }
  return out;
}

export function checkProto(root, { updateBaseline = false } = {}) {
  const problems = [];
  const protoDir = join(root, 'proto');
  const baseline = join(root, 'tools', 'proto-baseline.binpb');
  const lint = run('buf', ['lint'], protoDir);
  if (lint) problems.push(`buf lint:\n${lint}`);
  if (updateBaseline) {
    const out = run('buf', ['build', '-o', baseline], protoDir);
    if (out) problems.push(`buf build: ${out}`);
  } else if (existsSync(baseline)) {
    const br = run('buf', ['breaking', '--against', baseline], protoDir);
    if (br) problems.push(`buf breaking (against tools/proto-baseline.binpb):\n${br}`);
  } else {
    problems.push('tools/proto-baseline.binpb is missing; create it with --update-baseline');
  }
  const tmp = mkdtempSync(join(tmpdir(), 'kiln-proto-check-'));
  try {
    execFileSync(process.execPath, [join(here, 'gen-proto.mjs'), '--out', tmp, '--proto', protoDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    const want = new Map(files(tmp).map((f) => [relative(tmp, f), readFileSync(f, 'utf8')]));
    const apiSrc = join(root, 'packages', 'api', 'src');
    const have = new Map(files(apiSrc).filter((f) => !f.endsWith('.spec.ts')).map((f) => [relative(apiSrc, f), readFileSync(f, 'utf8')]));
    for (const [f, text] of want) {
      if (!have.has(f)) problems.push(`packages/api/src/${f} is missing: run npm run generate`);
      else if (have.get(f) !== text) problems.push(`packages/api/src/${f} is stale or edited by hand: run npm run generate`);
    }
    for (const f of have.keys()) if (!want.has(f)) problems.push(`packages/api/src/${f} is not generated from proto/: remove it`);
  } catch (err) {
    problems.push(`generation failed: ${err.stderr ?? err}`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return problems;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const root = resolve(args.find((a) => !a.startsWith('--')) ?? join(here, '..'));
  const problems = checkProto(root, { updateBaseline: args.includes('--update-baseline') });
  if (problems.length) {
    console.error(`proto check failed:\n${problems.join('\n')}`);
    process.exit(1);
  }
  console.log('proto check passed (lint, breaking, generated code up to date)');
}
