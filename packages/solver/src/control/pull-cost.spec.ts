import { describe, expect, it } from 'vitest';
import { PullCost } from './pull-cost.js';

describe('PullCost: pull a step result from another worker or run the step again', () => {
  it('pulls what took longer to run than moving its bytes would, runs what was quicker, pulls when the run time is unknown', () => {
    const cost = new PullCost();
    expect(cost.shouldPull(10_000, 2_000)).toBe(true); // a 2 s RUN with a small layer
    expect(cost.shouldPull(10_000, 20)).toBe(false); // a 20 ms file op
    expect(cost.shouldPull(2_000_000_000, 5_000)).toBe(false); // 2 GB is more than 5 s at any default rate
    expect(cost.shouldPull(2_000_000_000, null)).toBe(true);
  });

  it('learns the fixed cost from small pulls and the rate from large ones', () => {
    const cost = new PullCost();
    const before = cost.estimateMs(0);
    for (let i = 0; i < 30; i++) cost.observe(1_000, 40);
    expect(cost.estimateMs(0)).toBeLessThan(before);
    expect(cost.estimateMs(0)).toBeCloseTo(40, 0);
    // 100 MB in 1 s: 100 kB per ms.
    for (let i = 0; i < 30; i++) cost.observe(100_000_000, 1_040);
    expect(cost.estimateMs(100_000_000)).toBeCloseTo(1_040, -1);
    expect(cost.shouldPull(100_000_000, 1_500)).toBe(true);
    expect(cost.shouldPull(100_000_000, 800)).toBe(false);
    cost.observe(5, Number.NaN); // ignored
    expect(cost.estimateMs(0)).toBeCloseTo(40, 0);
  });
});
