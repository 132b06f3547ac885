import { toJson } from '@bufbuild/protobuf';
import { llb } from '@kiln/api';
import { marshal, parseDefinition } from '@kiln/llb';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { convertDockerfile, type ConvertOptions } from './convert.js';
import { parsePlatform } from './platform.js';

const dir = join(import.meta.dirname, '../testing/fixtures/corpus');
const files = readdirSync(dir).filter((f) => f.endsWith('.Dockerfile')).sort();

/** Options from a `# corpus: key=value ...` line (target=, platform=, build-arg:K=, context:NAME=). */
function optionsOf(text: string, filename: string): ConvertOptions {
  const opts: ConvertOptions = { filename, platform: { os: 'linux', architecture: 'amd64' }, buildPlatform: { os: 'linux', architecture: 'amd64' }, buildArgs: {}, namedContexts: {} };
  const line = /^# corpus: (.*)$/m.exec(text)?.[1] ?? '';
  for (const word of line.split(/\s+/).filter(Boolean)) {
    const eq = word.indexOf('=');
    const [k, v] = [word.slice(0, eq), word.slice(eq + 1)];
    if (k === 'target') opts.target = v;
    else if (k === 'platform') opts.platform = parsePlatform(v);
    else if (k.startsWith('build-arg:')) opts.buildArgs![k.slice(10)] = v;
    else if (k.startsWith('context:')) opts.namedContexts![k.slice(8)] = v;
  }
  return opts;
}

async function dump(file: string) {
  const text = readFileSync(join(dir, file), 'utf8');
  const res = await convertDockerfile(text, optionsOf(text, file));
  const def = marshal(res.state);
  const parsed = parseDefinition(def);
  const ops = [...parsed.ops.values()].map((o) => ({ digest: o.digest, description: o.metadata?.description, op: toJson(llb.OpSchema, o.op) }));
  return {
    digest: parsed.result?.digest ?? null,
    json: `${JSON.stringify({ result: parsed.result ?? null, ops, imageConfig: res.imageConfig, warnings: res.warnings.map((w) => `${w.line}: ${w.rule}: ${w.message}`) }, null, 2)}\n`,
  };
}

describe('Dockerfile corpus', () => {
  it('holds at least 40 Dockerfiles', () => {
    expect(files.length).toBeGreaterThanOrEqual(40);
  });

  it.each(files)('%s converts, deterministically, to its snapshot', async (file) => {
    const first = await dump(file);
    const again = await dump(file);
    expect(again.digest).toBe(first.digest);
    expect(again.json).toBe(first.json);
    await expect(first.json).toMatchFileSnapshot(join(dir, '__snapshots__', file.replace(/\.Dockerfile$/, '.llb.json')));
  });
});
