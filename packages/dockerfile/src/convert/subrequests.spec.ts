import { describe, expect, it } from 'vitest';
import { formatTargets, lintReport, listTargets } from './subrequests.js';

describe('--call subrequests', () => {
  const text = '# base: the shared layer\nFROM busybox AS base\nRUN true\n\nFROM base AS build\n# final image\nFROM scratch AS final\nCOPY --from=build /x /x\n';

  it('lists every stage with its line and base; the last is the default', () => {
    const targets = listTargets(text);
    expect(targets.map((t) => t.name)).toEqual(['base', 'build', 'final']);
    expect(targets.map((t) => t.location?.ranges[0]?.start.line)).toEqual([2, 5, 7]);
    expect(targets[0]).toMatchObject({ name: 'base', base: 'busybox' });
    expect(targets.filter((t) => t.default).map((t) => t.name)).toEqual(['final']);
  });

  it('prints the targets table buildx prints', () => {
    const out = formatTargets(listTargets(text));
    const lines = out.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^TARGET\s+DESCRIPTION$/);
    expect(lines.some((l) => /^final \(default\)/.test(l)), out).toBe(true);
    expect(lines.some((l) => /^base\b/.test(l))).toBe(true);
  });

  it('reports no warnings with status 0', () => {
    const r = lintReport([], text, 'Dockerfile');
    expect(r.statusCode).toBe(0);
    expect(JSON.parse(r.json)).toBeTypeOf('object');
  });
});
