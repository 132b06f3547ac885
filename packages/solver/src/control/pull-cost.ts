/** Before any pull was measured: what one costs besides its bytes (ms), and how fast bytes move (bytes per ms, 20 MB/s). */
const DEFAULT_FIXED_MS = 150;
const DEFAULT_BYTES_PER_MS = 20_000;
/** Pulls smaller than this measure the fixed cost; larger ones the rate. */
const SMALL_PULL_BYTES = 1 << 20;
/** Weight of the newest measurement (exponential moving average). */
const WEIGHT = 0.3;

/**
 * The cost of pulling a step's result from the worker holding it to another
 * one through the content tier (the holder writes the layers, the target
 * applies them), learnt from the pulls this solver made: a fixed part per
 * pull and a rate per byte. A pull is taken when it is expected to cost less
 * than running the step again took when it ran.
 */
export class PullCost {
  private fixedMs = DEFAULT_FIXED_MS;
  private bytesPerMs = DEFAULT_BYTES_PER_MS;

  /** Expected ms to pull `bytes` (the size of the result's snapshot on its holder). */
  estimateMs(bytes: number): number {
    return this.fixedMs + bytes / this.bytesPerMs;
  }

  /** Pull unless running is known to be cheaper; a result whose run time is unknown is pulled (it was kept to be reused). */
  shouldPull(bytes: number, runMs: number | null): boolean {
    return runMs === null || this.estimateMs(bytes) < runMs;
  }

  /** Takes in a finished pull of `bytes` that took `ms`. */
  observe(bytes: number, ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return;
    if (bytes < SMALL_PULL_BYTES) {
      this.fixedMs += WEIGHT * (ms - this.fixedMs);
      return;
    }
    const rate = bytes / Math.max(1, ms - this.fixedMs);
    this.bytesPerMs += WEIGHT * (rate - this.bytesPerMs);
  }
}
