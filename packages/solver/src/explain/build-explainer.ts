import { sha256 } from '@kiln/common';
import { explainMiss, type PreviousBuild } from './explain-miss.js';
import type { StepRecord } from './step-record.js';
import type { MissRecord, StepStore } from './step-store.js';

/** What makes two builds "the same build" for explanations: frontend, Dockerfile name, target and context directory. */
export function buildIdentity(p: { frontend: string; filename?: string; target?: string; context: string }): string {
  return sha256(JSON.stringify([p.frontend, p.filename ?? 'Dockerfile', p.target ?? '', p.context]));
}

/**
 * One build's side of the explainer: records each step's key inputs as it
 * resolves, explains each miss against the closest earlier build (loaded
 * once, at the first miss), and saves both when the build ends.
 */
export class BuildExplainer {
  private readonly steps = new Map<string, StepRecord>();
  /** By vertex: a build retried on another worker records its steps again. */
  private readonly misses = new Map<string, MissRecord>();
  private prev: PreviousBuild | undefined | null = null;

  constructor(
    private readonly store: StepStore,
    private readonly ref: string,
    private readonly identity: string,
    private readonly noCache: string | undefined,
  ) {}

  /** Records a step; returns its miss explanation when it ran instead of coming from the cache (context transfers: none). */
  record(step: StepRecord): string | undefined {
    this.steps.set(step.digest, step);
    if (step.cached || step.key === '') return undefined;
    if (this.prev === null) this.prev = this.store.previous(this.identity, this.ref);
    const reason = explainMiss(step, this.steps, this.prev, this.noCache);
    this.misses.set(step.digest, { vertex: step.digest, name: step.name, reason });
    return reason;
  }

  save(): void {
    this.store.save(this.ref, this.identity, [...this.steps.values()], [...this.misses.values()]);
  }
}
