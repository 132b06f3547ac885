import { describe, expect, it } from 'vitest';
import { buildProvenance, provenanceMode } from './provenance.js';

describe('provenance', () => {
  it('reads attest:provenance values as buildx sends them', () => {
    expect(provenanceMode(undefined)).toBeUndefined();
    expect(provenanceMode('mode=min')).toBe('min');
    expect(provenanceMode('mode=max,builder-id=x')).toBe('max');
    expect(provenanceMode('disabled=true')).toBeUndefined();
    expect(provenanceMode('')).toBe('min');
  });

  it('keeps attest: and requestid attrs out of the parameters; min has no buildConfig', () => {
    const p = buildProvenance({ buildId: 'b1', frontend: 'dockerfile.v0', frontendAttrs: { filename: 'Dockerfile', 'attest:provenance': 'mode=min', 'build-arg:A': '1' }, defs: [], platforms: [''], startedMs: 0, finishedMs: 1000, mode: 'min' });
    expect(p).toMatchObject({
      buildType: 'https://mobyproject.org/buildkit@v1',
      invocation: { configSource: { entryPoint: 'Dockerfile' }, parameters: { frontend: 'dockerfile.v0', args: { filename: 'Dockerfile', 'build-arg:A': '1' } } },
      metadata: { buildInvocationID: 'b1', buildStartedOn: '1970-01-01T00:00:00.000Z', buildFinishedOn: '1970-01-01T00:00:01.000Z' },
    });
    expect(p.buildConfig).toBeUndefined();
  });
});
