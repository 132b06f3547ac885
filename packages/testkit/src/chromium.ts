import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';

/** Debian's chromium (tools/setup.sh installs it); nothing downloads a browser. */
export const CHROMIUM = process.env.KILN_CHROMIUM ?? '/usr/bin/chromium';

export interface BrowserPage {
  /** Evaluates `expression` in the page (awaiting a promise) and returns its JSON value. */
  evaluate<T>(expression: string): Promise<T>;
  /** Polls `expression` until it is truthy; returns that value, or throws naming `what` after `timeoutMs`. */
  waitFor<T>(what: string, expression: string, timeoutMs?: number): Promise<T>;
  /** A PNG of the viewport (or the full page) written to `path`. */
  screenshot(path: string, opts?: { fullPage?: boolean }): Promise<void>;
  /** Console messages and uncaught exceptions the page reported, for failure messages. */
  consoleLog(): string[];
}

export interface Chromium {
  open(url: string, viewport?: { width: number; height: number }): Promise<BrowserPage>;
  close(): Promise<void>;
}

/**
 * Starts headless chromium with its DevTools port on 127.0.0.1 (port 0:
 * chromium picks one and prints it) and a throwaway profile, and drives
 * pages over the Chrome DevTools Protocol on one WebSocket (flattened
 * target sessions). Root in a container needs `--no-sandbox`.
 */
export async function startChromium(): Promise<Chromium> {
  const profile = mkdtempSync(join(tmpdir(), 'kiln-chromium-'));
  const proc: ChildProcess = spawn(
    CHROMIUM,
    ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check', '--disable-extensions', '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0', `--user-data-dir=${profile}`, 'about:blank'],
    // Its own process group: close() ends chromium's helper processes too, not only the browser.
    { stdio: ['ignore', 'ignore', 'pipe'], detached: true },
  );
  let stderr = '';
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const wsUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`chromium printed no DevTools URL within 20 s:\n${stderr.slice(-2000)}`)), 20_000);
    proc.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`chromium exited (${code}) before listening:\n${stderr.slice(-2000)}`));
    });
  });
  const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  let nextId = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; method: string }>();
  const listeners = new Set<(msg: { method: string; params: Record<string, unknown>; sessionId?: string }) => void>();
  ws.on('message', (data: Buffer) => {
    const msg = JSON.parse(data.toString()) as { id?: number; result?: unknown; error?: { message: string }; method?: string; params?: Record<string, unknown>; sessionId?: string };
    if (msg.id !== undefined) {
      const p = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) p?.reject(new Error(`CDP ${p.method}: ${msg.error.message}`));
      else p?.resolve(msg.result);
    } else if (msg.method) {
      for (const l of listeners) l({ method: msg.method, params: msg.params ?? {}, ...(msg.sessionId ? { sessionId: msg.sessionId } : {}) });
    }
  });
  const send = <T>(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject, method });
      ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });

  return {
    async open(url, viewport = { width: 1400, height: 900 }) {
      const { targetId } = await send<{ targetId: string }>('Target.createTarget', { url: 'about:blank' });
      const { sessionId } = await send<{ sessionId: string }>('Target.attachToTarget', { targetId, flatten: true });
      const log: string[] = [];
      listeners.add((m) => {
        if (m.sessionId !== sessionId) return;
        if (m.method === 'Runtime.consoleAPICalled') log.push(`console.${String(m.params['type'])}: ${JSON.stringify((m.params['args'] as { value?: unknown }[]).map((a) => a.value))}`);
        if (m.method === 'Runtime.exceptionThrown') log.push(`exception: ${JSON.stringify((m.params['exceptionDetails'] as { exception?: { description?: string } }).exception?.description)}`);
      });
      await send('Runtime.enable', {}, sessionId);
      await send('Page.enable', {}, sessionId);
      await send('Emulation.setDeviceMetricsOverride', { ...viewport, deviceScaleFactor: 1, mobile: false }, sessionId);
      await send('Page.navigate', { url }, sessionId);
      const evaluate = async <T>(expression: string): Promise<T> => {
        const r = await send<{ result: { value?: T }; exceptionDetails?: { text: string; exception?: { description?: string } } }>('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true }, sessionId);
        if (r.exceptionDetails) throw new Error(`page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
        return r.result.value as T;
      };
      return {
        evaluate,
        async waitFor<T>(what: string, expression: string, timeoutMs = 20_000): Promise<T> {
          const deadline = Date.now() + timeoutMs;
          let last: unknown;
          for (;;) {
            try {
              last = await evaluate<T>(expression);
              if (last) return last as T;
            } catch (err) {
              last = err;
            }
            if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${String(last)}); page log:\n${log.join('\n')}`);
            await new Promise((r) => setTimeout(r, 100));
          }
        },
        async screenshot(path, opts = {}) {
          const { data } = await send<{ data: string }>('Page.captureScreenshot', { format: 'png', captureBeyondViewport: opts.fullPage ?? false }, sessionId);
          writeFileSync(path, Buffer.from(data, 'base64'));
        },
        consoleLog: () => [...log],
      };
    },
    async close() {
      ws.close();
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
      try {
        process.kill(-proc.pid!, 'SIGKILL'); // helpers (zygote, utility) still writing into the profile
      } catch {
        // the group is gone already
      }
      // Chromium's helper processes can still be writing into the profile as the browser exits:
      // retry a removal that found a directory refilled (ENOTEMPTY).
      rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    },
  };
}
