import { create, toBinary } from '@bufbuild/protobuf';
import { llb } from '@kiln/api';
import { sha256 } from '@kiln/common';
import type { ParsedDefinition } from '@kiln/llb';

/**
 * What one vertex's cache key was made of in one build, kept so a later
 * build's cache miss can be explained by diffing against it. Compact: no
 * op bytes, only digests and the values a user recognises.
 */
export interface StepRecord {
  /** Vertex digest (the op with its inputs' digests). */
  digest: string;
  /** The vertex cache key ('' for steps outside the cache: context transfers). */
  key: string;
  name: string;
  /** Op kind: exec, source, file, merge, diff. */
  kind: string;
  /** Where the step comes from, for matching it across builds (see stepSites). */
  position: string;
  /** The Dockerfile line(s) of the step ('' without a source map). */
  line: string;
  /** Target platform ("linux/amd64"; '' when the op names none). */
  platform: string;
  /** Digest of the op without its inputs: its own fields. */
  fields: string;
  /** Per input, the key the cache key used (a content checksum for inputs read by path). */
  inputs: string[];
  /** Per input, the vertex digest it comes from. */
  parents: string[];
  /** Per input, the paths the op reads of it (undefined: the whole input). */
  reads: (string[] | null)[];
  /** Source ops: the identifier (an image pinned by digest, `local://context`). */
  source?: string;
  /** Exec ops: the environment (build args reach RUN this way). */
  env?: string[];
  /** Local sources: path → content digest (absent when the worker sent none). */
  files?: Record<string, string>;
  /** The step bypassed the cache (`--no-cache`, `--no-cache-filter`). */
  noCache: boolean;
  worker: string;
  cached: boolean;
}

/** Where a vertex sits in its Dockerfile: the matching position and the line text. */
export interface StepSite {
  position: string;
  line: string;
}

/**
 * The site of every op of a definition. The position is the source file,
 * the line range and the op kind (plus an occurrence number when one
 * instruction makes several ops of one kind): it survives edits to other
 * lines' text and to any input, which change the op digests. Ops without a
 * source map are placed by their name.
 */
export function stepSites(def: ParsedDefinition, name: (digest: string) => string): Map<string, StepSite> {
  const sites = new Map<string, StepSite>();
  const seen = new Map<string, number>();
  const lines = new Map<number, string[]>();
  for (const [digest, op] of def.ops) {
    const meta = op.metadata;
    const src = meta && meta.sourceIndex >= 0 ? def.definition.sources[meta.sourceIndex] : undefined;
    const range = meta?.ranges[0];
    let base: string;
    let line = '';
    if (src && range) {
      base = `${src.filename}:${range.startLine}-${range.endLine}:${op.op.op.case ?? ''}`;
      let text = lines.get(meta.sourceIndex);
      if (!text) lines.set(meta.sourceIndex, (text = new TextDecoder().decode(src.data).split('\n')));
      line = text.slice(range.startLine - 1, range.endLine).map((l) => l.trim()).join(' ');
    } else {
      base = `op:${op.op.op.case ?? ''}:${name(digest)}`;
    }
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    sites.set(digest, { position: n === 0 ? base : `${base}#${n}`, line });
  }
  return sites;
}

/** Digest of an op's own fields (inputs left out, so a changed parent does not show as a changed step). */
export function opFieldsDigest(op: llb.Op): string {
  return sha256(toBinary(llb.OpSchema, create(llb.OpSchema, { ...op, inputs: [] })));
}

/** The platform an op targets, as "os/arch[/variant]" ('' when none). */
export function opPlatform(op: llb.Op): string {
  const p = op.platform;
  if (!p?.os) return '';
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}
