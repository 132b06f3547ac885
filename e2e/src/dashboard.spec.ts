import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBusyboxImage, repoRoot, runKiln, startChromium, startKilnd, startRegistry, type BrowserPage, type Chromium, type Kilnd, type TestRegistry } from '@kiln/testkit';

/**
 * `kiln daemon --dashboard`: Debian's chromium (headless, driven over the
 * DevTools protocol) opens the dashboard with the URL kilnd wrote, and
 * watches real builds: the DAG of the running build, a CACHED step of the
 * second build with the cache-miss reason of the step that ran, and its
 * log line streaming while the step still sleeps. Screenshots of the
 * running and the finished build go to $KILN_DASHBOARD_SCREENSHOTS
 * (tools/dashboard-screenshots.sh: docs/images), else to a temp dir.
 */
describe('dashboard in a real browser [topology=all-in-one, worker=oci]', () => {
  let registry: TestRegistry;
  let daemon: Kilnd;
  let browser: Chromium;
  let page: BrowserPage;
  let ctx: string;
  let shots: string;

  beforeAll(async () => {
    registry = await startRegistry();
    ctx = mkdtempSync(join(tmpdir(), 'kiln-dashboard-'));
    const base = (await pushBusyboxImage(registry, ctx, 'kiln/dashboard', 'base', { applets: ['sh', 'echo', 'sleep'] })).ref;
    writeFileSync(
      join(ctx, 'Dockerfile'),
      [`FROM ${base}`, 'RUN echo prepare > /prepared.txt', 'ARG N=1', 'ARG PAUSE=0', 'ARG FAIL=0', 'RUN echo "dashboard-log-line $N" && sleep $PAUSE && echo "step done $N" && exit $FAIL', ''].join('\n'),
    );
    shots = process.env.KILN_DASHBOARD_SCREENSHOTS ? resolve(repoRoot(), process.env.KILN_DASHBOARD_SCREENSHOTS) : join(ctx, 'shots');
    mkdirSync(shots, { recursive: true });
    [daemon, browser] = await Promise.all([startKilnd({ worker: 'oci', args: ['--dashboard', '127.0.0.1:0'] }), startChromium()]);
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await daemon?.stop();
    await registry?.stop();
    if (ctx) rmSync(ctx, { recursive: true, force: true });
  });

  /** The URL kilnd wrote (the log names the file, never the token). */
  async function dashboardUrl(): Promise<string> {
    // The daemon answers on its socket before the dashboard is up: wait for its ready line (written after the file).
    for (let i = 0; i < 200 && !daemon.logs().includes('dashboard ready'); i++) await new Promise((r) => setTimeout(r, 50));
    return readFileSync(join(daemon.root, 'dashboard.url'), 'utf8').trim();
  }

  function build(args: string[]): Promise<{ code: number; stderr: string }> {
    return runKiln(['build', '--addr', daemon.addr, '--progress=plain', ...args, '-o', `type=local,dest=${join(ctx, `out-${args.join('-')}`)}`, ctx]);
  }

  it('is refused without its token, and refuses a write method with it', async () => {
    const url = new URL(await dashboardUrl());
    expect(url.hostname).toBe('127.0.0.1');
    expect(daemon.logs()).toContain('dashboard ready');
    expect(daemon.logs()).not.toContain(url.searchParams.get('token'));
    const origin = url.origin;
    expect((await fetch(`${origin}/`)).status).toBe(401);
    expect((await fetch(`${origin}/kiln.control.v1.ControlService/ListWorkers`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).status).toBe(401);
    page = await browser.open(url.href);
    await page.waitFor('the page', `document.querySelector('.worker-id')?.textContent`);
    // From the page, with its cookie: Solve is not served (a build through the dashboard is impossible).
    const solve = await page.evaluate<{ status: number; body: string }>(
      `fetch('/kiln.control.v1.ControlService/Solve', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }).then(async (r) => ({ status: r.status, body: await r.text() }))`,
    );
    expect(solve.status).not.toBe(200);
    expect(solve.body).toContain('unimplemented');
  });

  it('shows the running build: DAG, a CACHED step and a streaming log line; then the finished build with the cache-miss reason', async () => {
    const first = await build(['--build-arg', 'N=1']);
    expect(first.code, first.stderr).toBe(0);
    await page.waitFor('the first build completed', `document.querySelector('tr.build')?.classList.contains('status-completed')`);

    // The second build: the first RUN comes from the cache, the second runs (N changed) and sleeps.
    const second = build(['--build-arg', 'N=2', '--build-arg', 'PAUSE=8']);
    await page.waitFor('a running step in the DAG', `document.querySelector('#build-status')?.textContent === 'running' && document.querySelector('.dag-node[data-state=running]')`);
    // The worker's load: the solver's count of builds running on it (ListWorkers running_builds).
    await page.waitFor('the worker running one build', `document.querySelector('.worker')?.textContent.includes('load 1 running build')`);
    await page.waitFor('the log line of the running step', `[...document.querySelectorAll('.log-line')].some((l) => l.textContent.includes('dashboard-log-line 2'))`);
    const running = await page.evaluate<{ states: string[]; names: string[]; logs: string[] }>(`({
      states: [...document.querySelectorAll('.dag-node')].map((n) => n.dataset.state),
      names: [...document.querySelectorAll('tr.step td:nth-child(2)')].map((n) => n.textContent),
      logs: [...document.querySelectorAll('.log-line')].map((n) => n.textContent),
    })`);
    expect(running.states).toContain('cached');
    expect(running.states).toContain('running');
    expect(running.names).toContain('[2/3] RUN echo prepare > /prepared.txt');
    expect(running.logs.some((l) => l.includes('dashboard-log-line 2'))).toBe(true);
    // Seen while the step still sleeps: the log streamed, it was not read after the fact.
    expect(running.logs.some((l) => l.includes('step done 2'))).toBe(false);
    await page.screenshot(join(shots, 'dashboard-running.png'));

    const done = await second;
    expect(done.code, done.stderr).toBe(0);
    await page.waitFor('the finished build', `document.querySelector('#build-status')?.textContent === 'completed' && [...document.querySelectorAll('.log-line')].some((l) => l.textContent.includes('step done 2'))`);
    await page.waitFor('the build list updated', `document.querySelector('tr.build.selected')?.classList.contains('status-completed')`);
    const finished = await page.evaluate<{ states: string[]; ratio: string; miss: string }>(`({
      states: [...document.querySelectorAll('.dag-node')].map((n) => n.dataset.state),
      miss: [...document.querySelectorAll('td.miss')].map((n) => n.textContent).join('|'),
      ratio: document.querySelector('tr.build.selected td:last-child')?.textContent ?? '',
    })`);
    expect(finished.states).not.toContain('running');
    // Who and where: the CLI on the unix socket, the daemon's one worker.
    const workerId = await page.evaluate<string>(`document.querySelector('.worker-id').textContent`);
    expect(await page.evaluate<string>(`document.querySelector('#build-workers')?.textContent ?? ''`)).toBe(`on ${workerId}`);
    expect(await page.evaluate<string>(`document.querySelector('#build-client')?.textContent ?? ''`)).toBe('from unix socket');
    await page.waitFor('the worker idle again', `document.querySelector('.worker')?.textContent.includes('load 0 running builds')`);
    expect(finished.states.filter((s) => s === 'cached').length).toBeGreaterThanOrEqual(2);
    // The solver explains a miss when the step ends (Vertex.cache_miss on its completed event).
    expect(finished.miss).toContain('cache miss: build arg or ENV changed: N: "1" → "2"');
    expect(finished.ratio).toMatch(/^\d+\/\d+ · \d+%$/);
    await page.screenshot(join(shots, 'dashboard-finished.png'));
    expect(page.consoleLog().filter((l) => l.startsWith('exception'))).toEqual([]);
  });

  it('shows a failed build with its error and the Dockerfile instruction that failed', async () => {
    const failed = await build(['--build-arg', 'N=3', '--build-arg', 'FAIL=3']);
    expect(failed.code).not.toBe(0);
    // The status can turn to error before the failed vertex (which the excerpt names) has arrived: wait for both.
    await page.waitFor('the error', `document.querySelector('#build-status')?.textContent === 'error' && document.querySelector('#build-error pre.excerpt') && document.querySelector('.dag-node[data-state=error]')`);
    const error = await page.evaluate<{ text: string; excerpt: string; failed: string[] }>(`({
      text: document.querySelector('#build-error pre').textContent,
      excerpt: document.querySelector('#build-error pre.excerpt')?.textContent ?? '',
      failed: [...document.querySelectorAll('.dag-node[data-state=error]')].map((n) => n.textContent),
    })`);
    expect(error.text).toMatch(/exit code: 3/);
    expect(error.excerpt).toBe('RUN echo "dashboard-log-line 3" && sleep 0 && echo "step done 3" && exit 3');
    expect(error.failed).toHaveLength(1);
    await page.screenshot(join(shots, 'dashboard-error.png'));
  });
});

