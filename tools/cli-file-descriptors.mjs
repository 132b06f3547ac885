// The CLI bundle's protobuf file descriptors as JSON instead of base64
// (used by tools/bundle-cli.mjs). Why: the generated code (packages/api)
// hydrates each .proto's descriptor with protobuf-es's fileDesc(base64): a
// reflective binary decode of google.protobuf.FileDescriptorProto that runs
// in V8's interpreter at every CLI start, ~12 ms of CPU of a cached `kiln
// build` for the files the CLI needs. The same FileDescriptorProto made by
// create() from a JSON string costs about a third of that, and the
// registry built from it is the same (tools/cli-file-descriptors.spec.ts).
import { create, createFileRegistry } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';

/**
 * Runtime (in the bundle): what fileDesc(base64, imports) returns, from
 * `json` (descriptorJson of the file) and the generated code's imports.
 */
export function fileDescFromJson(json, imports) {
  const root = create(FileDescriptorProtoSchema, JSON.parse(json));
  root.dependency = imports?.map((f) => f.proto.name) ?? [];
  const reg = createFileRegistry(root, (name) => imports?.find((f) => f.proto.name === name));
  return reg.getFile(root.name);
}

/**
 * Bundle time: the JSON of a hydrated file's FileDescriptorProto (`file.proto`
 * of a generated `file_*` export, json names already filled in by fileDesc),
 * without its dependency list (fileDescFromJson sets it from the imports).
 * Only the fields set on the message are written, so create() sets the same.
 */
export function descriptorJson(file) {
  return JSON.stringify({ ...ownFields(file.proto), dependency: [] });
}

function ownFields(v) {
  if (Array.isArray(v)) return v.map(ownFields);
  if (typeof v === 'bigint' || v instanceof Uint8Array) throw new Error(`a descriptor field of type ${typeof v} has no JSON form here`);
  if (v === null || typeof v !== 'object') return v;
  const o = {};
  for (const k of Object.keys(v)) if (k !== '$typeName') o[k] = ownFields(v[k]);
  return o;
}
