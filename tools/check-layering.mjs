#!/usr/bin/env node
// Enforces Kiln's package layering (docs/ARCHITECTURE.md): reads every
// package's Nx tag (package.json "nx.tags": type:<kind>), its declared
// @kiln dependencies and the @kiln imports in its sources, and fails on:
//  - an import of a package whose kind the importer may not use
//    (libraries never import tiers or apps; a tier never imports another
//    tier: tiers meet only through @kiln/api clients);
//  - an import of @kiln/testkit outside specs and e2e;
//  - a deep import into another package's src/ or dist/;
//  - an import of a package not declared in package.json;
//  - a relative import that leaves the package.
// Usage: node tools/check-layering.mjs [WORKSPACE_ROOT]
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Which kinds each kind may import (besides itself for libs). */
export const ALLOWED = {
  generated: [],
  lib: ['generated', 'lib'],
  tier: ['generated', 'lib'],
  app: ['generated', 'lib', 'tier', 'app'],
  testkit: ['generated', 'lib'],
  e2e: ['generated', 'lib', 'testkit'],
};

function listFiles(dir) {
  const out = [];
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name === 'dist') continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...listFiles(p));
    else if (/\.(m?ts|m?js)$/.test(name) && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

const IMPORT_RE = /(?:^|[\s;])(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|^\s*import\s+['"]([^'"]+)['"]/gm;

export function checkLayering(root) {
  const problems = [];
  const projects = new Map();
  const dirs = [
    ...readdirSync(join(root, 'packages')).map((d) => join(root, 'packages', d)),
    ...(existsSync(join(root, 'e2e', 'package.json')) ? [join(root, 'e2e')] : []),
  ];
  for (const dir of dirs) {
    const pjPath = join(dir, 'package.json');
    if (!existsSync(pjPath)) continue;
    const pj = JSON.parse(readFileSync(pjPath, 'utf8'));
    const tag = (pj.nx?.tags ?? []).find((t) => t.startsWith('type:'));
    if (!tag) {
      problems.push(`${relative(root, pjPath)}: no "type:<kind>" tag in nx.tags`);
      continue;
    }
    projects.set(pj.name, { dir, kind: tag.slice(5), deps: new Set(Object.keys({ ...pj.dependencies, ...pj.devDependencies })) });
  }
  for (const [name, p] of projects) {
    const allowed = ALLOWED[p.kind];
    if (!allowed) {
      problems.push(`${name}: unknown kind "${p.kind}"`);
      continue;
    }
    for (const dep of p.deps) {
      const target = projects.get(dep);
      if (!target) continue;
      if (!allowed.includes(target.kind) && !(dep === '@kiln/testkit')) {
        problems.push(`${name} (${p.kind}) declares a dependency on ${dep} (${target.kind}), which a ${p.kind} may not use`);
      }
    }
    for (const file of listFiles(p.dir)) {
      const rel = relative(root, file);
      const isSpec = /\.spec\.[mc]?[tj]s$/.test(file) || p.kind === 'e2e';
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(IMPORT_RE)) {
        const spec = m[1] ?? m[2] ?? m[3];
        const line = text.slice(0, m.index).split('\n').length + (text[m.index] === '\n' ? 1 : 0);
        const at = `${rel}:${line}`;
        if (spec.startsWith('.')) {
          const target = resolve(dirname(file), spec);
          if (!(target + sep).startsWith(p.dir + sep)) problems.push(`${at}: relative import "${spec}" leaves package ${name}`);
          continue;
        }
        const pm = /^(@kiln\/[^/]+)(\/.*)?$/.exec(spec);
        if (!pm) continue;
        const [, pkg, sub] = pm;
        const target = projects.get(pkg);
        if (!target) {
          problems.push(`${at}: imports unknown package ${pkg}`);
          continue;
        }
        if (sub && /^\/(src|dist)(\/|$)/.test(sub)) problems.push(`${at}: deep import "${spec}"; use the package's exports`);
        if (pkg === name) continue;
        if (target.kind === 'testkit' && !isSpec) {
          problems.push(`${at}: imports ${pkg}; only specs and e2e may use the testkit`);
          continue;
        }
        const ok = allowed.includes(target.kind) || (target.kind === 'testkit' && isSpec);
        if (!ok) {
          const why = p.kind === 'tier' && target.kind === 'tier' ? ' (tiers reach each other only through @kiln/api clients)' : '';
          problems.push(`${at}: ${name} (${p.kind}) imports ${pkg} (${target.kind})${why}`);
        }
        if (!p.deps.has(pkg)) problems.push(`${at}: imports ${pkg} but ${name}'s package.json does not declare it`);
      }
    }
  }
  return problems;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const root = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..'));
  const problems = checkLayering(root);
  if (problems.length) {
    console.error(`layering check failed (${problems.length}):\n  ${problems.join('\n  ')}`);
    process.exit(1);
  }
  console.log('layering check passed');
}
