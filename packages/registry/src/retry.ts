/** How requests are retried on 429, 5xx and broken connections. */
export interface RetryPolicy {
  /** Total tries per request, first included; default 5. */
  attempts: number;
  /** First backoff; doubles each retry (with jitter); default 200 ms. */
  baseDelayMs: number;
  /** Cap on one backoff; default 5 s. */
  maxDelayMs: number;
  /** Cap on a server's Retry-After; a longer one is waited for this long; default 30 s. */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: 200, maxDelayMs: 5000, maxRetryAfterMs: 30_000 };

/** 429 and 5xx except 501 (not implemented) and 505 are worth another try; no other 4xx is. */
export function isRetryableStatus(status: number): boolean {
  return status === 429 || (status >= 500 && status <= 599 && status !== 501 && status !== 505);
}

/** Retry-After as milliseconds (delta seconds or an HTTP date); undefined when absent or unparseable. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Math.round(Number(v) * 1000);
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/**
 * The wait before retry number `retry` (1 = first retry): the server's
 * Retry-After when given (capped), else exponential backoff with jitter
 * (half fixed, half random), capped.
 */
export function retryDelay(policy: RetryPolicy, retry: number, retryAfterMs?: number): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, policy.maxRetryAfterMs);
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (retry - 1));
  return Math.round(exp / 2 + (Math.random() * exp) / 2);
}

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

/** True for a broken or refused connection (fetch's "fetch failed"/"terminated" and socket errno codes). */
export function isNetworkError(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && NETWORK_CODES.has(code)) return true;
    if (e instanceof TypeError && (e.message === 'fetch failed' || e.message === 'terminated')) return true;
  }
  return false;
}

/** The innermost message of an error chain ("other side closed" rather than "fetch failed"). */
export function networkReason(err: unknown): string {
  let e: unknown = err;
  let msg = err instanceof Error ? err.message : String(err);
  for (let depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof Error) {
      const code = (e as { code?: unknown }).code;
      msg = typeof code === 'string' && !e.message.includes(code) ? `${e.message} (${code})` : e.message;
    }
  }
  return msg;
}
