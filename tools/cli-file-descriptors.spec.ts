import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { equals, type DescFile } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM tool without types
import { descriptorJson, fileDescFromJson } from './cli-file-descriptors.mjs';

// Every generated file of packages/api (built), hydrated both ways: what the
// CLI bundle does (JSON) must give the registry the generated code gives (base64).
const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const gen = join(repo, 'packages', 'api', 'dist', 'gen', 'kiln');
const generated = readdirSync(gen, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('_pb.js'));

/** A message's shape as a client reads it: names, numbers, kinds, JSON names, oneofs, nested types. */
function shape(file: DescFile): unknown {
  const fields = (m: DescFile['messages'][number]): unknown =>
    m.fields.map((f) => [f.name, f.number, f.fieldKind, f.jsonName, f.oneof?.name, f.proto.proto3Optional, f.fieldKind === 'message' ? f.message.typeName : undefined]);
  return {
    messages: file.messages.map((m) => [m.typeName, fields(m), m.nestedMessages.map((n) => [n.typeName, fields(n)])]),
    enums: file.enums.map((e) => [e.typeName, e.values.map((v) => [v.name, v.number])]),
    services: file.services.map((s) => [s.typeName, s.methods.map((m) => [m.name, m.methodKind, m.input.typeName, m.output.typeName])]),
  };
}

/** Own keys all the way down: which fields are set, not only their values. */
function ownKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(ownKeys);
  if (v === null || typeof v !== 'object') return v;
  return Object.fromEntries(Object.keys(v).sort().map((k) => [k, ownKeys((v as Record<string, unknown>)[k])]));
}

describe('CLI bundle file descriptors (JSON instead of base64)', () => {
  it('finds the generated files', () => {
    expect(generated.length).toBeGreaterThanOrEqual(8);
  });

  it.each(generated)('%s hydrates to the same descriptor and registry', async (path) => {
    const mod = (await import(pathToFileURL(join(gen, path)).href)) as Record<string, unknown>;
    const [original] = Object.entries(mod).filter(([name]) => name.startsWith('file_')).map(([, f]) => f as DescFile);
    const rebuilt = fileDescFromJson(descriptorJson(original), original!.dependencies) as DescFile;
    expect(equals(FileDescriptorProtoSchema, rebuilt.proto, original!.proto)).toBe(true);
    expect(ownKeys(rebuilt.proto)).toEqual(ownKeys(original!.proto));
    expect(shape(rebuilt)).toEqual(shape(original!));
  });

  it('the built CLI bundle decodes no descriptor of packages/api from base64', () => {
    const bundle = readFileSync(join(repo, 'packages', 'cli', 'dist', 'kiln-cli.bundle.cjs'), 'utf8');
    const fromBase64 = [...bundle.matchAll(/\b(file_\w+) = \/\* @__PURE__ \*\/ fileDesc\(/g)].map((m) => m[1]);
    // packages/api's files are all under kiln/ (file_kiln_*); npm modules' own (google's, Connect's gRPC status) stay as they are.
    expect(fromBase64.filter((name) => name!.startsWith('file_kiln_'))).toEqual([]);
    expect(bundle).toMatch(/\bfile_kiln_control_v1_control = \/\* @__PURE__ \*\/ fileDescFromJson\(/);
    expect(fromBase64).toContain('file_google_protobuf_timestamp'); // the pattern finds the ones left as they are
  });
});
