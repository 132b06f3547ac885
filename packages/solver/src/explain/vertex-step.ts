import { inputSelectors } from '../llb/input-selectors.js';
import type { LlbVertex } from '../llb/vertices.js';
import { opFieldsDigest, opPlatform, type StepRecord, type StepSite } from './step-record.js';

export interface VertexOutcome {
  /** The cache key ('' for a context transfer, which the cache never holds). */
  key: string;
  /** The keys its cache key used per input. */
  inputKeys: readonly string[];
  workerId: string;
  cached: boolean;
  noCache: boolean;
  /** A local source's files (RunResponse.content_files). */
  files?: readonly { path: string; digest: string }[];
}

/** The step record of a resolved vertex. */
export function vertexStep(v: LlbVertex, site: StepSite | undefined, o: VertexOutcome): StepRecord {
  const op = v.op.op;
  const selectors = inputSelectors(op);
  const step: StepRecord = {
    digest: v.digest,
    key: o.key,
    name: v.name,
    kind: op.op.case ?? '',
    position: site?.position ?? `op:${op.op.case ?? ''}:${v.name}`,
    line: site?.line ?? '',
    platform: opPlatform(op),
    fields: opFieldsDigest(op),
    inputs: [...o.inputKeys],
    parents: v.inputs.map((i) => i.vertex.digest),
    reads: op.inputs.map((_, i) => selectors[i]?.map((s) => s.path) ?? null),
    noCache: o.noCache,
    worker: o.workerId,
    cached: o.cached,
  };
  if (op.op.case === 'source') step.source = op.op.value.identifier;
  if (op.op.case === 'exec') step.env = [...(op.op.value.meta?.env ?? [])];
  if (o.files && o.files.length > 0) step.files = Object.fromEntries(o.files.map((f) => [f.path, f.digest]));
  return step;
}
