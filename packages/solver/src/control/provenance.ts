import type { ParsedDefinition } from '@kiln/llb';

/** BuildKit's build type URI in SLSA provenance. */
export const BUILDKIT_BUILD_TYPE = 'https://mobyproject.org/buildkit@v1';

export interface ProvenanceInput {
  buildId: string;
  frontend: string;
  frontendAttrs: Readonly<Record<string, string>>;
  /** The definitions built (one per platform). */
  defs: readonly ParsedDefinition[];
  /** Target platforms ("" for the worker's own). */
  platforms: readonly string[];
  startedMs: number;
  finishedMs: number;
  /** `min`: parameters and materials; `max`: also each step of the definition (buildConfig). */
  mode: 'min' | 'max';
}

/** Parses the `attest:provenance` value (`mode=min|max`, `disabled=true`, or buildx's bare `true`/`false`); undefined when off. */
export function provenanceMode(value: string | undefined): 'min' | 'max' | undefined {
  if (value === undefined) return undefined;
  let mode: 'min' | 'max' = 'min';
  for (const part of value.split(',').map((p) => p.trim()).filter(Boolean)) {
    const [k, v = ''] = part.split('=', 2) as [string, string?];
    if ((k === 'disabled' && v !== 'false') || part === 'false' || (k === 'mode' && v === 'disabled')) return undefined;
    if (k === 'mode' && (v === 'min' || v === 'max')) mode = v;
  }
  return mode;
}

/** `pkg:docker/NAME@TAG?platform=...` for a `docker-image://` identifier pinned by digest, as BuildKit writes materials. */
function material(identifier: string, platform: string | undefined): { uri: string; digest: Record<string, string> } | undefined {
  const m = /^docker-image:\/\/([^@]+)@(sha256):([0-9a-f]{64})$/.exec(identifier);
  if (!m) return undefined;
  const [, name, algo, hex] = m as unknown as [string, string, string, string];
  const colon = name.lastIndexOf(':');
  const slash = name.lastIndexOf('/');
  const repo = colon > slash ? name.slice(0, colon) : name;
  const tag = colon > slash ? name.slice(colon + 1) : 'latest';
  const q = platform ? `?platform=${encodeURIComponent(platform)}` : '';
  return { uri: `pkg:docker/${repo}@${tag}${q}`, digest: { [algo]: hex } };
}

/**
 * The SLSA provenance v0.2 predicate BuildKit attaches to an image
 * (`https://slsa.dev/provenance/v0.2`): build type, invocation (the
 * frontend, its attrs minus secrets-looking ones, the local sources, the
 * platform), materials (every pinned base image), metadata (invocation id =
 * build ref, times, completeness). `max` adds `buildConfig.llbDefinition`:
 * each op of the definition with its id, op kind and inputs.
 */
export function buildProvenance(p: ProvenanceInput): Record<string, unknown> {
  const args: Record<string, string> = {};
  for (const [k, v] of Object.entries(p.frontendAttrs)) {
    if (k.startsWith('attest:') || k === 'requestid') continue;
    args[k] = v;
  }
  const materials = new Map<string, { uri: string; digest: Record<string, string> }>();
  const locals = new Set<string>();
  for (const [i, def] of p.defs.entries()) {
    for (const op of def.ops.values()) {
      if (op.op.op.case !== 'source') continue;
      const id = op.op.op.value.identifier;
      if (id.startsWith('local://')) locals.add(id.slice('local://'.length));
      const m = material(id, p.platforms[i] || undefined);
      if (m && !materials.has(m.uri + JSON.stringify(m.digest))) materials.set(m.uri + JSON.stringify(m.digest), m);
    }
  }
  const predicate: Record<string, unknown> = {
    builder: { id: '' },
    buildType: BUILDKIT_BUILD_TYPE,
    materials: [...materials.values()],
    invocation: {
      configSource: { entryPoint: p.frontendAttrs.filename ?? 'Dockerfile' },
      parameters: { frontend: p.frontend, args, locals: [...locals].sort().map((name) => ({ name })) },
      environment: { platform: p.platforms.filter(Boolean).join(',') || undefined },
    },
    metadata: {
      buildInvocationID: p.buildId,
      buildStartedOn: new Date(p.startedMs).toISOString(),
      buildFinishedOn: new Date(p.finishedMs).toISOString(),
      completeness: { parameters: p.mode === 'max', environment: true, materials: false },
      reproducible: false,
      'https://mobyproject.org/buildkit@v1#metadata': { vcs: {} },
    },
  };
  if (p.mode === 'max') {
    predicate.buildConfig = {
      llbDefinition: p.defs.flatMap((def) =>
        [...def.ops.values()].map((op) => ({
          id: op.digest,
          op: { kind: op.op.op.case ?? 'terminal', ...(op.op.op.case === 'source' ? { identifier: op.op.op.value.identifier } : {}) },
          inputs: op.op.inputs.map((inp) => `${inp.digest}:${inp.index}`),
        })),
      ),
    };
  }
  return predicate;
}
