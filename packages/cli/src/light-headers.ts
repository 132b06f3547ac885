/**
 * A small WHATWG `Headers` for the CLI process. Why: Node's global `Headers`
 * is a lazy getter that loads undici (all of fetch) on first use, about
 * 40 ms of CPU in every `kiln` process, and the CLI uses headers only for
 * Connect calls over HTTP/2 (it never calls fetch). Twenty builds started
 * at once pay that twenty times.
 */
export class LightHeaders {
  readonly #values = new Map<string, string[]>();

  constructor(init?: HeadersInitLike) {
    if (init === undefined || init === null) return;
    if (typeof (init as { forEach?: unknown }).forEach === 'function' && !Array.isArray(init)) {
      (init as { forEach(cb: (value: string, name: string) => void): void }).forEach((v, k) => this.append(k, v));
    } else if (typeof (init as Iterable<unknown>)[Symbol.iterator] === 'function') {
      for (const pair of init as Iterable<readonly string[]>) {
        if (pair.length !== 2) throw new TypeError('Headers: each init pair must have exactly two items');
        this.append(pair[0]!, pair[1]!);
      }
    } else {
      for (const [k, v] of Object.entries(init as Record<string, string>)) this.append(k, v);
    }
  }

  append(name: string, value: string): void {
    const key = String(name).toLowerCase();
    const list = this.#values.get(key);
    if (list) list.push(normalise(value));
    else this.#values.set(key, [normalise(value)]);
  }

  set(name: string, value: string): void {
    this.#values.set(String(name).toLowerCase(), [normalise(value)]);
  }

  get(name: string): string | null {
    const list = this.#values.get(String(name).toLowerCase());
    return list ? list.join(', ') : null;
  }

  getSetCookie(): string[] {
    return [...(this.#values.get('set-cookie') ?? [])];
  }

  has(name: string): boolean {
    return this.#values.has(String(name).toLowerCase());
  }

  delete(name: string): void {
    this.#values.delete(String(name).toLowerCase());
  }

  forEach(cb: (value: string, name: string, parent: LightHeaders) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) cb.call(thisArg, v, k, this);
  }

  /** Sorted by name, values of a name combined (set-cookie ones kept apart), as the standard says. */
  *entries(): IterableIterator<[string, string]> {
    for (const key of [...this.#values.keys()].sort()) {
      const list = this.#values.get(key)!;
      if (key === 'set-cookie') for (const v of list) yield [key, v];
      else yield [key, list.join(', ')];
    }
  }

  *keys(): IterableIterator<string> {
    for (const [k] of this.entries()) yield k;
  }

  *values(): IterableIterator<string> {
    for (const [, v] of this.entries()) yield v;
  }

  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.entries();
  }

  get [Symbol.toStringTag](): string {
    return 'Headers';
  }
}

type HeadersInitLike = Iterable<readonly string[]> | Record<string, string> | { forEach(cb: (value: string, name: string) => void): void } | null;

function normalise(value: string): string {
  return String(value).replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, '');
}

/**
 * Puts LightHeaders in place of the global `Headers`, only while that is
 * still Node's unloaded lazy getter (never over a class already in use).
 * Returns whether it did.
 */
export function installLightHeaders(target: object = globalThis): boolean {
  const desc = Object.getOwnPropertyDescriptor(target, 'Headers');
  if (!desc || typeof desc.get !== 'function') return false;
  Object.defineProperty(target, 'Headers', { value: LightHeaders, writable: true, configurable: true, enumerable: false });
  return true;
}
